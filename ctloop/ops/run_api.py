"""One Prefect API for a ctloop command's whole process tree.

A flow run with no `PREFECT_API_URL` makes Prefect start a temporary server in *that* process;
every child without the URL (the flow's worker process, a local Dask cluster, a `dvc repro`
stage) then starts another one. On a busy machine two of them picked the same port and the run
failed after `champion` had moved, leaving a server behind (issue 12). Here a command decides
once, before Prefect is imported, which API its whole tree uses, in this order:

1. `PREFECT_API_URL` in the environment (a shared server): used as it is;
2. the project's running `ctloop up` stack (`.ctloop/stack.json`): its API;
3. otherwise the project's **run server**: one Prefect API server (Prefect's own server app in
   the mode of its temporary server: no UI, the services a temporary server runs) on a free
   loopback port, storing into the database `ctloop up` serves (`.ctloop/prefect.db`, or
   `PREFECT_SERVER_DATABASE_CONNECTION_URL`), so every run shows up later in the UI.

The URL goes into `os.environ`, with `PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=false`, so every child
inherits it and none can start a server of its own.

Commands of one project started at the same time share one run server: each holds a shared
`flock` lease on `.ctloop/api/users.lock` while it runs; the server is stopped by the last
command to end, or, when that one was killed (SIGKILL, OOM), by the server's supervisor within
a second (the kernel drops a dead process's locks). `.ctloop/api/start.lock` serialises finding
and starting the server, so two commands never start two servers on one database. The
supervisor (`python -m ctloop.ops.run_api`) runs in a session of its own, so Ctrl-C in the terminal
reaches the command, which stops the server after its flow has reported the interruption; the
API server process dies with its supervisor (`PR_SET_PDEATHSIG`).

Standard library only: imported by the CLI before any heavy library.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal

from ctloop.core.env import ENV_DEFAULTS, RUN_SERVER_ENV
from ctloop.io import files
from ctloop.io.processes import boot_id, process_identity

API_DIR = "api"
STATE_FILE = "server.json"
START_LOCK = "start.lock"
USERS_LOCK = "users.lock"
LOG_FILE = "server.log"
POLL_S = 0.5
STOP_TIMEOUT_S = 10.0
# the marker in the API server's command line: how tests and benchmarks count server processes
SERVER_APP = "prefect.server.api.server:create_app"

Source = Literal["environment", "stack", "run-server"]


class ApiError(RuntimeError):
    """No Prefect API can be had for this command; the message says why and what to do."""


@dataclass(frozen=True)
class ServerRecord:
    """What `server.json` records of the run server: its URL, the supervisor's pid and identity
    (start time + command line, so a reused pid is never taken for ours) and the boot."""

    url: str
    pid: int
    identity: str
    boot_id: str
    database: str


@dataclass
class PrefectApi:
    """The API a command's process tree uses. `source` says where it came from; `ui` whether a
    Prefect UI serves it (the run server has none)."""

    url: str
    source: Source
    ui: bool

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the API answers `/health` (a run server starts in 5-20 s; the caller
        imports its libraries meanwhile). Raises ApiError naming the URL and the server log."""
        deadline = time.monotonic() + timeout_s
        while not healthy(self.url):
            if time.monotonic() > deadline:
                raise ApiError(
                    f"the Prefect API at {self.url} did not answer within {timeout_s:g} s "
                    "(raise stack.startup_timeout_s in params.yaml on a slow machine)"
                )
            time.sleep(0.2)


# --- small helpers ---------------------------------------------------------------------------


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when `<url>/health` answers below HTTP 400."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def database_url(stack_dir: Path) -> str:
    """The Prefect database of the project: the one `ctloop up` serves."""
    configured = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get(
        "PREFECT_API_DATABASE_CONNECTION_URL"
    )
    return configured or f"sqlite+aiosqlite:///{stack_dir.resolve() / 'prefect.db'}"


def _lock(path: Path, mode: int, timeout_s: float, what: str) -> IO[bytes]:
    """Open `path` and take an flock on it (`mode`: LOCK_SH or LOCK_EX), waiting up to
    `timeout_s`. Raises ApiError naming the file when it stays held."""
    handle = path.open("a+b")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise ApiError(
                    f"{what}: {path} stayed locked for {timeout_s:g} s by another ctloop command "
                    "(see `ps aux | grep ctloop`)"
                ) from None
            time.sleep(0.05)


def _try_exclusive(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_record(path: Path) -> ServerRecord | None:
    try:
        return ServerRecord(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None  # half-written or foreign: treated as absent, overwritten by the next start


def _write_record(path: Path, record: ServerRecord) -> None:
    files.write_text_atomic(path, json.dumps(asdict(record), indent=2))


def _alive(record: ServerRecord) -> bool:
    return record.boot_id == boot_id() and process_identity(record.pid) == record.identity


def _terminate(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process_identity(pid) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # ours when this process started it: no zombie


# --- the command's side ----------------------------------------------------------------------


class _Lease:
    """A command's hold on the project's run server (see the module docstring)."""

    def __init__(self, folder: Path, lock_timeout_s: float) -> None:
        self.folder = folder
        self.lock_timeout_s = lock_timeout_s
        self.users: IO[bytes] | None = None
        self.started: subprocess.Popen[bytes] | None = None

    def acquire(self, stack_lookup: Callable[[], str | None]) -> PrefectApi:
        """Under the start lock: the stack's API when it runs, else share or start the server."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with start_lock(self.folder.parent, self.lock_timeout_s):
            if stack_url := stack_lookup():
                return PrefectApi(stack_url, "stack", ui=True)
            self.users = _lock(
                self.folder / USERS_LOCK, fcntl.LOCK_SH, self.lock_timeout_s, "lease"
            )
            record = _read_record(self.folder / STATE_FILE)
            if record is None or not _alive(record):
                record = self._start()
            return PrefectApi(record.url, "run-server", ui=False)

    def _start(self) -> ServerRecord:
        """Bind a free loopback port here and hand the socket down (supervisor -> uvicorn
        `--fd`): the port is ours from this instant, no other process can take it meanwhile."""
        database = database_url(self.folder.parent)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            argv = [sys.executable, "-m", "ctloop.ops.run_api", "--dir", str(self.folder)]
            argv += ["--fd", str(sock.fileno()), "--database", database]
            env = {**ENV_DEFAULTS, **os.environ}
            env.pop("PREFECT_API_URL", None)
            with (self.folder / LOG_FILE).open("ab") as log:
                self.started = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                    start_new_session=True,  # Ctrl-C reaches the command, not the server
                )
        except OSError as err:
            raise ApiError(f"cannot start the Prefect run server: {err}") from None
        finally:
            sock.close()  # the supervisor and the server hold their own copies
        identity = ""
        deadline = time.monotonic() + 5
        while not identity and time.monotonic() < deadline and self.started.poll() is None:
            identity = process_identity(self.started.pid) or ""
        record = ServerRecord(
            url=f"http://127.0.0.1:{port}/api",
            pid=self.started.pid,
            identity=identity,
            boot_id=boot_id(),
            database=database,
        )
        _write_record(self.folder / STATE_FILE, record)
        return record

    def release(self) -> None:
        """Drop the lease; the last command out stops the server at once (no process left)."""
        if self.users is None:
            return
        self.users.close()
        self.users = None
        with start_lock(self.folder.parent, self.lock_timeout_s):
            users = (self.folder / USERS_LOCK).open("a+b")
            try:
                if not _try_exclusive(users):
                    return  # another command still uses it
                record = _read_record(self.folder / STATE_FILE)
                if record is not None and _alive(record):
                    _terminate(record.pid)
                (self.folder / STATE_FILE).unlink(missing_ok=True)
            finally:
                users.close()
        if self.started is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.started.wait(timeout=1)


@contextlib.contextmanager
def start_lock(stack_dir: Path, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold the project's server start lock: whoever holds it may start or stop the run server
    or the `ctloop up` stack, so two of them never serve one database."""
    folder = stack_dir / API_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder / START_LOCK, fcntl.LOCK_EX, timeout_s, "start"):
        yield


@contextlib.contextmanager
def prefect_api(
    stack_dir: Path,
    stack_lookup: Callable[[], str | None] = lambda: None,
    lock_timeout_s: float = 300.0,
    ui_url: str | None = None,
) -> Iterator[PrefectApi]:
    """Choose the Prefect API of this command's process tree and put it into `os.environ`
    before Prefect is imported (see the module docstring for the order). Call `wait_ready` on
    the result before the first flow runs. On exit (also on an exception, Ctrl-C or a SIGTERM
    turned into SystemExit) the lease is dropped and the last user stops the run server.

    `stack_lookup` returns the API URL of the project's running `ctloop up` stack, or None; it
    is called under the start lock. `ui_url` (the stack's UI) becomes PREFECT_UI_URL with the run
    server, so Prefect's "View at" links open the run once `ctloop up` serves the database.
    Raises ApiError when that lock stays held for `lock_timeout_s`."""
    given = os.environ.get("PREFECT_API_URL")
    if given:
        yield PrefectApi(given, "environment", ui=True)
        return
    lease = _Lease(stack_dir / API_DIR, lock_timeout_s)
    keys = ("PREFECT_API_URL", _NO_EPHEMERAL, RUN_SERVER_ENV, "PREFECT_UI_URL")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        api = lease.acquire(stack_lookup)
        os.environ["PREFECT_API_URL"] = api.url
        os.environ[_NO_EPHEMERAL] = "false"  # a child without the URL fails, never starts one
        if api.source == "run-server":
            os.environ[RUN_SERVER_ENV] = api.url  # no UI there: approval pauses cannot be answered
            if ui_url and "PREFECT_UI_URL" not in os.environ:
                os.environ["PREFECT_UI_URL"] = ui_url
        yield api
    finally:
        lease.release()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_NO_EPHEMERAL = "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"


def run_server_record(stack_dir: Path) -> ServerRecord | None:
    """The project's live run server, if any (for `ctloop up` and `ctloop status`)."""
    record = _read_record(stack_dir / API_DIR / STATE_FILE)
    return record if record is not None and _alive(record) else None


# --- the supervisor (python -m ctloop.ops.run_api) -----------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def server_command(fd: int) -> list[str]:
    """Prefect's server app under uvicorn, as Prefect starts its temporary server, serving the
    already bound socket `fd`."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise ApiError("prefect is not installed in this environment")
    app_dir = Path(spec.origin).parent.parent
    return [
        sys.executable,
        *("-m", "uvicorn", "--app-dir", str(app_dir), "--factory", SERVER_APP),
        *("--fd", str(fd), "--log-level", "error", "--lifespan", "on"),
    ]


def server_env(database: str) -> dict[str, str]:
    env = {**ENV_DEFAULTS, **os.environ}
    env.pop("PREFECT_API_URL", None)
    env |= {
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
    }
    return env


def supervise(folder: Path, fd: int, database: str) -> int:
    """Run the API server on the socket `fd` until no command holds a lease (or the server
    dies); then stop it and forget it."""
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = subprocess.Popen(
        server_command(fd),
        env=server_env(database),
        stdin=subprocess.DEVNULL,
        pass_fds=(fd,),
        preexec_fn=_die_with_parent,  # prctl must run in the child
    )
    os.close(fd)  # the server holds the socket now
    code = 0
    try:
        while not stopping:
            time.sleep(POLL_S)
            if stopping:
                break
            if server.poll() is not None:
                print(f"ctloop run server: exited with status {server.returncode}", flush=True)
                code = 1
                break
            if _unused(folder):
                break
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        _forget(folder)
    return code


def _unused(folder: Path) -> bool:
    """True when no command holds a lease (checked under the start lock: none is joining)."""
    with (folder / START_LOCK).open("a+b") as start:
        fcntl.flock(start, fcntl.LOCK_EX)
        with (folder / USERS_LOCK).open("a+b") as users:
            if _try_exclusive(users):
                return True
    return False


def _forget(folder: Path) -> None:
    """Remove server.json when it still names this supervisor."""
    record = _read_record(folder / STATE_FILE)
    if record is not None and record.pid == os.getpid():
        (folder / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ctloop's run server supervisor (internal)")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    return supervise(args.dir, args.fd, args.database)


if __name__ == "__main__":
    sys.exit(main())
