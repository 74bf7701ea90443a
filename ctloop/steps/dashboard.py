"""Monitoring dashboard step: what a monitored batch adds to the Evidently workspace
(paths.dashboard; `ctloop up` serves it with `evidently ui`), and the URLs of its pages.

One Evidently project per registered model; one snapshot per (batch, model version, batch
content): Evidently's drift report of the batch (reused, not computed again), its data summary,
its quality once labels are there, and ctloop's own values (drift share, realized, estimated and
holdout metric, rows, retrain and new-champion markers) that the dashboard's panels plot over the
batches. Ids are derived from those inputs, so a re-run finds its snapshot instead of adding
another. Storage is ctloop/io/dashboard.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID, uuid5

import pandas as pd

from ctloop.core import fingerprint, policy
from ctloop.core.config import Project
from ctloop.io import dashboard as store
from ctloop.io import data, tracking
from ctloop.ml import drift as drift_ml
from ctloop.steps import drift_report

if TYPE_CHECKING:
    from ctloop.ml.drift import DriftSummary
    from ctloop.steps.monitoring import Champion

NAMESPACE = UUID("9b1c6c1e-4f0e-4c53-8d8a-2f3f6d0c7a11")  # of ctloop's dashboard ids
SNAPSHOT_TAG = "ctloop.dashboard_snapshot"  # the snapshot's URL, on the MLflow monitoring run
CONTENT_CHARS = 12  # of the batch file's digest in a snapshot's metadata


class DashboardError(store.DashboardError):
    """A monitored batch could not be added to the dashboard; the message says why."""


# --- ids and URLs ----------------------------------------------------------------------


def project_id(model_name: str) -> UUID:
    """The Evidently project of a registered model (the same id on every machine)."""
    return uuid5(NAMESPACE, f"project:{model_name}")


def snapshot_id(model_name: str, batch: str, version: str, content: str) -> UUID:
    """The snapshot of `batch` (file digest `content`) monitored with `model_name` v`version`."""
    return uuid5(NAMESPACE, f"snapshot:{model_name}|{batch}|v{version}|{content}")


def ui_url(project: Project) -> str:
    """Base URL of the Evidently UI of the configured stack (`ctloop up`), running or not."""
    cfg = project.params.stack
    return cfg.url(cfg.evidently_port)


def project_url(project: Project, model_name: str) -> str:
    """The dashboard page of a registered model's project."""
    return f"{ui_url(project)}/projects/{project_id(model_name)}"


def snapshot_url(project: Project, model_name: str, snapshot: UUID) -> str:
    """The page of one snapshot (the report itself): /projects/<project>/reports/<snapshot>."""
    return f"{project_url(project, model_name)}/reports/{snapshot}"


# --- what a snapshot holds ---------------------------------------------------------------


def batch_time(batch: str, fallback: datetime) -> datetime:
    """Where a batch sits on the dashboard's time axis: the start of its period (2013, 2013Q3,
    2013-07, 2013-07-01), else `fallback` (batches by arrival: part-00001...)."""
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            return datetime.strptime(batch, fmt)
        except ValueError:
            continue
    if len(batch) == 6 and batch[:4].isdigit() and batch[4] == "Q" and batch[5] in "1234":
        return datetime(int(batch[:4]), 3 * int(batch[5]) - 2, 1)
    return fallback


def value_names(metric: str) -> dict[str, str]:
    """ctloop's values in a snapshot (name -> what it is), for `metric` (e.g. roc_auc)."""
    return {
        "drifted_share": "share of the compared columns that drifted",
        "drift_threshold": "drifted share from which the batch counts as dataset drift",
        "drifted_columns": "drifted columns",
        "compared_columns": "compared columns",
        "rows": "rows of the batch",
        "labelled_rows": "rows with a label",
        f"realized_{metric}": f"champion's {metric} on the batch's labels",
        f"estimated_{metric}": f"champion's estimated {metric} (CBPE/DLE)",
        f"estimated_{metric}_lower": "lower bound of the estimate's 95% interval",
        f"estimated_{metric}_upper": "upper bound of the estimate's 95% interval",
        f"holdout_{metric}": f"champion's {metric} on its holdout",
        "retrain": "1: the policy triggered a retrain on this batch",
        "new_champion": "1: first batch scored by a newly promoted champion version",
    }


def panels(metric: str) -> list[store.PanelSpec]:
    """The dashboard's panels, each a series over the monitored batches."""
    return [
        store.PanelSpec(
            "Dataset drift share",
            (("drifted_share", "drifted share"), ("drift_threshold", "dataset drift from")),
            "share of the compared columns that drifted; dataset drift from drift.drift_share",
        ),
        store.PanelSpec(
            "Drifted columns",
            (("drifted_columns", "drifted"), ("compared_columns", "compared")),
            kind="bar",
        ),
        store.PanelSpec(
            f"Champion's {metric}",
            (
                (f"realized_{metric}", "realized (labels)"),
                (f"estimated_{metric}", "estimated"),
                (f"estimated_{metric}_lower", "estimate 95% lower"),
                (f"estimated_{metric}_upper", "estimate 95% upper"),
                (f"holdout_{metric}", "holdout"),
            ),
            "realized once labels are there; estimated (CBPE/DLE) on every batch",
            size="full",
        ),
        store.PanelSpec("Rows", (("rows", "rows"), ("labelled_rows", "labelled")), kind="bar"),
        store.PanelSpec(
            "Retrains and promotions",
            (("retrain", "retrain triggered"), ("new_champion", "new champion")),
            "1 on the batch where the policy triggered a retrain / a new champion took over",
            kind="bar",
        ),
    ]


def triggers(verdict: policy.Verdict) -> list[str]:
    """The policy's triggers that fired on the batch (empty: none)."""
    fired = {
        "drift": verdict.drift,
        "decay": verdict.decay,
        "estimated_decay": verdict.estimated_decay,
        "every_n_batches": verdict.due,
    }
    return [name for name, on in fired.items() if on]


@dataclass(frozen=True)
class Entry:
    """What one monitored batch adds: the snapshot's id, name, header, time, tags, metadata and
    ctloop's values (plain data; ctloop/io/dashboard.py builds Evidently's objects)."""

    snapshot_id: UUID
    name: str
    header: str
    timestamp: datetime
    tags: tuple[str, ...]
    metadata: dict[str, str]
    values: dict[str, float]


def entry(
    model_name: str,
    batch: str,
    champion: Champion,
    signals: policy.Signals,
    verdict: policy.Verdict,
    drift: DriftSummary,
    rows: tuple[int, int],
    content: str,
    new_champion: bool,
    now: datetime,
) -> Entry:
    """The entry of `batch` monitored with `champion`: `rows` (rows, labelled rows), `content`
    (the batch file's digest), `new_champion` (no earlier batch was monitored with this
    version). Pure: the same inputs give the same entry."""
    metric = signals.metric
    reference = drift_report.period(champion.train_batches)
    fired = triggers(verdict)
    values: dict[str, float] = {
        "drifted_share": drift.drifted_share,
        "drift_threshold": drift.drift_share,
        "drifted_columns": float(drift.n_drifted),
        "compared_columns": float(drift.n_columns),
        "rows": float(rows[0]),
        "labelled_rows": float(rows[1]),
        "retrain": float(verdict.retrain),
        "new_champion": float(new_champion),
    }
    optional = {
        f"realized_{metric}": signals.batch_score,
        f"estimated_{metric}": signals.estimated_score,
        f"estimated_{metric}_lower": signals.estimated_lower,
        f"estimated_{metric}_upper": signals.estimated_upper,
        f"holdout_{metric}": signals.reference_score,
    }
    values |= {k: float(v) for k, v in optional.items() if v is not None}
    name = f"monitor {batch} · {model_name} v{champion.version} · reference {reference}"
    verdict_word = f"RETRAIN ({', '.join(fired)})" if verdict.retrain else "keep"
    header = (
        f"Batch {batch} monitored with {model_name} v{champion.version}; drift against the "
        f"reference {reference} (the champion's training batches); verdict: {verdict_word}"
    )
    tags = (
        f"batch:{batch}",
        f"model:v{champion.version}",
        *(f"trigger:{t}" for t in fired or ["none"]),
        "labelled" if rows[1] else "unlabelled",
    )
    metadata = {
        "batch": batch,
        "model_name": model_name,
        "model_version": champion.version,
        "reference": reference,
        "trigger": ",".join(fired) or "none",
        "verdict": "retrain" if verdict.retrain else "keep",
        "content": content,
    }
    return Entry(
        snapshot_id(model_name, batch, champion.version, content),
        name,
        header,
        batch_time(batch, now.replace(tzinfo=None)),
        tags,
        metadata,
        values,
    )


def is_new_champion(seen: list[dict[str, object]], version: str, at: datetime) -> bool:
    """Whether this batch is the first that `version` scores as champion after another version
    did: no snapshot in `seen` (snapshot_metadata rows) at or before `at` was monitored with
    `version`, and one was monitored with another version (the project's first champion on its
    first batch replaced nothing: no marker)."""
    earlier_other = False
    for row in seen:
        meta = row.get("metadata") or {}
        stamp = row.get("timestamp")
        when = datetime.fromisoformat(str(stamp)) if stamp else None
        if isinstance(meta, dict) and (when is None or when.replace(tzinfo=None) <= at):
            if meta.get("model_version") == version:
                return False
            earlier_other = True
    return earlier_other


# --- adding a batch ---------------------------------------------------------------------


@dataclass(frozen=True)
class Added:
    """A batch on the dashboard: its snapshot's page, and whether this call wrote it."""

    url: str
    snapshot_id: UUID
    written: bool


def add_batch(
    project: Project,
    batch: str,
    champion: Champion,
    signals: policy.Signals,
    verdict: policy.Verdict,
    drift: DriftSummary,
    drift_html: Path,
    run_id: str | None = None,
    now: datetime | None = None,
) -> Added | None:
    """Add the monitored `batch` to the dashboard (None when dashboard.enabled is off); the same
    batch content with the same version again finds its snapshot (written False). The
    snapshot's URL is tagged on the MLflow run `run_id` when given. DashboardError (ctloop's
    words, Evidently's after) when the workspace cannot be written or read back."""
    if not project.params.dashboard.enabled:
        return None
    name = champion.name
    folder = project.path("dashboard")
    pid = project_id(name)
    batch_file = data.batch_path(project.path("batches"), batch)
    content = fingerprint.file_digest(batch_file)[:CONTENT_CHARS]
    sid = snapshot_id(name, batch, champion.version, content)
    url = snapshot_url(project, name, sid)
    try:
        store.ensure_project(
            folder,
            pid,
            name,
            f"ctloop monitoring of the registered model '{name}': one snapshot per monitored batch",
            panels(signals.metric),
        )
        written = False
        if not store.has_snapshot(folder, pid, sid):
            written = _write(
                project, batch, champion, signals, verdict, drift, drift_html, content, now
            )
    except store.DashboardError as err:
        raise DashboardError(f"{err} (batch {batch}, {name} v{champion.version})") from err
    except Exception as err:  # Evidently failed on the batch: worded, never silent
        raise DashboardError(
            f"dashboard: batch {batch} with {name} v{champion.version}: Evidently failed "
            f"({type(err).__name__}: {err}); set dashboard.enabled: false in params.yaml to "
            "monitor without the dashboard"
        ) from err
    if run_id is not None:
        tracking.use_experiment(project)
        tracking.set_tags(run_id, {SNAPSHOT_TAG: url})
    return Added(url, sid, written)


def _write(
    project: Project,
    batch: str,
    champion: Champion,
    signals: policy.Signals,
    verdict: policy.Verdict,
    drift: DriftSummary,
    drift_html: Path,
    content: str,
    now: datetime | None,
) -> bool:
    """Compute the batch's summary (and quality) and write its snapshot; True when written."""
    cfg = project.params
    folder, pid = project.path("dashboard"), project_id(champion.name)
    frame = data.read_batches(project.path("batches"), [batch])
    target = cfg.data.target
    labelled = int(frame[target].notna().sum()) if target in frame.columns else 0
    now = now or datetime.now(UTC)
    seen = store.snapshot_metadata(folder, pid)
    at = batch_time(batch, now.replace(tzinfo=None))
    new = is_new_champion(seen, champion.version, at)
    item = entry(
        champion.name,
        batch,
        champion,
        signals,
        verdict,
        drift,
        (len(frame), labelled),
        content,
        new,
        now,
    )
    schema = data.infer_schema(frame, cfg.data)
    features = frame[schema.features]
    quality = None
    if labelled and signals.batch_score is not None:  # the champion's predictions beside labels
        from ctloop.steps.monitoring import predictions_path  # noqa: PLC0415 (import cycle)

        scored = pd.read_parquet(predictions_path(project, batch, champion.version))
        known = frame[target].notna().to_numpy()
        features = features.assign(
            **{target: frame[target]},
            **{c: scored[c].to_numpy() for c in ("score", "prediction") if c in scored},
        )[known].reset_index(drop=True)
        if schema.task == "classification":
            features[target] = features[target].astype(int)
        quality = schema.task
    definition = store.data_definition(
        list(schema.numeric), list(schema.categorical), schema.task, target if quality else None
    )
    parts = [store.summary_snapshot(features, definition, quality, item.name)]
    model = drift_ml.model_path(drift_html.parent, drift_report.report_stem(drift_html))
    if model.is_file():
        parts.insert(0, model.read_text(encoding="utf-8"))
    snapshot = store.build_snapshot(
        parts, item.name, item.header, item.timestamp, item.metadata, list(item.tags), item.values
    )
    return store.write_snapshot(folder, pid, item.snapshot_id, snapshot)
