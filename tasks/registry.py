"""Champion/challenger promotion in the MLflow model registry.

The decision is pure (`decide`); the registry writes happen in order: tags on the version first,
then the audit event on the model (tasks/audit.py), then one alias move. `champion` therefore
never points at a version whose record is incomplete.
"""

from __future__ import annotations

import os
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """The decision as registry tags on the challenger version."""
        return {f"promotion.{k}": "" if v is None else str(v) for k, v in self.to_dict().items()}


def _better(a: float, b: float, greater_is_better: bool) -> float:
    """How much a beats b in the metric's own direction."""
    return a - b if greater_is_better else b - a


def decide(
    metric: str,
    challenger_version: str,
    challenger_score: float,
    champion_version: str | None,
    champion_score: float | None,
    greater_is_better: bool,
    margin: float,
    min_score: float,
) -> PromotionDecision:
    """Promote when the challenger beats the champion by `margin` on the same holdout; the first
    model (or one whose champion cannot score this data) must clear the absolute floor."""
    args = dict(
        metric=metric,
        challenger_version=challenger_version,
        challenger_score=challenger_score,
        champion_version=champion_version,
        champion_score=champion_score,
        margin=margin,
        min_score=min_score,
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
    promote = gain >= margin
    reason = (
        f"challenger v{challenger_version} {metric} {challenger_score:.4f} vs champion "
        f"v{champion_version} {champion_score:.4f}: gain {gain:+.4f} "
        f"{'>=' if promote else '<'} margin {margin}"
    )
    return PromotionDecision(promote, reason, **args)


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


def load_version(name: str, version: str) -> Pipeline:
    """Load a registered scikit-learn pipeline.

    Only the configured registry is read, which ctloop itself writes, so deserialisation is
    allowed explicitly here (MLflow refuses pickled models otherwise).
    """
    import mlflow

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


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
