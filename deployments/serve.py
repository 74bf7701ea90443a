"""The loop's deployments: schedules and event triggers, declared apart from the flows.

- `retrain-model/train`: on the cron schedule `continuous.schedule` (retrains on the policy's
  window; skipped when no new labelled batch arrived).
- `monitor-batch/monitor`: on every `ctloop.data.arrived` event (the landed file's path comes
  from the event payload); one run at a time.
- `retrain-model/retrain`: on `ctloop.drift.detected`, `ctloop.performance.degraded` and
  `ctloop.retrain.due` (trigger, batch and reason come from the event); one run at a time.
- `predict-batch/predict`: scores `serving.input` with the champion on the cron
  `serving.schedule` (when set); always deployed, so a run with any file can be started from the
  UI or `prefect deployment run`.

`concurrency_limit=1` holds per deployment only: `train` and `retrain` are serialized by the
project's retrain lock inside the flow, and ingestions (monitor runs, CLI runs) by its data lock
(ctloop/io/locks.py).

`python -m deployments.serve --params params.yaml` serves them (`ctloop up` starts it) and
watches the landing folder: a file dropped there is announced as `ctloop.data.arrived`.
prefect.yaml declares the same deployments for a process work pool.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core import events
from ctloop.core.config import Project, load_project
from ctloop.core.env import apply_env_defaults

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_TAGS = ["ctloop"]
WATCH_INTERVAL_S = 2.0
LEDGER = "landing-announced.json"


def monitor_trigger() -> object:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="data-arrived",
        expect={events.DATA_ARRIVED},
        match={"prefect.resource.id": f"{events.LANDING_RESOURCE}.*"},
        parameters={"path": "{{ event.payload.path }}"},
    )


def retrain_trigger() -> object:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="drift-decay-or-due",
        expect=set(events.RETRAIN_TRIGGERS),
        match={"prefect.resource.id": f"{events.BATCH_RESOURCE}.*"},
        parameters={
            "trigger": "{{ event.event }}",
            "batch": "{{ event.payload.batch }}",
            "reason": "{{ event.payload.reason }}",
        },
    )


def build(project: Project) -> list[RunnerDeployment]:
    """The loop's deployments of a project, parameterised with its params.yaml."""
    from flows.monitor_batch import monitor_batch
    from flows.retrain_model import retrain_model

    params_path = str(project.root / "params.yaml")
    schedule = project.params.continuous.schedule
    return [
        retrain_model.to_deployment(
            name="train",
            cron=schedule,
            parameters={"params_path": params_path, "trigger": "schedule"},
            description=f"Scheduled training on the newest window ({schedule or 'no schedule'})",
            tags=DEPLOYMENT_TAGS,
            concurrency_limit=1,
        ),
        monitor_batch.to_deployment(
            name="monitor",
            parameters={"params_path": params_path},
            triggers=[monitor_trigger()],
            description="Validate, score, drift and decay of each landed file",
            tags=DEPLOYMENT_TAGS,
            concurrency_limit=1,
        ),
        retrain_model.to_deployment(
            name="retrain",
            parameters={"params_path": params_path},
            triggers=[retrain_trigger()],
            description="Retrain on drift, decay or N new batches (with cooldown)",
            tags=DEPLOYMENT_TAGS,
            concurrency_limit=1,
        ),
        predict_deployment(project, params_path),
    ]


def predict_deployment(project: Project, params_path: str) -> RunnerDeployment:
    """`predict-batch/predict`: `serving.input` on the cron `serving.schedule` when set
    (params.yaml refuses a schedule without an input); otherwise run by hand with a path."""
    from flows.predict_batch import predict_batch

    cfg = project.params.serving
    parameters = {"params_path": params_path}
    if cfg.input is not None:
        parameters["input_path"] = cfg.input
    when = f"{cfg.input} on {cfg.schedule}" if cfg.schedule else "no schedule: run with a path"
    return predict_batch.to_deployment(
        name="predict",
        cron=cfg.schedule,
        parameters=parameters,
        description=f"Score a file with the champion ({when})",
        tags=DEPLOYMENT_TAGS,
        concurrency_limit=1,
    )


def watch_landing(project: Project, stop: threading.Event, interval: float) -> None:
    """Announce every new or changed file of the landing folder, once (ledger in the stack
    folder); a file that could not be announced is tried again on the next pass."""
    from ctloop.io import landing
    from flows.runtime import announce_file

    ledger = project.path("stack") / LEDGER
    seen = landing.read_ledger(ledger)
    while True:
        for path in landing.arrivals(project.path("landing"), seen):
            if announce_file(project, path):
                print(f"announced {events.DATA_ARRIVED}: {path.name}", flush=True)
                seen[path.name] = landing.fingerprint(path)
                landing.write_ledger(ledger, seen)
        if stop.wait(interval):
            return


def main(argv: list[str] | None = None) -> None:
    """Serve the deployments until interrupted (needs PREFECT_API_URL: a running server)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    apply_env_defaults()
    from prefect import serve

    project = load_project(args.params)
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_landing, args=(project, stop, WATCH_INTERVAL_S), daemon=True
    )
    watcher.start()
    try:
        serve(*build(project), print_starting_message=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
