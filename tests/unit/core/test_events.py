from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import pytest

from ctloop.core import events

BATCH_EVENT_NAMES = [
    events.BATCH_VALIDATED,
    events.BATCH_QUARANTINED,
    events.BATCH_DUPLICATE,
    events.BATCH_MONITORED,
    events.DRIFT_DETECTED,
    events.PERFORMANCE_DEGRADED,
    events.ESTIMATED_DEGRADED,
    events.RETRAIN_DUE,
    events.RETRAIN_FINISHED,
]
OTHER_EVENT_NAMES = [events.SHADOW_PROMOTED, events.MODEL_TRAINED]


def test_data_arrived_names_the_landed_file() -> None:
    e = events.data_arrived("delivery-2013-07.parquet", "sub/delivery-2013-07.parquet")
    assert e.name == events.DATA_ARRIVED
    assert e.resource["prefect.resource.id"] == "ctloop.landing.delivery-2013-07.parquet"
    assert e.payload == {"path": "sub/delivery-2013-07.parquet"}
    assert e.related == ()


def test_batch_event_carries_batch_version_and_model_resource() -> None:
    e = events.batch_event(
        events.DRIFT_DETECTED, "2013-08", {"reason": "dataset drift"}, "ctloop-flights", "4"
    )
    assert e.name == events.DRIFT_DETECTED
    assert e.resource["prefect.resource.id"] == f"{events.BATCH_RESOURCE}.2013-08"
    assert e.payload == {"batch": "2013-08", "model_version": "4", "reason": "dataset drift"}
    (model,) = e.related
    assert model["prefect.resource.role"] == "model-version"
    assert model["prefect.resource.id"] == "ctloop.model-version.ctloop-flights.4"


def test_batch_event_with_metric_and_verdict_relates_them_and_carries_them() -> None:
    e = events.batch_event(
        events.BATCH_MONITORED, "2013-07", {"batch_score": 0.71}, "m", "3", "roc_auc", "retrain"
    )
    assert e.payload == {
        "batch": "2013-07",
        "model_version": "3",
        "metric": "roc_auc",
        "verdict": "retrain",
        "batch_score": 0.71,
    }
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in e.related}
    assert related == {
        "model-version": "ctloop.model-version.m.3",
        "metric": "ctloop.metric.roc_auc",
        "verdict": "ctloop.verdict.retrain",
    }
    assert all(r["prefect.resource.id"].startswith("ctloop.") for r in e.related)


def test_model_trained_is_about_the_version_with_holdout_metric_and_verdict() -> None:
    e = events.model_trained("m", "5", "2013-08", "roc_auc", "kept", {"reason": "gate: worse"})
    assert e.name == events.MODEL_TRAINED
    assert e.resource["prefect.resource.id"] == "ctloop.model-version.m.5"
    assert e.payload["verdict"] == "kept" and e.payload["batch"] == "2013-08"
    assert e.payload["reason"] == "gate: worse" and e.payload["metric"] == "roc_auc"
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in e.related}
    assert related == {
        "holdout": "ctloop.batch.2013-08",
        "metric": "ctloop.metric.roc_auc",
        "verdict": "ctloop.verdict.kept",
    }
    assert events.MODEL_TRAINED not in events.RETRAIN_TRIGGERS


def test_batch_event_without_version_has_no_related_model() -> None:
    e = events.batch_event(events.BATCH_VALIDATED, "2013-08", {"rows": 10}, "ctloop-flights")
    assert e.related == ()
    assert e.payload["model_version"] is None and e.payload["batch"] == "2013-08"
    assert e.payload["rows"] == 10


def test_retrain_triggers_are_the_four_policy_events() -> None:
    assert {
        events.DRIFT_DETECTED,
        events.PERFORMANCE_DEGRADED,
        events.ESTIMATED_DEGRADED,
        events.RETRAIN_DUE,
    } == set(events.RETRAIN_TRIGGERS)
    assert all(name.startswith("ctloop.") for name in events.RETRAIN_TRIGGERS)
    assert events.RETRAIN_FINISHED not in events.RETRAIN_TRIGGERS  # no retrain loop


def test_every_event_name_is_distinct_and_namespaced() -> None:
    names = [events.DATA_ARRIVED, *BATCH_EVENT_NAMES, *OTHER_EVENT_NAMES]
    assert len(set(names)) == len(names)
    assert all(n.startswith("ctloop.") for n in names)


# --- deployments/serve.py triggers -----------------------------------------------------


def _pattern(trigger: Any) -> str:
    pattern = trigger.match.root["prefect.resource.id"]
    assert isinstance(pattern, str) and pattern.endswith("*")
    return pattern


def _payload_keys(trigger: Any) -> set[str]:
    """Payload fields the trigger's parameter templates read."""
    return {
        m
        for value in trigger.parameters.values()
        for m in re.findall(r"event\.payload\.(\w+)", value)
    }


@pytest.fixture(scope="module")
def serve() -> Any:
    from deployments import serve

    return serve


def test_monitor_trigger_expects_data_arrived_and_matches_its_resource(serve: Any) -> None:
    trigger = serve.monitor_trigger()
    assert set(trigger.expect) == {events.DATA_ARRIVED}
    e = events.data_arrived("flights 2013-07.csv", "flights 2013-07.csv")
    pattern = _pattern(trigger)
    assert fnmatchcase(e.resource["prefect.resource.id"], pattern)
    assert not fnmatchcase(f"{events.BATCH_RESOURCE}.2013-07", pattern)
    assert _payload_keys(trigger) <= set(e.payload)


@pytest.mark.parametrize("name", sorted(events.RETRAIN_TRIGGERS))
def test_retrain_trigger_expects_the_policy_events_and_matches_batches(
    serve: Any, name: str
) -> None:
    trigger = serve.retrain_trigger()
    assert set(trigger.expect) == set(events.RETRAIN_TRIGGERS)
    e = events.batch_event(name, "2013-11", {"reason": "why"}, "m", "2")
    pattern = _pattern(trigger)
    assert fnmatchcase(e.resource["prefect.resource.id"], pattern)
    assert not fnmatchcase(
        events.data_arrived("x.csv", "x.csv").resource["prefect.resource.id"], pattern
    )
    assert _payload_keys(trigger) <= set(e.payload)


def test_shadow_promoted_names_the_model_batch_and_previous_champion() -> None:
    e = events.shadow_promoted("ctloop-flights", "3", "1", "2013-08", "shadow: won 2 ...")
    assert e.name == events.SHADOW_PROMOTED == "ctloop.model.shadow_promoted"
    assert e.resource["prefect.resource.id"] == "ctloop.model-version.ctloop-flights.3"
    assert e.payload == {
        "model_version": "3",
        "from_version": "1",
        "batch": "2013-08",
        "verdict": "promoted",
        "reason": "shadow: won 2 ...",
    }
    batch, previous, verdict = e.related
    assert batch["prefect.resource.id"] == f"{events.BATCH_RESOURCE}.2013-08"
    assert previous["prefect.resource.id"] == "ctloop.model-version.ctloop-flights.1"
    assert verdict["prefect.resource.id"] == "ctloop.verdict.promoted"
    assert events.SHADOW_PROMOTED not in events.RETRAIN_TRIGGERS
