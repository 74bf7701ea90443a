"""The loop's deployments, defined once: deployments/serve.py and prefect.yaml both come from here.

- `retrain-model/train`: on the cron schedule `continuous.schedule` (retrains on the policy's
  window; skipped when no new labelled batch arrived).
- `monitor-batch/monitor`: on every `ctloop.data.arrived` event (the landed file's path comes
  from the event payload); one run at a time.
- `retrain-model/retrain`: on `ctloop.drift.detected`, `ctloop.performance.degraded` and
  `ctloop.retrain.due` (trigger, batch and reason come from the event); one run at a time.
- `predict-batch/predict`: scores `serving.input` with the champion on the cron
  `serving.schedule` (when set); always deployed, so a run with any file can be started from the
  UI or `prefect deployment run`.

The specs are plain data (no Prefect import): `serve.py` turns them into Prefect deployments,
`render_prefect_yaml` into the `prefect.yaml` of a process work pool. Regenerate that file after
changing params.yaml or this module:

    python -m deployments.definitions --write prefect.yaml     # or: make prefect-yaml
    python -m deployments.definitions --check prefect.yaml     # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ctloop.core import events
from ctloop.core.config import Project, load_project

TAGS = ("ctloop",)
WORK_POOL = "ctloop"
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class TriggerSpec:
    """An event trigger of a deployment: which events, about which resources, and the flow
    parameters templated from the event (Prefect's `DeploymentEventTrigger` fields)."""

    name: str
    expect: tuple[str, ...]
    match: dict[str, str]
    parameters: dict[str, str]
    runs: str  # the deployment it runs, `flow-name/deployment-name`
    why: str  # what the events mean, in words

    @property
    def description(self) -> str:
        """The automation's description in the Prefect UI (whose trigger card reads "A custom
        trigger" for any event trigger): the events, their resource filter, the deployment run
        and the parameters it gets."""
        events_text = " or ".join(self.expect)
        where = ", ".join(f"{k} = {v}" for k, v in self.match.items())
        given = ", ".join(
            f"{k} from {v.strip('{} ')}" for k, v in self.parameters.items()
        )  # no `{{ }}` in the text: prefect deploy templates those
        return (
            f"When ctloop emits {events_text} ({self.why}) about a resource matching {where}, "
            f"run the deployment {self.runs} with {given}."
        )


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: the flow it runs (entrypoint `module:function`, a module of the installed
    ctloop, so that a worker in any project folder imports it), when, and with what."""

    name: str
    entrypoint: str
    description: str
    parameters: dict[str, Any]
    cron: str | None = None
    triggers: tuple[TriggerSpec, ...] = ()
    tags: tuple[str, ...] = TAGS
    concurrency_limit: int = 1

    @property
    def module(self) -> str:
        """The importable module of the entrypoint (`flows.x:f` -> `flows.x`)."""
        return self.entrypoint.split(":")[0]

    @property
    def function(self) -> str:
        """The flow function's name in that module."""
        return self.entrypoint.split(":")[1]


MONITOR_TRIGGER = TriggerSpec(
    name="monitor-batch/monitor on ctloop.data.arrived",
    expect=(events.DATA_ARRIVED,),
    match={"prefect.resource.id": f"{events.LANDING_RESOURCE}.*"},
    parameters={"path": "{{ event.payload.path }}"},
    runs="monitor-batch/monitor",
    why="a file landed in the landing folder",
)

RETRAIN_TRIGGER = TriggerSpec(
    name="retrain-model/retrain on drift, decay or due",
    expect=tuple(sorted(events.RETRAIN_TRIGGERS)),
    match={"prefect.resource.id": f"{events.BATCH_RESOURCE}.*"},
    parameters={
        "trigger": "{{ event.event }}",
        "batch": "{{ event.payload.batch }}",
        "reason": "{{ event.payload.reason }}",
    },
    runs="retrain-model/retrain",
    why="the monitor's policy found drift, decay, estimated decay or enough new batches",
)


def specs(project: Project, params_path: str) -> list[DeploymentSpec]:
    """The loop's deployments of a project; `params_path` is what each run is given as its
    params file (absolute when served, relative to the worker's directory in prefect.yaml)."""
    schedule = project.params.continuous.schedule
    serving = project.params.serving
    predict_parameters: dict[str, Any] = {"params_path": params_path}
    if serving.input is not None:
        predict_parameters["input_path"] = serving.input
    when = (
        f"{serving.input} on {serving.schedule}"
        if serving.schedule
        else "no schedule: run with a path"
    )
    return [
        DeploymentSpec(
            name="train",
            entrypoint="flows.retrain_model:retrain_model",
            description=f"Scheduled training on the newest window ({schedule or 'no schedule'})",
            parameters={"params_path": params_path, "trigger": "schedule"},
            cron=schedule,
        ),
        DeploymentSpec(
            name="monitor",
            entrypoint="flows.monitor_batch:monitor_batch",
            description="Validate, score, drift and decay of each landed file",
            parameters={"params_path": params_path},
            triggers=(MONITOR_TRIGGER,),
        ),
        DeploymentSpec(
            name="retrain",
            entrypoint="flows.retrain_model:retrain_model",
            description="Retrain on drift, decay or N new batches (with cooldown)",
            parameters={"params_path": params_path},
            triggers=(RETRAIN_TRIGGER,),
        ),
        DeploymentSpec(
            name="predict",
            entrypoint="flows.predict_batch:predict_batch",
            description=f"Score a file with the champion ({when})",
            parameters=predict_parameters,
            cron=serving.schedule,
        ),
    ]


HEADER = """\
# GENERATED from deployments/definitions.py and params.yaml: do not edit by hand.
# Regenerate: make prefect-yaml  (= python -m deployments.definitions --write prefect.yaml)
# The same deployments `ctloop up` serves (deployments/serve.py), for a shared Prefect server and a
# process work pool. From the project root:
#   export PREFECT_API_URL=http://<server>:4200/api CTLOOP_ROOT=$PWD
#   prefect work-pool create ctloop --type process
#   prefect deploy --all
#   prefect worker start --pool ctloop
"""


def _trigger_yaml(trigger: TriggerSpec) -> dict[str, Any]:
    return {
        "type": "event",
        "name": trigger.name,
        "description": trigger.description,
        "enabled": True,
        "expect": list(trigger.expect),
        "match": dict(trigger.match),
        "parameters": dict(trigger.parameters),
    }


def _deployment_yaml(spec: DeploymentSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "entrypoint": spec.entrypoint,
        "parameters": dict(spec.parameters),
    }
    if spec.cron is not None:
        out["schedules"] = [{"cron": spec.cron}]
    if spec.triggers:
        out["triggers"] = [_trigger_yaml(t) for t in spec.triggers]
    out["concurrency_limit"] = spec.concurrency_limit
    out["tags"] = list(spec.tags)
    out["work_pool"] = {"name": WORK_POOL, "work_queue_name": "default"}
    return out


def prefect_yaml(project: Project) -> dict[str, Any]:
    """The content of prefect.yaml for a project (runs read `params.yaml` of the worker's
    directory, `$CTLOOP_ROOT` at deploy time)."""
    return {
        "name": "ctloop",
        "prefect-version": metadata.version("prefect"),
        "build": None,
        "push": None,
        "pull": [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $CTLOOP_ROOT }}"}}
        ],
        "deployments": [_deployment_yaml(s) for s in specs(project, PARAMS_FILE)],
    }


def render_prefect_yaml(project: Project) -> str:
    """prefect.yaml as text: the generated-file header, then the YAML (stable key order)."""
    body = yaml.safe_dump(
        prefect_yaml(project), sort_keys=False, default_flow_style=False, width=100
    )
    return HEADER + "\n" + body


def main(argv: list[str] | None = None) -> int:
    """Print, write or check prefect.yaml from params.yaml."""
    parser = argparse.ArgumentParser(description="Generate prefect.yaml from params.yaml.")
    parser.add_argument("--params", type=Path, default=Path(PARAMS_FILE))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="PATH", help="write the file")
    group.add_argument("--check", type=Path, metavar="PATH", help="exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render_prefect_yaml(load_project(args.params))
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
    elif args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.is_file() else ""
        if current != text:
            print(
                f"{args.check} is stale: regenerate it with"
                f" python -m deployments.definitions --write {args.check}",
                file=sys.stderr,
            )
            return 1
        print(f"{args.check} is up to date")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
