"""Where tuning trials run (params `parallel` and `tune.storage`): the plan, the shared Optuna
storage and plain runners for callers without Prefect (the DVC stage). Pure: no Prefect import;
Prefect's task runners (threads, prefect-dask) are wired in tasks/training.py.

Trials of one search share one Optuna study in RDB storage, so workers in several processes or
on several machines see each other's trials (TPE history, median pruning)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ctloop.core.config import Project
from ctloop.ml import training

DEFAULT_STORAGE_FILE = "optuna.db"  # under paths.stack, when parallel runners have no tune.storage


@dataclass(frozen=True)
class ParallelPlan:
    """The resolved `parallel` settings of one search."""

    runner: Literal["sequential", "threads", "dask"]
    workers: int
    storage: str | None  # Optuna RDB URL (None: in memory, sequential only)
    fit_threads: int  # n_jobs of each fit while `workers` trials run side by side
    dask_address: str | None = None  # an existing scheduler; None: a local cluster

    @property
    def parallel(self) -> bool:
        return self.runner != "sequential"


def absolute_sqlite(url: str, root: Path) -> str:
    """`sqlite:///rel/path.db` resolved against the project root (every worker finds the same
    file whatever its working directory); other URLs unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix) :]
    if path.startswith("/") or path in ("", ":memory:"):
        return url
    return f"{prefix}{(root / path).resolve()}"


def resolve_storage(project: Project) -> str | None:
    """`tune.storage` when set; else, for parallel runners, a SQLite file under `paths.stack`
    (shared by the processes of this machine); else None: a sequential search stays in memory."""
    params = project.params
    if params.tune.storage:
        return absolute_sqlite(params.tune.storage, project.root)
    if params.parallel.runner == "sequential":
        return None
    return f"sqlite:///{project.path('stack').resolve() / DEFAULT_STORAGE_FILE}"


def fit_threads(workers: int, cpu_count: int | None) -> int:
    """Cores per concurrent trial: this machine's cores split between the workers (at least 1),
    so `workers` XGBoost fits side by side do not oversubscribe the CPU."""
    return max(1, (cpu_count or 1) // workers)


def plan_parallel(project: Project, cpu_count: int | None = None) -> ParallelPlan:
    """The runner, storage and threads per fit of this project's search."""
    cfg = project.params.parallel
    if cfg.runner == "sequential":
        return ParallelPlan("sequential", 1, resolve_storage(project), 0)
    cores = cpu_count if cpu_count is not None else os.cpu_count()
    return ParallelPlan(
        cfg.runner,
        cfg.workers,
        resolve_storage(project),
        fit_threads(cfg.workers, cores),
        cfg.dask_address if cfg.runner == "dask" else None,
    )


def study_name(prefix: str, run_key: str, now: datetime) -> str:
    """A study name unique to one search, readable in the Optuna storage: prefix, UTC time and
    the run that tuned (e.g. `ctloop-20130701T030000-1a2b3c4d`)."""
    key = "".join(c for c in run_key if c.isalnum())[:8] or "local"
    return f"{prefix}-{now:%Y%m%dT%H%M%S}-{key}"


def local_cluster_kwargs(plan: ParallelPlan, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A local Dask cluster: one single-threaded process per worker, no dashboard (offline);
    `env` is set in the worker processes (e.g. the Prefect API their task runs report to)."""
    kwargs: dict[str, Any] = {
        "n_workers": plan.workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    if env:
        kwargs["env"] = dict(env)
    return kwargs


def thread_runner(workers: int) -> training.TrialRunner:
    """Trials on `workers` threads of this process (XGBoost releases the GIL while it fits)."""

    def run(jobs: list[training.TrialJob]) -> list[training.TrialsOutcome]:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctloop-trial") as pool:
            return list(pool.map(training.run_trials, jobs))

    return run


@contextmanager
def dask_runner(plan: ParallelPlan) -> Iterator[training.TrialRunner]:
    """Trials on a Dask cluster without Prefect (for the DVC stage): the scheduler at
    `plan.dask_address`, or a local cluster for the duration of the search."""
    from distributed import Client, LocalCluster

    if plan.dask_address:
        client = Client(plan.dask_address)
        cluster = None
    else:
        cluster = LocalCluster(**local_cluster_kwargs(plan))
        client = Client(cluster)
    try:

        def run(jobs: list[training.TrialJob]) -> list[training.TrialsOutcome]:
            return client.gather(client.map(training.run_trials, jobs, pure=False))

        yield run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def plain_runner(plan: ParallelPlan) -> Iterator[training.TrialRunner | None]:
    """The runner of `plan` without Prefect; None for a sequential search."""
    if plan.runner == "dask":
        with dask_runner(plan) as run:
            yield run
    elif plan.runner == "threads":
        yield thread_runner(plan.workers)
    else:
        yield None
