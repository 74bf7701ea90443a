"""A training run whose search the time budget cut short says so on every record: the terminal
summary, the MLflow run (trials planned and run, what stopped the search) and the model card.
Real Prefect server, MLflow SQLite, DVC and GX on the real slice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from ctloop.core.config import Project
from ctloop.io import tracking
from flows.train_model import train_model
from tests.integration.conftest import SMALL


def test_a_run_cut_short_by_the_time_budget_says_so_everywhere(
    make_project: Callable[..., Project], slice_file: Path
) -> None:
    changes: dict[str, Any] = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(slice_file)},
        "tune": {**SMALL["tune"], "timeout_s": 0.001},  # spent once the first trial ends
    }
    p = make_project(changes)
    assert p.params.tune.n_trials == 3
    summary = train_model(params_path=str(p.root / "params.yaml"))
    note = "stopped by the time budget after 1 of 3 trials"

    assert summary.n_trials == 1 and summary.budget_note == note
    [cv_line] = [line for line in summary.render().splitlines() if "CV roc_auc" in line]
    assert cv_line.endswith(f"; {note})")

    tracking.use_store(p.tracking_uri)
    client = MlflowClient()
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.metrics["tune_trials_planned"] == 3.0
    assert run.data.metrics["tune_trials_run"] == 1.0
    assert run.data.tags[tracking.STOPPED_BY_TAG] == "time_budget"
    assert run.data.tags[tracking.BUDGET_NOTE_TAG] == note
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(trials) == 1

    card = (p.path("reports") / "model_card.md").read_text()
    assert f"1 trials, 0 pruned; {note})" in card  # training section
    assert "- [x] Hyperparameters are tuned by cross-validation - 1 Optuna trials" in card
    assert card.count(note) == 2  # the training section and the checklist item


def test_a_complete_search_is_recorded_as_stopped_by_its_trial_count(tmp_path: Path) -> None:
    from ctloop.ml import training
    from tests.unit.ml.test_time_budget import SCHEMA, _frame, _params

    X, y = _frame(300)
    result = training.tune(_params(2), SCHEMA, X, y)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.configure(uri, "budget", tmp_path / "artifacts")
    run_id = tracking.start_parent_run(experiment, "complete", {})
    tracking.log_tuning(run_id, result, "roc_auc")
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["tune_trials_planned"] == run.data.metrics["tune_trials_run"] == 2.0
    assert run.data.tags[tracking.STOPPED_BY_TAG] == "n_trials"
    assert tracking.BUDGET_NOTE_TAG not in run.data.tags


def test_a_dask_search_cut_short_by_the_time_budget_says_so(tmp_path: Path) -> None:
    """Trials as Prefect task runs on a local Dask cluster: the deadline passes while the cluster
    starts, so only the search's first trial runs and the result says 1 of 4."""
    from prefect import flow

    from ctloop.ml import parallel, training
    from tasks import training as t
    from tests.unit.ml.test_time_budget import _frame, _params

    X, y = _frame(300)
    params = _params(4, timeout_s=0.001)
    plan = parallel.ParallelPlan("dask", 2, f"sqlite:///{tmp_path / 'optuna.db'}", 1)

    @flow(name="time-budget-dask-test")
    def search() -> tuple:
        return t.tune_and_fit(params, X, y, plan)

    tuning, _model = search()
    assert (tuning.trials_run, tuning.trials_planned) == (1, 4)
    assert tuning.stopped_by == training.TIME_BUDGET
    assert tuning.budget_note == "stopped by the time budget after 1 of 4 trials"
