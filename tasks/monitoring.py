"""The continuous-training flows' Prefect tasks (monitor-batch, retrain-model): each is one step
of ctloop/steps/monitoring.py or ctloop/core/policy.py with its name, retries on transient I/O,
and the events and artifacts the Prefect UI shows. A step with nothing to add is declared as
`task(step, ...)`, not wrapped in a function."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from ctloop.core import events, policy
from ctloop.core.config import Project
from ctloop.steps import dashboard, estimate, monitoring, shadow
from tasks.training import IO

if TYPE_CHECKING:
    from ctloop.io.data import BatchWrite
    from ctloop.ml.drift import DriftSummary


resolve_landing = task(monitoring.resolve_landing, name="resolve-landing", cache_policy=NO_CACHE)


@task(name="ingest-landed", **IO)
def ingest_landed(project: Project, path: Path) -> list[BatchWrite]:
    writes = monitoring.ingest_landed(project, path)
    for w in writes:
        state = "written" if w.written else "unchanged (already ingested)"
        print(f"{path.name}: batch {w.name} ({w.rows} rows) {state}")
    return writes


current_champion = task(monitoring.current_champion, name="current-champion", **IO)


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


start_monitor_run = task(monitoring.start_monitor_run, name="start-monitor-run", **IO)


estimate_batch = task(estimate.estimate_batch, name="estimate-performance", **IO)


@task(name="assess-policy", cache_policy=NO_CACHE)
def assess_policy(project: Project, signals: policy.Signals) -> policy.Verdict:
    verdict = policy.assess(signals, project.params.continuous, project.params.greater_is_better)
    reasons = "\n".join(f"- {r}" for r in verdict.reasons) or "- no trigger fired"
    create_markdown_artifact(
        f"### Batch {signals.batch} with v{signals.model_version}: "
        f"{'RETRAIN' if verdict.retrain else 'keep'}\n\n{reasons}\n\n{_figures(signals)}\n",
        key=f"monitor-{_key(signals.batch)}-v{_key(signals.model_version)}",
        description="Continuous-training policy verdict",
    )
    print(f"policy on {signals.batch}: {'retrain' if verdict.retrain else 'keep'}\n{reasons}")
    return verdict


current_shadow = task(shadow.current_shadow, name="current-shadow", **IO)


@task(name="compare-shadow", **IO)
def compare_shadow(
    project: Project,
    batch: str,
    champion: monitoring.Champion,
    model: shadow.ShadowModel,
    run_id: str,
    predictions: Path,
) -> shadow.ShadowResult:
    return _report_shadow(
        shadow.compare_shadow(project, batch, champion, model, run_id, predictions)
    )


@task(name="record-shadow-failure", **IO)
def record_shadow_failure(
    project: Project,
    batch: str,
    champion: monitoring.Champion,
    model: shadow.ShadowModel,
    run_id: str,
    error: str,
) -> shadow.ShadowResult:
    """compare-shadow failed (its task run shows the traceback): the failure recorded, the
    champion's monitoring goes on."""
    return _report_shadow(shadow.shadow_failed(project, batch, champion, model, run_id, error))


def _report_shadow(result: shadow.ShadowResult) -> shadow.ShadowResult:
    create_markdown_artifact(
        result.markdown(),
        key=f"shadow-{_key(result.batch)}",
        description="Challenger in shadow vs champion",
    )
    print(result.line())
    return result


promote_shadow = task(shadow.promote_shadow, name="promote-shadow", cache_policy=NO_CACHE)


record_verdict = task(monitoring.record_verdict, name="record-verdict", **IO)


@task(name="add-to-dashboard", **IO)
def add_to_dashboard(
    project: Project,
    batch: str,
    champion: monitoring.Champion,
    signals: policy.Signals,
    verdict: policy.Verdict,
    drift: DriftSummary,
    drift_html: Path,
    run_id: str,
) -> str | None:
    """The batch's snapshot on the monitoring dashboard (ctloop/steps/dashboard.py) and the
    `dashboard` link artifact to its page in the Evidently UI; its URL (None: dashboard off)."""
    added = dashboard.add_batch(
        project, batch, champion, signals, verdict, drift, drift_html, run_id
    )
    if added is None:
        print("dashboard: off (dashboard.enabled: false)")
        return None
    state = "added" if added.written else "already there (same batch content and version)"
    create_link_artifact(
        added.url,
        link_text=f"dashboard snapshot of {batch} with v{champion.version}",
        key=f"dashboard-{_key(batch)}",
        description="Evidently UI page of this batch's snapshot (served by `ctloop up`)",
    )
    print(f"dashboard: snapshot of {batch} with v{champion.version} {state}: {added.url}")
    return added.url


plan_retrain = task(monitoring.plan_retrain, name="plan-retrain", **IO)


tag_training = task(monitoring.tag_retrain, name="tag-training", **IO)


@task(name="emit-event", cache_policy=NO_CACHE)
def emit(event: events.Event) -> bool:
    """Emit one event to the Prefect API; False (and a warning) when it could not be sent."""
    sent = emit_event(
        event=event.name,
        resource=event.resource,
        related=list(event.related),
        payload=event.payload,
    )
    about = event.resource["prefect.resource.id"]
    print(f"event {event.name} ({about}): {'sent' if sent else 'NOT sent (no Prefect API)'}")
    return sent is not None


def _figures(signals: policy.Signals) -> str:
    """The measured and the estimated metric of the batch, in words (Markdown)."""
    m = signals.metric
    measured = "no labels" if signals.batch_score is None else f"{signals.batch_score:.4f}"
    if signals.estimated_score is None:
        estimated = "not estimated"
    else:
        estimated = f"{signals.estimated_score:.4f}"
        if signals.estimated_lower is not None and signals.estimated_upper is not None:
            estimated += (
                f" (95% interval {signals.estimated_lower:.4f}..{signals.estimated_upper:.4f})"
            )
    holdout = "?" if signals.reference_score is None else f"{signals.reference_score:.4f}"
    return f"{m}: measured {measured}; estimated {estimated}; holdout {holdout}"


def _key(text: str) -> str:
    """An artifact key (lowercase letters, digits and dashes only)."""
    return "".join(c if c.isalnum() else "-" for c in text.lower())
