"""Monitoring flow: a landed file -> batch (DVC) -> GX gate -> champion scores -> drift and decay
-> policy verdict -> events. Only wiring here; the work is in tasks/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from ctloop.core import events
from ctloop.core.config import Project, load_project
from ctloop.io import data
from ctloop.ml.validation import ValidationFailed, ValidationReport
from ctloop.steps import monitoring
from tasks import monitoring as ct
from tasks import training as t


@dataclass(frozen=True)
class MonitorResult:
    """What happened to one batch of a landed file."""

    batch: str
    status: str  # duplicate | quarantined | no-champion | monitored
    model_version: str | None = None
    retrain: bool = False
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # warning-level rule failures: file, column, rule


@flow(name="monitor-batch", log_prints=True)
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
    except data.DataError as err:
        raise _reject_file(project, path, landed, err) from None
    except Exception as err:  # an unexpected fault: the file is still quarantined, never left
        raise _reject_file(project, path, landed, internal_error(landed, "reading", err)) from None
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
        raise _reject_written(project, path, landed, new, "validating", err) from None
    for report in reports:
        if not report.success:
            reason = "; ".join(r.line(report.file) for r in report.critical_failures)
            first = report.critical_failures[0]
            payload = {"path": path, "file": landed.name, "column": first.column}
            payload |= {"rule": first.rule, "reason": reason}
            ct.emit(events.batch_event(events.BATCH_QUARANTINED, report.batch, payload))
    try:
        data_version = t.version_data(project)
    except Exception as err:
        accepted = [r.batch for r in reports if r.success]
        raise _reject_written(project, path, landed, accepted, "versioning", err) from None
    try:
        t.gate_validation(reports)
    except ValidationFailed as err:
        raise _reject_batches(project, landed, reports, err) from None
    warned = {r.batch: _warnings(landed, r) for r in reports}
    champion = ct.current_champion(project)
    model = (champion.name, champion.version) if champion else (None, None)
    for batch in new:
        payload = {"path": path, "data_version": data_version, "warnings": list(warned[batch])}
        ct.emit(events.batch_event(events.BATCH_VALIDATED, batch, payload, *model))
    if champion is None:
        print("no champion yet: batches validated and versioned; train first (ctloop run)")
        return [*results, *(MonitorResult(b, "no-champion", warnings=warned[b]) for b in new)]
    return [*results, *(_monitor(project, b, champion, warned[b]) for b in new)]


def _reject_file(project: Project, path: str, landed: Path, err: data.DataError) -> Exception:
    """A file refused before any batch was written: quarantined, announced, the error returned
    (same type, the quarantine folder added) for the flow to fail with."""
    why = monitoring.rejection(landed, err)
    try:
        folder = monitoring.quarantine_landed(project, landed, str(err), why.payload())
    except OSError as move_error:  # the rejection stands; say why the file is still there
        print(f"{landed.name}: rejected, but could not be quarantined ({move_error})")
        return type(err)(f"{err} (left in the landing folder: {move_error})")
    payload = {"path": path, **why.payload(), "quarantine": str(folder)}
    ct.emit(events.batch_event(events.BATCH_QUARANTINED, landed.name, payload))
    print(f"{landed.name}: rejected, moved to {folder}")
    return type(err)(f"{err} (moved to {folder})")


class InternalError(data.DataError):
    """An unexpected fault while a landed file was read, cut, validated or versioned (rule
    'internal'): the file is quarantined with the original error like a refused one."""


def internal_error(landed: Path, step: str, err: BaseException) -> InternalError:
    """ctloop's own line for an unexpected error (its type and text kept)."""
    return InternalError(
        f"{landed}: rule 'internal': {step} the file failed unexpectedly "
        f"({type(err).__name__}: {err}); nothing of it was kept. Deliver the file again once "
        "the cause is fixed (if the error names no column or value of the file, it is a fault "
        "of ctloop or its libraries: please report it)"
    )


def _reject_written(
    project: Project, path: str, landed: Path, batches: list[str], step: str, err: Exception
) -> Exception:
    """Validating or versioning failed unexpectedly after the file's batches were written: the
    batches still in the batch folder follow the file to quarantine (nothing unvalidated or
    unversioned is kept; `dvc checkout` restores a batch whose labels this file filled in), then
    the file is rejected with rule 'internal'."""
    from ctloop.ml import validation

    failure = internal_error(landed, step, err)
    moved = []
    for name in batches:
        batch = data.batch_path(project.path("batches"), name)
        if batch.exists():
            details = {"batch": name, "delivered_in": landed.name, "rule": "internal"}
            validation.quarantine_file(batch, str(failure), project.path("quarantine"), details)
            moved.append(name)
    if moved:
        print(f"{landed.name}: batch(es) {', '.join(moved)} moved to quarantine ({step} failed)")
    return _reject_file(project, path, landed, failure)


def _reject_batches(
    project: Project, landed: Path, reports: list[ValidationReport], err: ValidationFailed
) -> ValidationFailed:
    """Batches broke critical rules (already quarantined): the delivered file follows them, so
    the same name can be delivered again once fixed; the error names the file."""
    failed = [r for r in reports if not r.success]
    details = {
        "batches_quarantined": [r.batch for r in failed],
        "batches_accepted": [r.batch for r in reports if r.success],
    }
    reasons = "\n".join(r.reason_text() for r in failed)
    try:
        folder = monitoring.quarantine_landed(project, landed, reasons, details)
        print(f"{landed.name}: rejected, moved to {folder}")
    except OSError as move_error:  # the batches are quarantined; the rejection stands
        print(f"{landed.name}: rejected, but could not be quarantined ({move_error})")
    return ValidationFailed(err.reports, source=landed.name)


def _warnings(landed: Path, report: ValidationReport) -> tuple[str, ...]:
    """Warning-level failures, naming the delivered file and its batch (printed: they do not stop
    the batch)."""
    lines = tuple(r.line(f"{landed.name} (batch {report.batch})") for r in report.warnings)
    for line in lines:
        print(f"warning: {line}")
    return lines


def _monitor(
    project: Project, batch: str, champion: monitoring.Champion, warnings: tuple[str, ...] = ()
) -> MonitorResult:
    run_id = ct.start_monitor_run(project, batch, champion)
    predictions, score = ct.score_batch(project, batch, champion)
    drift, paths = t.report_drift(project, champion.train_batches, batch, run_id)
    signals = monitoring.signals(project, batch, champion, drift, score)
    verdict = ct.assess_policy(project, signals)
    ct.record_verdict(project, run_id, signals, verdict)
    model = (champion.name, champion.version)
    payload = {
        "metric": signals.metric,
        "batch_score": score,
        "holdout_score": champion.holdout_score,
        "decay": verdict.decay_amount,
        "decay_relative": verdict.decay_relative,
        "drifted_share": drift.drifted_share,
        "drifted_columns": list(drift.drifted_columns),
        "predictions": str(predictions),
        "drift_report": str(paths["html"]),
        "reason": "; ".join(verdict.reasons),
    }
    ct.emit(events.batch_event(events.BATCH_MONITORED, batch, payload, *model))
    fired = (
        (verdict.drift, events.DRIFT_DETECTED),
        (verdict.decay, events.PERFORMANCE_DEGRADED),
        (verdict.due, events.RETRAIN_DUE),
    )
    for flag, name in fired:
        if flag:
            ct.emit(events.batch_event(name, batch, payload, *model))
    return MonitorResult(
        batch, "monitored", champion.version, verdict.retrain, verdict.reasons, warnings
    )
