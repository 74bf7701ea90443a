"""Ingestion step: the source cut into immutable batches (DVC-versioned), corrections kept, and the
batch folder's version recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ctloop.core.config import Project
from ctloop.core.faults import crash_point
from ctloop.io import data, locks, recovery, versioning
from ctloop.steps import (
    correction,
    monitoring,  # the landing folder's edge: same reads, contract, checks
)

if TYPE_CHECKING:
    from ctloop.steps.correction import Replacement


@dataclass(frozen=True)
class IngestResult:
    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    source_rows: int
    unlabelled_rows: int

    @property
    def batches(self) -> list[str]:
        return sorted([*self.written, *self.unchanged])


def run_ingest(project: Project) -> IngestResult:
    """Cut the configured source into period batches (up to data.ingest_until) and write them.

    The source goes through the same edge as a landed file (`monitoring.cut_source`: the data
    contract, the cut-off, label and time checks) and is refused whole, before any batch is
    written, when one of them fails or a period conflicts with an existing batch.
    Leftovers of a killed write (`.*.tmp-<pid>` of a dead writer) are removed first; each batch is
    written atomically, so a crash in between loses nothing: the next run writes the rest."""
    cfg = project.params.data
    for path in recovery.clean_stale_temp_files(project.path("batches")):
        print(f"removed {path.name}: left by an interrupted batch write")
    # dropped columns are never read; the raw and prepared frames are freed once used
    skip = data.unused_columns(cfg)
    blocks = monitoring.block_rule(project)  # without a time column: file order, by blocks
    batches = monitoring.cut_source(cfg, cfg.source, project.root, cfg.source, skip, blocks)
    names = data.select_periods(list(batches), None, cfg.ingest_until)
    folder = project.path("batches")
    corrected = correction.replaced_batches(folder)  # `ctloop batch replace`: the source is stale
    # all or nothing, like a landed file: a period conflicting with a batch refuses the source
    # (a corrected batch is kept over the source's stale rows of its period)
    selected = {n: batches[n] for n in names if n not in corrected}
    monitoring.check_overlaps(folder, selected, cfg.target, Path(cfg.source))
    writes = []
    unlabelled = 0
    for n in names:
        if n in corrected and data.batch_path(folder, n).is_file():
            writes.append(_kept_correction(folder, n, corrected[n]))
            stored = pd.read_parquet(writes[-1].path, columns=[cfg.target])
            unlabelled += int(stored[cfg.target].isna().sum())
            continue
        writes.append(data.write_batch(folder, n, batches[n]))
        unlabelled += int(batches[n][cfg.target].isna().sum())
        crash_point("ingest")  # tests only (CTLOOP_CRASH_AT): killed after the first batch
    return IngestResult(
        written=tuple(w.name for w in writes if w.written),
        unchanged=tuple(w.name for w in writes if not w.written),
        source_rows=sum(w.rows for w in writes),
        unlabelled_rows=unlabelled,
    )


def _kept_correction(folder: Path, name: str, entry: Replacement) -> data.BatchWrite:
    """A batch replaced by `ctloop batch replace` stays as corrected: the source's rows of its
    period are superseded (said once per ingestion), never a conflict."""
    import pyarrow.parquet as pq

    path = data.batch_path(folder, name)
    print(
        f"{name}: kept the corrected batch (replaced {entry.id}: {entry.reason}); the source's "
        "rows of this period are superseded"
    )
    rows = int(pq.read_metadata(path).num_rows)
    return data.BatchWrite(name, path, rows, entry.new_digest, written=False)


def version_data(project: Project) -> str:
    """Commit the batch folder to DVC (dvc.lock + cache), push it, return its data version.
    Under the project's data lock: no batch is written while DVC hashes the folder, and two
    flows never commit at once (DVC's own repo lock would fail the second after a few seconds)."""
    with locks.project_lock(project, locks.DATA, purpose="dvc commit + push"):
        versioning.ensure_remote(project.root, project.path("dvc_remote"))
        versioning.commit_and_push(project.root)
        return versioning.data_version(project.root, project.params.paths.batches) or "unversioned"
