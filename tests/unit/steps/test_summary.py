from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ctloop.core.env import RUN_SERVER_ENV
from ctloop.steps.summary import TrainingSummary


def test_summary_names_every_figure_in_aligned_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = TrainingSummary(
        data_version="abc.dir",
        batches="2013-01..2013-07",
        validation="passed (7 batches)",
        metric="roc_auc",
        best_params={"max_depth": 7, "learning_rate": 0.073151},
        cv_mean=0.781,
        cv_std=0.0032,
        n_trials=10,
        n_pruned=7,
        holdout_score=0.751,
        holdout_batches="2013-06",
        model_version="1",
        promoted=True,
        promotion_reason="meets the floor",
        drift_batch="2013-07",
        dataset_drift=True,
        drifted_columns=("temp", "dewp"),
        drift_report=Path("reports/drift/drift-2013-07.html"),
        validation_report=Path("reports/validation.json"),
        tracking_uri="sqlite:///mlflow.db",
        mlflow_run_id="r1",
    )
    text = summary.render()
    for expected in (
        "abc.dir",
        "0.7810 ± 0.0032",
        "10 trials, 7 pruned",
        "0.7510",
        "v1 PROMOTED to @champion",
        "dataset drift YES",
        "temp, dewp",
        "learning_rate=0.07315",
        "mlflow ui --backend-store-uri sqlite:///mlflow.db",
        "`ctloop up`",
    ):
        assert expected in text
    assert "--port 5000" in text
    assert "mlflow.db --port 15000" in replace(summary, mlflow_port=15000).render()  # stack port
    labelled = [line for line in text.splitlines()[1:7]]
    served = replace(
        summary, tracking_uri="http://127.0.0.1:5000", prefect_api_url="http://h:4200/api"
    )
    assert "MLflow UI  : http://127.0.0.1:5000 (run r1)" in served.render()
    page = "http://127.0.0.1:5000/#/experiments/1/runs/r1?workflowType=machine_learning"
    linked = replace(served, mlflow_run_url=page).render()
    assert f"MLflow UI  : {page} (run r1)" in linked
    assert "Prefect UI : http://h:4200" in served.render().splitlines()[-1]
    # a command's run server has no UI: the line says where the run will show up instead
    monkeypatch.setenv(RUN_SERVER_ENV, "http://127.0.0.1:41234/api")
    monkeypatch.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200")
    on_run_server = replace(summary, prefect_api_url="http://127.0.0.1:41234/api").render()
    assert "`ctloop up`, then http://127.0.0.1:4200" in on_run_server.splitlines()[-1]
    assert "41234" not in on_run_server
    assert len({line.index(":") for line in labelled}) == 1  # the colons line up


def test_the_drift_report_line_gives_its_http_page_beside_the_file() -> None:
    base = TrainingSummary.from_dict(
        {
            **{f: "x" for f in ("data_version", "batches", "validation", "metric")},
            **{f: "x" for f in ("holdout_batches", "model_version", "promotion_reason")},
            **{"drift_batch": "2013-07", "tracking_uri": "sqlite:///m.db", "mlflow_run_id": "r1"},
            "best_params": {},
            **{f: 0.5 for f in ("cv_mean", "cv_std", "holdout_score")},
            **{"n_trials": 1, "n_pruned": 0, "promoted": False, "dataset_drift": False},
            "drifted_columns": [],
            "drift_report": "reports/drift/2013-07/ref-a..b-k.v2.html",
            "validation_report": "reports/validation.json",
        }
    )  # a summary kept before the URL was: no drift_report_url
    assert base.drift_report_url is None
    assert "drift report     : reports/drift/2013-07/ref-a..b-k.v2.html" in base.render()
    url = "http://127.0.0.1:5000/#/experiments/1/runs/r1/artifacts/drift/ref-a..b-k.v2.html"
    text = replace(base, drift_report_url=url).render()
    assert f"drift report     : {url}" in text
    assert "(reports/drift/2013-07/ref-a..b-k.v2.html)" in text
    assert (
        TrainingSummary.from_dict(replace(base, drift_report_url=url).to_dict()).drift_report_url
        == url
    )
