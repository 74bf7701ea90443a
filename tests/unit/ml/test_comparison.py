"""The paired bootstrap of the gain (ctloop/ml/comparison.py): the metric on a resample equals the
metric on the resampled rows, identical models show no gain, a better model on many rows does,
the interval narrows with rows, and a seed fixes every figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, root_mean_squared_error

from ctloop.core.promotion import BOOTSTRAP, SliceScore, decide, slice_regressions
from ctloop.ml import comparison


def _data(n: int, seed: int, noise_a: float, noise_b: float) -> tuple[np.ndarray, ...]:
    """Labels and two scorers: each label plus Gaussian noise (less noise ranks better)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y + rng.normal(0, noise_a, n), y + rng.normal(0, noise_b, n)


@settings(max_examples=40, deadline=None)
@given(
    y=st.lists(st.integers(0, 1), min_size=2, max_size=40),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_metric_on_counts_equals_the_metric_on_the_resampled_rows(
    y: list[int], data: st.DataObject, seed: int
) -> None:
    n = len(y)
    # few distinct scores: many ties, which ROC AUC counts as one half
    scores = np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), float)
    counts = comparison.resample_counts(n, 7, np.random.default_rng(seed))[0]
    auc = comparison.metric_on_resamples("roc_auc", np.array(y), scores, counts)
    rmse = comparison.metric_on_resamples("rmse", np.array(y), scores, counts)
    for b in range(7):
        rows = np.repeat(np.arange(n), counts[b].astype(int))
        assert len(rows) == n  # n indices drawn per round
        ys = np.array(y)[rows]
        if len(np.unique(ys)) == 2:
            assert auc[b] == pytest.approx(roc_auc_score(ys, scores[rows]), abs=1e-12)
        else:
            assert math.isnan(auc[b])
        assert rmse[b] == pytest.approx(root_mean_squared_error(ys, scores[rows]), abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(50, 2000), seed=st.integers(0, 10_000), noise=st.floats(0.3, 5.0))
def test_identical_models_show_no_gain_and_the_gate_refuses(
    n: int, seed: int, noise: float
) -> None:
    y, a, _ = _data(n, seed, noise, noise)
    boot = comparison.paired_bootstrap(y, a, a.copy(), "roc_auc", True, 200, 0.95, seed)
    i = boot.interval
    assert i.lower <= 0.0 <= i.upper and i.gain == 0.0
    auc = roc_auc_score(y, a)
    for margin in (0.0, 0.0025):
        gate = decide("roc_auc", "2", auc, "1", auc, True, margin, 0.5, test=BOOTSTRAP, interval=i)
        assert not gate.promote and "lower bound does not exceed the margin" in gate.reason


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_a_clearly_better_model_on_a_large_holdout_has_a_positive_lower_bound(seed: int) -> None:
    y, better, worse = _data(20_000, seed, 1.0, 2.0)  # ROC AUC about 0.76 against 0.64
    boot = comparison.paired_bootstrap(y, better, worse, "roc_auc", True, 300, 0.95, seed)
    assert boot.interval.lower > 0.05
    assert boot.interval.lower <= boot.interval.gain <= boot.interval.upper
    # the same comparison the other way round: the interval mirrors
    back = comparison.paired_bootstrap(y, worse, better, "roc_auc", True, 300, 0.95, seed)
    assert back.interval.upper == pytest.approx(-boot.interval.lower)


def test_an_error_metric_gains_when_the_challenger_errs_less() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(100, 10, 5000)
    boot = comparison.paired_bootstrap(
        y, y + rng.normal(0, 1, 5000), y + rng.normal(0, 3, 5000), "rmse", False, 300, 0.9, 1
    )
    assert 1.5 < boot.interval.lower <= boot.interval.gain <= boot.interval.upper < 2.5


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_interval_narrows_with_more_rows(seed: int) -> None:
    widths = []
    for n in (1000, 16_000):
        y, a, b = _data(n, seed, 1.0, 1.2)
        i = comparison.paired_bootstrap(y, a, b, "roc_auc", True, 300, 0.95, seed).interval
        widths.append(i.upper - i.lower)
    # the standard error shrinks as 1 / sqrt(n): 16x the rows, about a quarter of the width
    assert widths[1] < 0.5 * widths[0]


def test_a_seed_fixes_the_interval_and_another_seed_moves_it() -> None:
    y, a, b = _data(3000, 0, 1.0, 1.1)
    run = [comparison.paired_bootstrap(y, a, b, "roc_auc", True, 500, 0.95, 42) for _ in (1, 2)]
    assert run[0].interval == run[1].interval
    np.testing.assert_array_equal(run[0].gains, run[1].gains)
    other = comparison.paired_bootstrap(y, a, b, "roc_auc", True, 500, 0.95, 43)
    assert other.interval.lower != run[0].interval.lower
    assert other.interval.gain == run[0].interval.gain  # the point gain needs no randomness


def test_bad_inputs_are_refused() -> None:
    y, a, b = _data(100, 0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same rows"):
        comparison.paired_bootstrap(y, a[:50], b, "roc_auc", True, 100, 0.95, 0)
    with pytest.raises(ValueError, match="confidence"):
        comparison.paired_bootstrap(y, a, b, "roc_auc", True, 100, 1.0, 0)
    with pytest.raises(ValueError, match="unknown metric"):
        comparison.paired_bootstrap(y, a, b, "log_loss", True, 100, 0.95, 0)


def test_a_single_class_holdout_gives_no_interval_and_never_promotes() -> None:
    y = np.ones(50, dtype=int)
    boot = comparison.paired_bootstrap(
        y, np.arange(50.0), np.zeros(50), "roc_auc", True, 100, 0.9, 0
    )
    assert math.isnan(boot.interval.lower) and len(boot.gains) == 0
    assert boot.p_regression(0.01) == 1.0


def test_slices_get_a_p_value_and_only_a_significant_regression_refuses() -> None:
    """One slice where the challenger is useless (random scores), one where it is as good: the
    first regresses significantly after Holm, the second does not; an ungated slice is not
    tested."""
    rng = np.random.default_rng(7)
    n = 6000
    y = rng.integers(0, 2, n)
    group = np.where(np.arange(n) < 3000, "A", "B").astype(object)
    group[:40] = "tiny"
    champion = y + rng.normal(0, 1.0, n)
    challenger = np.where(group == "A", rng.normal(0, 1, n), champion)
    X = pd.DataFrame({"g": group})
    slices = []
    for value in ("A", "B", "tiny"):
        rows = group == value
        slices.append(
            SliceScore(
                "g",
                value,
                int(rows.sum()),
                roc_auc_score(y[rows], challenger[rows]),
                roc_auc_score(y[rows], champion[rows]),
                gated=value != "tiny",
            )
        )
    tested = comparison.bootstrap_slices(
        X, y, challenger, champion, slices, "roc_auc", True, 0.025, 500, 0.95, 42
    )
    by = {s.value: s for s in tested}
    assert by["A"].p_regression is not None and by["A"].p_regression < 0.01
    assert by["B"].p_regression == 1.0  # the same scores there: no resample is worse
    assert by["tiny"].p_regression is None and by["tiny"].gain is None
    refused = slice_regressions(tested, True, 0.025, confidence=0.95)
    assert [s.value for s in refused] == ["A"]
