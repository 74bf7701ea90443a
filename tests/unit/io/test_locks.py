"""Project locks between processes (ctloop/io/locks.py): a second process waits, a timeout names the
lock file and its holder, a SIGKILLed holder leaves no stale lock, threads are serialized too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.core.config import Project
from ctloop.io import locks
from tests.conftest import ROOT

HOLD = """
import sys, time
from pathlib import Path
from ctloop.io.locks import file_lock
with file_lock(Path(sys.argv[1]), 10, "unit-test holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes holding a lock; the ones a test did not end are killed afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _hold(holders: list[subprocess.Popen[str]], path: Path, seconds: float) -> int:
    """Start a process that holds `path` for `seconds`; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    holders.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc.pid


def test_project_lock_lives_in_the_stack_folder(tmp_path: Path, repo_project: Project) -> None:
    project = Project(root=tmp_path, params=repo_project.params)
    with locks.project_lock(project, "retrain", timeout_s=1, purpose="unit test") as path:
        assert path == tmp_path / ".ctloop" / "locks" / "retrain.lock"
        assert locks.holder(path).startswith(f"pid {os.getpid()} on ")
        assert "(unit test)" in locks.holder(path)
    assert locks.holder(path) == ""  # blanked on release; the file itself stays


def test_second_process_waits_until_the_holder_releases(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "locks" / "data.lock"
    pid = _hold(holders, path, 1.5)
    told: list[str] = []
    began = time.monotonic()
    with locks.file_lock(path, timeout_s=30, on_wait=told.append):
        waited = time.monotonic() - began
    assert 0.8 < waited < 20
    assert len(told) == 1 and f"held by pid {pid} " in told[0]  # said once, naming the holder


def test_timeout_names_the_lock_file_and_the_holder_pid(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "locks" / "retrain.lock"
    pid = _hold(holders, path, 60)
    began = time.monotonic()
    with pytest.raises(locks.LockTimeout) as err, locks.file_lock(path, timeout_s=0.5):
        pytest.fail("acquired a lock another process holds")
    assert 0.5 <= time.monotonic() - began < 5
    message = str(err.value)
    assert str(path) in message
    assert f"pid {pid} " in message and "unit-test holder" in message


def test_a_sigkilled_holder_leaves_no_stale_lock(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "locks" / "retrain.lock"
    pid = _hold(holders, path, 60)
    os.kill(pid, signal.SIGKILL)
    holders[-1].wait(timeout=10)
    assert f"pid {pid} " in locks.holder(path)  # it never ran its clean-up
    began = time.monotonic()
    with locks.file_lock(path, timeout_s=2):
        assert time.monotonic() - began < 1
        assert f"pid {os.getpid()} " in locks.holder(path)


def test_reentrant_in_one_thread_exclusive_between_threads(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "data.lock"
    outcome: list[str] = []

    def other() -> None:
        try:
            with locks.file_lock(path, timeout_s=0.3):
                outcome.append("acquired")
        except locks.LockTimeout:
            outcome.append("timeout")

    with locks.file_lock(path, timeout_s=1), locks.file_lock(path, timeout_s=1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert outcome == ["timeout"]
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert outcome == ["timeout", "acquired"]
