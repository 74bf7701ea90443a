"""Monitoring flow: a landed file -> batch (DVC) -> GX gate -> champion (and shadow) scores ->
estimated performance -> drift and decay -> policy verdict -> events. Wiring only: the decisions
are in ctloop/steps/landed.py, ctloop/steps/monitoring.py and ctloop/steps/shadow.py, the tasks
in tasks/."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from ctloop.core import events
from ctloop.core.config import Project, load_project
from ctloop.core.schema import DataError
from ctloop.ml.validation import ValidationFailed
from ctloop.steps import landed as decide
from ctloop.steps import monitoring, shadow
from ctloop.steps.landed import MonitorResult, Refusal
from flows import naming
from tasks import monitoring as ct
from tasks import training as t


@flow(name="monitor-batch", flow_run_name=naming.monitor_run_name, log_prints=True)
def monitor_batch(path: str, params_path: str = "params.yaml") -> list[MonitorResult]:
    """Ingest a file from the landing folder and monitor each new batch with the champion.

    A rejected file (unreadable, cut off, a missing target or time column, a period conflicting
    with an existing batch, a batch breaking a critical rule) is moved to the quarantine with its
    reasons, announced as `ctloop.batch.quarantined`, and fails the run. A path outside the
    landing folder is refused and left where it is."""
    project = load_project(params_path)
    landed = ct.resolve_landing(project, path)
    try:
        writes = ct.ingest_landed(project, landed)
    except DataError as err:
        raise _refused(decide.refuse_file(project, path, landed, err)) from None
    except Exception as err:  # an unexpected fault: the file is still quarantined, never left
        failure = decide.internal_error(landed, "reading", err)
        raise _refused(decide.refuse_file(project, path, landed, failure)) from None
    results = [MonitorResult(w.name, "duplicate") for w in writes if not w.written]
    for r in results:
        ct.emit(events.batch_event(events.BATCH_DUPLICATE, r.batch, {"path": path}))
    new = [w.name for w in writes if w.written]
    if not new:
        print(f"{path}: every batch already ingested with this content; nothing to do")
        return results
    try:
        reports = t.validate_batches(project, new, monitoring.validation_record(project, new))
    except Exception as err:
        refusal = decide.refuse_written(project, path, landed, new, "validating", err)
        raise _refused(refusal) from None
    for event in decide.quarantined_events(path, landed, reports):
        ct.emit(event)
    try:
        data_version = t.version_data(project)
    except Exception as err:
        accepted = [r.batch for r in reports if r.success]
        refusal = decide.refuse_written(project, path, landed, accepted, "versioning", err)
        raise _refused(refusal) from None
    try:
        t.gate_validation(reports)
    except ValidationFailed as err:
        error, line = decide.refuse_batches(project, landed, reports, err)
        print(line)
        raise error from None
    warned = {r.batch: decide.warning_lines(landed, r) for r in reports}
    for line in (line for lines in warned.values() for line in lines):
        print(f"warning: {line}")
    champion = ct.current_champion(project)
    for event in decide.validated_events(path, new, data_version, warned, champion):
        ct.emit(event)
    if champion is None:
        print("no champion yet: batches validated and versioned; train first (ctloop run)")
        return [*results, *(MonitorResult(b, "no-champion", warnings=warned[b]) for b in new)]
    for b in new:
        results.append(_monitor(project, b, champion, warned[b]))
        if results[-1].shadow_promoted:  # the next batch is monitored with the new champion
            champion = ct.current_champion(project) or champion
    return results


def _refused(refusal: Refusal) -> Exception:
    """Print and announce a refused file; the error for the flow to fail with."""
    for line in refusal.lines:
        print(line)
    if refusal.event is not None:
        ct.emit(refusal.event)
    return refusal.error


def _monitor(
    project: Project, batch: str, champion: monitoring.Champion, warnings: tuple[str, ...] = ()
) -> MonitorResult:
    run_id = ct.start_monitor_run(project, batch, champion)
    predictions, score = ct.score_batch(project, batch, champion)
    promoted = _shadow(project, batch, champion, run_id, predictions)
    estimate = ct.estimate_batch(project, batch, champion, run_id, predictions, score)
    drift, paths = t.report_drift(project, champion.train_batches, batch, run_id, champion.version)
    signals = monitoring.signals(project, batch, champion, drift, score, estimate)
    verdict = ct.assess_policy(project, signals)
    ct.record_verdict(project, run_id, signals, verdict)
    for event in decide.monitored_events(
        batch, champion, signals, verdict, drift, predictions, paths["html"]
    ):
        ct.emit(event)
    # after the events: the loop goes on even when the dashboard cannot be written (the run then
    # fails with ctloop's error saying why)
    ct.add_to_dashboard(project, batch, champion, signals, verdict, drift, paths["html"], run_id)
    return MonitorResult(
        batch,
        "monitored",
        champion.version,
        verdict.retrain,
        verdict.reasons,
        warnings,
        shadow_promoted=promoted,
    )


def _shadow(
    project: Project, batch: str, champion: monitoring.Champion, run_id: str, predictions: Path
) -> str | None:
    """The challenger in shadow (if any) scored and compared beside the champion; promoted once
    it won `promotion.shadow_batches` labelled batches in a row. Its version when promoted. A
    shadow that fails (compare-shadow Failed in the UI) is recorded; the champion's run goes on."""
    model = ct.current_shadow(project, champion)
    if model is None:
        return None
    state = ct.compare_shadow(
        project, batch, champion, model, run_id, predictions, return_state=True
    )
    if state.is_failed():
        error = shadow.failure_text(state.result(raise_on_failure=False))
        ct.record_shadow_failure(project, batch, champion, model, run_id, error)
        return None
    result = state.result()
    if result.promotion is None:
        return None
    ct.promote_shadow(project, result.promotion)
    ct.emit(
        events.shadow_promoted(
            model.name, model.version, champion.version, batch, result.promotion.reason
        )
    )
    return model.version
