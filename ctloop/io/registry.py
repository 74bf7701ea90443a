"""Champion/challenger promotion in the MLflow model registry.

The decision is pure (`decide`); the registry writes happen in order: tags on the version first,
then the audit event on the model (ctloop/io/audit.py), then one alias move. `champion` therefore
never points at a version whose record is incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ctloop.core.faults import crash_point
from ctloop.core.thresholds import CONSTANT_BASELINE, MIN_SCORE, Change, Floor, FloorOrigin, pct

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(RuntimeError):
    """The registry refuses a move (e.g. a version that is not READY)."""


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


def get_alias(name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None (no model or no alias yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def versions(name: str) -> list[ModelVersion]:
    """Every version of the registered model, oldest first (none when it does not exist)."""
    from mlflow import MlflowClient

    found = MlflowClient().search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


RUN_TAG = "ctloop.run_id"  # the training run that gated the version (a re-run may adopt one)
RECOVERED_TAG = "ctloop.recovered_from"


def gated_version_of_run(name: str, run_id: str) -> ModelVersion | None:
    """The version `run_id` registered or adopted (`adopt_version`), if it is READY, went
    through the gate (its decision is tagged) and was not left by an interrupted run; else
    None."""
    from mlflow import MlflowClient

    from ctloop.ops.recovery import VERSION_TAG as INTERRUPTED

    client = MlflowClient()
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    found += client.search_model_versions(f"name = '{name}' and tags.`{RUN_TAG}` = '{run_id}'")
    for version in sorted(found, key=lambda v: -int(v.version)):
        tags = version.tags or {}
        if version.status == "READY" and "promotion.promote" in tags and INTERRUPTED not in tags:
            return version
    return None


def registered_by(name: str, run_id: str) -> list[ModelVersion]:
    """The READY versions `run_id` registered, newest first."""
    from mlflow import MlflowClient

    found = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    ready = [v for v in found if v.status == "READY"]
    return sorted(ready, key=lambda v: -int(v.version))


def adopt_version(name: str, version: str, run_id: str, failed_run_id: str) -> None:
    """Let the training run `run_id` finish a version that the failed run `failed_run_id`
    registered with the same fingerprint (instead of registering an identical one): the version
    is tagged with the new run and where it came from; the interrupted mark (kept in the
    `ctloop.recovered_from` tag) no longer hides it from the gate's bookkeeping."""
    from mlflow import MlflowClient

    from ctloop.ops.recovery import VERSION_TAG as INTERRUPTED

    client = MlflowClient()
    tags = client.get_model_version(name, version).tags or {}
    note = f"{failed_run_id}: {tags[INTERRUPTED]}" if INTERRUPTED in tags else failed_run_id
    client.set_model_version_tag(name, version, RECOVERED_TAG, note)
    client.set_model_version_tag(name, version, RUN_TAG, run_id)
    if INTERRUPTED in tags:
        client.delete_model_version_tag(name, version, INTERRUPTED)


def load_version(name: str, version: str) -> Pipeline:
    """Load a registered scikit-learn pipeline from the configured registry.

    skops versions load with no pickle and only types from model_io.TRUSTED_MODULES
    (model_io.ModelSafetyError otherwise); versions saved with cloudpickle before load with a
    model_io.LegacyModelWarning, pickle being allowed for that one load only."""
    from ctloop.io import model_io

    model: Pipeline = model_io.load_registered(name, version)
    return model


def mark_challenger(name: str, version: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)


def apply_decision(name: str, decision: PromotionDecision) -> None:
    """Record the decision on the version and (if promoted) the audit event on the model, then
    move `champion` in one call: the alias never moves without its record, nor to a version
    that is not READY. A crash before the move leaves the old champion and an unapplied event."""
    from mlflow import MlflowClient

    from ctloop.io import audit  # audit imports this module: imported here, no cycle

    client = MlflowClient()
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, decision.challenger_version, key, value)
    if not decision.promote:
        return
    current = get_alias(name, CHAMPION)
    if current is not None and str(current.version) == decision.challenger_version:
        return  # applied already (a re-run finishing a failed run's version): no second event
    status = client.get_model_version(name, decision.challenger_version).status
    if status != "READY":
        raise RegistryError(
            f"model '{name}': v{decision.challenger_version} is {status}, not READY: not promoted"
        )
    previous = get_alias(name, CHAMPION)
    event = audit.new_event(
        "promote",
        None if previous is None else str(previous.version),
        decision.challenger_version,
        decision.reason,
        metric=decision.metric,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
    )
    audit.record_event(name, event)
    crash_point("promotion")  # tests only (CTLOOP_CRASH_AT): event recorded, alias not moved
    client.set_registered_model_alias(name, CHAMPION, decision.challenger_version)
