"""Where trials run: runner selection, shared Optuna storage, threads per fit, and a parallel
search through plain threads (same study, every trial recorded, best trial's folds kept)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from ctloop.core.config import ConfigError, Project, parse_params
from ctloop.ml import parallel, training
from tests.unit.ml.test_training import SCHEMA, _frame, _tuning_params

ROOT = Path(__file__).parents[3]


def _project(tmp_path: Path, tune: dict[str, Any] | None = None, **par: Any) -> Project:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"].update(tune or {})
    raw["parallel"].update(par)
    return Project(root=tmp_path, params=parse_params(raw))


def test_sequential_without_storage_stays_in_memory(tmp_path: Path) -> None:
    plan = parallel.plan_parallel(_project(tmp_path, runner="sequential"))
    assert (plan.runner, plan.storage, plan.parallel) == ("sequential", None, False)


@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_parallel_runners_default_to_a_sqlite_file_under_the_stack_folder(
    tmp_path: Path, runner: str
) -> None:
    plan = parallel.plan_parallel(_project(tmp_path, runner=runner, workers=2), cpu_count=2)
    assert plan.storage == f"sqlite:///{tmp_path.resolve() / '.ctloop' / 'optuna.db'}"
    assert (plan.runner, plan.workers, plan.fit_threads, plan.dask_address) == (runner, 2, 1, None)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("sqlite:///studies/optuna.db", "sqlite:///{root}/studies/optuna.db"),  # relative: project
        ("sqlite:////abs/optuna.db", "sqlite:////abs/optuna.db"),
        ("postgresql://postgres@db:5432/optuna", "postgresql://postgres@db:5432/optuna"),
    ],
)
def test_configured_storage_wins_and_relative_sqlite_is_under_the_project(
    tmp_path: Path, storage: str, expected: str
) -> None:
    for runner in ("sequential", "threads"):
        project = _project(tmp_path, tune={"storage": storage}, runner=runner)
        assert parallel.plan_parallel(project).storage == expected.format(root=tmp_path.resolve())


@pytest.mark.parametrize(
    ("cores", "workers", "threads"), [(2, 2, 1), (8, 3, 2), (1, 4, 1), (None, 2, 1)]
)
def test_each_concurrent_fit_gets_its_share_of_the_cores(
    cores: int | None, workers: int, threads: int
) -> None:
    assert parallel.fit_threads(workers, cores) == threads


def test_dask_address_is_kept_for_dask_and_needs_shared_storage(tmp_path: Path) -> None:
    plan = parallel.plan_parallel(
        _project(
            tmp_path,
            tune={"storage": "postgresql://postgres@db/optuna"},
            runner="dask",
            dask_address="tcp://scheduler:8786",
        )
    )
    assert plan.dask_address == "tcp://scheduler:8786"
    with pytest.raises(ConfigError, match=r"dask_address needs tune\.storage"):
        _project(tmp_path, runner="dask", dask_address="tcp://scheduler:8786")
    with pytest.raises(ConfigError, match="runner is 'threads'"):
        _project(
            tmp_path, tune={"storage": "sqlite:///o.db"}, runner="threads", dask_address="tcp://s:1"
        )


def test_local_cluster_is_single_threaded_processes_without_dashboard() -> None:
    plan = parallel.ParallelPlan("dask", 3, "sqlite:////x.db", 1)
    assert parallel.local_cluster_kwargs(plan, {"PREFECT_API_URL": "http://h/api"}) == {
        "n_workers": 3,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "env": {"PREFECT_API_URL": "http://h/api"},
    }


def test_study_names_are_readable_and_unique_per_run() -> None:
    now = datetime(2013, 7, 1, 3, 0, tzinfo=UTC)
    assert parallel.study_name("ctloop", "1a2b3c4d-5e6f", now) == "ctloop-20130701T030000-1a2b3c4d"
    assert parallel.study_name("ctloop", "", now) == "ctloop-20130701T030000-local"


def test_prefect_task_runner_follows_the_plan() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from tasks.training import task_runner

    threads = task_runner(parallel.ParallelPlan("threads", 3, "sqlite:////x.db", 1))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner(parallel.ParallelPlan("dask", 2, "sqlite:////x.db", 1), "http://h/api")
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["env"] == {"PREFECT_API_URL": "http://h/api"}
    remote = task_runner(parallel.ParallelPlan("dask", 2, "postgresql://h/o", 1, "tcp://s:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://s:8786"


def test_threads_share_one_study_and_keep_the_best_trials_folds(tmp_path: Path) -> None:
    X, y = _frame(600)
    params = _tuning_params(4, pruning=True)
    storage = f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"
    points = [  # tried first, by two different jobs
        {"max_depth": 3, "learning_rate": 0.1, "min_child_weight": 2.0, "subsample": 0.8,
         "colsample_bytree": 0.9, "reg_lambda": 1.0},
        {"max_depth": 5, "learning_rate": 0.2, "min_child_weight": 1.0, "subsample": 0.7,
         "colsample_bytree": 0.6, "reg_lambda": 3.0},
    ]  # fmt: skip
    result = training.tune(
        params,
        SCHEMA,
        X,
        y,
        storage=storage,
        study_name="s1",
        runner=parallel.thread_runner(2),
        fit_threads=3,
        enqueue=points,
    )
    study = optuna.load_study(study_name="s1", storage=storage)
    assert len(study.trials) == 4 == len(result.trials)
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    assert {t.number: t.state.name for t in study.trials} == {
        t.number: t.state for t in result.trials
    }
    assert result.study_name == "s1"
    tried = [t.params for t in result.trials]
    assert all(p in tried for p in points) and len({str(p) for p in tried}) == 4
    best = max((t for t in result.trials if t.state == "COMPLETE"), key=lambda t: t.mean)
    assert result.cv_mean == pytest.approx(best.mean) == pytest.approx(study.best_value)
    assert result.best_params["n_jobs"] == 1  # the refit gets the configured n_jobs back
    assert len(result.fold_models) == 3 and result.oof_scores is not None
    splits = training.cv_splits("stratified", 3, 42, X, y)
    for model, (_, va) in zip(result.fold_models, splits, strict=True):
        assert training.predict_scores(model, X.iloc[va], "classification") == pytest.approx(
            result.oof_scores[va]
        )
    assert not np.isnan(result.oof_scores).any()


def test_sequential_search_is_the_same_in_memory_and_in_storage(tmp_path: Path) -> None:
    X, y = _frame(400)
    params = _tuning_params(3, pruning=True)
    memory = training.tune(params, SCHEMA, X, y)
    stored = training.tune(
        params, SCHEMA, X, y, storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="seq"
    )
    assert [t.params for t in stored.trials] == [t.params for t in memory.trials]
    assert stored.fold_scores == memory.fold_scores and stored.best_params == memory.best_params
    assert (memory.study_name, stored.study_name) == (None, "seq")


def test_a_parallel_search_needs_storage() -> None:
    X, y = _frame(100)
    with pytest.raises(ValueError, match="RDB storage URL and a study name"):
        training.tune(_tuning_params(2, False), SCHEMA, X, y, runner=parallel.thread_runner(2))
