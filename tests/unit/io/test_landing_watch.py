"""Which dropped files the landing watcher announces: new or changed data files, once."""

from __future__ import annotations

import os
from pathlib import Path

from ctloop.io import landing


def _drop(folder: Path, name: str, text: str = "a,b\n1,2\n", mtime_ns: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_new_data_files_arrive_oldest_first_and_others_are_ignored(tmp_path: Path) -> None:
    later = _drop(tmp_path, "b.csv", mtime_ns=2_000_000_000)
    first = _drop(tmp_path, "a.parquet", mtime_ns=1_000_000_000)
    _drop(tmp_path, "notes.txt")
    _drop(tmp_path, ".a.parquet.tmp")  # a writer's temporary file
    (tmp_path / "sub.csv").mkdir()
    assert landing.arrivals(tmp_path, {}) == [first, later]
    assert landing.arrivals(tmp_path / "missing", {}) == []


def test_announced_files_arrive_again_only_when_changed(tmp_path: Path) -> None:
    path = _drop(tmp_path, "a.csv", mtime_ns=1_000_000_000)
    seen = {path.name: landing.fingerprint(path)}
    assert landing.arrivals(tmp_path, seen) == []
    _drop(tmp_path, "a.csv", "a,b\n1,2\n3,4\n", mtime_ns=3_000_000_000)
    assert landing.arrivals(tmp_path, seen) == [path]


def test_ledger_round_trip(tmp_path: Path) -> None:
    ledger = tmp_path / "stack" / "landing-announced.json"
    assert landing.read_ledger(ledger) == {}
    landing.write_ledger(ledger, {"a.csv": "8:1"})
    assert landing.read_ledger(ledger) == {"a.csv": "8:1"}
    assert [p.name for p in ledger.parent.iterdir()] == [ledger.name]
