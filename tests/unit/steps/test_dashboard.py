"""What a monitored batch puts in its dashboard snapshot, and the URLs of its pages (pure)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from ctloop.core import policy
from ctloop.core.config import load_project
from ctloop.ml.drift import DriftSummary
from ctloop.steps import dashboard, drift_report
from ctloop.steps.monitoring import Champion

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 2, 3, 4, 5)


def _summary(n_drifted: int = 2, n: int = 8) -> DriftSummary:
    return DriftSummary(n_drifted / n >= 0.5, 0.5, n_drifted / n, n_drifted, n, (), 100, 50)


def _signals(score: float | None, estimate: float | None) -> policy.Signals:
    return policy.Signals(
        batch="2013-07",
        model_version="3",
        dataset_drift=False,
        drifted_columns=("temp",),
        drifted_share=0.25,
        metric="roc_auc",
        batch_score=score,
        reference_score=0.79,
        batches_since_training=1,
        estimated_score=estimate,
        estimated_lower=None if estimate is None else estimate - 0.01,
        estimated_upper=None if estimate is None else estimate + 0.01,
    )


CHAMPION = Champion("m", "3", ("2013-01", "2013-02", "2013-06"), ("2013-06",), 0.79)


def _verdict(decay: bool) -> policy.Verdict:
    return policy.Verdict(drift=False, decay=decay, due=False, decay_amount=None, reasons=())


@pytest.mark.parametrize(
    ("batch", "when"),
    [
        ("2013-07", datetime(2013, 7, 1)),
        ("2013-07-08", datetime(2013, 7, 8)),
        ("2013", datetime(2013, 1, 1)),
        ("2013Q3", datetime(2013, 7, 1)),
        ("part-00004", NOW),
    ],
)
def test_a_batch_sits_at_the_start_of_its_period(batch: str, when: datetime) -> None:
    assert dashboard.batch_time(batch, NOW) == when


def test_ids_are_derived_from_model_batch_version_and_content() -> None:
    a = dashboard.snapshot_id("m", "2013-07", "3", "abc")
    assert a == dashboard.snapshot_id("m", "2013-07", "3", "abc")
    others = [
        ("m", "2013-07", "4", "abc"),
        ("m", "2013-08", "3", "abc"),
        ("m", "2013-07", "3", "x"),
    ]
    assert all(dashboard.snapshot_id(*o) != a for o in others)
    assert dashboard.project_id("m") != dashboard.project_id("n")


def test_labelled_batch_entry_carries_realized_estimate_and_markers() -> None:
    e = dashboard.entry(
        "m",
        "2013-07",
        CHAMPION,
        _signals(0.74, 0.77),
        _verdict(True),
        _summary(),
        (50, 48),
        "c",
        True,
        NOW,
    )
    assert e.values["realized_roc_auc"] == 0.74
    assert e.values["estimated_roc_auc"] == 0.77
    assert e.values["estimated_roc_auc_lower"] == pytest.approx(0.76)
    assert e.values["holdout_roc_auc"] == 0.79
    assert (e.values["retrain"], e.values["new_champion"]) == (1.0, 1.0)
    assert (e.values["drifted_columns"], e.values["compared_columns"]) == (2.0, 8.0)
    # the threshold beside the share: the panel's axis has a range even when every share is equal
    assert (e.values["drifted_share"], e.values["drift_threshold"]) == (0.25, 0.5)
    assert (e.values["rows"], e.values["labelled_rows"]) == (50.0, 48.0)
    assert {"batch:2013-07", "model:v3", "trigger:decay", "labelled"} == set(e.tags)
    assert e.metadata["reference"] == "2013-01..2013-06" and e.metadata["verdict"] == "retrain"
    assert "2013-07" in e.header and "v3" in e.header and "2013-01..2013-06" in e.header
    assert e.timestamp == datetime(2013, 7, 1)


def test_unlabelled_batch_has_no_realized_value_and_trigger_none() -> None:
    e = dashboard.entry(
        "m",
        "2013-07",
        CHAMPION,
        _signals(None, None),
        _verdict(False),
        _summary(),
        (50, 0),
        "c",
        False,
        NOW,
    )
    assert "realized_roc_auc" not in e.values and "estimated_roc_auc" not in e.values
    assert (e.values["retrain"], e.values["new_champion"]) == (0.0, 0.0)
    assert {"trigger:none", "unlabelled"} <= set(e.tags)
    every = {n for p in dashboard.panels("roc_auc") for n, _ in p.values}
    assert set(dashboard.value_names("roc_auc")) == every  # every value has a panel


def test_new_champion_only_on_a_versions_first_batch_after_another_version() -> None:
    seen = [{"timestamp": "2013-07-01T00:00:00", "metadata": {"model_version": "3"}}]
    assert not dashboard.is_new_champion(seen, "3", datetime(2013, 8, 1))
    assert dashboard.is_new_champion(seen, "4", datetime(2013, 8, 1))
    # nothing monitored before: the project's first champion replaced no one
    assert not dashboard.is_new_champion(seen, "3", datetime(2013, 6, 1))
    assert not dashboard.is_new_champion([], "1", datetime(2013, 8, 1))
    later = [*seen, {"timestamp": "2013-09-01T00:00:00", "metadata": {"model_version": "4"}}]
    assert dashboard.is_new_champion(later, "4", datetime(2013, 8, 1))  # before its own first


def test_urls_are_http_on_the_configured_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = load_project(ROOT / "params.yaml")
    sid = dashboard.snapshot_id("m", "2013-07", "3", "c")
    url = dashboard.snapshot_url(project, "m", sid)
    assert url == f"http://127.0.0.1:8000/projects/{dashboard.project_id('m')}/reports/{sid}"
    assert drift_report.mlflow_ui_url(project) == "http://127.0.0.1:5000"
    link = drift_report.artifact_url("http://h:5000", "7", "abc", "drift/ref-a b.html")
    assert link == (
        "http://h:5000/#/experiments/7/runs/abc/artifacts/drift/ref-a%20b.html"
        "?workflowType=machine_learning"  # MLflow's UI otherwise shows its GenAI view
    )
    runs = drift_report.runs_url("http://h:5000", "7")
    assert runs == "http://h:5000/#/experiments/7/runs?workflowType=machine_learning"
    run = drift_report.runs_url("http://h:5000", "7", "abc")
    assert run == "http://h:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:9000/")
    assert drift_report.mlflow_ui_url(project) == "http://tracking:9000"


def test_drift_title_names_batch_and_reference() -> None:
    title = drift_report.drift_title(("2013-01", "2013-06"), "2013-07")
    assert title == "Data drift of batch 2013-07 against the reference 2013-01..2013-06"
    assert drift_report.period(("2013-01",)) == "2013-01" and drift_report.period(()) == "none"
