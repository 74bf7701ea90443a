"""`ctloop serve-model`: run the scoring server in the foreground until Ctrl-C or SIGTERM,
and stop all of it (the uvicorn server of ctloop/ops/scoring_app.py and any process it starts).

The server runs in a process group of its own, so it is stopped as a whole, and it receives
SIGTERM when this process dies (Linux). Standard library only: `ctloop --help` stays fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from types import FrameType

POLL_S = 0.5
STOP_TIMEOUT_S = 15.0


class ServerError(RuntimeError):
    """The scoring server did not start or did not answer in time."""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent (this CLI) dies, even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when GET url returns a success status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError):
        return False


def port_open(url: str) -> bool:
    """True while something accepts connections on the URL's host and port."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 1.0):
            return True
    except OSError:
        return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop(proc: subprocess.Popen[bytes], url: str) -> None:
    """SIGTERM to the server's process group; wait for it to exit and free the port, then
    SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    while port_open(url) and time.monotonic() < deadline:
        time.sleep(POLL_S / 5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run(
    argv: list[str],
    env: dict[str, str],
    url: str,
    timeout_s: float,
    on_ready: Callable[[float], None],
) -> int:
    """Start the server, call on_ready(seconds) once /ping answers, then wait. Ctrl-C or SIGTERM
    stop it (returns 0); a server that exits by itself returns its status. ServerError when it
    does not answer within timeout_s (it is stopped first)."""
    if port_open(url):
        raise ServerError(f"{url} is already in use: pass --port or set serving.port")
    began = time.monotonic()
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=preexec)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    ping = f"{url}/ping"
    try:
        while not answers(ping):
            if proc.poll() is not None:
                return proc.returncode or 1
            if time.monotonic() - began > timeout_s:
                stop(proc, url)
                raise ServerError(f"the scoring server did not answer at {ping} in {timeout_s:g} s")
            time.sleep(POLL_S)
        on_ready(time.monotonic() - began)
        code = proc.wait()
        stop(proc, url)  # the uvicorn child may outlive `mlflow models serve`
        return code
    except KeyboardInterrupt:
        stop(proc, url)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
