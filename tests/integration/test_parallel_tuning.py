"""Trials on Dask through Prefect (prefect-dask): a local cluster started for the search, and an
existing cluster given by `parallel.dask_address` (a real `dask scheduler` and `dask worker`
started here). Each trial is a `trial-<i>` task run reported by the worker to the session's
Prefect server; all trials are in one Optuna study; the best trial's folds come back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import optuna
import pytest
from prefect import flow

from ctloop.ml import parallel, training
from tasks import training as t
from tests.conftest import ROOT, free_ports
from tests.unit.ml.test_training import SCHEMA, _frame, _tuning_params

BIN = ROOT / ".venv" / "bin"


def _trial_runs(flow_run_id: UUID) -> list[tuple[str, str]]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted((r.name, r.state.type.value) for r in runs if r.name.startswith("trial-"))


def _search(plan: parallel.ParallelPlan, trials: int) -> None:
    """tune-and-fit in a flow with `plan`; checks the study, the task runs and the kept folds."""
    X, y = _frame(600)
    params = _tuning_params(trials, pruning=True)

    @flow(name="parallel-tuning-test")
    def search() -> tuple:
        return t.tune_and_fit(params, X, y, plan)

    state = search(return_state=True)
    tuning, model = state.result()
    assert _trial_runs(state.state_details.flow_run_id) == [
        (f"trial-{i}", "COMPLETED") for i in range(trials)
    ]
    study = optuna.load_study(study_name=tuning.study_name, storage=plan.storage)
    assert len(study.trials) == trials == len(tuning.trials)
    assert tuning.cv_mean == pytest.approx(study.best_value)
    assert len(tuning.fold_models) == 3 and tuning.oof_scores is not None
    assert model.predict_proba(X.head(5)).shape == (5, 2)


def test_trials_run_on_a_local_dask_cluster(tmp_path: Path) -> None:
    plan = parallel.ParallelPlan("dask", 2, f"sqlite:///{tmp_path / 'optuna.db'}", 1)
    _search(plan, trials=4)


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `dask scheduler` and one `dask worker` (its task runs report to the session's Prefect
    server through PREFECT_API_URL in its environment), stopped afterwards."""
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    [port] = free_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    common = ["--no-dashboard"]
    procs = [
        subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), *common],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--local-directory", str(tmp_path_factory.mktemp("dask")), *common],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_trials_run_on_an_existing_dask_cluster(tmp_path: Path, dask_address: str) -> None:
    storage = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"  # a shared volume's stand-in
    _search(parallel.ParallelPlan("dask", 1, storage, 1, dask_address), trials=2)


def test_the_dvc_stage_runner_uses_the_same_cluster_without_prefect(
    tmp_path: Path, dask_address: str
) -> None:
    """`ctloop stage train` runs trials through a plain `distributed` client (no task runs)."""
    X, y = _frame(600)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    plan = parallel.ParallelPlan("dask", 1, storage, 1, dask_address)
    with parallel.plain_runner(plan) as runner:
        tuning = training.tune(
            _tuning_params(2, pruning=False),
            SCHEMA,
            X,
            y,
            storage=storage,
            study_name="stage",
            runner=runner,
        )
    assert len(optuna.load_study(study_name="stage", storage=storage).trials) == 2
    assert len(tuning.fold_models) == 3
