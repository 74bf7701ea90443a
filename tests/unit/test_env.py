"""Process settings of ctloop's entry points and worker processes (ctloop/env.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
        from ctloop.env import BACKGROUND_NICENESS, background_worker, freeze_at_exit
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
