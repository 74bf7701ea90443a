"""Correcting an accepted batch: `ctloop batch replace FILE --reason TEXT`.

Batches are immutable for deliveries (rule `immutable_batch`); this is the one deliberate way to
supersede a batch that was accepted but wrong. The corrected file goes through the same reading,
cutting and validation as a delivery (`monitoring.cut_delivery`, the GX suite) and must hold
exactly one period that already exists as a batch (without a time column: `--batch NAME` names
the batch by arrival its rows replace); a refused file changes nothing.

Under the project's `data` lock, in this order (each step safe to repeat after a crash):
1. `dvc commit` + `push` of the batch folder as it is: the old content is in the DVC cache and
   remote (its file hash and the folder's data version are recorded);
2. the replacement is appended to the ledger `<batches>/replacements.json` (inside the DVC-tracked
   folder, so every later data version carries the list of corrections; it cannot hold the new
   data version of the folder that contains it);
3. the batch file is replaced atomically (a temporary file renamed over it);
4. `dvc commit` + `push` again: the new data version.
Then, outside the lock: an audit event `replace-batch` on the registered model (a tag
`ctloop.batch_event.<epoch ms>` with the reason, both file hashes and both data versions; none
before the first registered model: the ledger is then the only record), and the batch's MLflow
monitoring runs are tagged `ctloop.superseded` (their scores were computed on the old rows).

The ledger also tells ingestion (`ingest.run_ingest`) to keep a corrected batch instead of
refusing the source's old rows of that period, and the retrain planner (`monitoring.plan_retrain`)
that an unchanged window holds corrected data. Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ctloop.io import data, files, locks, tracking, versioning
from ctloop.ml import validation
from ctloop.steps import monitoring

if TYPE_CHECKING:
    from ctloop.core.config import Project
    from ctloop.ml.validation import ValidationReport

LEDGER = "replacements.json"
ACTION = "replace-batch"
EVENT_PREFIX = "ctloop.batch_event."
SUPERSEDED_TAG = "ctloop.superseded"
REPLACE_SUFFIXES = (".csv", ".parquet")


class CorrectionError(data.DataError):
    """A replacement that cannot be made; the message names the file, column and rule."""


@dataclass(frozen=True)
class Replacement:
    """One correction of one batch, as recorded in the ledger and the audit event.

    Digests: `*_digest` is `data.content_hash` (values and column names), `*_md5` the MD5 of the
    Parquet file (DVC's hash of that file inside the folder: `.dvc/cache/files/md5/<2>/<30>`),
    `*_rows` row counts. `old_data_version` is the folder's DVC hash before the replacement."""

    id: str  # the time of the replacement, UTC ISO (ms): also the key of its audit event
    batch: str
    reason: str
    file: str  # the corrected file as given (absolute path)
    file_sha256: str
    old_digest: str
    new_digest: str
    old_md5: str
    new_md5: str
    old_rows: int
    new_rows: int
    old_data_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplaceOutcome:
    """What `replace_batch` did. `replacement` is None when the batch already held the content
    and no replacement put it there (nothing to do); `finished` is True when the batch already
    holds the content of its latest replacement: that replacement's DVC commit, audit event and
    monitoring marks were checked and completed if an interrupted run left them undone."""

    batch: str
    replacement: Replacement | None
    new_data_version: str | None
    audit_event: str | None  # the registered model's tag key, None without a registered model
    superseded_runs: tuple[str, ...]  # monitoring run ids of the batch tagged superseded
    champion_trained_on: str | None  # "v3 (training window)" when the champion used the batch
    warnings: tuple[str, ...]  # warning-level rule failures of the corrected batch
    finished: bool = False


# --- ledger (pure I/O of one JSON file) -------------------------------------------------


def ledger_path(folder: Path) -> Path:
    """The ledger of replacements inside the batch folder."""
    return folder / LEDGER


def read_ledger(folder: Path) -> list[Replacement]:
    """Every replacement recorded in the batch folder, oldest first ([] without a ledger).
    CorrectionError naming the file when it cannot be read (never ignored: ingestion relies on
    it to keep corrected batches)."""
    path = ledger_path(folder)
    if not path.is_file():
        return []
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return [Replacement(**entry) for entry in body["replacements"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorrectionError(
            f"{path}: rule 'ledger': cannot read the record of batch replacements ({err}); restore "
            "it from DVC (`dvc checkout`) or fix it by hand"
        ) from None


def write_ledger(folder: Path, entries: list[Replacement]) -> Path:
    """Write the ledger atomically (temporary file renamed over it)."""
    path = ledger_path(folder)
    body = {
        "about": "batches replaced with `ctloop batch replace` (ctloop/steps/correction.py)",
        "replacements": [e.to_dict() for e in entries],
    }
    return files.write_text_atomic(path, json.dumps(body, indent=2) + "\n")


def latest_by_batch(entries: list[Replacement]) -> dict[str, Replacement]:
    """The newest replacement of each replaced batch."""
    return {e.batch: e for e in entries}


def replaced_since(
    entries: list[Replacement], batches: tuple[str, ...] | list[str], since: datetime | None
) -> list[Replacement]:
    """Replacements of `batches` made after `since` (all of them when `since` is None)."""
    wanted = set(batches)
    return [
        e
        for e in entries
        if e.batch in wanted and (since is None or datetime.fromisoformat(e.id) > since)
    ]


def with_entry(entries: list[Replacement], entry: Replacement) -> list[Replacement]:
    """The ledger with `entry` appended. A last entry of the same batch that never took effect
    (same old and new content: an interrupted attempt of this very correction) is replaced rather
    than kept twice; every applied correction stays."""
    mine = [i for i, e in enumerate(entries) if e.batch == entry.batch]
    if mine:
        last = entries[mine[-1]]
        if (last.old_digest, last.new_digest) == (entry.old_digest, entry.new_digest):
            return [*entries[: mine[-1]], *entries[mine[-1] + 1 :], entry]
    return [*entries, entry]


# --- replacing ---------------------------------------------------------------------------


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


def _now_id() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def corrected_batch(
    project: Project, file: Path, batch: str | None = None
) -> tuple[str, pd.DataFrame]:
    """Read and cut the corrected file like a delivery. With a time column it must hold exactly
    one period that is an accepted batch (`batch`, when given, must be that period); without
    one (batches by arrival) `batch` names the accepted batch its rows replace, whole. Returns
    (batch name, rows). DataError/CorrectionError name file and rule."""
    cfg = project.params.data
    if not file.is_file():
        raise CorrectionError(f"{file}: rule 'replace_file': no such file")
    if file.suffix.lower() not in REPLACE_SUFFIXES:
        raise CorrectionError(f"{file}: rule 'file_type': expected .csv or .parquet")
    if cfg.time_column is None and batch is None:
        raise CorrectionError(
            f"{file}: rule 'one_period': data.time_column is not set, so batches are numbered "
            "by arrival and no value of the file names one: name the batch it replaces with "
            "--batch (e.g. --batch part-00007)"
        )
    batches = monitoring.cut_delivery(project, file)
    folder = project.path("batches")
    if cfg.time_column is None:
        name = str(batch)
        frame = pd.concat(list(batches.values()), ignore_index=True)  # the file, whole
        where = ""
    else:
        if len(batches) != 1:
            raise CorrectionError(
                f"{file}: column '{cfg.time_column}': rule 'one_period': the file holds "
                f"{len(batches)} periods ({', '.join(batches)}); a replacement holds exactly one "
                "period, the batch it corrects"
            )
        [(name, frame)] = batches.items()
        where = f"column '{cfg.time_column}': "
        if batch is not None and batch != name:
            raise CorrectionError(
                f"{file}: {where}rule 'one_period': the file's period is '{name}', not the "
                f"batch '{batch}' named by --batch"
            )
    if not data.batch_path(folder, name).is_file():
        known = data.list_batches(folder)
        have = f"{known[0]}..{known[-1]}" if known else "none"
        raise CorrectionError(
            f"{file}: {where}rule 'batch_exists': '{name}' is not an accepted batch (batches: "
            f"{have}); deliver new rows with `ctloop ingest FILE`"
        )
    return name, frame


def validate_corrected(
    project: Project, name: str, frame: pd.DataFrame, file: Path
) -> ValidationReport:
    """The suite's verdict on the corrected rows, before anything is written; ValidationFailed
    (naming the file, column and rule) on a critical failure. Nothing is quarantined: the
    stored batch stays and the user's file stays where it is."""
    root, suite = project.path("expectations"), project.params.validation.suite_name
    if not validation.suite_exists(root, suite):
        raise CorrectionError(
            f"{validation.suite_file(root, suite)}: rule 'suite': no expectation suite to check "
            "the corrected batch against; build it first (`ctloop expectations build`)"
        )
    report = validation.validate_batch(frame, name, file, root, suite)
    if not report.success:
        raise validation.ValidationFailed([report], source=file.name)
    return report


def _commit(project: Project) -> str:
    """dvc commit + push of the batch folder; its data version."""
    versioning.ensure_remote(project.root, project.path("dvc_remote"))
    versioning.commit_and_push(project.root)
    return versioning.data_version(project.root, project.params.paths.batches) or "unversioned"


def replace_batch(
    project: Project,
    file: Path,
    reason: str,
    say: Callable[[str], None] = print,
    batch: str | None = None,
) -> ReplaceOutcome:
    """Supersede the batch of `file`'s one period with its rows (see the module docstring);
    without a time column the batch named by `batch` (`corrected_batch`).

    Raises CorrectionError / DataError (file unreadable, not one existing period, no reason),
    ValidationFailed (a critical rule), VersioningError (DVC), LockTimeout: then no batch, ledger
    or record was changed, except that a DVC failure after the file was replaced leaves the
    replacement to be completed by running the same command again."""
    reason = reason.strip()
    file = file.resolve()
    if not reason:
        raise CorrectionError(f"{file}: rule 'reason': a replacement needs a reason (--reason)")
    name, frame = corrected_batch(project, file, batch)
    report = validate_corrected(project, name, frame, file)
    warnings = tuple(r.line(f"{file.name} (batch {name})") for r in report.warnings)
    folder = project.path("batches")
    payload = data.parquet_bytes(frame)
    new_digest = data.content_hash(frame)
    with locks.project_lock(project, locks.DATA, purpose=f"replace batch {name}", on_wait=say):
        path = data.batch_path(folder, name)
        stored_bytes = path.read_bytes()
        old_digest = data.content_hash(pd.read_parquet(path))
        entries = read_ledger(folder)
        if old_digest == new_digest:
            last = latest_by_batch(entries).get(name)
            if last is None or last.new_digest != new_digest:
                return ReplaceOutcome(name, None, None, None, (), None, warnings)
            entry, finished = last, True  # done before (or interrupted): check and complete
        else:
            old_version = _commit(project)  # the old content in the cache and remote first
            entry = Replacement(
                id=_now_id(),
                batch=name,
                reason=reason,
                file=str(file),
                file_sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
                old_digest=old_digest,
                new_digest=new_digest,
                old_md5=_md5(stored_bytes),
                new_md5=_md5(payload),
                old_rows=_rows(path),
                new_rows=len(frame),
                old_data_version=old_version,
            )
            write_ledger(folder, with_entry(entries, entry))
            data.supersede_batch(folder, name, payload)
            finished = False
        new_version = _commit(project)
    try:
        event, runs, champion = _record(project, entry, new_version)
    except Exception as err:  # MLflow: the batch is replaced and versioned, the records are not
        raise CorrectionError(
            f"{file}: rule 'audit': batch '{name}' was replaced and versioned ({new_version}), "
            f"but recording it in MLflow ({project.tracking_uri}) failed: {err}; run the same "
            "command again to complete the records"
        ) from err
    return ReplaceOutcome(name, entry, new_version, event, runs, champion, warnings, finished)


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


# --- records in MLflow -----------------------------------------------------------------


def _store_exists(project: Project) -> bool:
    """An MLflow store to record into (a missing SQLite file is not created for this)."""
    uri = project.tracking_uri
    return uri != f"sqlite:///{project.path('mlflow_db')}" or project.path("mlflow_db").exists()


def _record(
    project: Project, entry: Replacement, new_version: str
) -> tuple[str | None, tuple[str, ...], str | None]:
    """The audit event, the superseded monitoring runs and the champion's use of the batch."""
    if not _store_exists(project):
        return None, (), None
    exp = tracking.use_monitoring_experiment(project)
    name = project.params.promotion.model_name
    event = record_event(name, entry, new_version)
    runs = mark_superseded(exp, entry)
    return event, runs, champion_use(project, entry.batch)


def event_body(entry: Replacement, new_data_version: str) -> dict[str, Any]:
    """The audit event's JSON body."""
    return {"action": ACTION, **entry.to_dict(), "new_data_version": new_data_version}


def record_event(name: str, entry: Replacement, new_data_version: str) -> str | None:
    """Tag the registered model with the replacement (once per replacement id); the tag key, or
    None when no model is registered yet (the ledger is then the record)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        tags = dict(client.get_registered_model(name).tags)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for key, value in tags.items():
        if key.startswith(EVENT_PREFIX) and json.loads(value).get("id") == entry.id:
            return key  # recorded by an interrupted run of this replacement
    stamp = int(datetime.fromisoformat(entry.id).timestamp() * 1000)
    taken = {k for k in tags if k.startswith(EVENT_PREFIX)}
    while (key := f"{EVENT_PREFIX}{stamp:013d}") in taken:
        stamp += 1
    client.set_registered_model_tag(name, key, json.dumps(event_body(entry, new_data_version)))
    return key


def batch_events(name: str) -> list[dict[str, Any]]:
    """The `replace-batch` events of a registered model, oldest first ([] without the model)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(MlflowClient().get_registered_model(name).tags)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    keys = sorted(k for k in tags if k.startswith(EVENT_PREFIX))
    return [json.loads(tags[k]) for k in keys]


def format_events(events: list[dict[str, Any]]) -> str:
    """One line per replacement: time, batch, rows, data versions, reason."""
    return "\n".join(
        f"{e['id']}  {e['action']} {e['batch']}: {e['old_rows']} -> {e['new_rows']} rows, "
        f"data {e['old_data_version']} -> {e['new_data_version']}  {e['reason']}"
        for e in events
    )


def mark_superseded(experiment_id: str, entry: Replacement) -> tuple[str, ...]:
    """Tag the batch's monitoring runs `ctloop.superseded` (their scores and drift were computed
    on the replaced rows); runs already tagged by an earlier replacement keep their tag."""
    from mlflow import MlflowClient

    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id],
        f"tags.`ctloop.kind` = 'monitoring' and tags.`ctloop.batch` = '{entry.batch}'",
        max_results=1000,
    )
    note = f"batch {entry.batch} replaced at {entry.id}: {entry.reason}"[:5000]
    marked = []
    for run in runs:
        if SUPERSEDED_TAG not in run.data.tags:
            client.set_tag(run.info.run_id, SUPERSEDED_TAG, note)
        marked.append(run.info.run_id)
    return tuple(marked)


def champion_use(project: Project, batch: str) -> str | None:
    """'v<N> (training window)' or '(holdout)' when the champion was trained or measured on the
    batch: it then reflects the old rows until a retrain."""
    champion = monitoring.current_champion(project)
    if champion is None:
        return None
    if batch in champion.train_batches:
        return f"v{champion.version} (training window)"
    if batch in champion.holdout_batches:
        return f"v{champion.version} (holdout)"
    return None


def replaced_batches(folder: Path) -> dict[str, Replacement]:
    """The newest replacement of each corrected batch of the folder."""
    return latest_by_batch(read_ledger(folder))
