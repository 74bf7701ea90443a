"""Serve the loop's deployments (deployments/definitions.py) and watch the landing folder.

The deployments, their schedules and event triggers are defined once in
deployments/definitions.py (prefect.yaml is generated from the same definition); this module
turns them into Prefect deployments of the flows they name.

`concurrency_limit=1` holds per deployment only: `train` and `retrain` are serialized by the
project's retrain lock inside the flow, and ingestions (monitor runs, CLI runs) by its data lock
(ctloop/io/locks.py).

`python -m deployments.serve --params params.yaml` serves them (`ctloop up` starts it) and
watches the landing folder: a file dropped there is announced as `ctloop.data.arrived`.
"""

from __future__ import annotations

import argparse
import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core import events
from ctloop.core.config import Project, load_project
from ctloop.core.env import apply_env_defaults
from ctloop.io import landing
from deployments import definitions
from deployments.definitions import DeploymentSpec, TriggerSpec
from flows.runtime import announce_file

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger

WATCH_INTERVAL_S = 2.0
LEDGER = "landing-announced.json"


def event_trigger(spec: TriggerSpec) -> DeploymentEventTrigger:
    """Prefect's trigger for a trigger spec."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=spec.name,
        description=spec.description,
        expect=set(spec.expect),
        match=dict(spec.match),
        parameters=dict(spec.parameters),
    )


def monitor_trigger() -> DeploymentEventTrigger:
    """The `monitor` deployment's trigger: every `ctloop.data.arrived`."""
    return event_trigger(definitions.MONITOR_TRIGGER)


def retrain_trigger() -> DeploymentEventTrigger:
    """The `retrain` deployment's trigger: drift, decay or due events about a batch."""
    return event_trigger(definitions.RETRAIN_TRIGGER)


def to_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    """A Prefect deployment of the flow the spec's entrypoint names."""
    flow = getattr(importlib.import_module(spec.module), spec.function)
    return flow.to_deployment(
        name=spec.name,
        cron=spec.cron,
        parameters=dict(spec.parameters),
        triggers=[event_trigger(t) for t in spec.triggers] or None,
        description=spec.description,
        tags=list(spec.tags),
        concurrency_limit=spec.concurrency_limit,
    )


def build(project: Project) -> list[RunnerDeployment]:
    """The loop's deployments of a project, parameterised with its params.yaml."""
    params_path = str(project.root / definitions.PARAMS_FILE)
    return [to_deployment(s) for s in definitions.specs(project, params_path)]


def watch_landing(project: Project, stop: threading.Event, interval: float) -> None:
    """Announce every new or changed file of the landing folder, once (ledger in the stack
    folder); a file that could not be announced is tried again on the next pass."""
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
