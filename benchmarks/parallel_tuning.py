"""Parallel tuning: the same Optuna search run serially, on Prefect threads and on prefect-dask.

Run from the project root (defaults: Jan-Jun 2013, 10 trials, 5 folds; an estimated 10 minutes on an
idle 2-core machine):

    .venv/bin/python benchmarks/parallel_tuning.py [--trials 10] [--folds 5] [--rows N] \
        [--workers 2] [--modes serial2,serial1,threads,dask] [--pruning]

Every mode tunes ctloop's pipeline (`ctloop.ml.training.tune`) on the same rows (the labelled rows
of params.yaml's window, Jan-Jun, optionally a seeded sample of `--rows`), with the same folds
and seed, and tries the SAME points: they are drawn once from a seeded random sampler and
enqueued in every study, so each mode fits exactly the same models (pruning is off unless
`--pruning`; early stopping is on as in params.yaml). Only the way trials are run differs:

- serial2: one trial after another, each XGBoost fit on 2 threads (`n_jobs: 2`, params.yaml's
  default): the baseline, as `ctloop run` tunes with `parallel.runner: sequential`;
- serial1: one trial after another, each fit on 1 thread;
- threads: `parallel.runner: threads`: trials as `run-trials` Prefect task runs on a
  ThreadPoolTaskRunner of `--workers` threads, each fit on cores / workers threads;
- dask: `parallel.runner: dask`: the same task runs on prefect-dask with a local cluster of
  `--workers` single-threaded processes (cluster start-up and worker imports included);
- plain-threads (optional): the thread pool without Prefect (the DVC stage's runner).

Parallel modes share one Optuna study in SQLite (a temporary folder) and report their task runs
to a private `prefect server start` (started before timing). Wall time covers the search only
(not the refit). Progress goes to stderr; stdout holds the table, the last line is
`parallel_tuning_speedup: <best parallel mode's speed-up over serial2>`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import load_state, log, prefect_server  # noqa: E402

from ctloop.core.env import apply_env_defaults  # noqa: E402

apply_env_defaults()

from ctloop.core.config import Project, load_project, override  # noqa: E402
from ctloop.io import data  # noqa: E402
from ctloop.ml import parallel, training  # noqa: E402
from ctloop.steps import fit  # noqa: E402

NAME = "parallel_tuning"
MODES = ("serial2", "serial1", "threads", "dask", "plain-threads")
DEFAULT_MODES = "serial2,serial1,threads,dask"
BASELINE = "serial2"


@dataclass(frozen=True)
class Outcome:
    mode: str
    seconds: float
    cpu_seconds: float  # this process and its finished children (local Dask workers included)
    fit_threads: int
    best_cv: float
    trials: int
    fits: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--rows", type=int, default=None, help="seeded sample of the training rows")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated, from {MODES}")
    p.add_argument("--pruning", action="store_true", help="median pruning on (work then varies)")
    args = p.parse_args(argv)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown or BASELINE not in args.modes.split(","):
        p.error(f"--modes: unknown {sorted(unknown)} or no {BASELINE} baseline")
    return args


def build_project(args: argparse.Namespace, n_jobs: int) -> Project:
    """params.yaml with the benchmark's search settings; XGBoost fits on `n_jobs` threads."""
    project = load_project(ROOT / "params.yaml")
    fixed = project.params.model.fixed
    return override(
        project,
        {
            "tune.n_trials": args.trials,
            "tune.pruning": args.pruning,
            "tune.timeout_s": None,
            "tune.show_progress_bar": False,
            "split.folds": args.folds,
            "split.max_train_rows": args.rows,
            "model.family": "xgboost",
            "model.fixed": {**fixed, "xgboost": {**fixed["xgboost"], "n_jobs": n_jobs}},
        },
    )


def load_rows(project: Project) -> fit.TrainingData:
    """The labelled rows of the configured window (Jan-Jun), prepared as ctloop ingests them."""
    cfg = project.params
    batches = data.split_batches(
        data.prepare(data.load_source(cfg.data.source, project.root), cfg.data), cfg.data
    )
    start, end = cfg.split.window_start or "", cfg.split.window_end or "9999"
    names = sorted(n for n in batches if start <= n <= end)
    log(NAME, f"window {names[0]}..{names[-1]}")
    import pandas as pd

    return fit.training_data(project, pd.concat([batches[n] for n in names], ignore_index=True))


def draw_points(project: Project, n: int) -> list[dict[str, Any]]:
    """`n` points of the search space from a seeded random sampler: every mode tries these."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = project.params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=params.seed))
    space = params.model.search_space[params.model.family]
    return [training.suggest(study.ask(), space) for _ in range(n)]


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have exited (user + system)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def summarise(
    mode: str, seconds: float, cpu: float, threads: int, result: training.TuningResult
) -> Outcome:
    fits = sum(len(t.fold_scores) for t in result.trials)
    outcome = Outcome(mode, seconds, cpu, threads, result.cv_mean, len(result.trials), fits)
    log(
        NAME,
        f"{mode}: {seconds:.1f} s ({cpu:.1f} CPU s), best CV {result.cv_mean:.5f}, {fits} fits",
    )
    return outcome


def run_serial(args: argparse.Namespace, rows: fit.TrainingData, points: list, n_jobs: int):
    project = build_project(args, n_jobs)
    started, cpu = time.perf_counter(), cpu_seconds()
    result = training.tune(project.params, rows.schema, rows.X, rows.y, enqueue=points)
    seconds = time.perf_counter() - started
    return summarise(f"serial{n_jobs}", seconds, cpu_seconds() - cpu, n_jobs, result)


def run_parallel(
    args: argparse.Namespace,
    rows: fit.TrainingData,
    points: list,
    mode: str,
    folder: Path,
) -> Outcome:
    """The search through the runner of `mode` (Prefect task runs, or plain threads)."""
    from prefect import flow

    from tasks import training as prefect_tasks

    project = build_project(args, 2)  # the configured n_jobs; trials get cores / workers
    runner = "threads" if mode.endswith("threads") else "dask"
    plan = parallel.ParallelPlan(
        runner,
        args.workers,
        f"sqlite:///{folder / 'optuna.db'}",
        parallel.fit_threads(args.workers, os.cpu_count()),
    )
    run = parallel.thread_runner(args.workers) if mode == "plain-threads" else None

    @flow(name=f"benchmark-{mode}", log_prints=True)
    def search() -> tuple[float, training.TuningResult]:
        started = time.perf_counter()
        result = training.tune(
            project.params,
            rows.schema,
            rows.X,
            rows.y,
            storage=plan.storage,
            study_name=f"benchmark-{mode}",
            runner=run or prefect_tasks.trial_runner(plan),
            fit_threads=plan.fit_threads,
            enqueue=points,
        )
        return time.perf_counter() - started, result

    cpu = cpu_seconds()
    seconds, result = search()  # the cluster is closed: its workers' CPU time is counted
    return summarise(mode, seconds, cpu_seconds() - cpu, plan.fit_threads, result)


def warm_up(rows: fit.TrainingData, project: Project) -> None:
    """Import and touch XGBoost, scikit-learn and Optuna's storage once, outside the timings."""
    small = rows.X.head(2000), rows.y.head(2000)
    pipe = training.make_pipeline(rows.schema, "xgboost", {"n_estimators": 5}, project.params.seed)
    training.fit_pipeline(pipe, *small)
    with tempfile.TemporaryDirectory() as tmp:
        training.open_storage(f"sqlite:///{tmp}/warm.db")


def table(outcomes: list[Outcome]) -> list[str]:
    base = next(o for o in outcomes if o.mode == BASELINE)
    one = next((o for o in outcomes if o.mode == "serial1"), None)
    lines = [
        "| mode | fit threads | wall s | CPU s | cores busy | vs serial2 | vs serial1 | best CV "
        "| trials | fits |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        vs_one = f"{one.seconds / o.seconds:.2f}x" if one else "-"
        lines.append(
            f"| {o.mode} | {o.fit_threads} | {o.seconds:.1f} | {o.cpu_seconds:.1f} | "
            f"{o.cpu_seconds / o.seconds:.2f} | {base.seconds / o.seconds:.2f}x | "
            f"{vs_one} | {o.best_cv:.5f} | {o.trials} | {o.fits} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = args.modes.split(",")
    project = build_project(args, 2)
    rows = load_rows(project)
    points = draw_points(project, args.trials)
    log(NAME, f"{len(rows.y)} rows, {args.trials} trials x {args.folds} folds; {load_state()}")
    warm_up(rows, project)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="ctloop-parallel-") as tmp:
        for mode in [m for m in modes if m.startswith("serial")]:
            outcomes.append(run_serial(args, rows, points, int(mode[-1])))
        others = [m for m in modes if not m.startswith("serial")]
        if others:
            with prefect_server(Path(tmp) / "prefect") as api:
                os.environ["PREFECT_API_URL"] = api
                for mode in others:
                    folder = Path(tmp) / mode
                    folder.mkdir()
                    outcomes.append(run_parallel(args, rows, points, mode, folder))
    print(
        f"Parallel tuning, {len(rows.y)} rows, {args.trials} trials x {args.folds} folds, "
        f"pruning {'on' if args.pruning else 'off'}, {args.workers} workers; {load_state()}"
    )
    print()
    print("\n".join(table(outcomes)))
    base = next(o for o in outcomes if o.mode == BASELINE)
    parallel_modes = [o for o in outcomes if not o.mode.startswith("serial")]
    best = max((base.seconds / o.seconds for o in parallel_modes), default=1.0)
    print(f"{NAME}_speedup: {best:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
