"""The continuous-training policy: when a monitored batch calls for retraining, and on which window.

Pure functions (no Prefect, no MLflow): the monitor flow gathers the signals, this module decides,
the retrain flow applies the cooldown and the window. The same functions drive
benchmarks/ct_replay.py, so the benchmark measures the policy the deployments run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from ctloop.core.config import ContinuousConfig
from ctloop.core.thresholds import Change, pct


@dataclass(frozen=True)
class Signals:
    """What the monitor measured on one batch with the current champion."""

    batch: str
    model_version: str | None
    dataset_drift: bool
    drifted_columns: tuple[str, ...]
    drifted_share: float
    metric: str
    batch_score: float | None  # champion's metric on the batch's labelled rows (None: no labels)
    reference_score: float | None  # champion's own holdout figure
    batches_since_training: int  # batches newer than the champion's training window
    # estimated metric of the champion on the batch (CBPE/DLE) and its 95% interval; None: not
    # estimated (off, or a version without an estimator)
    estimated_score: float | None = None
    estimated_lower: float | None = None
    estimated_upper: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The policy's reading of the signals; `reasons` say why in words."""

    drift: bool
    decay: bool
    due: bool
    decay_amount: float | None  # how much worse than the holdout, metric units (+: worse)
    reasons: tuple[str, ...]
    decay_relative: float | None = None  # decay_amount / |holdout score| (0.05: 5% worse)
    estimated_decay: bool = False  # the estimate on an unlabelled batch is worse beyond threshold
    estimated_decay_relative: float | None = None  # the estimate's worsening / |holdout score|

    @property
    def retrain(self) -> bool:
        return self.drift or self.decay or self.estimated_decay or self.due

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "retrain": self.retrain}


def decay_of(batch_score: float, reference_score: float, greater_is_better: bool) -> float:
    """How much worse the batch score is than the reference, in metric units (positive = worse)."""
    return Change(batch_score, reference_score, greater_is_better).worsening


def assess(s: Signals, cfg: ContinuousConfig, greater_is_better: bool) -> Verdict:
    """Drift (dataset verdict or a key column), decay, estimated decay, or N batches due.

    Decay: the champion's score on the batch is worse than its holdout score by more than
    `decay_threshold` × |holdout score| (a share, the same for every metric:
    ctloop/core/thresholds.py);
    the reason says `drop` for a score, `rise` for an error, with both figures. Estimated decay
    (`retrain_on_estimated_decay`): the same rule with `estimated_decay_threshold` on the
    estimated score (CBPE/DLE point estimate), only for a batch without a measured score: labels,
    when there are some, decide."""
    reasons: list[str] = []
    key_drifted = sorted(set(cfg.drift_key_columns) & set(s.drifted_columns))
    drift = cfg.retrain_on_drift and (s.dataset_drift or bool(key_drifted))
    if drift:
        what = f"key column(s) {', '.join(key_drifted)}" if key_drifted else "dataset"
        reasons.append(
            f"drift: {what} drifted in {s.batch} "
            f"({len(s.drifted_columns)} column(s), share {s.drifted_share:.2f})"
        )
    change = (
        Change(s.batch_score, s.reference_score, greater_is_better)
        if s.batch_score is not None and s.reference_score is not None
        else None
    )
    decay = cfg.retrain_on_decay and change is not None and change.worse_beyond(cfg.decay_threshold)
    if decay and change is not None:
        reasons.append(
            f"decay: {s.metric} {s.batch_score:.4f} on {s.batch} vs holdout "
            f"{s.reference_score:.4f} of v{s.model_version} ({change.describe_worse()} > "
            f"{pct(cfg.decay_threshold)})"
        )
    estimated = (
        Change(s.estimated_score, s.reference_score, greater_is_better)
        if s.estimated_score is not None and s.reference_score is not None
        else None
    )
    # labels, when the batch has them, decide: the estimate fires only where there are none
    estimated_decay = (
        cfg.retrain_on_estimated_decay
        and s.batch_score is None
        and estimated is not None
        and estimated.worse_beyond(cfg.estimated_decay_threshold)
    )
    if estimated_decay and estimated is not None:
        interval = (
            f", 95% interval {s.estimated_lower:.4f}..{s.estimated_upper:.4f}"
            if s.estimated_lower is not None and s.estimated_upper is not None
            else ""
        )
        reasons.append(
            f"estimated decay: estimated {s.metric} {s.estimated_score:.4f}{interval} on "
            f"{s.batch} (no labels) vs holdout {s.reference_score:.4f} of v{s.model_version} "
            f"({estimated.describe_worse()} > {pct(cfg.estimated_decay_threshold)})"
        )
    every = cfg.retrain_every_n_batches
    due = every is not None and s.batches_since_training >= every
    if due:
        reasons.append(
            f"due: {s.batches_since_training} new batch(es) since training, up to {s.batch} "
            f"(>= {every})"
        )
    amount = None if change is None else change.worsening
    relative = None if change is None else change.relative
    return Verdict(
        drift,
        decay,
        due,
        amount,
        tuple(reasons),
        relative,
        estimated_decay,
        None if estimated is None else estimated.relative,
    )


def in_cooldown(last_start: datetime | None, now: datetime, cooldown_minutes: float) -> bool:
    """True while the last retrain started less than `cooldown_minutes` ago."""
    return last_start is not None and now - last_start < timedelta(minutes=cooldown_minutes)


class NoWindowError(ValueError):
    """Too few labelled batches to train and hold out."""


def ct_window(
    labelled: list[str], cfg: ContinuousConfig, holdout_periods: int = 1
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Training and holdout batches of a retrain: the newest labelled periods are the holdout
    (the champion/challenger gate runs on them); before them the last `window_periods` periods in
    all (sliding) or every labelled period (expanding)."""
    ordered = sorted(labelled)
    if cfg.window == "sliding":
        ordered = ordered[-cfg.window_periods :]
    if len(ordered) <= holdout_periods:
        raise NoWindowError(
            f"continuous: {len(ordered)} labelled batch(es) ({', '.join(ordered) or 'none'}); "
            f"need more than holdout_periods={holdout_periods}"
        )
    cut = len(ordered) - holdout_periods
    return tuple(ordered[:cut]), tuple(ordered[cut:])


def batches_after(available: list[str], trained_until: str | None) -> list[str]:
    """Batches newer than the last one a model saw (its holdout end), oldest first."""
    return [n for n in sorted(available) if trained_until is None or n > trained_until]
