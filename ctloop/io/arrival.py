"""Batches by arrival, for data without a time column: each delivered file becomes the next
batch(es), numbered after the newest batch (`part-00007`, `part-00008`, ...).

A delivery is cut like the source (`data.block_bounds`: blocks of `data.rows_per_batch` rows, a
short remainder joined to the block before it). Each block is then recognised by its content
digest (`data.content_hash`) among the stored batches:
- the same rows as a stored batch: already ingested, a no-op (a file delivered twice, under any
  name, adds nothing);
- the same rows as a stored batch whose missing labels it fills in (labels arrive after the
  features): that batch is replaced, as with period batches (`data.fills_labels`);
- the same feature values with other known labels: refused (rule 'immutable_batch');
- anything else: a new batch, numbered after the newest one.
Nothing is written before every block of the file passed (all or nothing), and the caller holds
the project's `data` lock (ctloop/io/locks.py), so two deliveries never take the same number.

The digests of stored batches are cached in `<stack>/batch-digests.json` (keyed by batch name,
file size and modification time: a replaced, quarantined or checked-out file is hashed again),
so a delivery does not re-read every batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from ctloop.io import data, files

DIGEST_CACHE = "batch-digests.json"


@dataclass(frozen=True)
class Digests:
    """Digests of one batch: all its values, and its values without the label column."""

    content: str
    features: str


def digests(frame: pd.DataFrame, label: str) -> Digests:
    """`data.content_hash` of the frame, and of the frame without `label` (when it has it)."""
    rest = frame.drop(columns=[label]) if label in frame.columns else frame
    return Digests(data.content_hash(frame), data.content_hash(rest))


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def stored_digests(folder: Path, label: str, cache: Path) -> dict[str, Digests]:
    """Digests of every batch in `folder` (name -> Digests), from the cache where the file is
    unchanged since it was hashed, else read and hashed (the cache is then rewritten). A cache
    that cannot be parsed is rebuilt: it only saves reading."""
    entries = _read_cache(cache, label)
    out: dict[str, Digests] = {}
    fresh: dict[str, dict[str, str]] = {}
    changed = False
    for name in data.list_batches(folder):
        path = data.batch_path(folder, name)
        stamp = _stamp(path)
        entry = entries.get(name)
        if entry is None or entry.get("stamp") != stamp:
            found = digests(pd.read_parquet(path), label)
            entry = {"stamp": stamp, "content": found.content, "features": found.features}
            changed = True
        out[name] = Digests(entry["content"], entry["features"])
        fresh[name] = entry
    if changed or set(fresh) != set(entries):
        _write_cache(cache, label, fresh)
    return out


def _read_cache(cache: Path, label: str) -> dict[str, dict[str, str]]:
    try:
        body = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(body, dict) or body.get("label") != label:
        return {}  # another label column: the feature digests differ
    batches = body.get("batches")
    return batches if isinstance(batches, dict) else {}


def _write_cache(cache: Path, label: str, batches: dict[str, dict[str, str]]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    body = {"about": "digests of the batch files (ctloop/io/arrival.py)", "label": label}
    files.write_text_atomic(cache, json.dumps({**body, "batches": batches}, indent=1))


Action = Literal["new", "unchanged", "fill_labels"]


@dataclass(frozen=True)
class Placement:
    """Where one block of a delivery goes: its batch name and what happens to it."""

    name: str
    action: Action
    rows: int
    digest: str


def place(
    blocks: list[pd.DataFrame],
    stored: dict[str, Digests],
    label: str,
    origin: Path,
    read: Callable[[str], pd.DataFrame],
) -> list[Placement]:
    """The batch each block of a delivery becomes (in order), checked before anything is written.
    `stored`: the digests of the batches there (`stored_digests`), `read`: reads a stored batch
    by name (only for a block whose features match one). New blocks are numbered after the
    newest stored batch. BatchConflictError (rule 'immutable_batch') when a block repeats the
    features of a stored batch with other known labels."""
    by_content = {d.content: n for n, d in stored.items()}
    by_features = {d.features: n for n, d in stored.items()}
    plan: list[tuple[Action, str | None, pd.DataFrame, str]] = []
    for block in blocks:
        found = digests(block, label)
        if found.content in by_content:
            plan.append(("unchanged", by_content[found.content], block, found.content))
        elif found.features in by_features:
            name = by_features[found.features]
            existing = read(name)
            if not data.fills_labels(existing, block, label):
                raise data.BatchConflictError(
                    f"{origin}: column '{label}': rule 'immutable_batch': {len(block)} of its rows "
                    f"repeat batch '{name}' with other known labels; batches are never "
                    f"overwritten (only missing '{label}' may fill in), so nothing of this file "
                    f"was ingested; {data.REPLACE_HINT}"
                )
            plan.append(("fill_labels", name, block, found.content))
        else:
            plan.append(("new", None, block, found.content))
    fresh = iter(data.next_arrival_names(stored, sum(a == "new" for a, *_ in plan)))
    return [
        Placement(name if name is not None else next(fresh), action, len(block), digest)
        for action, name, block, digest in plan
    ]


def ingest_blocks(
    folder: Path, blocks: list[pd.DataFrame], label: str, origin: Path, cache: Path
) -> list[data.BatchWrite]:
    """Write the blocks of one delivery as arrival batches (see the module docstring); the
    caller holds the project's data lock. Returns one BatchWrite per block, in order (written
    False: already ingested)."""
    stored = stored_digests(folder, label, cache)
    placements = place(
        blocks, stored, label, origin, lambda n: pd.read_parquet(data.batch_path(folder, n))
    )
    writes = []
    written: dict[str, Digests] = {}
    for placement, block in zip(placements, blocks, strict=True):
        if placement.action == "unchanged":
            path = data.batch_path(folder, placement.name)
            writes.append(
                data.BatchWrite(placement.name, path, len(block), placement.digest, False)
            )
            continue
        writes.append(data.write_batch(folder, placement.name, block, label_column=label))
        written[placement.name] = digests(block, label)
    if written:
        remember(folder, label, cache, written)
    return writes


def remember(folder: Path, label: str, cache: Path, written: dict[str, Digests]) -> None:
    """Add the digests of batches just written (still in memory) to the cache, with the stamp
    of their files, so the next delivery need not read them."""
    entries = _read_cache(cache, label)
    for name, found in written.items():
        stamp = _stamp(data.batch_path(folder, name))
        entries[name] = {"stamp": stamp, "content": found.content, "features": found.features}
    _write_cache(cache, label, entries)
