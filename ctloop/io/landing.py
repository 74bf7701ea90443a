"""Noticing files dropped into the landing folder: which files are new or changed since they were
last announced. The ledger (file name -> size and modification time) is kept by the one process
that announces, the watcher of deployments/serve.py."""

from __future__ import annotations

import json
from pathlib import Path

from ctloop.io import files

LANDING_SUFFIXES = (".csv", ".parquet")  # what a delivered file may be


def fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def arrivals(landing: Path, seen: dict[str, str]) -> list[Path]:
    """Data files in the landing folder that are not in `seen` with the same fingerprint, oldest
    first (hidden and temporary files are ignored: writers rename complete files into place)."""
    if not landing.is_dir():
        return []
    files = [
        p
        for p in landing.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in LANDING_SUFFIXES
    ]
    fresh = [p for p in files if seen.get(p.name) != fingerprint(p)]
    return sorted(fresh, key=lambda p: (p.stat().st_mtime_ns, p.name))


def read_ledger(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def write_ledger(path: Path, seen: dict[str, str]) -> None:
    """Atomic write, so a crash never leaves half a ledger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text_atomic(path, json.dumps(seen, indent=2, sort_keys=True))
