"""Thresholds that mean the same for every metric: how much worse a figure is than a reference
figure of the same metric, in the metric's units and as a share of the reference.

The decay rule (ctloop/core/policy.py), the promotion margin and the slice gate
(ctloop/io/registry.py) all
compare a figure with a reference: the champion's score on a batch with its holdout score, a
challenger with the champion on the same holdout, a slice of one with the same slice of the
other. Their thresholds (`continuous.decay_threshold`, `promotion.margin`, `slices.tolerance`)
are shares of the reference's size |reference|: 0.025 means "2.5% worse" whether the metric is a
score (ROC AUC: greater is better, worse is a *drop*) or an error in the target's units (RMSE:
lower is better, worse is a *rise*). An error metric in another unit (cents instead of dollars:
every figure times c > 0) therefore gets the same decisions, and an error metric reads like the
score that is its negation. The first model's floor (`promotion.min_score`) is absolute, or, when
unset, the figure of a constant prediction on the same holdout (`Floor`).

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

FloorOrigin = Literal["constant baseline", "promotion.min_score"]
CONSTANT_BASELINE: FloorOrigin = "constant baseline"
MIN_SCORE: FloorOrigin = "promotion.min_score"


@dataclass(frozen=True)
class Change:
    """`score` read against `reference` for a metric of direction `greater_is_better`."""

    score: float
    reference: float
    greater_is_better: bool

    @property
    def worsening(self) -> float:
        """How much worse `score` is than `reference`, in metric units (positive: worse,
        negative: better): reference - score for a score, score - reference for an error."""
        if self.greater_is_better:
            return self.reference - self.score
        return self.score - self.reference

    @property
    def relative(self) -> float:
        """`worsening` as a share of |reference| (0.025: 2.5% worse; negative: better). A zero
        reference gives 0.0 for an equal score and ±inf otherwise (any change is infinitely
        many times nothing); NaN in, NaN out."""
        size = abs(self.reference)
        if size == 0:
            worse = self.worsening
            return worse if worse == 0 or math.isnan(worse) else math.copysign(math.inf, worse)
        return self.worsening / size

    def worse_beyond(self, threshold: float) -> bool:
        """True when `score` is worse than `reference` by more than `threshold` × |reference|
        (strictly: a worsening equal to the threshold is allowed; NaN is never beyond).
        Decay and the slice gate."""
        return self.worsening > threshold * abs(self.reference)

    def better_by(self, margin: float) -> bool:
        """True when `score` is better than `reference` by at least `margin` × |reference|
        (margin 0: not worse). The promotion gate (challenger against champion)."""
        return -self.worsening >= margin * abs(self.reference)

    @property
    def word(self) -> str:
        """What getting worse is called for this metric: a `drop` of a score, a `rise` of an
        error."""
        return worse_word(self.greater_is_better)

    def describe_worse(self) -> str:
        """`drop 0.0315 = 4.19%` / `rise 25.2300 = 116%`: the worsening, absolute and relative."""
        return f"{self.word} {self.worsening:.4f} = {pct(self.relative)}"

    def describe_gain(self) -> str:
        """`+0.0298 = +4.14%`: how much better `score` is (negative: worse), both ways."""
        return f"{-self.worsening:+.4f} = {pct(-self.relative, sign=True)}"


def worse_word(greater_is_better: bool) -> str:
    """`drop` for a score (greater is better), `rise` for an error (lower is better)."""
    return "drop" if greater_is_better else "rise"


def pct(share: float, sign: bool = False) -> str:
    """A share as a percentage for messages: 0.025 -> `2.5%`, 1.1612 -> `116%`, inf -> `inf%`."""
    value = share * 100
    plus = "+" if sign else ""
    if math.isfinite(value) and abs(value) >= 100:
        return f"{value:{plus}.0f}%"
    return f"{value:{plus}.3g}%"


@dataclass(frozen=True)
class Floor:
    """What the first model must reach (no champion to compare with), in metric units: at least
    `value` for a score, at most `value` for an error; `origin` says where it comes from."""

    value: float
    origin: FloorOrigin

    def met_by(self, score: float, greater_is_better: bool) -> bool:
        """`score` reaches the floor (equal is enough; NaN never does)."""
        return score >= self.value if greater_is_better else score <= self.value

    def describe(self, greater_is_better: bool) -> str:
        """`>= 0.5, constant baseline` / `<= 80, promotion.min_score`."""
        return f"{'>=' if greater_is_better else '<='} {self.value:.4g}, {self.origin}"


def first_model_floor(min_score: float | None, baseline: float) -> Floor:
    """The floor of the first model: `promotion.min_score` when set (absolute, metric units),
    else `baseline`, the figure of a constant prediction on the same holdout (ROC AUC 0.5; RMSE
    of predicting the training mean: ctloop/ml/training.py constant_baseline)."""
    if min_score is not None:
        return Floor(float(min_score), MIN_SCORE)
    return Floor(float(baseline), CONSTANT_BASELINE)
