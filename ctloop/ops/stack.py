"""`ctloop up` / `ctloop down`: the local stack (Prefect server, MLflow tracking server, the
Evidently UI over the monitoring dashboard's workspace and the process serving the Prefect
deployments), started as detached children of their own session.

Pids, process identities, URLs and log paths are recorded in `<stack dir>/stack.json`, so that
`down` stops exactly what `up` started and never a process that merely reuses a recorded pid.
Standard library only: `ctloop --help` must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core.env import ENV_DEFAULTS
from ctloop.io import files
from ctloop.io.processes import boot_id, process_identity
from ctloop.ops import run_api
from ctloop.ops.preflight import UnreachableError, check_http
from ctloop.ops.run_api import database_url, run_server_record

if TYPE_CHECKING:
    from ctloop.core.config import Project

STATE_FILE = "stack.json"
POLL_S = 0.5
STOP_TIMEOUT_S = 15.0
TAIL_LINES = 25
SERVERS = ("prefect", "mlflow", "evidently")
SERVE_GRACE_S = 8.0  # the serve process must survive this long after the servers are healthy

# Children still attached to this process: kept so they are reaped (no zombie, no warning).
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The local stack cannot be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class StackInfo:
    """What `up` started: URLs, pids, identities (start time + command line) and log files."""

    prefect_api_url: str
    prefect_ui_url: str
    mlflow_url: str
    evidently_url: str = ""  # the monitoring dashboard (`evidently ui`)
    processes: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)
    boot_id: str = ""

    @classmethod
    def from_json(cls, text: str) -> StackInfo:
        raw = json.loads(text)
        return cls(
            prefect_api_url=raw["prefect_api_url"],
            prefect_ui_url=raw["prefect_ui_url"],
            mlflow_url=raw["mlflow_url"],
            evidently_url=str(raw.get("evidently_url", "")),
            processes={k: int(v) for k, v in raw.get("processes", {}).items()},
            logs=dict(raw.get("logs", {})),
            identities=dict(raw.get("identities", {})),
            boot_id=str(raw.get("boot_id", "")),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --- configuration -------------------------------------------------------------------------


def urls(project: Project) -> tuple[str, str, str]:
    """(Prefect API URL, Prefect UI URL, MLflow URL) of the configured stack."""
    cfg = project.params.stack
    ui = cfg.url(cfg.prefect_port)
    return f"{ui}/api", ui, cfg.url(cfg.mlflow_port)


def evidently_url(project: Project) -> str:
    """URL of the Evidently UI (the monitoring dashboard) of the configured stack."""
    cfg = project.params.stack
    return cfg.url(cfg.evidently_port)


def stack_dir(project: Project) -> Path:
    return project.path("stack")


def state_path(project: Project) -> Path:
    return stack_dir(project) / STATE_FILE


def log_dir(project: Project) -> Path:
    return stack_dir(project) / "logs"


def commands(project: Project, params_path: Path | None = None) -> dict[str, list[str]]:
    """The argv of each child, with the venv's executables (next to sys.executable)."""
    cfg = project.params.stack
    bin_dir = Path(sys.executable).parent
    params = (params_path or project.root / "params.yaml").resolve()
    return {
        "prefect": [
            str(bin_dir / "prefect"),
            *("server", "start", "--host", cfg.host, "--port", str(cfg.prefect_port)),
        ],
        "mlflow": [
            str(bin_dir / "mlflow"),
            "server",
            *("--backend-store-uri", f"sqlite:///{project.path('mlflow_db').resolve()}"),
            *("--artifacts-destination", str(project.path("mlflow_artifacts").resolve())),
            *("--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "1"),
        ],
        "evidently": [
            str(bin_dir / "evidently"),
            *("ui", "--workspace", str(project.path("dashboard").resolve())),
            *("--host", cfg.host, "--port", str(cfg.evidently_port)),
        ],
        "serve": [sys.executable, "-m", "deployments.serve", "--params", str(params)],
    }


def child_env(project: Project, name: str) -> dict[str, str]:
    """Environment of one child: ours, telemetry off, and the stack's URLs."""
    api, _, mlflow = urls(project)
    env = {**ENV_DEFAULTS, **os.environ}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the files as they are written
    env["PREFECT_API_URL"] = api  # the server's UI talks to this API; serve registers there
    if name == "prefect":  # per project, not ~/.prefect: the database the run server uses too
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url(stack_dir(project))
    elif name == "mlflow":
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    elif name == "evidently":  # its usage telemetry is off whenever DO_NOT_TRACK is set at all
        env["DO_NOT_TRACK"] = "true"
    else:
        env["MLFLOW_TRACKING_URI"] = mlflow
    return env


# --- state file ----------------------------------------------------------------------------


def read_info(project: Project) -> StackInfo | None:
    """The recorded stack, or None when no stack.json exists."""
    path = state_path(project)
    try:
        return StackInfo.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StackError(
            f"{path} is unreadable ({err}): check that no ctloop server still runs "
            "(ps aux | grep -E 'prefect|mlflow'), stop it by hand, then delete the file"
        ) from None


def write_info(project: Project, info: StackInfo) -> Path:
    """Write stack.json atomically (temporary file + rename)."""
    path = state_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_text_atomic(path, info.to_json())


# --- processes -----------------------------------------------------------------------------


def _session_members(sid: int) -> dict[int, int]:
    """Live processes of the session `sid` (each child of `up` leads one), as pid -> group."""
    if not Path("/proc/self").is_dir():
        return {sid: sid} if process_identity(sid) else {}
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members[int(entry.name)] = int(fields[2])
    return members


def _reap(pid: int) -> None:
    """Collect the exit status of a child `up` started in this very process (no zombie left)."""
    child = _SPAWNED.get(pid)
    if child is not None and child.poll() is not None:
        del _SPAWNED[pid]


def _signal(sid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group `sid` and to any other member of its session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, sig)
    for pid, group in _session_members(sid).items():
        if group != sid:  # the group got it already: a second SIGTERM cuts a graceful stop short
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _owned(info: StackInfo, name: str) -> bool:
    """True when the recorded process (or what is left of its session) is still ours."""
    if info.boot_id != boot_id():
        return False
    pid = info.processes[name]
    _reap(pid)
    identity = process_identity(pid)
    if identity is not None:
        return identity == info.identities.get(name)
    # Leader gone: a pid cannot be reused while its session has members, so these are ours.
    return bool(_session_members(pid))


def running(info: StackInfo) -> list[str]:
    """Names of the recorded processes that are still alive and still ours."""
    return [name for name in info.processes if _owned(info, name)]


def _tail(path: Path | str, lines: int = TAIL_LINES) -> str:
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16_384))
            text = fh.read().decode(errors="replace")
    except OSError as err:
        return f"    (cannot read {path}: {err})"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:]) or "    (empty)"


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise StackError naming host:port when something already listens there."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise StackError(
            f"stack.host '{host}' does not resolve ({err}): fix it in params.yaml"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.settimeout(1.0)
        taken = probe.connect_ex(addr) == 0
    if not taken:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError:
                taken = True
    if taken:
        raise StackError(
            f"port {host}:{port} ({what}) is already in use: stop what listens there "
            f"(see `ss -ltnp 'sport = :{port}'`) or set stack.{what}_port in params.yaml"
        )


def _spawn(project: Project, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        try:
            child = subprocess.Popen(
                argv,
                cwd=project.root,
                env=child_env(project, name),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            raise StackError(f"cannot start {name} ({argv[0]}): {err}") from None
    _SPAWNED[child.pid] = child
    return child


def child_identity(child: subprocess.Popen[bytes], wait_s: float = 5.0) -> str:
    """Identity of a new child: its command line reads empty for a moment after exec."""
    deadline = time.monotonic() + wait_s
    while (identity := process_identity(child.pid)) is None:
        if child.poll() is not None or time.monotonic() > deadline:
            return ""
        time.sleep(0.005)
    return identity


def _exited(name: str, child: subprocess.Popen[bytes], log: Path) -> StackError | None:
    code = child.poll()
    if code is None:
        return None
    return StackError(
        f"{name} exited with code {code} while starting; last lines of {log}:\n{_tail(log)}"
    )


def _start(
    project: Project,
    name: str,
    argv: list[str],
    info: StackInfo,
    children: dict[str, subprocess.Popen[bytes]],
) -> StackInfo:
    """Spawn one child and record it in stack.json at once (so `down` can always clean up)."""
    log = log_dir(project) / f"{name}.log"
    child = _spawn(project, name, argv, log)
    children[name] = child
    info = replace(
        info,
        processes={**info.processes, name: child.pid},
        logs={**info.logs, name: str(log)},
        identities={**info.identities, name: child_identity(child)},
    )
    write_info(project, info)
    return info


def _watch(name: str, child: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    """Fail when `child` exits within `seconds` (bad params, unreachable API, import error)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if err := _exited(name, child, log):
            raise err
        time.sleep(POLL_S)
    if err := _exited(name, child, log):
        raise err


def _wait_healthy(
    info: StackInfo, children: dict[str, subprocess.Popen[bytes]], timeout: float
) -> None:
    """Poll both health endpoints until they answer; fail fast when a child exits."""
    health = {
        "prefect": f"{info.prefect_api_url}/health",
        "mlflow": f"{info.mlflow_url}/health",
        "evidently": f"{info.evidently_url}/api/version",
    }
    deadline = time.monotonic() + timeout
    while True:
        for name, child in children.items():
            if err := _exited(name, child, Path(info.logs[name])):
                raise err
        for name in list(health):
            try:
                check_http(name, health[name], "", timeout=2.0)
                del health[name]
            except UnreachableError:
                pass
        if not health:
            return
        if time.monotonic() > deadline:
            name = next(iter(health))
            raise StackError(
                f"{name} did not answer {health[name]} within {timeout:g} s (stack stopped; "
                f"raise stack.startup_timeout_s in params.yaml on a slow machine); "
                f"last lines of {info.logs[name]}:\n{_tail(info.logs[name])}"
            )
        time.sleep(POLL_S)


# --- public API ----------------------------------------------------------------------------


def up(project: Project, serve: bool = True, params_path: Path | None = None) -> StackInfo:
    """Start the stack, record it in stack.json and wait until both servers are healthy.

    Holds the project's server start lock (ctloop/ops/run_api.py) meanwhile, and refuses while a
    ctloop command's run server uses the project's Prefect database: one server per database."""
    try:
        with run_api.start_lock(stack_dir(project)):
            if record := run_api.run_server_record(stack_dir(project)):
                raise StackError(
                    f"a ctloop command is using the project's Prefect database through its run "
                    f"server (pid {record.pid}, {record.url}): wait until it ends, then run "
                    "`ctloop up` again"
                )
            return _up(project, serve, params_path)
    except run_api.ApiError as err:
        raise StackError(str(err)) from None


def _up(project: Project, serve: bool, params_path: Path | None) -> StackInfo:
    cfg = project.params.stack
    previous = read_info(project)
    if previous is not None:
        if alive := running(previous):
            raise StackError(
                f"a stack is already running ({', '.join(alive)}; see {state_path(project)}): "
                f"Prefect UI {previous.prefect_ui_url}, MLflow {previous.mlflow_url}, "
                f"dashboard {previous.evidently_url or '-'}. "
                "Stop it first with `ctloop down`"
            )
        state_path(project).unlink(missing_ok=True)  # stale: nothing of it runs any more
    ports = {
        "prefect": cfg.prefect_port,
        "mlflow": cfg.mlflow_port,
        "evidently": cfg.evidently_port,
    }
    for a, b in (("prefect", "mlflow"), ("prefect", "evidently"), ("mlflow", "evidently")):
        if ports[a] == ports[b]:
            raise StackError(
                f"stack.{a}_port and stack.{b}_port are both {ports[a]}: "
                "give them different values in params.yaml"
            )
    for name, port in ports.items():
        check_port_free(cfg.host, port, name)
    project.path("dashboard").mkdir(parents=True, exist_ok=True)  # `evidently ui` serves it

    argvs = commands(project, params_path)
    log_dir(project).mkdir(parents=True, exist_ok=True)
    api, ui, mlflow = urls(project)
    info = StackInfo(
        prefect_api_url=api,
        prefect_ui_url=ui,
        mlflow_url=mlflow,
        evidently_url=evidently_url(project),
        boot_id=boot_id(),
    )
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SERVERS:
            info = _start(project, name, argvs[name], info, children)
        _wait_healthy(info, children, cfg.startup_timeout_s)
        if serve:  # it registers the deployments with the Prefect API: start it once healthy
            info = _start(project, "serve", argvs["serve"], info, children)
            _watch("serve", children["serve"], Path(info.logs["serve"]), SERVE_GRACE_S)
    except BaseException as err:
        try:
            down(project)
        except StackError as stop_err:
            err.add_note(f"cleaning up also failed: {stop_err}")
        raise
    return info


def _stop(targets: dict[str, int], timeout: float, state: Path) -> None:
    """SIGTERM the sessions of `targets`, SIGKILL what is left after `timeout`."""
    for sid in targets.values():
        _signal(sid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = dict(targets)
    while left:
        for name, sid in list(left.items()):
            _reap(sid)
            if not _session_members(sid):
                del left[name]
        if not left:
            return
        if time.monotonic() > deadline:
            for sid in left.values():
                _signal(sid, signal.SIGKILL)
            time.sleep(POLL_S)
            for sid in left.values():
                _reap(sid)
            if stuck := {name: sid for name, sid in left.items() if _session_members(sid)}:
                raise StackError(
                    f"still running after SIGKILL: {stuck} (recorded in {state}); "
                    "check `ps -s <pid>` and stop them by hand"
                )
            return
        time.sleep(0.2)


def down(project: Project, timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop what `up` recorded (SIGTERM, then SIGKILL after `timeout`); names of those stopped.

    The serve process goes first, while the Prefect API it talks to still answers."""
    info = read_info(project)
    if info is None:
        return []
    targets = {name: info.processes[name] for name in running(info)}
    clients = {name: pid for name, pid in targets.items() if name not in SERVERS}
    _stop(clients, timeout, state_path(project))
    _stop({n: p for n, p in targets.items() if n in SERVERS}, timeout, state_path(project))
    state_path(project).unlink(missing_ok=True)
    return list(targets)


def stack_env(project: Project) -> dict[str, str]:
    """PREFECT_API_URL and MLFLOW_TRACKING_URI of a running stack, else {}."""
    try:
        info = read_info(project)
    except StackError:
        return {}
    if info is None:
        return {}
    try:
        check_http("Prefect API", f"{info.prefect_api_url}/health", "", timeout=2.0)
    except UnreachableError:
        return {}
    return {"PREFECT_API_URL": info.prefect_api_url, "MLFLOW_TRACKING_URI": info.mlflow_url}


def status(project: Project) -> list[str]:
    """One line per recorded process: name, pid, running or not, URL and log; and the run
    server of a ctloop command, when one runs."""
    record = run_server_record(stack_dir(project))
    busy = []
    if record:
        busy.append(f"run server pid {record.pid:<7} running  {record.url}  (a ctloop command's)")
    info = read_info(project)
    if info is None:
        return busy
    where = {
        "prefect": info.prefect_ui_url,
        "mlflow": info.mlflow_url,
        "evidently": info.evidently_url or "-",
    }
    alive = set(running(info))
    return busy + [
        f"{name:9} pid {pid:<7} {'running' if name in alive else 'STOPPED':8} "
        f"{where.get(name, '-')}  log {info.logs.get(name, '-')}"
        for name, pid in info.processes.items()
    ]
