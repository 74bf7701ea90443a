"""Thin Prefect wrappers for the continuous-training flows (monitor-batch, retrain-model):
names, retries on transient I/O, events and artifacts for the Prefect UI. The work is in
ctloop/steps/monitoring.py and ctloop/core/policy.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.core import events, policy
from ctloop.core.config import Project
from ctloop.steps import monitoring
from tasks.training import IO

if TYPE_CHECKING:
    from ctloop.io.data import BatchWrite


@task(name="resolve-landing", cache_policy=NO_CACHE)
def resolve_landing(project: Project, path: str) -> Path:
    return monitoring.resolve_landing(project, path)


@task(name="ingest-landed", **IO)
def ingest_landed(project: Project, path: Path) -> list[BatchWrite]:
    writes = monitoring.ingest_landed(project, path)
    for w in writes:
        state = "written" if w.written else "unchanged (already ingested)"
        print(f"{path.name}: batch {w.name} ({w.rows} rows) {state}")
    return writes


@task(name="current-champion", **IO)
def current_champion(project: Project) -> monitoring.Champion | None:
    return monitoring.current_champion(project)


@task(name="score-batch", **IO)
def score_batch(
    project: Project, batch: str, champion: monitoring.Champion
) -> tuple[Path, float | None]:
    path, score = monitoring.score_batch(project, batch, champion)
    measured = (
        "not measured (fewer than 2 labelled rows, or one class only)"
        if score is None
        else f"{project.params.metric} {score:.4f}"
    )
    print(f"scored {batch} with {champion.name} v{champion.version}: {path.name}; {measured}")
    return path, score


@task(name="start-monitor-run", **IO)
def start_monitor_run(project: Project, batch: str, champion: monitoring.Champion) -> str:
    return monitoring.start_monitor_run(project, batch, champion)


@task(name="assess-policy", cache_policy=NO_CACHE)
def assess_policy(project: Project, signals: policy.Signals) -> policy.Verdict:
    verdict = policy.assess(signals, project.params.continuous, project.params.greater_is_better)
    reasons = "\n".join(f"- {r}" for r in verdict.reasons) or "- no trigger fired"
    create_markdown_artifact(
        f"### Batch {signals.batch} with v{signals.model_version}: "
        f"{'RETRAIN' if verdict.retrain else 'keep'}\n\n{reasons}\n",
        key=f"monitor-{_key(signals.batch)}-v{_key(signals.model_version)}",
        description="Continuous-training policy verdict",
    )
    print(f"policy on {signals.batch}: {'retrain' if verdict.retrain else 'keep'}\n{reasons}")
    return verdict


@task(name="record-verdict", **IO)
def record_verdict(
    project: Project, run_id: str, signals: policy.Signals, verdict: policy.Verdict
) -> None:
    monitoring.record_verdict(project, run_id, signals, verdict)


@task(name="plan-retrain", **IO)
def plan_retrain(project: Project) -> monitoring.RetrainPlan:
    return monitoring.plan_retrain(project)


@task(name="tag-training", **IO)
def tag_training(project: Project, run_id: str, version: str, trigger: str, cause: str) -> None:
    monitoring.tag_retrain(project, run_id, version, trigger, cause)


@task(name="emit-event", cache_policy=NO_CACHE)
def emit(event: events.Event) -> bool:
    """Emit one event to the Prefect API; False (and a warning) when it could not be sent."""
    from prefect.events import emit_event

    sent = emit_event(
        event=event.name,
        resource=event.resource,
        related=list(event.related),
        payload=event.payload,
    )
    about = event.resource["prefect.resource.id"]
    print(f"event {event.name} ({about}): {'sent' if sent else 'NOT sent (no Prefect API)'}")
    return sent is not None


def _key(text: str) -> str:
    """An artifact key (lowercase letters, digits and dashes only)."""
    return "".join(c if c.isalnum() else "-" for c in text.lower())
