"""Orphaned runs and leftover temporary files after a crash (ctloop/io/recovery.py), fault hook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctloop.core import faults
from ctloop.io import recovery

HOST, BOOT = "builder-1", "boot-a"


def _tags(**extra: str) -> dict[str, str]:
    tags = {
        "ctloop.kind": "training",
        "ctloop.pid": "4242",
        "ctloop.host": HOST,
        "ctloop.boot": BOOT,
    }
    return {k: v for k, v in {**tags, **extra}.items() if v != "-"}


def _reason(tags: dict[str, str], status: str = "RUNNING", alive: bool = False) -> str | None:
    return recovery.orphan_reason(status, tags, HOST, BOOT, lambda pid: alive)


def test_running_run_of_a_gone_process_on_this_host_is_orphaned() -> None:
    assert _reason(_tags()) == "interrupted (process 4242 gone)"
    for kind in ("trial", "monitoring"):
        assert _reason(_tags(**{"ctloop.kind": kind})) == "interrupted (process 4242 gone)"


def test_live_process_other_host_and_finished_runs_are_left_alone() -> None:
    assert _reason(_tags(), alive=True) is None
    assert _reason(_tags(**{"ctloop.host": "builder-2"})) is None  # its pid means nothing here
    for status in ("FINISHED", "FAILED", "KILLED", "SCHEDULED"):
        assert _reason(_tags(), status=status) is None


def test_runs_that_cannot_be_judged_are_left_alone() -> None:
    assert _reason(_tags(**{"ctloop.pid": "-"})) is None  # recorded before the pid tag existed
    assert _reason(_tags(**{"ctloop.pid": "abc"})) is None
    assert _reason(_tags(**{"ctloop.host": "-"})) is None
    assert _reason(_tags(**{"ctloop.kind": "-"})) is None  # not a ctloop run
    assert _reason(_tags(**{"ctloop.kind": "evaluation"})) is None


def test_a_reboot_orphans_the_run_even_when_the_pid_is_reused() -> None:
    reason = _reason(_tags(**{"ctloop.boot": "boot-old"}), alive=True)
    assert reason == "interrupted (process 4242 gone: host rebooted)"
    assert _reason(_tags(**{"ctloop.boot": "-"}), alive=True) is None  # no boot id: pid decides


def test_the_predicate_gets_the_recorded_pid() -> None:
    seen: list[int] = []
    recovery.orphan_reason("RUNNING", _tags(), HOST, BOOT, lambda pid: seen.append(pid) or True)
    assert seen == [4242]


def test_python_process_running_on_real_processes() -> None:
    assert recovery.python_process_running(os.getpid())
    code = "import time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"  # exec'd and running
        assert recovery.python_process_running(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not recovery.python_process_running(child.pid)  # gone (and reaped)
    sleeper = subprocess.Popen(["sleep", "30"])  # alive, but not a Python process
    try:
        cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # until exec: a forked child shows its parent's command line
        assert not recovery.python_process_running(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_process_tags_name_this_process() -> None:
    tags = recovery.process_tags()
    assert tags["ctloop.pid"] == str(os.getpid()) and tags["ctloop.host"]


def test_stale_temp_files_are_those_of_gone_writers_old_enough(tmp_path: Path) -> None:
    now = time.time()
    for name, age in [
        ("2013-01.tmp-11", 120),  # writer gone, old: stale
        ("2013-02.tmp-22", 120),  # writer alive: kept
        ("2013-03.tmp-11", 5),  # writer gone but recent (maybe another host's): kept
        ("2013-04.parquet", 120),  # a batch
        ("notes.tmp-x", 120),  # not ours
    ]:
        path = tmp_path / name
        path.write_bytes(b"PAR1")
        os.utime(path, (now - age, now - age))
    stale = recovery.stale_temp_files(tmp_path, lambda pid: pid == 22, now, min_age_s=60)
    assert [p.name for p in stale] == ["2013-01.tmp-11"]
    assert recovery.stale_temp_files(tmp_path / "missing", lambda pid: False, now) == []


def test_crash_point_is_a_no_op_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.CRASH_ENV, raising=False)
    faults.crash_point("ingest")
    monkeypatch.setenv(faults.CRASH_ENV, "tuning")
    faults.crash_point("ingest")
    code = "from ctloop.core.faults import crash_point; crash_point('ingest'); print('survived')"
    env = {**os.environ, faults.CRASH_ENV: "ingest"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout
