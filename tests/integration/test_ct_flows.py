"""Continuous training on a real slice: monitor-batch and retrain-model under the session's Prefect
test server, with a temporary MLflow SQLite store and DVC repository."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop.core.config import Project, override
from ctloop.io import data, registry, tracking
from ctloop.ml.validation import ValidationFailed
from ctloop.steps import estimate, monitoring, replay
from flows.monitor_batch import monitor_batch
from flows.retrain_model import retrain_model
from flows.train_model import train_model
from tests.conftest import new_project, sample_months
from tests.integration.conftest import SMALL, copy_project

CT_MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]


@pytest.fixture(scope="module")
def ct_source(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    """1,200 real rows per month, Jan-May 2013 (prepared columns: the target is `is_late`)."""
    return sample_months(default_batches, CT_MONTHS, 1200)


@pytest.fixture(scope="module")
def ct_trained(ct_source: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Initial load Jan-Mar (train Jan-Feb, holdout Mar), trained once (champion v1); April and
    May arrive by the landing."""
    root = tmp_path_factory.mktemp("ct")
    source = root / "initial.parquet"
    ct_source[ct_source["date"] < "2013-04-01"].to_parquet(source, index=False)
    changes: dict[str, Any] = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(source)},
        "continuous": {
            "retrain_on_drift": True,
            "window": "sliding",
            "window_periods": 3,
            "cooldown_minutes": 0,
        },
        "drift": {"drift_share": 0.3},
    }
    project = new_project(root / "proj", changes)
    train_model(params_path=str(project.root / "params.yaml"))
    return project


@pytest.fixture
def ct_project(ct_trained: Project, tmp_path: Path) -> Project:
    """Each test its own copy of the trained project (tree and MLflow store)."""
    return copy_project(ct_trained, tmp_path / "proj")


def _deliver(project: Project, frame: pd.DataFrame, period: str, labelled: bool = True) -> Path:
    rows = frame[frame["date"].dt.strftime("%Y-%m") == period].reset_index(drop=True)
    delivered = replay.delivery_frame(rows, project.params.data, labelled)
    return replay.write_delivery(
        delivered, project.path("landing"), replay.Delivery(period, labelled)
    )


def _drifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Injected drift inside the validation ranges: one carrier and airport, hotter, windier."""
    out = frame.copy()
    out["carrier"] = "UA"
    out["origin"] = "EWR"
    out["temp"] = out["temp"] + 25
    out["dewp"] = out["dewp"] + 25
    out["wind_speed"] = out["wind_speed"] * 2
    out["sched_dep_time"] = 2100
    return out


def test_monitor_scores_reports_and_retrain_promotes_with_reasons(
    ct_project: Project, ct_source: pd.DataFrame
) -> None:
    p = ct_project
    started = datetime.now(UTC)  # events of other tests on the same server are older
    params = str(p.root / "params.yaml")
    april = ct_source.assign(date=ct_source["date"])
    landed = _deliver(p, _drifted(april), "2013-04")

    [result] = monitor_batch(path=landed.name, params_path=params)
    assert (result.batch, result.status, result.model_version) == ("2013-04", "monitored", "1")
    assert result.retrain and any(r.startswith("drift") for r in result.reasons)
    scored = pd.read_parquet(monitoring.predictions_path(p, "2013-04", "1"))
    assert len(scored) == 1200 and set(scored["model_version"]) == {"1"}
    assert scored["score"].between(0, 1).all()
    assert (p.path("reports") / "drift" / "drift-2013-04.html").is_file()

    tracking.use_store(p.tracking_uri)
    client = MlflowClient()
    [run] = client.search_runs(
        [client.get_experiment_by_name("ctloop-monitoring").experiment_id],
        "tags.`ctloop.kind` = 'monitoring'",
    )
    assert run.data.tags["ctloop.batch"] == "2013-04"
    assert run.data.tags["ctloop.retrain"] == "True"
    assert "batch_roc_auc" in run.data.metrics and "drifted_share" in run.data.metrics

    assert run.info.run_name == "monitor 2013-04 v1"
    assert "Verdict: **RETRAIN**" in run.data.tags[tracking.NOTE_TAG]
    kinds = {
        name: client.get_experiment_by_name(name).tags[tracking.EXPERIMENT_KIND_TAG]
        for name in ("ctloop", "ctloop-monitoring")
    }
    assert kinds == dict.fromkeys(kinds, tracking.CLASSIC_ML_KIND)  # the UI opens on the runs

    # the same file again: no second ingestion, nothing monitored
    [again] = monitor_batch(path=landed.name, params_path=params)
    assert again.status == "duplicate"

    first = retrain_model(params_path=params, trigger="ctloop.drift.detected", batch="2013-04")
    assert first.skipped is None and first.window == "2013-02..2013-04"
    assert first.model_version == "2"
    _prefect_pages_say_what_they_are(first.promoted, started)
    # the line `ctloop replay` prints for the month, read back from MLflow
    facts, retrains = replay.read_month(p, "2013-04", 0)
    row = replay.month_row(facts, retrains, None)
    assert row[:2] == ("2013-04", f"v1 (holdout {facts.champion_holdout:.4f})")
    assert row[2] == f"{run.data.metrics['batch_roc_auc']:.4f}" and "drift" in row[4]
    m = run.data.metrics
    estimated = (m["estimated_roc_auc"], m["estimated_roc_auc_lower"], m["estimated_roc_auc_upper"])
    assert row[3] == replay.estimate_text(estimated) and row[3].startswith(f"{estimated[0]:.4f} [")
    outcome = "promoted" if first.promoted else "kept the champion"
    assert row[5].startswith("v2 on 2013-02..04: ") and row[5].endswith(outcome)
    trained = client.search_runs(
        [client.get_experiment_by_name("ctloop").experiment_id],
        "tags.`ctloop.kind` = 'training' and tags.`ctloop.model_version` = '2'",
    )
    assert [r.info.run_name for r in trained] == ["v2 train 2013-02..04 drift"]
    assert "Registered **v2**" in trained[0].data.tags[tracking.NOTE_TAG]
    if first.promoted:  # the promoted version holds `champion` only
        assert registry.get_alias("ctloop-test", registry.CHALLENGER) is None
    version = client.get_model_version("ctloop-test", "2")
    assert version.tags["ctloop.trigger"] == "ctloop.drift.detected"
    assert "2013-04" in version.tags["ctloop.trigger_reason"]
    assert version.tags["promotion.promote"] == str(first.promoted)

    # a burst of the same trigger: the window is unchanged, nothing is trained again
    second = retrain_model(params_path=params, trigger="ctloop.drift.detected", batch="2013-04")
    assert second.skipped is not None and "unchanged" in second.skipped
    assert len(client.search_model_versions("name = 'ctloop-test'")) == 2


def _prefect_pages_say_what_they_are(promoted: bool, since: datetime) -> None:
    """Read back from the Prefect API: the flow runs are named after their work, and the
    monitor's events (those since `since`: other tests monitor 2013-04 on the same server)
    relate the batch's model version, metric and verdict."""
    import time

    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    from ctloop.core import events
    from flows.runtime import send_events

    with get_client(sync_client=True) as client:
        run_names = {r.name for r in client.read_flow_runs(limit=200)}
    assert {"monitor 2013-04", "retrain 2013-04 (drift)"} <= run_names
    assert "train 2013-02..2013-04 (drift)" in run_names  # the retrain's training subflow

    send_events()
    wanted = EventFilter(
        event=EventNameFilter(name=[events.BATCH_MONITORED, events.RETRAIN_FINISHED]),
        resource=EventResourceFilter(id=["ctloop.batch.2013-04"]),
        occurred=EventOccurredFilter(since=since),
    )
    found: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while len(found) < 2 and time.monotonic() < deadline:  # the server stores events a bit later
        with get_client(sync_client=True) as client:
            found = {e.event: e for e in client.read_events(filter=wanted, limit=50).events}
        time.sleep(1)
    monitored, finished = found[events.BATCH_MONITORED], found[events.RETRAIN_FINISHED]
    # Prefect adds the flow, flow run and task run that emitted it; ctloop's own are these
    related = {r.role: r.id for r in monitored.related if r.id.startswith("ctloop.")}
    assert related == {
        "model-version": "ctloop.model-version.ctloop-test.1",
        "metric": "ctloop.metric.roc_auc",
        "verdict": "ctloop.verdict.retrain",
    }
    assert monitored.payload["verdict"] == "retrain" and monitored.payload["batch"] == "2013-04"
    verdict = "promoted" if promoted else "kept"
    assert {r.role: r.id for r in finished.related}["verdict"] == f"ctloop.verdict.{verdict}"
    assert finished.payload["model_version"] == "2"


def test_labels_arriving_later_are_measured_then(
    ct_project: Project, ct_source: pd.DataFrame
) -> None:
    p = ct_project
    params = str(p.root / "params.yaml")
    features = _deliver(p, ct_source, "2013-04", labelled=False)
    [unlabelled] = monitor_batch(path=features.name, params_path=params)
    assert unlabelled.status == "monitored"
    assert not any(r.startswith("decay") for r in unlabelled.reasons)
    stored = data.read_batches(p.path("batches"), ["2013-04"])
    assert stored["is_late"].isna().all()

    labels = _deliver(p, ct_source, "2013-04", labelled=True)
    [labelled] = monitor_batch(path=labels.name, params_path=params)
    assert labelled.status == "monitored"
    stored = data.read_batches(p.path("batches"), ["2013-04"])
    assert stored["is_late"].notna().sum() > 1000
    tracking.use_store(p.tracking_uri)
    client = MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name("ctloop-monitoring").experiment_id],
        "tags.`ctloop.kind` = 'monitoring'",
        order_by=["attributes.start_time ASC"],
    )
    assert ["batch_roc_auc" in r.data.metrics for r in runs] == [False, True]

    # the estimate (CBPE) on both: with its interval; the labelled one also its error
    for r in runs:
        m = r.data.metrics
        assert (
            m["estimated_roc_auc_lower"] <= m["estimated_roc_auc"] <= m["estimated_roc_auc_upper"]
        )
        assert 0.5 < m["estimated_roc_auc"] < 1 and "estimated_accuracy" in m
        assert r.data.tags["ctloop.estimation_method"] == "cbpe-isotonic"  # 1,200 holdout rows
        # the holdout rows were kept: the interval includes the calibrator's fitting error
        assert r.data.tags[estimate.INTERVAL_TAG] == "rows+labels+calibration"
    assert "estimation_error" not in runs[0].data.metrics
    error = runs[1].data.metrics["estimation_error"]
    measured = runs[1].data.metrics["batch_roc_auc"]
    assert error == pytest.approx(runs[1].data.metrics["estimated_roc_auc"] - measured)
    assert abs(error) < 0.1
    champion = monitoring.current_champion(p)
    assert champion is not None and champion.run_id
    record = tracking.read_json_artifact(champion.run_id, estimate.ESTIMATOR_JSON)
    assert record is not None and record["calibrator"]["method"] == "isotonic"
    rows = tracking.read_parquet_artifact(champion.run_id, estimate.CALIBRATION_ROWS)
    assert rows is not None and len(rows) == record["calibrator"]["rows"]


def test_a_version_without_an_estimator_is_monitored_without_estimate(
    ct_project: Project, ct_source: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    p = ct_project
    features = _deliver(p, ct_source, "2013-04", labelled=False)
    monitor_batch(path=features.name, params_path=str(p.root / "params.yaml"))
    champion = monitoring.current_champion(p)
    assert champion is not None
    old = replace(champion, run_id=None)  # as a version registered before estimators were kept
    path = monitoring.predictions_path(p, "2013-04", champion.version)
    capsys.readouterr()
    assert estimate.estimate_batch(p, "2013-04", old, "unused", path, None) is None
    assert "estimate skipped" in capsys.readouterr().out


def test_bad_delivery_is_quarantined_and_champion_kept(
    ct_project: Project, ct_source: pd.DataFrame
) -> None:
    p = ct_project
    bad = ct_source.assign(distance=ct_source["distance"] * 1000)
    landed = _deliver(p, bad, "2013-04")
    with pytest.raises(ValidationFailed, match=r"2013-04.*distance.*ranges"):
        monitor_batch(path=landed.name, params_path=str(p.root / "params.yaml"))
    assert (p.path("quarantine") / "2013-04" / "reason.txt").is_file()
    assert "2013-04" not in data.list_batches(p.path("batches"))
    tracking.use_store(p.tracking_uri)
    assert str(registry.get_alias("ctloop-test", registry.CHAMPION).version) == "1"


def test_paths_outside_the_landing_folder_are_refused(ct_project: Project) -> None:
    with pytest.raises(monitoring.LandingError, match="landing_path"):
        monitor_batch(path="../../params.yaml", params_path=str(ct_project.root / "params.yaml"))


def test_cooldown_skips_a_retrain_after_a_recent_one(
    ct_project: Project, ct_source: pd.DataFrame
) -> None:
    p = ct_project
    params = str(p.root / "params.yaml")
    monitor_batch(path=_deliver(p, ct_source, "2013-04").name, params_path=params)
    assert retrain_model(params_path=params, trigger="ctloop.retrain.due").skipped is None
    monitor_batch(path=_deliver(p, ct_source, "2013-05").name, params_path=params)
    cooling = override(p, {"continuous.cooldown_minutes": 60})
    plan = monitoring.plan_retrain(cooling)
    assert plan.holdout == ("2013-05",) and plan.skip and plan.skip.startswith("cooldown")
    assert monitoring.plan_retrain(p).skip is None  # without the cooldown it would run
