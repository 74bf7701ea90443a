"""The estimate step (ctloop/steps/estimate.py) against real MLflow runs (SQLite in tmp_path):
the holdout's calibration rows are kept with the training run and widen the monitor's interval;
a version trained before they were kept gets the old interval and a line saying so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from ctloop.core.config import Project, parse_params
from ctloop.core.schema import Schema
from ctloop.io import tracking
from ctloop.ml.estimation import Estimate
from ctloop.steps import estimate
from ctloop.steps.fit import TrainingData
from ctloop.steps.monitoring import Champion


def _project(root: Path) -> Project:
    params = parse_params(
        {
            "data": {"target": "y", "task": "classification"},
            "model": {
                "search_space": {"xgboost": {"max_depth": {"type": "int", "low": 2, "high": 3}}}
            },
            "promotion": {"model_name": "estimate-model"},
            "continuous": {"estimate_bootstrap": 50},
        }
    )
    return Project(root=root, params=params)


def _rows(seed: int, n: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x))).astype(int)
    return pd.DataFrame({"x": x}), pd.Series(y, name="y")


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Project, str, Pipeline, pd.DataFrame]:
    """A project, a training run with its estimator fitted on a 1,200-row holdout (isotonic),
    the model and a batch's features."""
    project = _project(tmp_path)
    X, y = _rows(0, 1200)
    model = Pipeline([("lr", LogisticRegression())]).fit(X, y)
    schema = Schema(
        target="y", task="classification", numeric=("x",), categorical=(), time_column=None
    )
    holdout = TrainingData(X=X, y=y, schema=schema, unlabelled_rows=0)
    exp = tracking.use_experiment(project)
    run_id = tracking.start_parent_run(exp, "train", {})
    record = estimate.fit_estimator(project, run_id, model, holdout)
    assert record is not None and record["calibrator"]["method"] == "isotonic"
    batch, _ = _rows(1, 3000)
    return project, run_id, model, batch


def _monitor(
    project: Project, run_id: str, model: Pipeline, batch: pd.DataFrame, tmp_path: Path
) -> tuple[str, Estimate | None]:
    path = tmp_path / "scores.parquet"
    pd.DataFrame({"score": model.predict_proba(batch)[:, 1]}).to_parquet(path)
    champion = Champion("estimate-model", "1", ("a",), ("b",), 0.7, run_id=run_id)
    exp = tracking.use_experiment(project)
    monitoring_run = tracking.start_parent_run(exp, "monitor", {})
    found = estimate.estimate_batch(project, "b1", champion, monitoring_run, path, None)
    return monitoring_run, found


def test_the_calibration_rows_are_kept_and_used(
    trained: tuple[Project, str, Pipeline, pd.DataFrame],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project, run_id, model, batch = trained
    rows = tracking.read_parquet_artifact(run_id, estimate.CALIBRATION_ROWS)
    assert rows is not None and list(rows.columns) == ["score", "label"] and len(rows) == 1200
    assert set(rows["label"]) == {0, 1}
    capsys.readouterr()
    monitoring_run, found = _monitor(project, run_id, model, batch, tmp_path)
    assert found is not None and found.interval == "rows+labels+calibration"
    tags = tracking.run_tags(monitoring_run)
    assert tags[estimate.INTERVAL_TAG] == "rows+labels+calibration"
    assert "incl. the calibrator's error" in capsys.readouterr().out


def test_a_version_without_calibration_rows_gets_the_narrower_interval_and_a_line(
    trained: tuple[Project, str, Pipeline, pd.DataFrame],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project, run_id, model, batch = trained
    _, with_rows = _monitor(project, run_id, model, batch, tmp_path)
    # a version trained before the rows were kept: the same estimator.json, no calibration.parquet
    record = tracking.read_json_artifact(run_id, estimate.ESTIMATOR_JSON)
    assert record is not None
    old_run = tracking.start_parent_run(tracking.use_experiment(project), "old train", {})
    tracking.log_json(old_run, record, estimate.ESTIMATOR_JSON)
    assert tracking.read_parquet_artifact(old_run, estimate.CALIBRATION_ROWS) is None
    capsys.readouterr()
    monitoring_run, without = _monitor(project, old_run, model, batch, tmp_path)
    assert without is not None and with_rows is not None
    assert without.value == with_rows.value
    assert without.interval == "rows+labels"
    assert (without.upper - without.lower) < (with_rows.upper - with_rows.lower)
    assert tracking.run_tags(monitoring_run)[estimate.INTERVAL_TAG] == "rows+labels"
    assert "leaves out the calibrator's error" in capsys.readouterr().out


def test_parquet_artifacts_round_trip(tmp_path: Path) -> None:
    project = _project(tmp_path)
    run_id = tracking.start_parent_run(tracking.use_experiment(project), "r", {})
    frame = pd.DataFrame({"score": [0.1, 0.9], "label": pd.Series([0, 1], dtype="int8")})
    tracking.log_parquet(run_id, frame, "folder/table.parquet")
    assert "folder/table.parquet" in {
        a.path for a in MlflowClient().list_artifacts(run_id, "folder")
    }
    back = tracking.read_parquet_artifact(run_id, "folder/table.parquet")
    assert back is not None
    pd.testing.assert_frame_equal(back, frame)
    assert tracking.read_parquet_artifact(run_id, "folder/none.parquet") is None
