"""Monitoring flow: a landed file -> batch (DVC) -> GX gate -> champion scores -> drift and decay
-> policy verdict -> events. Only wiring here; the work is in tasks/."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from ctloop.config import Project, load_project
from tasks import events, monitoring
from tasks import prefect_ct as ct
from tasks import prefect_tasks as t


@dataclass(frozen=True)
class MonitorResult:
    """What happened to one batch of a landed file."""

    batch: str
    status: str  # duplicate | quarantined | no-champion | monitored
    model_version: str | None = None
    retrain: bool = False
    reasons: tuple[str, ...] = ()


@flow(name="monitor-batch", log_prints=True)
def monitor_batch(path: str, params_path: str = "params.yaml") -> list[MonitorResult]:
    """Ingest a file from the landing folder and monitor each new batch with the champion."""
    project = load_project(params_path)
    landed = ct.resolve_landing(project, path)
    writes = ct.ingest_landed(project, landed)
    results = [MonitorResult(w.name, "duplicate") for w in writes if not w.written]
    for r in results:
        ct.emit(events.batch_event(events.BATCH_DUPLICATE, r.batch, {"path": path}))
    new = [w.name for w in writes if w.written]
    if not new:
        print(f"{path}: every batch already ingested with this content; nothing to do")
        return results
    reports = t.validate_batches(project, new, f"monitor/validation-{'_'.join(new)}.json")
    for report in reports:
        if not report.success:
            reason = "; ".join(r.line(report.file) for r in report.critical_failures)
            payload = {"path": path, "reason": reason}
            ct.emit(events.batch_event(events.BATCH_QUARANTINED, report.batch, payload))
    data_version = t.version_data(project)
    t.gate_validation(reports)
    champion = ct.current_champion(project)
    model = (champion.name, champion.version) if champion else (None, None)
    for batch in new:
        payload = {"path": path, "data_version": data_version}
        ct.emit(events.batch_event(events.BATCH_VALIDATED, batch, payload, *model))
    if champion is None:
        print("no champion yet: batches validated and versioned; train first (ctloop run)")
        return [*results, *(MonitorResult(b, "no-champion") for b in new)]
    return [*results, *(_monitor(project, b, champion) for b in new)]


def _monitor(project: Project, batch: str, champion: monitoring.Champion) -> MonitorResult:
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
    return MonitorResult(batch, "monitored", champion.version, verdict.retrain, verdict.reasons)
