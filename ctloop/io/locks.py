"""Project-wide locks between processes: two flow runs of different deployments, a CLI run and a
served run, or several threads of one process never do the same critical work at once.

`project_lock(project, name)` takes an exclusive `fcntl.flock` on `<stack folder>/locks/<name>.lock`
(`.ctloop/locks/` by default), waiting at most `timeout_s`. The holder writes its pid, host, start
time and purpose into the file, so a `LockTimeout` names the lock file and who holds it.

Why flock: the kernel releases the lock when the holder's file descriptor is closed, which happens
when the process exits for any reason, SIGKILL and OOM kill included. A crashed run can therefore
never leave a stale lock behind, and the lock file is never deleted (deleting it would let two
processes lock two different files of the same name). The descriptor is opened non-inheritable,
so programs the holder starts (DVC, servers) do not keep the lock alive; a child made by a bare
`fork()` while the lock is held would share it until that child exits.

Limits: flock is advisory (only code that takes the lock is kept out) and covers one host, or
hosts sharing a file system that supports it (local disks; NFSv4 emulates it). Workers on several
machines without such a shared file system need a server-side lock instead.

Within one process the lock is re-entrant for the thread holding it (a flow and the subflow it
calls may both take it); other threads of the process wait like other processes do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctloop.core.config import Project

LOCK_DIR = "locks"
DATA = "data"  # the batch folder: writing batches, DVC commit and push
RETRAIN = "retrain"  # plan + train + gate of a retrain, whichever deployment runs it
DATA_TIMEOUT_S = 900.0
RETRAIN_TIMEOUT_S = 4 * 3600.0
_POLL_MAX_S = 0.5


class LockTimeout(RuntimeError):
    """A project lock stayed held longer than the caller would wait; names the file and holder.
    Not a TimeoutError (an OSError): the I/O retries of tasks/training.py must not multiply
    a wait that already lasted the whole timeout."""


@dataclass
class _Held:
    """This process's state for one lock file."""

    thread_lock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    fd: int | None = None


_REGISTRY: dict[str, _Held] = {}
_REGISTRY_GUARD = threading.Lock()


def lock_path(project: Project, name: str) -> Path:
    """The lock file of `name` in the project's stack folder."""
    return project.path("stack") / LOCK_DIR / f"{name}.lock"


def holder(path: Path) -> str:
    """What the lock file says about its current (or last) holder; '' when it says nothing."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


@contextlib.contextmanager
def project_lock(
    project: Project,
    name: str,
    timeout_s: float = DATA_TIMEOUT_S,
    purpose: str = "",
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the project's lock `name` for the block; wait up to `timeout_s`, then LockTimeout.
    `on_wait` is called once, with a line naming the holder, when the lock is taken already."""
    with file_lock(lock_path(project, name), timeout_s, purpose or name, on_wait) as path:
        yield path


@contextlib.contextmanager
def file_lock(
    path: Path,
    timeout_s: float,
    purpose: str = "",
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Exclusive flock on `path` (created with its folder when missing) for the block."""
    key = str(path.resolve())
    with _REGISTRY_GUARD:
        held = _REGISTRY.setdefault(key, _Held())
    deadline = time.monotonic() + timeout_s
    if not held.thread_lock.acquire(timeout=max(timeout_s, 0.0)):
        raise _timeout(path, timeout_s)
    try:
        if held.depth == 0:
            held.fd = _acquire(path, deadline, timeout_s, purpose, on_wait)
        held.depth += 1
        try:
            yield path
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                _release(held.fd)
                held.fd = None
    finally:
        held.thread_lock.release()


def _acquire(
    path: Path,
    deadline: float,
    timeout_s: float,
    purpose: str,
    on_wait: Callable[[str], None] | None,
) -> int:
    """flock(LOCK_EX) polled without blocking until the deadline; the holder's identity is
    written into the file once it is ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    pause = 0.02
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(f"{path}: held by {holder(path) or 'another process'}; waiting")
                    on_wait = None
                if time.monotonic() >= deadline:
                    raise _timeout(path, timeout_s) from None
                time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                pause = min(pause * 2, _POLL_MAX_S)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        text = f"pid {os.getpid()} on {socket.gethostname()} since {since} ({purpose})\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    except BaseException:
        os.close(fd)  # closing drops the flock too, if we had it
        raise
    return fd


def _release(fd: int) -> None:
    """Blank the holder line, unlock, close (the close alone would release it as well)."""
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _timeout(path: Path, timeout_s: float) -> LockTimeout:
    who = holder(path) or "holder unknown (it has not written its pid yet)"
    return LockTimeout(
        f"{path}: lock still held after {timeout_s:g} s by {who}: wait until it finishes or stop "
        "that process (the OS releases the lock when its holder exits, even when killed)"
    )
