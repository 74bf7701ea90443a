"""The monitor's decisions on a landed file (flows/monitor_batch.py wires them): a refused file
and any batch it wrote go to the quarantine with their reasons, and every batch's fate becomes an
event (`ctloop.batch.*`, `ctloop.drift.detected`, ...; ctloop/core/events.py). Each function
returns what the flow should emit and raise; it emits nothing itself (no Prefect here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctloop.core import events
from ctloop.core.config import Project
from ctloop.core.schema import DataError
from ctloop.io import data, files
from ctloop.ml import validation
from ctloop.ml.validation import ValidationFailed
from ctloop.steps import monitoring

if TYPE_CHECKING:
    from ctloop.core import policy
    from ctloop.ml.drift import DriftSummary
    from ctloop.ml.validation import ValidationFailed, ValidationReport


@dataclass(frozen=True)
class MonitorResult:
    """What happened to one batch of a landed file."""

    batch: str
    status: str  # duplicate | quarantined | no-champion | monitored
    model_version: str | None = None
    retrain: bool = False
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # warning-level rule failures: file, column, rule
    shadow_promoted: str | None = None  # the challenger in shadow promoted on this batch


@dataclass(frozen=True)
class Refusal:
    """A refused landed file: the error the run fails with (it names where the file went), the
    event announcing it (None: the file could not be moved, nothing to announce) and the lines
    to print."""

    error: Exception
    event: events.Event | None
    lines: tuple[str, ...]


class InternalError(DataError):
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


def refuse_file(project: Project, path: str, landed: Path, err: DataError) -> Refusal:
    """A file refused before any batch was kept: moved to the quarantine with reason.txt; the
    error keeps its type and says where the file is now."""
    why = monitoring.rejection(landed, err)
    try:
        folder = monitoring.quarantine_landed(project, landed, str(err), why.payload())
    except OSError as move_error:  # the rejection stands; say why the file is still there
        line = f"{landed.name}: rejected, but could not be quarantined ({move_error})"
        return Refusal(
            type(err)(f"{err} (left in the landing folder: {move_error})"), None, (line,)
        )
    payload = {"path": path, **why.payload(), "quarantine": str(folder)}
    event = events.batch_event(events.BATCH_QUARANTINED, landed.name, payload)
    line = f"{landed.name}: rejected, moved to {folder}"
    return Refusal(type(err)(f"{err} (moved to {folder})"), event, (line,))


def refuse_written(
    project: Project, path: str, landed: Path, batches: list[str], step: str, err: Exception
) -> Refusal:
    """Validating or versioning failed unexpectedly after the file's batches were written: the
    batches still in the batch folder follow the file to quarantine (nothing unvalidated or
    unversioned is kept; `dvc checkout` restores a batch whose labels this file filled in), then
    the file is refused with rule 'internal'."""
    failure = internal_error(landed, step, err)
    moved = []
    for name in batches:
        batch = data.batch_path(project.path("batches"), name)
        if batch.exists():
            details = {"batch": name, "delivered_in": landed.name, "rule": "internal"}
            validation.quarantine_file(
                batch, str(failure), project.path("quarantine"), files.write_text_atomic, details
            )
            moved.append(name)
    refusal = refuse_file(project, path, landed, failure)
    if not moved:
        return refusal
    line = f"{landed.name}: batch(es) {', '.join(moved)} moved to quarantine ({step} failed)"
    return Refusal(refusal.error, refusal.event, (line, *refusal.lines))


def refuse_batches(
    project: Project, landed: Path, reports: list[ValidationReport], err: ValidationFailed
) -> tuple[ValidationFailed, str]:
    """Batches broke critical rules (already quarantined): the delivered file follows them, so
    the same name can be delivered again once fixed. Returns the error naming the file and the
    line to print."""
    failed = [r for r in reports if not r.success]
    details = {
        "batches_quarantined": [r.batch for r in failed],
        "batches_accepted": [r.batch for r in reports if r.success],
    }
    reasons = "\n".join(r.reason_text() for r in failed)
    try:
        folder = monitoring.quarantine_landed(project, landed, reasons, details)
        line = f"{landed.name}: rejected, moved to {folder}"
    except OSError as move_error:  # the batches are quarantined; the rejection stands
        line = f"{landed.name}: rejected, but could not be quarantined ({move_error})"
    return ValidationFailed(err.reports, source=landed.name), line


def quarantined_events(
    path: str, landed: Path, reports: list[ValidationReport]
) -> list[events.Event]:
    """`ctloop.batch.quarantined` for each batch that broke a critical rule: its first rule and
    column, and every reason."""
    out = []
    for report in reports:
        if report.success:
            continue
        reason = "; ".join(r.line(report.file) for r in report.critical_failures)
        first = report.critical_failures[0]
        payload = {"path": path, "file": landed.name, "column": first.column}
        payload |= {"rule": first.rule, "reason": reason}
        out.append(events.batch_event(events.BATCH_QUARANTINED, report.batch, payload))
    return out


def warning_lines(landed: Path, report: ValidationReport) -> tuple[str, ...]:
    """Warning-level failures, naming the delivered file and its batch (they do not stop it)."""
    return tuple(r.line(f"{landed.name} (batch {report.batch})") for r in report.warnings)


def validated_events(
    path: str,
    batches: list[str],
    data_version: str,
    warnings: dict[str, tuple[str, ...]],
    champion: monitoring.Champion | None,
) -> list[events.Event]:
    """`ctloop.batch.validated` for each new batch, related to the champion when there is one."""
    model = (champion.name, champion.version) if champion else (None, None)
    return [
        events.batch_event(
            events.BATCH_VALIDATED,
            batch,
            {"path": path, "data_version": data_version, "warnings": list(warnings[batch])},
            *model,
        )
        for batch in batches
    ]


def monitored_events(
    batch: str,
    champion: monitoring.Champion,
    signals: policy.Signals,
    verdict: policy.Verdict,
    drift: DriftSummary,
    predictions: Path,
    drift_report: Path,
) -> list[events.Event]:
    """`ctloop.batch.monitored`, then one event per trigger the verdict fired (drift, decay,
    estimated decay, retrain due), each with the same payload: the figures the policy compared
    (the estimated score and its 95% interval included; None when not estimated); the metric and
    the verdict (`retrain` or `keep`) are also related resources."""
    payload: dict[str, Any] = {
        "batch_score": signals.batch_score,
        "holdout_score": champion.holdout_score,
        "decay": verdict.decay_amount,
        "decay_relative": verdict.decay_relative,
        "estimated_score": signals.estimated_score,
        "estimated_lower": signals.estimated_lower,
        "estimated_upper": signals.estimated_upper,
        "estimated_decay_relative": verdict.estimated_decay_relative,
        "drifted_share": drift.drifted_share,
        "drifted_columns": list(drift.drifted_columns),
        "predictions": str(predictions),
        "drift_report": str(drift_report),
        "reason": "; ".join(verdict.reasons),
    }
    model = (champion.name, champion.version)
    fired = (
        (True, events.BATCH_MONITORED),
        (verdict.drift, events.DRIFT_DETECTED),
        (verdict.decay, events.PERFORMANCE_DEGRADED),
        (verdict.estimated_decay, events.ESTIMATED_DEGRADED),
        (verdict.due, events.RETRAIN_DUE),
    )
    verdict_word = "retrain" if verdict.retrain else "keep"
    return [
        events.batch_event(name, batch, payload, *model, signals.metric, verdict_word)
        for flag, name in fired
        if flag
    ]
