"""Challenger against champion on the same rows, with the noise of a finite holdout: the paired
bootstrap of the gain in the primary metric (pure: no Prefect, no MLflow, no I/O).

Source: Efron, B. & Tibshirani, R. J. (1993). An Introduction to the Bootstrap. Chapman & Hall:
the nonparametric bootstrap (ch. 6), the percentile interval (ch. 13) and tests read from
bootstrap replicates (ch. 15-16). The comparison is *paired*: each round draws n row indices
with replacement from the n holdout rows ONCE and scores both models on that same resample, so
what the two models have in common (hard rows, the month's base rate) cancels in the gain and
the interval reflects only how differently they rank/predict the rows.

The resamples are held as counts (how often each row was drawn: the same n indices per round,
summed), which lets ROC AUC and RMSE be computed for many rounds at once in O(n) each. The
random stream is `numpy.random.default_rng([seed, stream])`: params.yaml `seed` and a fixed
stream number per comparison (0: the whole holdout, k + 1: the k-th gated slice), so a run's
intervals are reproducible and independent of each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ctloop.core.promotion import BOOTSTRAP, GainInterval, SliceScore
from ctloop.ml.insights import MISSING

METRICS = ("roc_auc", "rmse")
_CELLS = 2_000_000  # rows x rounds per chunk of resamples (about 16 MB of float64 counts)


@dataclass(frozen=True)
class PairedBootstrap:
    """The bootstrap replicates of one comparison: `interval` (point gain and percentile
    interval, metric units, positive: the challenger is better) and `gains`, the gain on each
    resample both metrics were defined on (ROC AUC needs both classes in a resample)."""

    interval: GainInterval
    gains: np.ndarray

    def p_regression(self, tolerance: float) -> float:
        """One-sided bootstrap p-value of H0 "the challenger is worse by at most `tolerance`
        (metric units, >= 0)" against H1 "worse by more": the share of replicates on H0's side,
        (1 + #{gain_b >= -tolerance}) / (B + 1) (the test that inverts the percentile interval,
        Efron & Tibshirani 1993 ch. 16; the +1 keeps it above 0: Davison & Hinkley 1997,
        Bootstrap Methods and their Application, sec. 4.2). 1.0 with no valid replicate."""
        if len(self.gains) == 0:
            return 1.0
        return float((1 + np.count_nonzero(self.gains >= -tolerance)) / (len(self.gains) + 1))


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def resample_counts(n: int, rounds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`rounds` bootstrap resamples of n rows, each as counts (float, shape (rounds_in_chunk,
    n)): row i appears counts[b, i] times in resample b (n indices drawn uniformly with
    replacement per round). Chunked so that no chunk exceeds about 2 million cells."""
    if n < 1 or rounds < 1:
        raise ValueError(f"need at least one row and one round (n={n}, rounds={rounds})")
    chunk = max(1, min(rounds, _CELLS // n))
    out = []
    for start in range(0, rounds, chunk):
        b = min(chunk, rounds - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        out.append(np.bincount(flat, minlength=b * n).reshape(b, n).astype(float))
    return out


def metric_on_resamples(
    metric: str, y: np.ndarray, scores: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """The metric of `scores` against `y` on each resample of `counts` (shape (B, n)): equal to
    the metric computed on the resampled rows themselves (sklearn's roc_auc_score with ties
    counted one half, root_mean_squared_error). Shape (B,); NaN where undefined (ROC AUC of a
    resample holding one class only). ValueError for another metric (METRICS)."""
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=float)
    if metric == "rmse":
        errors = (y.astype(float) - scores) ** 2
        return np.sqrt(counts @ errors / counts.sum(axis=1))
    if metric != "roc_auc":
        raise ValueError(f"unknown metric '{metric}' (bootstrap: {', '.join(METRICS)})")
    classes = np.unique(y)
    if len(classes) != 2:
        return np.full(counts.shape[0], math.nan)
    order = np.argsort(scores, kind="stable")
    ranked, positive = scores[order], (y == classes[-1])[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # groups of tied scores
    c = counts[:, order]
    pos = np.add.reduceat(c * positive, starts, axis=1)
    neg = np.add.reduceat(c * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower than each group
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    won = (pos * (below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, won / pairs, math.nan)


def _point(metric: str, y: np.ndarray, scores: np.ndarray) -> float:
    return float(metric_on_resamples(metric, y, scores, np.ones((1, len(y))))[0])


def paired_bootstrap(
    y: np.ndarray | pd.Series,
    challenger: np.ndarray,
    champion: np.ndarray,
    metric: str,
    greater_is_better: bool,
    rounds: int,
    confidence: float,
    seed: int,
    stream: int = 0,
) -> PairedBootstrap:
    """The paired bootstrap of the gain of `challenger` over `champion` (scores of the same n
    rows, shape (n,)) in `metric`: challenger - champion for a score (`greater_is_better`),
    champion - challenger for an error. Each of `rounds` rounds resamples the row indices once
    and scores both models on that resample; the interval is the two-sided percentile interval
    at `confidence` (quantiles (1 - c) / 2 and (1 + c) / 2 of the gains: Efron & Tibshirani
    1993, ch. 13). Rounds where the metric is undefined are left out; with none left the bounds
    are NaN. Deterministic for (`seed`, `stream`).

    Raises ValueError for mismatched lengths, no rows, rounds < 1, confidence outside (0, 1) or
    an unknown metric."""
    y = np.asarray(y)
    challenger, champion = np.asarray(challenger, float), np.asarray(champion, float)
    if not len(y) == len(challenger) == len(champion):
        raise ValueError(
            f"y, challenger and champion must hold the same rows "
            f"({len(y)}, {len(challenger)}, {len(champion)})"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sign = 1.0 if greater_is_better else -1.0
    gain = sign * (_point(metric, y, challenger) - _point(metric, y, champion))
    parts = []
    for counts in resample_counts(len(y), rounds, _rng(seed, stream)):
        ch = metric_on_resamples(metric, y, challenger, counts)
        cp = metric_on_resamples(metric, y, champion, counts)
        parts.append(sign * (ch - cp))
    gains = np.concatenate(parts)
    gains = gains[~np.isnan(gains)]
    tail = (1.0 - confidence) / 2.0
    if len(gains):
        lower, upper = (float(q) for q in np.quantile(gains, [tail, 1.0 - tail]))
    else:
        lower = upper = math.nan
    return PairedBootstrap(GainInterval(gain, lower, upper, confidence, rounds, BOOTSTRAP), gains)


def slice_rows(X: pd.DataFrame, column: str, value: str) -> np.ndarray:
    """Boolean mask of the rows of slice `column == value` (missing values are the slice
    `<missing>`, as in ctloop/ml/insights.py slice_scores)."""
    return (X[column].astype("string").fillna(MISSING) == value).to_numpy(dtype=bool)


def bootstrap_slices(
    X: pd.DataFrame,
    y: np.ndarray | pd.Series,
    challenger: np.ndarray,
    champion: np.ndarray,
    slices: Sequence[SliceScore],
    metric: str,
    greater_is_better: bool,
    tolerance: float,
    rounds: int,
    confidence: float,
    seed: int,
) -> tuple[SliceScore, ...]:
    """`slices` with the paired bootstrap run on each gated slice that has both figures: its
    gain interval (`gain`) and `p_regression`, the p-value of "the challenger is worse by at most
    `tolerance` × |champion's slice figure|" (slices.tolerance converted to metric units with
    the champion's figure on that slice, as the point gate does). The rows of each slice are
    resampled within the slice (stream k + 1 for the k-th slice in `slices`). The Holm
    correction across slices is the gate's (ctloop/core/promotion.py slice_regressions)."""
    y = np.asarray(y)
    out = []
    for k, s in enumerate(slices):
        if not s.gated or s.challenger is None or s.champion is None:
            out.append(s)
            continue
        rows = slice_rows(X, s.column, s.value)
        boot = paired_bootstrap(
            y[rows],
            challenger[rows],
            champion[rows],
            metric,
            greater_is_better,
            rounds,
            confidence,
            seed,
            stream=k + 1,
        )
        p = boot.p_regression(tolerance * abs(s.champion))
        out.append(replace(s, gain=boot.interval, p_regression=p))
    return tuple(out)
