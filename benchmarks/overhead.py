"""Overhead: the full train-model flow against two plain scripts, on the default data, with the
same seed, folds and trials: one doing the same CV, tuning and final fit and nothing else
(benchmarks/plain_train.py), one doing all of the flow's steps without Prefect
(benchmarks/plain_steps.py).

Run from the project root (defaults: 3 rounds, about 20 minutes on 2 quiet cores):

    .venv/bin/python benchmarks/overhead.py [--repeats 3] [--modes server,run-server]
        [--n-trials N] [--set KEY=VALUE ...] [--keep DIR] [--json PATH]

Each round runs the plain script, then the flow in each mode; each side is a process of its own,
timed from start to exit (wall, and CPU of the process and its children):

- plain: `python benchmarks/plain_train.py` (reads the source, tune + fit_final, nothing else);
- steps: `python benchmarks/plain_steps.py` in a fresh project: the DVC stages' functions in one
  process (ingest, validate, train, evaluate, drift: the flow's steps, ctloop/steps/sequence.py),
  no Prefect. flow / steps is what orchestration itself costs; flow / plain is what the whole loop
  (validation, tracking, registry, gate, drift, explanation, card) costs over training alone;
- (both ratios are printed; issue 12's targets were stated against `plain`)
- server: `ctloop run` in a fresh project (`ctloop setup` done, the committed expectation suite)
  against a Prefect server this script starts beforehand on a free port (its own database);
- run-server: `ctloop run` in another fresh project with no PREFECT_API_URL and no stack, the
  user's default: the command starts its one run server (ctloop/ops/run_api.py) while it imports the
  flow (its database already migrated, as after a first use).

Every flow run gets a fresh PREFECT_LOCAL_STORAGE_PATH and a fresh MLflow store: the tune-and-fit
cache cannot short-circuit it. `tune.timeout_s` is off on all sides (a time budget would let a busy
machine run fewer trials on one side); both sides must report the same CV score and trial counts.
The ratio is flow wall time / plain wall time of the same round (so both saw the same load); the
headline is the median over rounds. The last flow's task runs (from the Prefect API) show where
the seconds outside tune-and-fit go.
Figures go to stdout (markdown), progress to stderr; the last line is `name: value`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from harness import (
    BIN,
    CTLOOP,
    ROOT,
    TaskTiming,
    Timed,
    base_env,
    dotted,
    last_flow_run,
    load_state,
    log,
    make_project,
    median,
    merge,
    prefect_server,
    run,
    timing_table,
    work_dir,
)

TARGETS = {"server": 1.15, "run-server": 1.25}  # issue 12
BENCH = {"tune": {"timeout_s": None, "show_progress_bar": False}}


def script(name: str, params: Path, env: dict[str, str]) -> tuple[Timed, dict[str, Any]]:
    """benchmarks/<name> (plain_train.py or plain_steps.py) run in the project of `params`; its
    last stdout line, JSON."""
    timed = run([sys.executable, str(ROOT / "benchmarks" / name), str(params)], params.parent, env)
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


def flow_env(work: Path, name: str, home: Path) -> dict[str, str]:
    """A fresh result store per flow run (its caches start empty) and the Prefect home."""
    return base_env(
        PREFECT_HOME=str(home),
        PREFECT_LOCAL_STORAGE_PATH=str(work / f"results-{name}"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="server,run-server", help="server, run-server or both")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of plain + each mode")
    ap.add_argument("--n-trials", type=int, default=None, help="override tune.n_trials")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the projects")
    ap.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - {"server", "run-server"}:
        raise SystemExit(f"--modes: unknown mode(s) {sorted(unknown)} (server, run-server)")
    changes = merge(BENCH, dotted(args.set))
    if args.n_trials is not None:
        changes = merge(changes, {"tune": {"n_trials": args.n_trials}})

    work = work_dir(args.keep, "ctloop-bench-overhead-")
    log("overhead", f"working in {work}; {load_state()}")
    metric = "roc_auc"
    results: dict[str, Any] = {"changes": changes, "machine": load_state(), "rounds": []}
    plain_params = make_project(work / "plain", changes)
    temp_home = work / "prefect-run-server"
    if "run-server" in modes:  # its database migrated once, as after a first use
        env = flow_env(work, "migrate", temp_home)
        run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], work, env)

    rows: list[str] = []
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    vs_steps: dict[str, list[float]] = {m: [] for m in modes}
    steps_ratios: list[float] = []
    timings: list[TaskTiming] = []
    with contextlib.ExitStack() as stack:
        server_home = work / "prefect-server"
        api = stack.enter_context(prefect_server(server_home)) if "server" in modes else None
        for i in range(args.repeats):
            log("overhead", f"round {i + 1}/{args.repeats}: plain script ...")
            plain_t, plain_out = script("plain_train.py", plain_params, base_env())
            rows.append(
                f"| {i + 1} | plain script | {plain_t.seconds:.1f} | {plain_t.cpu_seconds:.1f} | "
                f"1 | 1 | - | load {plain_out['import_and_load_s']:.1f} s, tune "
                f"{plain_out['tune_s']:.1f} s, fit {plain_out['fit_s']:.1f} s |"
            )
            round_: dict[str, Any] = {"plain": {"seconds": plain_t.seconds, **plain_out}}
            log("overhead", f"round {i + 1}: the same steps without Prefect ...")
            steps_params = make_project(work / f"steps-{i + 1}", changes)
            steps_t, steps_out = script("plain_steps.py", steps_params, base_env())
            steps_ratios.append(steps_t.seconds / plain_t.seconds)
            round_["steps"] = {"seconds": steps_t.seconds, "cpu": steps_t.cpu_seconds, **steps_out}
            log("overhead", f"steps: {steps_t.seconds:.1f} s")
            rows.append(
                f"| {i + 1} | the flow's steps, no Prefect | {steps_t.seconds:.1f} | "
                f"{steps_t.cpu_seconds:.1f} | {steps_t.seconds / plain_t.seconds:.3f} | "
                f"{steps_t.cpu_seconds / plain_t.cpu_seconds:.3f} | - | "
                f"{same_work(plain_out, steps_out, metric)} |"
            )
            for mode in modes:
                params = make_project(work / f"{mode}-{i + 1}", changes)
                if mode == "server":
                    env = {**flow_env(work, f"server-{i + 1}", server_home), "PREFECT_API_URL": api}
                else:
                    env = flow_env(work, f"run-server-{i + 1}", temp_home)
                log("overhead", f"round {i + 1}: flow, {mode} server ...")
                timed, metrics = flow(params, env)
                if mode == "server":
                    _, timings = last_flow_run(api)
                ratio = timed.seconds / plain_t.seconds
                ratios[mode].append(ratio)
                vs_steps[mode].append(timed.seconds / steps_t.seconds)
                round_[mode] = {"seconds": timed.seconds, "cpu": timed.cpu_seconds}
                log("overhead", f"{mode}: {timed.seconds:.1f} s, ratio {ratio:.3f}")
                rows.append(
                    f"| {i + 1} | flow, {'running' if mode == 'server' else 'its own run'} server "
                    f"| {timed.seconds:.1f} | {timed.cpu_seconds:.1f} | {ratio:.3f} | "
                    f"{timed.cpu_seconds / plain_t.cpu_seconds:.3f} | "
                    f"{timed.seconds / steps_t.seconds:.3f} | "
                    f"{same_work(plain_out, metrics, metric)} |"
                )
            results["rounds"].append(round_)

    medians = {m: median(r) for m, r in ratios.items()}
    lines = [
        f"machine: {results['machine']} at the start; {load_state()} at the end",
        f"params changes (all sides): {json.dumps(changes)}",
        f"training rows: {plain_out['rows']} ({plain_out['window'][0]}..{plain_out['window'][-1]})",
        "",
        "| round | side | wall s | CPU s | wall ratio | CPU ratio | wall ratio vs steps | "
        "same CV work |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        *(
            f"median wall ratio, {m} server: {v:.3f} (rounds: "
            f"{', '.join(f'{r:.3f}' for r in ratios[m])})"
            for m, v in medians.items()
        ),
        f"median wall ratio, the flow's steps without Prefect / plain: {median(steps_ratios):.3f}",
        *(
            f"median wall ratio, {m} server / the same steps without Prefect: "
            f"{median(r):.3f} (rounds: {', '.join(f'{x:.3f}' for x in r)})"
            for m, r in vs_steps.items()
        ),
    ]
    if timings:
        outside = sum(t.seconds for t in timings if t.name != "tune-and-fit")
        lines += [
            "",
            "Task runs of the last flow against the running server (compute-drift runs in a",
            "worker process beside validation and tuning; validate-batches validates every",
            "batch in one task run):",
            "",
            *timing_table(timings),
            "",
            f"seconds in task runs other than tune-and-fit (overlaps counted): {outside:.1f}",
        ]
    lines += ["", "targets: " + ", ".join(f"{m} <= {t}" for m, t in TARGETS.items())]
    if args.json is not None:
        results["ratios"] = ratios
        results["ratios_vs_steps"] = vs_steps
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(
        ", ".join(
            [
                *(f"overhead_ratio_{m.replace('-', '_')}: {v:.3f}" for m, v in medians.items()),
                *(
                    f"orchestration_ratio_{m.replace('-', '_')}: {median(r):.3f}"
                    for m, r in vs_steps.items()
                ),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
