"""Atomic writes (ctloop/io/files.py): round trips, failures leave the old file and no temporary,
write-once refuses a second write, temporary names are the ones crash recovery cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.io import files, recovery

NAMES = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=40,
).filter(lambda n: n not in {".", ".."} and len(n.encode()) <= 150)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Boom(RuntimeError):
    pass


def _fail_after(partial: bytes):  # a writer that dies half-way through its file
    def write(tmp: Path) -> None:
        tmp.write_bytes(partial)
        raise Boom("disk full")

    return write


@settings(max_examples=60, deadline=None)
@given(first=st.binary(max_size=2048), second=st.binary(max_size=2048), fsync=st.booleans())
def test_bytes_round_trip_and_replace(first: bytes, second: bytes, fsync: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.parquet"
        assert files.write_bytes_atomic(path, first, fsync=fsync) == path
        assert path.read_bytes() == first
        files.write_bytes_atomic(path, second, fsync=fsync)
        assert path.read_bytes() == second
        assert _listing(Path(tmp)) == ["batch.parquet"]


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=500),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]),
)
def test_text_round_trips_exactly(text: str, encoding: str) -> None:
    """Every character comes back, "\\r" and "\\r\\n" included (no newline translation)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "notes.md"
        files.write_text_atomic(path, text, encoding=encoding)
        assert path.read_bytes().decode(encoding) == text
        assert _listing(Path(tmp)) == ["notes.md"]


@settings(max_examples=40, deadline=None)
@given(old=st.binary(max_size=512), partial=st.binary(max_size=512))
def test_failed_write_keeps_old_file_and_leaves_no_temporary(old: bytes, partial: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.json"
        path.write_bytes(old)
        with pytest.raises(Boom):
            files.write_atomic(path, _fail_after(partial))
        with pytest.raises(Boom):
            files.publish_once(Path(tmp) / "new.json", _fail_after(partial))
        assert path.read_bytes() == old
        assert _listing(Path(tmp)) == ["ledger.json"]  # no temporary, no half-published file


def test_failed_text_encoding_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        files.write_text_atomic(path, "K\u00f6ln \u2603", encoding="ascii")
    assert path.read_text(encoding="utf-8") == "old"
    assert _listing(tmp_path) == ["cache.json"]


def test_failed_write_without_old_file_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        files.write_atomic(tmp_path / "out.csv", _fail_after(b"a,b\n1,"))
    assert _listing(tmp_path) == []


def test_missing_folder_fails_and_creates_nothing(tmp_path: Path) -> None:
    """The helper does not create folders (callers decide): a missing one is an error."""
    with pytest.raises(FileNotFoundError):
        files.write_text_atomic(tmp_path / "absent" / "x.json", "{}")
    assert _listing(tmp_path) == []


@settings(max_examples=40, deadline=None)
@given(first=st.binary(max_size=256) | st.text(max_size=256), second=st.binary(max_size=256))
def test_write_once_refuses_a_second_write(first: bytes | str, second: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        assert files.write_once(path, first) is True
        stored = path.read_bytes()
        expected = first.encode("utf-8") if isinstance(first, str) else first
        assert stored == expected
        assert files.write_once(path, second) is False
        assert files.publish_once(path, lambda t: t.write_bytes(second)) is False
        assert path.read_bytes() == stored
        assert _listing(Path(tmp)) == ["report.json"]


def test_publish_once_loses_to_a_writer_that_came_first_meanwhile(tmp_path: Path) -> None:
    """The existence check is the link itself: a file created while the loser writes is kept."""
    path = tmp_path / "2013-01.parquet"

    def slow(tmp: Path) -> None:
        tmp.write_bytes(b"loser")
        path.write_bytes(b"winner")  # another process publishes in between

    assert files.publish_once(path, slow) is False
    assert path.read_bytes() == b"winner"
    assert _listing(tmp_path) == ["2013-01.parquet"]


def test_racing_threads_publish_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "drift.html"
    start = threading.Barrier(8)
    results: list[bool] = []

    def race(n: int) -> None:
        start.wait()
        results.append(files.publish_once(path, lambda t: t.write_text(f"writer {n}" * 1000)))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert path.read_text() in {f"writer {n}" * 1000 for n in range(8)}
    assert _listing(tmp_path) == ["drift.html"]


def test_concurrent_replacements_never_share_a_temporary(tmp_path: Path) -> None:
    """Threads of one process (one pid) replacing one file: each write is whole."""
    path = tmp_path / "stack.json"
    bodies = [bytes([n]) * 200_000 for n in range(6)]
    errors: list[BaseException] = []

    def write(body: bytes) -> None:
        try:
            files.write_bytes_atomic(path, body)
        except BaseException as err:  # a thread's exception would only be a warning
            errors.append(err)

    threads = [threading.Thread(target=write, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_bytes() in bodies
    assert _listing(tmp_path) == ["stack.json"]


def test_copy_atomic_replaces_target_with_source_bytes(tmp_path: Path) -> None:
    source, target = tmp_path / "a.html", tmp_path / "latest.html"
    source.write_bytes(b"<html>new</html>")
    target.write_bytes(b"<html>old</html>")
    files.copy_atomic(source, target)
    assert target.read_bytes() == b"<html>new</html>"
    with pytest.raises(FileNotFoundError):
        files.copy_atomic(tmp_path / "missing.html", target)
    assert target.read_bytes() == b"<html>new</html>"
    assert _listing(tmp_path) == ["a.html", "latest.html"]


@settings(max_examples=100, deadline=None)
@given(name=NAMES)
def test_temp_names_are_hidden_siblings_recovery_recognises(name: str) -> None:
    path = Path("/data/batches") / name
    tmp = files.temp_path(path)
    assert tmp.parent == path.parent
    assert tmp.name.startswith(f".{name}.")  # hidden: the landing watcher ignores it
    assert tmp.suffix != ".parquet"  # never listed as a batch
    match = recovery.TEMP_FILE.search(tmp.name)
    assert match is not None and int(match[1]) == os.getpid()
    assert files.temp_path(path) != tmp  # unique per write


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from ctloop.io import files

def write(tmp):
    tmp.write_bytes(b"half a file")
    print("written", flush=True)
    time.sleep(60)

files.write_atomic(Path(sys.argv[1]), write)
"""


def test_a_killed_writers_temporary_is_removed_by_recovery(tmp_path: Path) -> None:
    """SIGKILL between the temporary file and the rename: the target keeps its old content and
    the leftover is exactly what clean-up removes once its writer is gone."""
    target = tmp_path / "2013-02.parquet"
    target.write_bytes(b"old batch")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    [leftover] = [p for p in tmp_path.iterdir() if p != target]
    assert target.read_bytes() == b"old batch"
    match = recovery.TEMP_FILE.search(leftover.name)
    assert match is not None and int(match[1]) == child.pid
    stale = recovery.stale_temp_files(tmp_path, lambda pid: pid != child.pid, time.time() + 3600)
    assert stale == [leftover]
    live = recovery.stale_temp_files(tmp_path, lambda pid: True, time.time() + 3600)
    assert live == []  # a live writer's temporary is never touched
