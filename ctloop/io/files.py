"""Atomic file writes: the one place ctloop publishes a file, so a reader (or the next run after a
crash) sees the old file or the new one, never half of one.

Every write goes to a hidden temporary sibling `.<name>.<random>.tmp-<pid>` first: on the same
filesystem (so the rename or link is atomic), ignored by the landing watcher (hidden), never a
batch (not `*.parquet`), unique per write (two threads of one process never share it), and named
so that crash recovery (`ctloop.io.recovery.TEMP_FILE`, `clean_stale_temp_files`) recognises and
removes it once its writer is gone. Then it is either

- renamed over the target (`write_atomic` and its text/bytes/copy forms): replaces any old file;
- hard-linked to the target (`publish_once`, `write_once`): the link fails when the name exists,
  so two writers racing for one name never replace each other (the loser gets False).

The temporary file is removed whatever happens (a failed write leaves the old file untouched and
nothing behind); only a killed process leaves one, for recovery to clean up. No fsync by default
(ctloop's writes never had it: atomic against crashes of the process, not against power loss);
`fsync=True` flushes the file's data before it is published.

No Prefect, no pandas: callers that write a format (Parquet, CSV) pass a function writing to the
temporary path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

Writer = Callable[[Path], object]  # writes the whole content to the path it is given


def temp_path(path: Path) -> Path:
    """A fresh temporary sibling of `path`: `.<name>.<random>.tmp-<pid>` (see the module doc)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp-{os.getpid()}")


def _flush(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Writer, *, fsync: bool = False) -> Path:
    """Call `write(tmp)` on a temporary sibling, then rename it over `path` (any old file is
    replaced at once). On any error `path` keeps its old content and the temporary is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if fsync:
            _flush(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(
    path: Path, text: str, *, encoding: str = "utf-8", fsync: bool = False
) -> Path:
    """Replace `path` with `text` atomically (see write_atomic). Newlines are written as given."""
    return write_atomic(path, lambda tmp: _write_text(tmp, text, encoding), fsync=fsync)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> Path:
    """Replace `path` with `data` atomically (see write_atomic)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def copy_atomic(source: Path, target: Path, *, fsync: bool = False) -> Path:
    """Copy `source`'s bytes over `target` atomically (see write_atomic)."""
    return write_atomic(target, lambda tmp: shutil.copyfile(source, tmp), fsync=fsync)


def publish_once(path: Path, write: Writer, *, fsync: bool = False) -> bool:
    """Call `write(tmp)` on a temporary sibling, then hard-link it to `path` unless a file of
    that name exists: True when published, False when `path` was there (left untouched, even
    when another writer created it meanwhile). The temporary is removed in every case."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if fsync:
            _flush(tmp)
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def write_once(
    path: Path, data: str | bytes, *, encoding: str = "utf-8", fsync: bool = False
) -> bool:
    """Publish `data` (text or bytes) at `path` unless a file is there already: False then, and
    `path` untouched (see publish_once; an existing file costs no temporary write)."""
    path = Path(path)
    if path.exists():
        return False
    if isinstance(data, str):
        text = data
        return publish_once(path, lambda tmp: _write_text(tmp, text, encoding), fsync=fsync)
    payload = data
    return publish_once(path, lambda tmp: tmp.write_bytes(payload), fsync=fsync)


def _write_text(path: Path, text: str, encoding: str) -> None:
    """Text exactly as given: no newline translation (`Path.write_text` turns "\\n" into
    os.linesep on Windows and "\\r" round-trips only without it)."""
    with path.open("w", encoding=encoding, newline="") as handle:
        handle.write(text)


def write_text_report(path: Path, text: str) -> Path:
    """A small text report (JSON, Markdown): its folder made, one trailing newline, written
    atomically (`write_text_atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text + "\n")


def write_json(path: Path, payload: Any) -> Path:
    """Atomic JSON write (numpy scalars and dataclasses converted)."""
    return write_text_report(path, json.dumps(payload, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
