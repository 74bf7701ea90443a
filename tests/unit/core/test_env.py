"""Process settings of ctloop's entry points and worker processes (ctloop/core/env.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def test_background_worker_lowers_priority_and_freezes_at_exit_after_other_handlers_run() -> None:
    out = _run(
        """
        import atexit, gc, os
        # registered first, so it runs last: after ctloop's freeze, like the libraries' handlers
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
        from ctloop.core.env import BACKGROUND_NICENESS, background_worker, freeze_at_exit
        before, handlers = os.nice(0), atexit._ncallbacks()
        background_worker()
        freeze_at_exit()  # idempotent: still one freeze handler
        print("niceness raised:", os.nice(0) - before == BACKGROUND_NICENESS)
        print("handlers added:", atexit._ncallbacks() - handlers)
        print("frozen while running:", gc.get_freeze_count() > 0)
        """
    )
    assert "frozen while running: False" in out  # nothing frozen before the exit
    assert "frozen at exit: True" in out
    assert "niceness raised: True" in out and "handlers added: 1" in out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan that exited waits for its new parent to reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_worker_exits_when_the_process_that_started_it_is_killed() -> None:
    """The parent dies without a word (as under SIGKILL): its worker must not linger."""
    out = _run(
        """
        import subprocess, sys, os
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\\n"
             "from ctloop.core.env import exit_with_parent\\n"
             "exit_with_parent(poll_s=0.1)\\n"
             "print('ready', flush=True)\\n"
             "time.sleep(60)"],
            stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        print(child.pid, flush=True)
        os._exit(0)  # no cleanup, no wait: the child is orphaned
        """
    )
    pid = int(out.split()[0])
    deadline = time.monotonic() + 15
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid), f"worker {pid} outlived its parent"


BUSY_WORKER = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
from ctloop.core.env import sigterm_as_exit

def spin() -> None:
    while True:
        pass

if __name__ == "__main__":
    sigterm_as_exit()
    pool = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    try:
        future = pool.submit(spin)
        while not mp.active_children():
            time.sleep(0.05)
        print("worker", mp.active_children()[0].pid, flush=True)
        future.result()  # a flow waiting for its worker's drift report
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # what the task runner does at exit
        print("shut down", flush=True)
"""


def test_sigterm_ends_a_command_whose_worker_is_busy(tmp_path: Path) -> None:
    """SIGTERM while the main line waits on a worker's endless task: the command's `finally`
    runs and it exits promptly (143), its worker terminated rather than waited for."""
    script = tmp_path / "busy.py"
    script.write_text(BUSY_WORKER)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        worker = int(line.split()[1])
        time.sleep(0.5)
        began = time.monotonic()
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "shut down" in out  # the finally block ran
    assert took < 20, f"took {took:.1f} s"
    deadline = time.monotonic() + 5
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(worker)
