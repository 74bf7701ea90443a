"""The champion/challenger gate as a pure decision: the figures it compares, the thresholds it
applies (ctloop/core/thresholds.py) and the decision it returns. Moving the MLflow aliases is
ctloop/io/registry.py's job.

Two tests (`promotion.test`): `none` compares the two point figures on the holdout; `bootstrap`
(the default) compares the interval of the paired gain (`GainInterval`, computed by
ctloop/ml/comparison.py) with the margin, and refuses a challenger for a slice only when that
slice's regression is significant after a Holm correction across the gated slices (`holm`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ctloop.core.thresholds import CONSTANT_BASELINE, MIN_SCORE, Change, Floor, FloorOrigin, pct

CHAMPION = "champion"


CHALLENGER = "challenger"

GateTest = Literal["bootstrap", "none"]
BOOTSTRAP: GateTest = "bootstrap"
POINT: GateTest = "none"


@dataclass(frozen=True)
class GainInterval:
    """How much better the challenger is than the champion on the same rows, with its
    uncertainty: `gain` is the point figure (metric units, positive: better; challenger -
    champion for a score, champion - challenger for an error), [`lower`, `upper`] the two-sided
    `confidence` percentile interval of the gain over `rounds` paired resamples of the rows
    (`test`: how it was computed, e.g. "bootstrap"). NaN bounds: no resample could be scored."""

    gain: float
    lower: float
    upper: float
    confidence: float
    rounds: int
    test: str = BOOTSTRAP

    def describe(self) -> str:
        """`[95% -0.0012, +0.0093]`."""
        return f"[{self.confidence:.0%} {self.lower:+.4f}, {self.upper:+.4f}]"


@dataclass(frozen=True)
class SliceScore:
    """The primary metric of challenger and champion on one slice of the holdout (rows with
    `column == value`). `gated`: large enough (and both classes present for ROC AUC) to gate."""

    column: str
    value: str
    n: int
    challenger: float | None  # None: undefined on this slice (one class only)
    champion: float | None  # None: no champion, or undefined
    gated: bool
    # the bootstrap test only (None otherwise): the slice's gain interval, and the p-value of
    # "the challenger is not worse than the champion by more than slices.tolerance" on it
    gain: GainInterval | None = None
    p_regression: float | None = None

    @property
    def label(self) -> str:
        return f"{self.column}={self.value}"


Thresholds = Literal["relative", "absolute"]


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's decision on a challenger, with the figures and thresholds it compared.

    `margin` and `slice_tolerance` are shares of the champion's figure (`thresholds` =
    "relative"); decisions read back from versions registered before thresholds were relative
    hold absolute figures there (`thresholds` = "absolute"). `floor` is the first model's floor
    in metric units (applied only when there is no comparable champion: `floor_applied`) and
    `floor_origin` where it comes from (ctloop/core/thresholds.py)."""

    promote: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    margin: float
    floor: float
    slice_tolerance: float = 0.0
    slice_regressions: tuple[str, ...] = ()  # "column=value (...)" of each refused slice
    slices: tuple[SliceScore, ...] = ()  # every slice compared (in to_dict, not in tags)
    floor_origin: FloorOrigin = MIN_SCORE
    thresholds: Thresholds = "relative"
    test: GateTest = POINT  # how challenger and champion were compared (`promotion.test`)
    # the bootstrap test: the gain (metric units) and its percentile interval, its confidence
    # and the number of resamples; None (0) with the point test or without a champion
    gain: float | None = None
    gain_lower: float | None = None
    gain_upper: float | None = None
    confidence: float | None = None
    rounds: int = 0

    @property
    def interval(self) -> GainInterval | None:
        """The gain interval the bootstrap gate compared with the margin; None otherwise."""
        if self.gain is None or self.gain_lower is None or self.gain_upper is None:
            return None
        return GainInterval(
            self.gain, self.gain_lower, self.gain_upper, self.confidence or math.nan, self.rounds
        )

    @property
    def floor_applied(self) -> bool:
        """The floor decided (no comparable champion); otherwise the champion comparison did."""
        return self.champion_score is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """The decision as registry tags on the challenger version (the per-slice table is too
        long for a tag: it is in to_dict, promotion.json and the run's insights/slices.csv)."""
        out = {}
        for key, value in self.to_dict().items():
            if key == "slices":
                continue
            if key == "slice_regressions":
                value = _clip("; ".join(value))
            out[f"promotion.{key}"] = "" if value is None else str(value)
        return out

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> PromotionDecision | None:
        """The decision recorded on a version by `apply_decision` (`promotion.*` tags); None when
        none was recorded. The per-slice table is not in tags: `slices` comes back empty.
        Versions registered before the bootstrap gate have no `promotion.test` and no interval
        tags: they read back as the point test (`test` = "none") without an interval.

        Versions registered before relative thresholds have no `promotion.thresholds` tag: their
        margin and slice tolerance read back as the absolute figures they were (`thresholds` =
        "absolute"), their `promotion.min_score` as the floor (origin promotion.min_score)."""
        if "promotion.promote" not in tags:
            return None

        def num(key: str) -> float | None:
            raw = tags.get(f"promotion.{key}", "")
            return float(raw) if raw else None

        regressions = tags.get("promotion.slice_regressions", "")
        origin = tags.get("promotion.floor_origin", "")
        floor = num("floor") if "promotion.floor" in tags else num("min_score")
        return cls(
            promote=tags["promotion.promote"] == "True",
            reason=tags.get("promotion.reason", ""),
            metric=tags.get("promotion.metric", ""),
            challenger_version=tags.get("promotion.challenger_version", ""),
            challenger_score=_or(num("challenger_score"), math.nan),
            champion_version=tags.get("promotion.champion_version") or None,
            champion_score=num("champion_score"),
            margin=_or(num("margin"), 0.0),
            floor=_or(floor, math.nan),
            slice_tolerance=_or(num("slice_tolerance"), 0.0),
            slice_regressions=tuple(regressions.split("; ")) if regressions else (),
            floor_origin=CONSTANT_BASELINE if origin == CONSTANT_BASELINE else MIN_SCORE,
            thresholds="relative" if tags.get("promotion.thresholds") == "relative" else "absolute",
            test=BOOTSTRAP if tags.get("promotion.test") == BOOTSTRAP else POINT,
            gain=num("gain"),
            gain_lower=num("gain_lower"),
            gain_upper=num("gain_upper"),
            confidence=num("confidence"),
            rounds=int(num("rounds") or 0),
        )


def _or(value: float | None, default: float) -> float:
    """`value` unless it is missing (a recorded 0.0 stays 0.0)."""
    return default if value is None else value


def _clip(text: str, limit: int = 4000) -> str:
    """Registry tag values are limited in length: keep the head, say how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} chars cut)"


def holm(p_values: Sequence[float], alpha: float) -> tuple[bool, ...]:
    """Holm's step-down correction: which of m hypotheses to reject with their family-wise error
    rate at most `alpha` (Holm, S. (1979). A simple sequentially rejective multiple test
    procedure. Scandinavian Journal of Statistics 6(2), 65-70).

    Sort the p-values ascending, p(1) <= ... <= p(m); reject H(1), ..., H(k) where k is the
    first j with p(j+1) > alpha / (m - j) (so p(j) <= alpha / (m - j + 1) for every rejected
    j). Returns one flag per p-value, in the input order (True: rejected). NaN is never
    rejected (and stops the steps after it); an empty input gives ()."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    rejected = [False] * m
    for rank, i in enumerate(order):
        if not p_values[i] <= alpha / (m - rank):
            break
        rejected[i] = True
    return tuple(rejected)


def regression_level(confidence: float) -> float:
    """The one-sided level of each slice's regression test: (1 - confidence) / 2, the tail of
    the two-sided `confidence` interval beyond its bound (0.95: 2.5%). Holm keeps the
    family-wise error of refusing a challenger for a slice at this level."""
    return (1.0 - confidence) / 2.0


def slice_regressions(
    slices: Sequence[SliceScore],
    greater_is_better: bool,
    tolerance: float,
    confidence: float | None = None,
) -> tuple[SliceScore, ...]:
    """Gated slices that refuse the challenger.

    Point test (`confidence` None): the challenger is worse than the champion by more than
    `tolerance` × |champion's slice figure| (in the metric's own direction: a drop for ROC AUC,
    a rise for RMSE; ctloop/core/thresholds.py). Bootstrap test (`confidence` given): the
    slice's `p_regression` (H0: worse by at most that tolerance) is significant after `holm`
    across every gated slice with a p-value, at `regression_level(confidence)`; a slice without
    one (not testable) does not refuse. Slices without both figures are not compared."""
    compared: list[SliceScore] = []
    point: list[SliceScore] = []
    for s in slices:
        if not s.gated or s.challenger is None or s.champion is None:
            continue
        if math.isnan(s.challenger) or math.isnan(s.champion):
            continue
        compared.append(s)
        if Change(s.challenger, s.champion, greater_is_better).worse_beyond(tolerance):
            point.append(s)
    if confidence is None:
        return tuple(point)
    tested = [s for s in compared if s.p_regression is not None]
    p_values = [s.p_regression for s in tested if s.p_regression is not None]
    flags = holm(p_values, regression_level(confidence))
    return tuple(s for s, refused in zip(tested, flags, strict=True) if refused)


def describe_slice(s: SliceScore, metric: str, greater_is_better: bool) -> str:
    """`carrier=UA (roc_auc 0.7012 vs champion 0.7420, drop 0.0408 = 5.5%, n=812)`; with the
    bootstrap test also the gain interval and the p-value (`..., n=812, gain [95% -0.061,
    -0.021], p=0.001)`)."""
    if s.challenger is None or s.champion is None:
        return f"{s.label} ({metric} not comparable, n={s.n})"
    change = Change(s.challenger, s.champion, greater_is_better)
    tested = "" if s.gain is None else f", gain {s.gain.describe()}"
    if s.p_regression is not None:
        tested += f", p={s.p_regression:.3g}"
    return (
        f"{s.label} ({metric} {s.challenger:.4f} vs champion {s.champion:.4f}, "
        f"{change.describe_worse()}, n={s.n}{tested})"
    )


def decide(
    metric: str,
    challenger_version: str,
    challenger_score: float,
    champion_version: str | None,
    champion_score: float | None,
    greater_is_better: bool,
    margin: float,
    floor: float,
    slices: Sequence[SliceScore] = (),
    slice_tolerance: float = 0.0,
    floor_origin: FloorOrigin = MIN_SCORE,
    test: GateTest = POINT,
    interval: GainInterval | None = None,
) -> PromotionDecision:
    """The champion/challenger gate (pure).

    Without a comparable champion (the first model, or a champion that cannot score this
    data): promote when the challenger reaches `floor` (metric units: at least for a score, at
    most for an error; `floor_origin` says whether it is `promotion.min_score` or the constant
    baseline); its slices are reported, not gated. The floor does not apply to later
    challengers. Whatever `test`.

    With a comparable champion, `test` "none" (point): promote when the challenger is better on
    the same holdout by at least `margin` × |champion score| and no gated slice is worse than
    the champion's by more than `slice_tolerance` × |champion's slice figure| (shares: the same
    setting for ROC AUC and RMSE, ctloop/core/thresholds.py).

    `test` "bootstrap": `interval` (required) is the paired bootstrap interval of the gain
    (ctloop/ml/comparison.py). The margin is converted to metric units with the champion's
    figure on the whole holdout, as in the point test (`margin` × |champion score|), and the
    challenger is promoted only when the interval's LOWER bound exceeds it (strictly: no
    evidence of a gain, e.g. identical models, never promotes); a gated slice refuses it only
    when its regression beyond `slice_tolerance` is significant after Holm (`slice_regressions`
    with the interval's confidence; each slice's `p_regression` computed beforehand).

    Raises ValueError for the bootstrap test with a champion but no interval."""
    compared = champion_score is not None
    bootstrap = test == BOOTSTRAP and compared
    if bootstrap and interval is None:
        raise ValueError("promotion.test bootstrap: the gain interval is missing")
    confidence = interval.confidence if bootstrap and interval is not None else None
    regressed = (
        slice_regressions(slices, greater_is_better, slice_tolerance, confidence)
        if compared
        else ()
    )
    described = tuple(describe_slice(s, metric, greater_is_better) for s in regressed)
    shown = interval if bootstrap else None
    args = dict(
        metric=metric,
        challenger_version=challenger_version,
        challenger_score=challenger_score,
        champion_version=champion_version,
        champion_score=champion_score,
        margin=margin,
        floor=floor,
        slice_tolerance=slice_tolerance,
        slice_regressions=described,
        slices=tuple(slices),
        floor_origin=floor_origin,
        test=test,
        gain=None if shown is None else shown.gain,
        gain_lower=None if shown is None else shown.lower,
        gain_upper=None if shown is None else shown.upper,
        confidence=None if shown is None else shown.confidence,
        rounds=0 if shown is None else shown.rounds,
    )
    if champion_score is None:
        bar = Floor(floor, floor_origin)
        floor_ok = bar.met_by(challenger_score, greater_is_better)
        reason = (
            f"no comparable champion: {metric} {challenger_score:.4f} "
            f"{'meets' if floor_ok else 'misses'} the floor ({bar.describe(greater_is_better)})"
        )
        return PromotionDecision(floor_ok, reason, **args)
    change = Change(challenger_score, champion_score, greater_is_better)
    needed = margin * abs(champion_score)
    head = (
        f"challenger v{challenger_version} {metric} {challenger_score:.4f} vs champion "
        f"v{champion_version} {champion_score:.4f}: gain {change.describe_gain()} "
    )
    if shown is None:
        beats = change.better_by(margin)
        reason = head + f"{'>=' if beats else '<'} margin {pct(margin)} ({needed:.4f})"
    else:
        beats = shown.lower > needed
        reason = head + (
            f"{shown.describe()} (paired bootstrap, {shown.rounds} rounds): lower bound "
            f"{'exceeds' if beats else 'does not exceed'} the margin {pct(margin)} "
            f"({needed:.4f})"
        )
    if regressed:
        how = (
            ""
            if confidence is None
            else f" (significant after Holm, one-sided level {pct(regression_level(confidence))})"
        )
        reason += (
            f"; refused: {len(regressed)} slice(s) regress beyond tolerance "
            f"{pct(slice_tolerance)}{how}: " + "; ".join(described)
        )
    return PromotionDecision(beats and not regressed, reason, **args)
