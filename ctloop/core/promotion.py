"""The champion/challenger gate as a pure decision: the figures it compares, the thresholds it
applies (ctloop/core/thresholds.py) and the decision it returns. Moving the MLflow aliases is
ctloop/io/registry.py's job."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ctloop.core.thresholds import CONSTANT_BASELINE, MIN_SCORE, Change, Floor, FloorOrigin, pct

CHAMPION = "champion"


CHALLENGER = "challenger"


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
        )


def _or(value: float | None, default: float) -> float:
    """`value` unless it is missing (a recorded 0.0 stays 0.0)."""
    return default if value is None else value


def _clip(text: str, limit: int = 4000) -> str:
    """Registry tag values are limited in length: keep the head, say how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} chars cut)"


def slice_regressions(
    slices: Sequence[SliceScore], greater_is_better: bool, tolerance: float
) -> tuple[SliceScore, ...]:
    """Gated slices on which the challenger is worse than the champion by more than `tolerance`
    × |champion's slice figure| (in the metric's own direction: a drop for ROC AUC, a rise for
    RMSE; ctloop/core/thresholds.py). Slices without both figures are not compared."""
    out = []
    for s in slices:
        if not s.gated or s.challenger is None or s.champion is None:
            continue
        if math.isnan(s.challenger) or math.isnan(s.champion):
            continue
        if Change(s.challenger, s.champion, greater_is_better).worse_beyond(tolerance):
            out.append(s)
    return tuple(out)


def describe_slice(s: SliceScore, metric: str, greater_is_better: bool) -> str:
    """`carrier=UA (roc_auc 0.7012 vs champion 0.7420, drop 0.0408 = 5.5%, n=812)`."""
    if s.challenger is None or s.champion is None:
        return f"{s.label} ({metric} not comparable, n={s.n})"
    change = Change(s.challenger, s.champion, greater_is_better)
    return (
        f"{s.label} ({metric} {s.challenger:.4f} vs champion {s.champion:.4f}, "
        f"{change.describe_worse()}, n={s.n})"
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
) -> PromotionDecision:
    """The champion/challenger gate (pure).

    With a comparable champion: promote when the challenger is better on the same holdout by at
    least `margin` × |champion score| and no gated slice is worse than the champion's by more
    than `slice_tolerance` × |champion's slice figure| (shares: the same setting for ROC AUC and
    RMSE, ctloop/core/thresholds.py). Without one (the first model, or a champion that cannot score
    this data): promote when the challenger reaches `floor` (metric units: at least for a score,
    at most for an error; `floor_origin` says whether it is `promotion.min_score` or the
    constant baseline); its slices are reported, not gated. The floor does not apply to later
    challengers."""
    regressed = (
        slice_regressions(slices, greater_is_better, slice_tolerance)
        if champion_score is not None
        else ()
    )
    described = tuple(describe_slice(s, metric, greater_is_better) for s in regressed)
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
    beats = change.better_by(margin)
    needed = margin * abs(champion_score)
    reason = (
        f"challenger v{challenger_version} {metric} {challenger_score:.4f} vs champion "
        f"v{champion_version} {champion_score:.4f}: gain {change.describe_gain()} "
        f"{'>=' if beats else '<'} margin {pct(margin)} ({needed:.4f})"
    )
    if regressed:
        reason += (
            f"; refused: {len(regressed)} slice(s) regress beyond tolerance "
            f"{pct(slice_tolerance)}: " + "; ".join(described)
        )
    return PromotionDecision(beats and not regressed, reason, **args)
