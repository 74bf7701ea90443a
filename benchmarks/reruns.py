"""Re-runs: the train-model flow run first, then again with nothing changed, then with a changed
search space; and `dvc repro` with nothing changed.

Run from the project root (defaults: about 8 minutes on 2 quiet cores):

    .venv/bin/python benchmarks/reruns.py [--n-trials N] [--set KEY=VALUE ...] [--repro-runs 3]
        [--keep DIR] [--json PATH]

In a fresh project (`ctloop setup` done) against a Prefect server this script starts on a free
port, with one result store for the session (so caches work as for a user):

1. `ctloop run`: the first run (everything computed);
2. `ctloop run` again: same data, params and code. Target: <= 10% of the first run's wall time;
3. `ctloop run` after narrowing the search space (`model.search_space.xgboost.max_depth.high`
   minus one): the search and the fit run again, a new version is registered; ingestion writes
   nothing and each batch's validation comes from the cache. The task-run states of every run are
   read back from the Prefect API;
4. `dvc repro` in a second fresh project, once to build every stage (2 trials on 20,000 rows:
   the no-op does not depend on the model's size), then `--repro-runs` times with nothing
   changed (`make repro` runs the same command). Target: median <= 2 s.

`tune.timeout_s` is off (trial counts must not depend on the machine's load).
Figures go to stdout (markdown), progress to stderr; the last line is `name: value`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from harness import (
    BIN,
    CTLOOP,
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

RERUN_TARGET = 0.10
REPRO_TARGET_S = 2.0
BENCH = {"tune": {"timeout_s": None, "show_progress_bar": False}}
REPRO_PROJECT = {"tune": {"n_trials": 2}, "split": {"max_train_rows": 20_000}}


def printed(timed: Timed, needle: str) -> str:
    """The first line of the run's output holding `needle` (without Prefect's log prefix)."""
    for line in (timed.stdout + timed.stderr).splitlines():
        if needle in line:
            return line.split(" - ", 1)[-1].strip() if " | " in line else line.strip()
    return "(not printed)"


def states(timings: list[TaskTiming]) -> str:
    """Task name: state (xN when repeated), in run order."""
    counts = Counter((t.name, t.state) for t in timings)
    seen, out = set(), []
    for t in timings:
        if (t.name, t.state) in seen:
            continue
        seen.add((t.name, t.state))
        n = counts[(t.name, t.state)]
        out.append(f"{t.name} {t.state}{f' x{n}' if n > 1 else ''}")
    return "; ".join(out)


def narrower_space(params: Path) -> str:
    """Lower the upper bound of max_depth by one: a changed search space."""
    raw = yaml.safe_load(params.read_text())
    spec = raw["model"]["search_space"]["xgboost"]["max_depth"]
    spec["high"] = max(spec["low"], spec["high"] - 1)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f"model.search_space.xgboost.max_depth.high={spec['high']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trials", type=int, default=None, help="override tune.n_trials")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--repro-runs", type=int, default=3, help="timed no-op `dvc repro` runs")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the projects")
    ap.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = ap.parse_args(argv)
    changes = merge(BENCH, dotted(args.set))
    if args.n_trials is not None:
        changes = merge(changes, {"tune": {"n_trials": args.n_trials}})

    work = work_dir(args.keep, "ctloop-bench-reruns-")
    log("reruns", f"working in {work}; {load_state()}")
    params = make_project(work / "flow", changes)
    home = work / "prefect"
    env = base_env(PREFECT_HOME=str(home), PREFECT_LOCAL_STORAGE_PATH=str(work / "results"))
    rows: list[str] = []
    figures: dict[str, Any] = {"changes": changes, "machine": load_state()}
    with prefect_server(home) as api:
        env["PREFECT_API_URL"] = api
        runs: dict[str, tuple[Timed, list[TaskTiming]]] = {}
        steps = [("first run", None), ("unchanged re-run", None), ("changed search space", "x")]
        for label, change in steps:
            what = narrower_space(params) if change else "-"
            log("reruns", f"{label} ({what}) ...")
            timed = run([CTLOOP, "run", "--params", str(params)], params.parent, env)
            _, timings = last_flow_run(api)
            runs[label] = (timed, timings)
            log("reruns", f"{label}: {timed.seconds:.1f} s")
            figures[label] = {
                "seconds": timed.seconds,
                "cpu": timed.cpu_seconds,
                "change": what,
                "tasks": [t.__dict__ for t in timings],
            }
            tuned_s = sum(t.seconds for t in timings if t.name == "tune-and-fit")
            rows.append(
                f"| {label} | {what} | {timed.seconds:.1f} | {timed.cpu_seconds:.1f} | "
                f"{tuned_s:.1f} | "
                f"{printed(timed, 'promotion        :').split(':', 1)[-1].strip()} |"
            )

    first = runs["first run"][0].seconds
    ratio = runs["unchanged re-run"][0].seconds / first
    changed = runs["changed search space"][1]
    tuned = {t.state for t in changed if t.name == "tune-and-fit"}
    # one validate-batches task run; it prints how many reports came from the cache
    validated = printed(runs["changed search space"][0], "taken from the cache")
    revalidated = not validated.startswith("validation: 0 batch(es) validated,")
    ingested = printed(runs["changed search space"][0], "new batch(es)")

    log("reruns", "dvc repro ...")
    repro = make_project(work / "dvc", merge(changes, REPRO_PROJECT))
    dvc = [str(BIN / "dvc"), "repro"]
    build = run(dvc, repro.parent, base_env())
    noop = [run(dvc, repro.parent, base_env()) for _ in range(args.repro_runs)]
    noop_s = median([t.seconds for t in noop])
    said = noop[-1].stdout.strip().splitlines()[-1] if noop[-1].stdout.strip() else ""
    figures["dvc"] = {"build_s": build.seconds, "noop_s": [t.seconds for t in noop]}

    lines = [
        f"machine: {figures['machine']}",
        f"params changes (all runs): {json.dumps(changes)}",
        "",
        "| run | change | wall s | CPU s | tune-and-fit s | summary: promotion |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        "| figure | target | measured | met |",
        "| --- | --- | ---: | --- |",
        f"| unchanged re-run / first run | <= {RERUN_TARGET:.0%} | {ratio:.1%} | "
        f"{'yes' if ratio <= RERUN_TARGET else 'no'} |",
        f"| changed search space: tune-and-fit runs, batches re-validated | tune-and-fit "
        f"Completed, every batch's validation from the cache | tune-and-fit "
        f"{'/'.join(sorted(tuned))}; {validated} | "
        f"{'yes' if tuned == {'Completed'} and not revalidated else 'no'} |",
        f"| `dvc repro` with nothing changed (median of {len(noop)}) | <= {REPRO_TARGET_S:g} s | "
        f"{noop_s:.2f} s | {'yes' if noop_s <= REPRO_TARGET_S else 'no'} |",
        "",
        f"`dvc repro` building every stage first: {build.seconds:.1f} s; no-op runs: "
        f"{', '.join(f'{t.seconds:.2f}' for t in noop)} s; it said: {said}",
        "",
        *(f"task runs, {label}: {states(timings)}" for label, (_, timings) in runs.items()),
        "",
        f"ingest-batches in the changed run: {ingested}",
        "",
        "Task runs of the unchanged re-run:",
        "",
        *timing_table(runs["unchanged re-run"][1]),
    ]
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"reruns_unchanged_over_first: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
