"""The second plain side of `benchmarks/overhead.py`: the train-model flow's steps, in one process,
without Prefect. It calls the DVC stages' functions (ctloop/ops/stages.py: ingest, validate, train,
evaluate, drift; the same `ctloop.steps.sequence` steps the flow calls, see README "The same
pipeline with DVC") one after the other, so validation, tracking, registration, the gate, the
drift report and the model card are all done, as in the flow. What it leaves out is what only
orchestration adds: Prefect's flow and task runs, their result store and caches, the run server,
the worker process that computes drift beside the main line, and the process start of `ctloop
run`'s checks (reconciliation of interrupted runs, preflight).

    .venv/bin/python benchmarks/plain_steps.py PARAMS_YAML

Run it in a project made by `harness.make_project`. It prints one JSON line: seconds per stage,
and the CV figures (`cv`, as in reports/metrics.json, which the evaluate stage writes), so the
caller can check that it did the same work as the flow.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()

from harness import ROOT  # noqa: E402, F401 (puts the project on sys.path)

from ctloop.core.env import apply_env_defaults  # noqa: E402

apply_env_defaults()

from ctloop.core.config import load_project  # noqa: E402
from ctloop.ops.stages import STAGES, run_stage  # noqa: E402


def main(params_path: str) -> int:
    project = load_project(params_path)
    seconds: dict[str, float] = {"import_s": time.perf_counter() - started}
    for name in STAGES:
        before = time.perf_counter()
        run_stage(project, name)
        seconds[f"{name}_s"] = time.perf_counter() - before
    metrics = json.loads((project.path("reports") / "metrics.json").read_text())
    cv = metrics["cv"]
    metric = project.params.metric
    print(
        json.dumps(
            {
                **seconds,
                "total_s": time.perf_counter() - started,
                "cv": {k: cv[k] for k in (f"{metric}_mean", "n_trials", "n_pruned")},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
