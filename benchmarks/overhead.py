"""Overhead: the full train-model flow against a plain script doing the same CV, tuning and final
fit (benchmarks/plain_train.py), on the default data, with the same seed, folds and trials.

Run from the project root (defaults: about 8 minutes on 2 quiet cores):

    .venv/bin/python benchmarks/overhead.py [--modes server,temporary] [--n-trials N]
        [--set KEY=VALUE ...] [--keep DIR] [--json PATH]

Each side is a process of its own, timed from start to exit (wall and CPU):

- plain: `python benchmarks/plain_train.py` (reads the source, tune + fit_final, nothing else);
- server: `ctloop run` in a fresh project (`ctloop setup` done, the committed expectation suite)
  against a Prefect server this script starts beforehand on a free port (its own database);
- temporary: `ctloop run` in another fresh project with no PREFECT_API_URL, so the flow starts
  Prefect's temporary server itself (its database already migrated, as after a first use).

Every flow run gets a fresh PREFECT_LOCAL_STORAGE_PATH and a fresh MLflow store: the tune-and-fit
cache cannot short-circuit it. `tune.timeout_s` is off on all sides (a time budget would let a busy
machine run fewer trials on one side); both sides must report the same CV score and trial counts.
The ratio is flow wall time / plain wall time. The flow's task runs (from the Prefect API) show
where the seconds outside tune-and-fit go.
Figures go to stdout (markdown), progress to stderr; the last line is `name: value`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import (
    BIN,
    CTLOOP,
    ROOT,
    Timed,
    base_env,
    dotted,
    last_flow_run,
    load_state,
    log,
    make_project,
    merge,
    prefect_server,
    run,
    timing_table,
)

RATIO_TARGET = 1.10
BENCH = {"tune": {"timeout_s": None, "show_progress_bar": False}}


def plain(params: Path, env: dict[str, str]) -> tuple[Timed, dict[str, Any]]:
    timed = run(
        [sys.executable, str(ROOT / "benchmarks" / "plain_train.py"), str(params)],
        params.parent,
        env,
    )
    return timed, json.loads(timed.stdout.strip().splitlines()[-1])


def flow(params: Path, env: dict[str, str]) -> tuple[Timed, dict[str, Any]]:
    """`ctloop run` in the project; its CV figures from reports/metrics.json."""
    timed = run([CTLOOP, "run", "--params", str(params)], params.parent, env)
    metrics = json.loads((params.parent / "reports" / "metrics.json").read_text())
    return timed, metrics


def same_work(plain_out: dict[str, Any], metrics: dict[str, Any], metric: str) -> str:
    cv = metrics["cv"]
    same = (
        abs(cv[f"{metric}_mean"] - plain_out["cv_mean"]) < 1e-9
        and cv["n_trials"] == plain_out["n_trials"]
        and cv["n_pruned"] == plain_out["n_pruned"]
    )
    return (
        f"{'yes' if same else 'NO'} (flow CV {cv[f'{metric}_mean']:.5f}, {cv['n_trials']} trials, "
        f"{cv['n_pruned']} pruned; plain {plain_out['cv_mean']:.5f}, {plain_out['n_trials']}, "
        f"{plain_out['n_pruned']})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="server,temporary", help="server, temporary or both")
    ap.add_argument("--n-trials", type=int, default=None, help="override tune.n_trials")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the projects")
    ap.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    changes = merge(BENCH, dotted(args.set))
    if args.n_trials is not None:
        changes = merge(changes, {"tune": {"n_trials": args.n_trials}})

    work = args.keep or Path(tempfile.mkdtemp(prefix="ctloop-bench-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    log("overhead", f"working in {work}; {load_state()}")
    metric = "roc_auc"
    results: dict[str, Any] = {"changes": changes, "machine": load_state()}

    params = make_project(work / "plain", changes)
    log("overhead", "plain script ...")
    plain_t, plain_out = plain(params, base_env())
    results["plain"] = {"seconds": plain_t.seconds, "cpu": plain_t.cpu_seconds, **plain_out}
    log("overhead", f"plain: {plain_t.seconds:.1f} s")

    rows, details = [], []
    for mode in modes:
        params = make_project(work / mode, changes)
        home = work / f"prefect-{mode}"
        env = base_env(
            PREFECT_HOME=str(home),
            PREFECT_LOCAL_STORAGE_PATH=str(work / f"results-{mode}"),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        )
        if mode == "server":
            with prefect_server(home) as api:
                log("overhead", f"flow against the running server {api} ...")
                timed, metrics = flow(params, {**env, "PREFECT_API_URL": api})
                _, timings = last_flow_run(api)
            details += ["", "Task runs of the flow (running server):", "", *timing_table(timings)]
            outside = sum(t.seconds for t in timings if t.name != "tune-and-fit")
            details.append(f"\nseconds in tasks other than tune-and-fit: {outside:.1f}")
        elif mode == "temporary":
            home.mkdir(parents=True, exist_ok=True)
            run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], work, env)
            log("overhead", "flow with a temporary server ...")
            timed, metrics = flow(params, env)
        else:
            raise SystemExit(f"--modes: unknown mode '{mode}' (server, temporary)")
        ratio = timed.seconds / plain_t.seconds
        results[mode] = {"seconds": timed.seconds, "cpu": timed.cpu_seconds, "ratio": ratio}
        log("overhead", f"{mode}: {timed.seconds:.1f} s, ratio {ratio:.3f}")
        rows.append(
            f"| flow, {'running' if mode == 'server' else 'temporary'} server | "
            f"{timed.seconds:.1f} | {timed.cpu_seconds:.1f} | "
            f"{ratio:.3f} | {timed.cpu_seconds / plain_t.cpu_seconds:.3f} | "
            f"{same_work(plain_out, metrics, metric)} |"
        )

    lines = [
        f"machine: {results['machine']}",
        f"params changes (all sides): {json.dumps(changes)}",
        f"training rows: {plain_out['rows']} ({plain_out['window'][0]}..{plain_out['window'][-1]})",
        "",
        "| side | wall s | CPU s | wall ratio | CPU ratio | same CV work |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        f"| plain script | {plain_t.seconds:.1f} | {plain_t.cpu_seconds:.1f} | 1 | 1 | "
        f"load {plain_out['import_and_load_s']:.1f} s, tune {plain_out['tune_s']:.1f} s, "
        f"fit {plain_out['fit_s']:.1f} s |",
        *rows,
        *details,
        "",
        f"target: ratio <= {RATIO_TARGET} with a running Prefect server",
    ]
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    headline = results.get("server", results.get(modes[-1], {})).get("ratio", float("nan"))
    print(f"overhead_ratio_running_server: {headline:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
