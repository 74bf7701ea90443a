"""Start-up cost: `ctloop --help` wall time, and which libraries each module of ctloop/, flows/,
tasks/ and deployments/ loads at import time.

Run from the project root (about a minute on 2 cores):

    .venv/bin/python benchmarks/startup.py [--repeats 9]

`ctloop --help` runs `--repeats` times after one warm-up (byte code compiled, files in the page
cache); the figure is the median wall time of the process. Each module is then imported alone in
a fresh interpreter, which prints the top-level packages it loaded. Heavy libraries (mlflow,
scikit-learn, xgboost, Great Expectations, Evidently, Optuna, Dask, DVC, ...) must load in none
of them; Prefect is allowed only where tasks or flows are declared (tasks/, flows/, deployments/)
and must not leak into the library (every module of ctloop/ and its layers).
Figures go to stdout (markdown), progress to stderr; the last line is `name: value`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from harness import CTLOOP, ROOT, base_env, load_state, log, median, median_seconds, run

HEAVY = (
    "mlflow",
    "sklearn",
    "xgboost",
    "great_expectations",
    "evidently",
    "optuna",
    "dask",
    "distributed",
    "prefect_dask",
    "dvc",
    "matplotlib",
    "plotly",
    "scipy",
)
PREFECT = ("prefect",)
PACKAGES = ("ctloop", "flows", "tasks", "deployments")
HELP_TARGET_S = 0.5
# imported only by uvicorn in the scoring server's own process (its environment names the model;
# it loads MLflow by design): not part of any command's start-up
SERVER_APPS = ("ctloop.ops.scoring_app",)

PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
loaded = sorted({{m.split(".")[0] for m in sys.modules}})
print(json.dumps({{"seconds": seconds, "loaded": loaded}}))
"""


def modules() -> list[str]:
    """Every importable module of the project's packages (not tests, not benchmarks)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [m for m in found if m not in SERVER_APPS]


def prefect_allowed(module: str) -> bool:
    """Prefect may load where tasks, flows or deployments are declared (never in ctloop/)."""
    return module.partition(".")[0] in ("tasks", "flows", "deployments")


def probe(module: str) -> tuple[float, set[str]]:
    """Import `module` alone in a fresh interpreter: its import seconds and loaded packages."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return float(raw["seconds"]), set(raw["loaded"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="timed `ctloop --help` runs")
    args = ap.parse_args(argv)

    log("startup", f"ctloop --help x{args.repeats} ({load_state()})")
    env = base_env()
    run([CTLOOP, "--help"], ROOT, env)  # warm-up: byte code and page cache
    help_times = median_seconds([CTLOOP, "--help"], ROOT, env, args.repeats)
    help_s = median(help_times)

    rows, bad = [], []
    for module in modules():
        seconds, loaded = probe(module)
        heavy = sorted(loaded & set(HEAVY))
        prefect = bool(loaded & set(PREFECT))
        problems = heavy + (["prefect"] if prefect and not prefect_allowed(module) else [])
        if problems:
            bad.append(f"{module}: {', '.join(problems)}")
        rows.append(
            f"| {module} | {seconds * 1000:.0f} | {'yes' if prefect else 'no'} | "
            f"{', '.join(heavy) or '-'} |"
        )
        log("startup", f"{module}: {seconds:.2f} s, prefect={prefect}, heavy={heavy or '-'}")

    lines = [
        f"machine: {load_state()}",
        "",
        "| figure | target | measured | met |",
        "| --- | --- | ---: | --- |",
        f"| `ctloop --help` median wall (s) | <= {HELP_TARGET_S} | {help_s:.3f} | "
        f"{'yes' if help_s <= HELP_TARGET_S else 'no'} |",
        f"| modules loading a heavy library (or Prefect in ctloop/) | 0 | {len(bad)} | "
        f"{'yes' if not bad else 'no'} |",
        "",
        f"`ctloop --help` runs (s): {', '.join(f'{s:.3f}' for s in help_times)}",
        "",
        "| module | import ms | loads prefect | heavy libraries loaded |",
        "| --- | ---: | --- | --- |",
        *rows,
        "",
        f"heavy libraries checked: {', '.join(HEAVY)}",
        *(f"PROBLEM {b}" for b in bad),
    ]
    print("\n".join(lines))
    print(f"startup_ctloop_help_seconds: {help_s:.3f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
