"""Retraining flow: the policy's window over the labelled batches -> the training flow (tuning,
champion/challenger gate on the newest labelled batch) -> the decision as an artifact, MLflow tags
and an event. Skipped, with the reason, when the window is unchanged or inside the cooldown.
One retrain at a time per project, across deployments (a file lock). Only wiring here; the work
is in tasks/."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ctloop.core import events
from ctloop.core.config import load_project
from ctloop.io import locks
from flows import naming
from flows.train_model import train_model
from tasks import monitoring as ct


@dataclass(frozen=True)
class RetrainResult:
    trigger: str
    batch: str | None
    window: str
    skipped: str | None = None
    model_version: str | None = None
    promoted: bool = False
    decision: str = ""


@flow(name="retrain-model", flow_run_name=naming.retrain_run_name, log_prints=True)
def retrain_model(
    params_path: str = "params.yaml",
    trigger: str = "manual",
    batch: str | None = None,
    reason: str = "",
) -> RetrainResult:
    """Retrain on the policy's window when a trigger fired (drift, decay, N batches, by hand).

    Plan, training and gate run under the project's retrain lock (ctloop/io/locks.py), whichever
    deployment started the run (the cron `train`, the event `retrain`, a CLI run): trainings never
    overlap and a run that waited re-reads the plan, so it skips a window trained meanwhile."""
    project = load_project(params_path)
    cause = f"{trigger}" + (f" on {batch}" if batch else "") + (f": {reason}" if reason else "")
    purpose = f"retrain ({cause[:200]})"
    with locks.project_lock(project, locks.RETRAIN, locks.RETRAIN_TIMEOUT_S, purpose, print):
        plan = ct.plan_retrain(project)
        window = f"{plan.train[0]}..{plan.holdout[-1]}"
        if plan.skip:
            result = RetrainResult(trigger, batch, window, skipped=plan.skip)
            _report(result, cause)
            return result
        summary = train_model(
            params_path=params_path,
            window_start=plan.train[0],
            window_end=plan.holdout[-1],
            trigger=trigger,
        )
        if not summary.unchanged:  # an unchanged run trained nothing: keep the version's trigger
            ct.tag_training(project, summary.mlflow_run_id, summary.model_version, trigger, cause)
    result = RetrainResult(
        trigger,
        batch,
        window,
        model_version=summary.model_version,
        promoted=summary.promoted,
        decision=summary.promotion_reason,
    )
    _report(result, cause)
    payload = {"trigger": trigger, "promoted": result.promoted, "decision": result.decision}
    model = (project.params.promotion.model_name, summary.model_version)
    verdict = "promoted" if result.promoted else "kept"
    ct.emit(
        events.batch_event(
            events.RETRAIN_FINISHED,
            batch or window,
            payload,
            *model,
            project.params.metric,
            verdict,
        )
    )
    return result


def _report(result: RetrainResult, cause: str) -> None:
    """The decision and its reasons as a Prefect artifact and in the log."""
    if result.skipped:
        text = f"### Retrain skipped\n\nTrigger: {cause}\n\nWhy: {result.skipped}\n"
    else:
        verdict = "PROMOTED to champion" if result.promoted else "kept as challenger"
        text = (
            f"### Retrained on {result.window}: v{result.model_version} {verdict}\n\n"
            f"Trigger: {cause}\n\nGate: {result.decision}\n"
        )
    create_markdown_artifact(text, key="retrain-decision", description="Continuous training")
    print(text)
