"""Champion/challenger promotion in the MLflow model registry.

The decision is pure (`decide`); the registry writes happen in order: tags on the version first,
then the audit event on the model (tasks/audit.py), then one alias move. `champion` therefore
never points at a version whose record is incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ctloop.faults import crash_point

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


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    margin: float
    min_score: float
    slice_tolerance: float = 0.0
    slice_regressions: tuple[str, ...] = ()  # "column=value (...)" of each refused slice
    slices: tuple[SliceScore, ...] = ()  # every slice compared (in to_dict, not in tags)

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
        none was recorded. The per-slice table is not in tags: `slices` comes back empty."""
        if "promotion.promote" not in tags:
            return None

        def num(key: str) -> float | None:
            raw = tags.get(f"promotion.{key}", "")
            return float(raw) if raw else None

        regressions = tags.get("promotion.slice_regressions", "")
        return cls(
            promote=tags["promotion.promote"] == "True",
            reason=tags.get("promotion.reason", ""),
            metric=tags.get("promotion.metric", ""),
            challenger_version=tags.get("promotion.challenger_version", ""),
            challenger_score=num("challenger_score") or math.nan,
            champion_version=tags.get("promotion.champion_version") or None,
            champion_score=num("champion_score"),
            margin=num("margin") or 0.0,
            min_score=num("min_score") or 0.0,
            slice_tolerance=num("slice_tolerance") or 0.0,
            slice_regressions=tuple(regressions.split("; ")) if regressions else (),
        )


def _clip(text: str, limit: int = 4000) -> str:
    """Registry tag values are limited in length: keep the head, say how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} chars cut)"


def _better(a: float, b: float, greater_is_better: bool) -> float:
    """How much a beats b in the metric's own direction."""
    return a - b if greater_is_better else b - a


def slice_regressions(
    slices: Sequence[SliceScore], greater_is_better: bool, tolerance: float
) -> tuple[SliceScore, ...]:
    """Gated slices on which the challenger is worse than the champion by more than `tolerance`
    (in the metric's own direction: a drop for ROC AUC, a rise for RMSE)."""
    out = []
    for s in slices:
        if not s.gated or s.challenger is None or s.champion is None:
            continue
        if math.isnan(s.challenger) or math.isnan(s.champion):
            continue
        if _better(s.challenger, s.champion, greater_is_better) < -tolerance - 1e-12:
            out.append(s)
    return tuple(out)


def describe_slice(s: SliceScore, metric: str) -> str:
    """`carrier=UA (roc_auc 0.7012 vs champion 0.7420, n=812)`."""
    return f"{s.label} ({metric} {s.challenger:.4f} vs champion {s.champion:.4f}, n={s.n})"


def decide(
    metric: str,
    challenger_version: str,
    challenger_score: float,
    champion_version: str | None,
    champion_score: float | None,
    greater_is_better: bool,
    margin: float,
    min_score: float,
    slices: Sequence[SliceScore] = (),
    slice_tolerance: float = 0.0,
) -> PromotionDecision:
    """Promote when the challenger beats the champion by `margin` on the same holdout and regresses
    no gated slice by more than `slice_tolerance`; the first model (or one whose champion cannot
    score this data) must clear the absolute floor, its slices are reported, not gated."""
    regressed = (
        slice_regressions(slices, greater_is_better, slice_tolerance)
        if champion_score is not None
        else ()
    )
    described = tuple(describe_slice(s, metric) for s in regressed)
    args = dict(
        metric=metric,
        challenger_version=challenger_version,
        challenger_score=challenger_score,
        champion_version=champion_version,
        champion_score=champion_score,
        margin=margin,
        min_score=min_score,
        slice_tolerance=slice_tolerance,
        slice_regressions=described,
        slices=tuple(slices),
    )
    floor_ok = _better(challenger_score, min_score, greater_is_better) >= 0
    word = ">=" if greater_is_better else "<="
    if champion_score is None:
        reason = (
            f"no comparable champion: {metric} {challenger_score:.4f} "
            f"{'meets' if floor_ok else 'misses'} the floor ({word} {min_score})"
        )
        return PromotionDecision(floor_ok, reason, **args)
    gain = _better(challenger_score, champion_score, greater_is_better)
    if not floor_ok:
        reason = f"{metric} {challenger_score:.4f} misses the floor ({word} {min_score})"
        return PromotionDecision(False, reason, **args)
    beats = gain >= margin
    reason = (
        f"challenger v{challenger_version} {metric} {challenger_score:.4f} vs champion "
        f"v{champion_version} {champion_score:.4f}: gain {gain:+.4f} "
        f"{'>=' if beats else '<'} margin {margin}"
    )
    if regressed:
        reason += (
            f"; refused: {len(regressed)} slice(s) regress beyond tolerance {slice_tolerance}: "
            + "; ".join(described)
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

    from tasks.recovery import VERSION_TAG as INTERRUPTED

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

    from tasks.recovery import VERSION_TAG as INTERRUPTED

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
    from tasks import model_io

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

    from tasks import audit  # audit imports this module: imported here, no cycle

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
