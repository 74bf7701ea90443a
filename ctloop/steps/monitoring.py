"""Monitoring steps of the continuous-training loop: landing files, scoring with the champion,
performance on labelled batches, and the signals the policy reads. No Prefect here (the thin
wrappers are in tasks/training.py); heavy libraries are imported inside functions.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ctloop.core import contract, fingerprint, names, policy
from ctloop.core.config import DataConfig, Project
from ctloop.io import arrival, data, files, locks, registry, tracking
from ctloop.io.landing import LANDING_SUFFIXES
from ctloop.ml import training, validation
from ctloop.steps import validate

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from ctloop.ml.drift import DriftSummary
    from ctloop.ml.estimation import Estimate

HOLDOUT_TAG = "ctloop.holdout_batches"


class LandingError(data.DataError):
    """A landing path is outside the landing folder, missing or of the wrong type."""


# --- landing ---------------------------------------------------------------------------


def resolve_landing(project: Project, path: str) -> Path:
    """A path from an event or a user, resolved inside the landing folder (refused otherwise)."""
    landing = project.path("landing").resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else landing / candidate).resolve()
    if not resolved.is_relative_to(landing):
        raise LandingError(
            f"{path}: rule 'landing_path': resolves to {resolved}, outside the landing folder "
            f"{landing}; refused"
        )
    if resolved.suffix.lower() not in LANDING_SUFFIXES:
        raise LandingError(f"{resolved}: rule 'file_type': expected .csv or .parquet")
    if not resolved.is_file():
        raise LandingError(f"{resolved}: rule 'landing_file': no such file in the landing folder")
    return resolved


def receive_file(project: Project, source: Path) -> Path:
    """Copy a user's file into the landing folder (atomic); the same name with other content is
    refused, the same content again is a no-op. Returns the landed path."""
    if not source.is_file():
        raise LandingError(f"{source}: rule 'landing_file': no such file")
    if source.suffix.lower() not in LANDING_SUFFIXES:
        raise LandingError(f"{source}: rule 'file_type': expected .csv or .parquet")
    landing = project.path("landing")
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / source.name
    if target.resolve() == source.resolve():
        return target
    if target.exists():
        if target.read_bytes() == source.read_bytes() or same_content(project, target, source):
            return target  # the same values again (other bytes: dtypes, writer): a no-op
        raise LandingError(
            f"{target}: rule 'immutable_landing': a file with this name and other values already "
            f"landed; deliver the new file under another name, or {data.REPLACE_HINT}"
        )
    return files.copy_atomic(source, target)


def same_content(project: Project, a: Path, b: Path) -> bool:
    """Whether two delivered files hold the same values once brought to the data contract's form
    (Float64 with NA and float64 with NaN, Parquet and CSV writers alike: `data.content_hash`).
    A file the contract refuses is not the same content."""
    cfg = project.params.data
    try:
        digests = [
            data.content_hash(data.prepare(data.load_source(str(f), project.root), cfg, str(f)))
            for f in (a, b)
        ]
    except data.DataError:
        return False
    return digests[0] == digests[1]


def ingest_landed(project: Project, path: Path) -> list[data.BatchWrite]:
    """Prepare a landed file like the source and write its batches; an identical batch is a
    no-op, a re-delivery with labels filled in replaces the unlabelled one. With a time column
    the batches are the file's periods; without one, its blocks become the next batches by
    arrival, numbered after the newest (ctloop/io/arrival.py). All or nothing: a file that is cut
    off,
    holds values the data contract cannot normalise, rows without a time, or a batch that
    conflicts with an existing one raises a DataError before any batch is written."""
    cfg = project.params.data
    batches = cut_delivery(project, path)
    folder = project.path("batches")
    # one writer at a time: a simultaneous delivery of the same file then finds no-ops, and two
    # deliveries without a time column never take the same batch number
    with locks.project_lock(project, locks.DATA, purpose=f"ingest {path.name}"):
        if cfg.time_column is None:
            cache = project.path("stack") / arrival.DIGEST_CACHE
            return arrival.ingest_blocks(folder, list(batches.values()), cfg.target, path, cache)
        check_overlaps(folder, batches, cfg.target, path)
        return [data.write_batch(folder, n, b, label_column=cfg.target) for n, b in batches.items()]


def cut_delivery(project: Project, path: Path) -> dict[str, pd.DataFrame]:
    """Read, check and prepare a delivered file and cut it into batches ({period: rows}; without
    a time column {part-00001...: rows}, numbered within the file), writing nothing: the one
    reading of a delivery (`cut_source`), shared by `ingest_landed` and `ctloop batch replace`
    (ctloop/steps/correction.py). DataError naming the file (column, rule)."""
    cfg = project.params
    return cut_source(cfg.data, str(path), project.root, str(path), blocks=block_rule(project))


def block_rule(project: Project) -> data.BlockRule:
    """How this project cuts rows without a time column: `data.rows_per_batch`, the remainder
    kept within the row_count rule's bounds (`validation.row_count_min_factor`/`max_factor`)."""
    return data.BlockRule.of(project.params.data, project.params.validation)


def cut_source(
    cfg: DataConfig,
    source: str,
    root: Path,
    origin: str,
    skip: frozenset[str] = frozenset(),
    blocks: data.BlockRule | None = None,
) -> dict[str, pd.DataFrame]:
    """The one edge every source passes (initial ingestion, DVC stage, landing folder): read the
    file(s), refuse a cut-off CSV, bring the values to the data contract's form
    (ctloop/core/contract.py, via `data.prepare`), refuse rows without a time, cut into period
    batches
    (without a time column: blocks by `blocks`, see `data.split_batches`).
    Writes nothing; raises DataError naming `origin`, the column and the rule."""
    files = data.source_files(source, root)
    raw = data.load_source(source, root, cfg.max_file_mb, skip)
    for file in files:
        check_complete_csv(file)
    check_label_values(raw, cfg, Path(origin))
    frame = data.prepare(raw, cfg, origin)
    del raw
    if frame.empty:
        raise data.DataError(f"{origin}: rule 'not_empty': file holds no rows")
    check_times(frame, cfg, Path(origin))
    return data.split_batches(frame, cfg, blocks)


def check_complete_csv(path: Path) -> None:
    """A CSV whose last line has fewer fields than the header and no line end was cut off (pandas
    would fill the missing fields with nulls). A cut exactly at a line end cannot be told apart."""
    if path.suffix.lower() != ".csv":
        return
    with path.open("rb") as f:
        header = f.readline()
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    if not header or tail.endswith((b"\n", b"\r")):
        return
    last = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    width = len(next(csv.reader([header.decode("utf-8", "replace")]), []))
    fields = len(next(csv.reader([last]), []))
    if fields < width:
        raise data.DataError(
            f"{path}: rule 'truncated': the last line holds {fields} of {width} fields and no line "
            "end: the file was cut off (deliver the complete file)"
        )


def check_label_values(raw: pd.DataFrame, cfg: DataConfig, path: Path) -> None:
    """The column the target is derived from holds numbers or nothing: text or infinities would
    otherwise become missing or wrong labels without a word (the column is dropped after)."""
    column = cfg.derive_target.column if cfg.derive_target else None
    if column is None or column not in raw.columns:
        return  # a missing column is data.prepare's error
    values = pd.to_numeric(contract.normalise_column(raw[column]), errors="coerce")
    bad = raw[column].notna() & ~np.isfinite(values.astype("float64"))
    if bad.any():
        example = raw.loc[bad, column].iloc[0]
        raise data.DataError(
            f"{path}: column '{column}': rule 'target': {int(bad.sum())} value(s) are not finite "
            f"numbers, e.g. {example!r} (the target '{cfg.target}' is derived from this column; "
            "leave a value empty when the label is not known yet)"
        )


def check_times(frame: pd.DataFrame, cfg: DataConfig, path: Path) -> None:
    """Every row has a time: rows without one belong to no period and would be lost."""
    column = cfg.time_column
    if column is None:
        return
    missing = int(frame[column].isna().sum())
    if missing:
        raise data.DataError(
            f"{path}: column '{column}': rule 'time_column': {missing} row(s) have no value, so "
            "they belong to no period (fill them in or drop those rows)"
        )


def check_overlaps(folder: Path, batches: dict[str, pd.DataFrame], label: str, path: Path) -> None:
    """Refuse the whole file when one of its periods exists with other content (and is not the
    same batch with labels filled in), before any of its batches is written."""
    for name, frame in batches.items():
        stored_path = data.batch_path(folder, name)
        if not stored_path.exists():
            continue
        stored = pd.read_parquet(stored_path)
        if data.content_hash(stored) == data.content_hash(frame):
            continue
        if data.fills_labels(stored, frame, label):
            continue
        raise data.BatchConflictError(
            f"{path}: rule 'immutable_batch': its period '{name}' overlaps the existing batch "
            f"{stored_path} ({len(stored)} rows) with different content ({len(frame)} rows); "
            f"batches are never overwritten (only missing '{label}' may fill in), so nothing of "
            f"this file was ingested; {data.REPLACE_HINT}"
        )


# --- rejected files ------------------------------------------------------------------------

_RULE = re.compile(r"rule '([^']+)'")
_COLUMN = re.compile(r"column '([^']+)'")


@dataclass(frozen=True)
class Rejection:
    """Why a landed file was refused: the file, the rule and the column (None: the whole file)."""

    file: str
    rule: str | None
    column: str | None
    reason: str

    def payload(self) -> dict[str, str | None]:
        return {"file": self.file, "rule": self.rule, "column": self.column, "reason": self.reason}


def rejection(path: Path, err: BaseException) -> Rejection:
    """Rule and column of a DataError message (`FILE: [column 'C': ]rule 'R': ...`)."""
    text = str(err)
    rule, column = _RULE.search(text), _COLUMN.search(text)
    return Rejection(
        file=path.name,
        rule=rule.group(1) if rule else None,
        column=column.group(1) if column else None,
        reason=text,
    )


def quarantine_landed(
    project: Project, path: Path, reasons: str, details: dict[str, object] | None = None
) -> Path:
    """Move a rejected landed file to `<quarantine>/<file stem>/` with reason.txt, like a
    rejected batch (so the same name can be delivered again once fixed)."""
    return validation.quarantine_file(
        path, reasons, project.path("quarantine"), files.write_text_atomic, details
    )


def validation_record(project: Project, batches: list[str]) -> str:
    """Where the monitor keeps the validation results of newly written batches, relative to
    reports/: `monitor/validation-<batches>-<digest>.json`, the digest (12 hex digits) of the
    batches' bytes. A re-delivery (labels filled in) is another file, never a replacement."""
    folder = project.path("batches")
    content = fingerprint.digest(
        [fingerprint.file_digest(data.batch_path(folder, b)) for b in batches]
    )
    return f"monitor/validation-{'_'.join(batches)}-{content[:12]}.json"


# --- champion ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    """The serving model and what it was trained and measured on."""

    name: str
    version: str
    train_batches: tuple[str, ...]
    holdout_batches: tuple[str, ...]
    holdout_score: float | None
    run_id: str | None = None  # the training run that gated it (its estimator is kept there)


def current_champion(project: Project) -> Champion | None:
    """The `champion` of the configured registered model (None before the first promotion)."""
    tracking.use_experiment(project)
    name = project.params.promotion.model_name
    found = registry.get_alias(name, registry.CHAMPION)
    return None if found is None else champion_of(name, found, project.params.metric)


def champion_of(name: str, version: ModelVersion, metric: str) -> Champion:
    tags = version.tags
    score = tags.get(f"ctloop.holdout_{metric}")
    return Champion(
        name=name,
        version=str(version.version),
        train_batches=tuple(b for b in tags.get(tracking.SUITE_REFERENCE_TAG, "").split(",") if b),
        holdout_batches=tuple(b for b in tags.get(HOLDOUT_TAG, "").split(",") if b),
        holdout_score=None if score is None else float(score),
        run_id=tags.get(registry.RUN_TAG) or version.run_id,
    )


# --- scoring and performance -----------------------------------------------------------


def score_frame(model: object, batch: pd.DataFrame, task: str, version: str) -> pd.DataFrame:
    """Predictions of one batch: row number, model version, score (probability) and label."""
    features = batch[list(model.feature_names_in_)]  # type: ignore[attr-defined]
    scores = training.predict_scores(model, features, task)  # type: ignore[arg-type]
    out = pd.DataFrame({"row": range(len(batch)), "model_version": version, "score": scores})
    if task == "classification":
        out["prediction"] = (out["score"] >= 0.5).astype(int)
    return out


def predictions_path(project: Project, batch: str, version: str) -> Path:
    return project.path("predictions") / f"{batch}.v{version}.parquet"


def score_batch(project: Project, batch: str, champion: Champion) -> tuple[Path, float | None]:
    """Score a batch with the champion (saved with the model version) and, where labels are known,
    return the champion's metric on them (None: no labels yet)."""
    model = registry.load_version(champion.name, champion.version)
    frame = validate.load_batches(project, [batch])
    task, target = project.params.data.task, project.params.data.target
    predictions = score_frame(model, frame, task, champion.version)
    path = predictions_path(project, batch, champion.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, lambda tmp: predictions.to_parquet(tmp, index=False))
    known = frame[target].notna().to_numpy()
    if known.sum() < 2 or (task == "classification" and frame.loc[known, target].nunique() < 2):
        return path, None
    truth = frame.loc[known, target]
    truth = truth.astype(int) if task == "classification" else truth
    metric = project.params.metric
    return path, training.evaluate(task, truth, predictions["score"].to_numpy()[known])[metric]


def signals(
    project: Project,
    batch: str,
    champion: Champion,
    drift: DriftSummary,
    batch_score: float | None,
    estimate: Estimate | None = None,
) -> policy.Signals:
    """What the policy reads for one monitored batch (`estimate`: CBPE/DLE, None: not
    estimated)."""
    trained_until = champion.holdout_batches[-1] if champion.holdout_batches else None
    newer = policy.batches_after(data.list_batches(project.path("batches")), trained_until)
    return policy.Signals(
        batch=batch,
        model_version=champion.version,
        dataset_drift=drift.dataset_drift,
        drifted_columns=tuple(drift.drifted_columns),
        drifted_share=drift.drifted_share,
        metric=project.params.metric,
        batch_score=batch_score,
        reference_score=champion.holdout_score,
        batches_since_training=len(newer),
        estimated_score=None if estimate is None else estimate.value,
        estimated_lower=None if estimate is None else estimate.lower,
        estimated_upper=None if estimate is None else estimate.upper,
    )


def start_monitor_run(project: Project, batch: str, champion: Champion) -> str:
    """An MLflow run per monitored batch (kind=monitoring, `monitor <batch> v<N>`), in the
    monitoring experiment (`<tracking.experiment>-monitoring`)."""
    exp = tracking.use_monitoring_experiment(project)
    tags = {
        "ctloop.kind": "monitoring",
        "ctloop.batch": batch,
        "ctloop.model_version": champion.version,
        "ctloop.model_name": champion.name,
    }
    return tracking.start_parent_run(exp, names.monitoring_run(batch, champion.version), tags)


def record_verdict(
    project: Project, run_id: str, s: policy.Signals, verdict: policy.Verdict
) -> None:
    """Signals as metrics, the policy's verdict and reasons as tags, the run's description (batch,
    champion, score, verdict); closes the run."""
    tracking.use_experiment(project)
    metrics = {"drifted_share": s.drifted_share, "batches_since_training": s.batches_since_training}
    if s.batch_score is not None:
        metrics[f"batch_{s.metric}"] = s.batch_score
    if verdict.decay_amount is not None:
        metrics["decay"] = verdict.decay_amount
    if verdict.decay_relative is not None:
        metrics["decay_relative"] = verdict.decay_relative
    if verdict.estimated_decay_relative is not None:
        metrics["estimated_decay_relative"] = verdict.estimated_decay_relative
    tracking.log_metrics(run_id, metrics, prefix="")
    tracking.set_tags(
        run_id,
        {
            "ctloop.retrain": str(verdict.retrain),
            "ctloop.reasons": "; ".join(verdict.reasons) or "none",
        },
    )
    note = names.monitoring_note(
        s.batch, s.model_version, s.metric, s.batch_score, verdict.retrain, verdict.reasons
    )
    tracking.set_note(run_id, note)
    tracking.finish_run(run_id)


# --- retraining ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainPlan:
    """The window a retrain would use, and why it would not run (None: it runs)."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    skip: str | None


TRIGGER_TAG = "ctloop.trigger"


def _newest_training(project: Project, extra: str = "") -> Run | None:
    from mlflow import MlflowClient

    exp = tracking.use_experiment(project)
    runs = MlflowClient().search_runs(
        [exp],
        f"tags.`ctloop.kind` = 'training' and attributes.status = 'FINISHED'{extra}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def last_window(project: Project) -> tuple[str, ...]:
    """Training + holdout batches of the newest training run (empty before the first)."""
    run = _newest_training(project)
    tags = run.data.tags if run else {}
    keys = (tracking.SUITE_REFERENCE_TAG, HOLDOUT_TAG)
    return tuple(b for key in keys for b in tags.get(key, "").split(",") if b)


def last_retrain_start(project: Project) -> datetime | None:
    """Start of the newest event-triggered retrain (the cooldown counts from it)."""
    run = _newest_training(project, f" and tags.`{TRIGGER_TAG}` LIKE 'ctloop.%'")
    return None if run is None else datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)


def corrected_since_training(project: Project, window: tuple[str, ...]) -> list[str]:
    """Batches of `window` replaced (`ctloop batch replace`) after the newest training started:
    the same window then holds other data, so a retrain must not skip it."""
    from ctloop.steps import correction  # noqa: PLC0415 (import cycle: correction imports monitoring)

    run = _newest_training(project)
    since = None if run is None else datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
    entries = correction.read_ledger(project.path("batches"))
    return sorted({e.batch for e in correction.replaced_since(entries, window, since)})


def plan_retrain(project: Project, now: datetime | None = None) -> RetrainPlan:
    """The policy's window over the labelled batches; skipped when the newest training already
    used exactly this window, or inside the cooldown after the last retrain."""
    cfg = project.params
    folder = project.path("batches")
    labelled = data.labelled_batches(folder, data.list_batches(folder), cfg.data.target)
    train, holdout = policy.ct_window(labelled, cfg.continuous, cfg.split.holdout_periods)
    started = last_retrain_start(project)
    skip = None
    if last_window(project) == (*train, *holdout) and not corrected_since_training(
        project, (*train, *holdout)
    ):
        skip = f"window {train[0]}..{holdout[-1]} unchanged since the last training"
    elif policy.in_cooldown(started, now or datetime.now(UTC), cfg.continuous.cooldown_minutes):
        skip = (
            f"cooldown: the last training started at {started:%Y-%m-%d %H:%M:%S} UTC, less than "
            f"{cfg.continuous.cooldown_minutes:g} min ago"
        )
    return RetrainPlan(train, holdout, skip)


def tag_retrain(project: Project, run_id: str, version: str, trigger: str, cause: str) -> None:
    """Why a retrain ran, on its MLflow run and on the model version it registered."""
    from mlflow import MlflowClient

    tracking.use_experiment(project)
    tags = {TRIGGER_TAG: trigger, "ctloop.trigger_reason": cause[:5000]}
    tracking.set_tags(run_id, tags)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(project.params.promotion.model_name, version, key, value)
