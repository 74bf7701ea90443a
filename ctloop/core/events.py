"""The events the loop emits and reacts to (names, resources and payloads; no Prefect here).

Deployments trigger on these names (deployments/definitions.py); every event names its batch as the
resource and, where there are ones, the model version (`ctloop.model-version.<name>.<v>`), the
metric (`ctloop.metric.<metric>`) and the verdict (`ctloop.verdict.<word>`) as related resources,
with the same facts in the payload, so the Prefect UI's event feed filtered on `ctloop.*` reads as
the loop's history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATA_ARRIVED = "ctloop.data.arrived"
BATCH_VALIDATED = "ctloop.batch.validated"
BATCH_QUARANTINED = "ctloop.batch.quarantined"
BATCH_DUPLICATE = "ctloop.batch.duplicate"
BATCH_MONITORED = "ctloop.batch.monitored"
DRIFT_DETECTED = "ctloop.drift.detected"
PERFORMANCE_DEGRADED = "ctloop.performance.degraded"
ESTIMATED_DEGRADED = "ctloop.performance.estimated_degraded"  # estimated (no labels): CBPE/DLE
RETRAIN_DUE = "ctloop.retrain.due"
RETRAIN_FINISHED = "ctloop.retrain.finished"
SHADOW_PROMOTED = "ctloop.model.shadow_promoted"  # a challenger in shadow became champion
MODEL_TRAINED = "ctloop.model.trained"  # a training registered a version (promoted or not)

RETRAIN_TRIGGERS = frozenset(
    {DRIFT_DETECTED, PERFORMANCE_DEGRADED, ESTIMATED_DEGRADED, RETRAIN_DUE}
)
LANDING_RESOURCE = "ctloop.landing"
BATCH_RESOURCE = "ctloop.batch"
MODEL_VERSION_RESOURCE = "ctloop.model-version"
METRIC_RESOURCE = "ctloop.metric"
VERDICT_RESOURCE = "ctloop.verdict"


@dataclass(frozen=True)
class Event:
    """One event to emit: name, the resource it is about, related resources and payload."""

    name: str
    resource: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)
    related: tuple[dict[str, str], ...] = ()


def model_resource(model_name: str, version: str, role: str = "model-version") -> dict[str, str]:
    """A registered model version as a (related) resource."""
    return {
        "prefect.resource.id": f"{MODEL_VERSION_RESOURCE}.{model_name}.{version}",
        "prefect.resource.role": role,
        "prefect.resource.name": f"{model_name} v{version}",
    }


def batch_resource(batch: str, role: str = "batch") -> dict[str, str]:
    """A batch as a related resource."""
    return {
        "prefect.resource.id": f"{BATCH_RESOURCE}.{batch}",
        "prefect.resource.role": role,
        "prefect.resource.name": batch,
    }


def metric_resource(metric: str) -> dict[str, str]:
    """The metric an event's figures are in, as a related resource."""
    return {
        "prefect.resource.id": f"{METRIC_RESOURCE}.{metric}",
        "prefect.resource.role": "metric",
        "prefect.resource.name": metric,
    }


def verdict_resource(verdict: str) -> dict[str, str]:
    """The decision an event reports (`retrain`, `keep`, `promoted`, `kept`...), as a related
    resource: the Event Feed's resource filter finds every `ctloop.verdict.retrain`."""
    return {
        "prefect.resource.id": f"{VERDICT_RESOURCE}.{verdict.replace(' ', '-')}",
        "prefect.resource.role": "verdict",
        "prefect.resource.name": verdict,
    }


def data_arrived(file_name: str, path: str) -> Event:
    """A file landed; `path` is relative to the landing folder (the monitor resolves it there)."""
    return Event(
        DATA_ARRIVED,
        {"prefect.resource.id": f"{LANDING_RESOURCE}.{file_name}", "prefect.resource.name": path},
        {"path": path},
    )


def batch_event(
    name: str,
    batch: str,
    payload: dict[str, Any],
    model_name: str | None = None,
    model_version: str | None = None,
    metric: str | None = None,
    verdict: str | None = None,
) -> Event:
    """An event about one batch (validated, quarantined, drift, decay, ...): the batch is the
    resource; the model version, metric and verdict (when given) are related resources and in
    the payload (`batch`, `model_version` always; `metric`, `verdict` when given)."""
    related: list[dict[str, str]] = []
    if model_version is not None:
        related.append(model_resource(str(model_name), model_version))
    facts: dict[str, Any] = {"batch": batch, "model_version": model_version}
    if metric is not None:
        related.append(metric_resource(metric))
        facts["metric"] = metric
    if verdict is not None:
        related.append(verdict_resource(verdict))
        facts["verdict"] = verdict
    return Event(
        name,
        {"prefect.resource.id": f"{BATCH_RESOURCE}.{batch}", "prefect.resource.name": batch},
        {**facts, **payload},
        tuple(related),
    )


def model_trained(
    model_name: str,
    version: str,
    holdout: str,
    metric: str,
    verdict: str,
    payload: dict[str, Any],
) -> Event:
    """A training registered `version`: the version is the resource; its holdout batch, the
    metric and the verdict (`promoted` or `kept`) are related and in the payload."""
    return Event(
        MODEL_TRAINED,
        model_resource(model_name, version),
        {
            "model_version": version,
            "batch": holdout,
            "metric": metric,
            "verdict": verdict,
            **payload,
        },
        (
            batch_resource(holdout, "holdout"),
            metric_resource(metric),
            verdict_resource(verdict),
        ),
    )


def shadow_promoted(
    model_name: str, version: str, from_version: str, batch: str, reason: str
) -> Event:
    """The challenger in shadow `version` became champion (was `from_version`) after its win on
    `batch`: the model version is the resource, the batch and the previous champion related."""
    return Event(
        SHADOW_PROMOTED,
        model_resource(model_name, version),
        {
            "model_version": version,
            "from_version": from_version,
            "batch": batch,
            "verdict": "promoted",
            "reason": reason,
        },
        (
            batch_resource(batch),
            model_resource(model_name, from_version, "previous-model-version"),
            verdict_resource("promoted"),
        ),
    )
