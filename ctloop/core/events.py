"""The events the loop emits and reacts to (names, resources and payloads; no Prefect here).

Deployments trigger on these names (deployments/definitions.py); every event names its batch as the
resource and, where there is one, the model version as a related resource, so the Prefect UI's
event feed reads as the loop's history.
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

RETRAIN_TRIGGERS = frozenset(
    {DRIFT_DETECTED, PERFORMANCE_DEGRADED, ESTIMATED_DEGRADED, RETRAIN_DUE}
)
LANDING_RESOURCE = "ctloop.landing"
BATCH_RESOURCE = "ctloop.batch"


@dataclass(frozen=True)
class Event:
    """One event to emit: name, the resource it is about, related resources and payload."""

    name: str
    resource: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)
    related: tuple[dict[str, str], ...] = ()


def model_resource(model_name: str, version: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"ctloop.model.{model_name}.{version}",
        "prefect.resource.role": "model",
        "prefect.resource.name": f"{model_name} v{version}",
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
) -> Event:
    """An event about one batch (validated, quarantined, drift, decay, ...)."""
    related = () if model_version is None else (model_resource(str(model_name), model_version),)
    return Event(
        name,
        {"prefect.resource.id": f"{BATCH_RESOURCE}.{batch}", "prefect.resource.name": batch},
        {"batch": batch, "model_version": model_version, **payload},
        related,
    )


def shadow_promoted(
    model_name: str, version: str, from_version: str, batch: str, reason: str
) -> Event:
    """The challenger in shadow `version` became champion (was `from_version`) after its win on
    `batch`: the model version is the resource, the batch and the previous champion related."""
    return Event(
        SHADOW_PROMOTED,
        model_resource(model_name, version),
        {"model_version": version, "from_version": from_version, "batch": batch, "reason": reason},
        (
            {
                "prefect.resource.id": f"{BATCH_RESOURCE}.{batch}",
                "prefect.resource.role": "batch",
                "prefect.resource.name": batch,
            },
            {**model_resource(model_name, from_version), "prefect.resource.role": "previous-model"},
        ),
    )
