"""Shared by the benchmarks: throw-away ctloop projects, a private Prefect server, timed
subprocesses and the task-run states of a flow run (read back from the Prefect API).

Everything a benchmark starts is its own child (own process group, stopped by pid) and lives in
its own temporary folder: the user's projects, ~/.prefect and servers are never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CTLOOP = str(BIN / "ctloop")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ctloop.core.env import ENV_DEFAULTS  # noqa: E402


def log(name: str, message: str) -> None:
    """Progress on stderr (stdout holds only the figures)."""
    print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment, telemetry off, the venv first on PATH (DVC stages), no
    inherited Prefect API or tracking URI (each benchmark says which server it uses)."""
    env = {**os.environ, **ENV_DEFAULTS}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# --- projects --------------------------------------------------------------------------


def work_dir(keep: Path | None, prefix: str) -> Path:
    """`keep` (created if needed, left in place), else a temporary folder removed when this
    process exits."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return keep
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update (a copy): {"tune": {"n_trials": 3}} changes one key of a group."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def dotted(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs (values parsed as YAML) as a nested change: tune.n_trials=3."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: expected KEY=VALUE, got '{item}'")
        node = changes
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return changes


def make_project(root: Path, changes: dict[str, Any] | None = None) -> Path:
    """A copy of this project's configuration at `root` (params.yaml with `changes`, dvc.yaml,
    the committed expectation suite, a DVC repository without git), then `ctloop setup`.
    Returns the params.yaml path."""
    from ctloop.ops.project_init import scaffold

    root.mkdir(parents=True)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), changes or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    gx = ROOT / "expectations" / "gx"
    (root / "expectations" / "gx").mkdir(parents=True)
    shutil.copy(gx / "great_expectations.yml", root / "expectations" / "gx")
    shutil.copytree(gx / "expectations", root / "expectations" / "gx" / "expectations")
    scaffold(root)  # dvc.yaml (without code deps: no ctloop/ here) and the DVC repository
    run([CTLOOP, "setup", "--params", str(root / "params.yaml")], cwd=root, env=base_env())
    return root / "params.yaml"


def edit_params(path: Path, changes: dict[str, Any]) -> None:
    """Apply nested `changes` to a project's params.yaml."""
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(merge(raw, changes), sort_keys=False))


# --- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One finished subprocess: wall seconds, CPU seconds of it and its children, output."""

    seconds: float
    cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: list[str], cwd: Path, env: dict[str, str], check: bool = True, quiet: bool = True
) -> Timed:
    """Run `argv` to completion and time it (wall and CPU; CPU counts the waited-for children,
    not servers it talks to). A non-zero exit raises with the tail of its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=quiet, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and out.returncode != 0:
        tail = "\n".join(((out.stdout or "") + (out.stderr or "")).splitlines()[-40:])
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}:\n{tail}")
    return Timed(seconds, cpu, out.returncode, out.stdout or "", out.stderr or "")


def median_seconds(argv: list[str], cwd: Path, env: dict[str, str], repeats: int) -> list[float]:
    """Wall seconds of `repeats` runs of `argv` (the caller takes the median)."""
    return [run(argv, cwd, env).seconds for _ in range(repeats)]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def prefect_server(home: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """A private `prefect server start` (its own PREFECT_HOME and SQLite database, a free port)
    for the duration of the block; yields its API URL. Stopped by its process group id."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = base_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_API_URL=api,
    )
    argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with (home / "server.log").open("wb") as logfile:
        child = subprocess.Popen(
            argv, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(api):
            if child.poll() is not None:
                raise RuntimeError(f"prefect server exited {child.returncode}: {home}/server.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy in {timeout_s:g} s: {api}")
            time.sleep(0.5)
        yield api
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


# --- Prefect API -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskTiming:
    name: str
    state: str
    seconds: float


def last_flow_run(api_url: str, flow_name: str = "train-model") -> tuple[Any, list[TaskTiming]]:
    """The newest run of `flow_name` on the server at `api_url` and its task runs (name without
    the dynamic-key suffix, final state name, duration), in start order."""
    os.environ["PREFECT_API_URL"] = api_url
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        )
    timings = []
    for tr in sorted(task_runs, key=lambda r: r.start_time or r.expected_start_time):
        seconds = (
            (tr.end_time - tr.start_time).total_seconds() if tr.end_time and tr.start_time else 0.0
        )
        state = tr.state.name if tr.state else "?"
        timings.append(TaskTiming(tr.name.rsplit("-", 1)[0], state, seconds))
    return flow_run, timings


def timing_table(timings: list[TaskTiming]) -> list[str]:
    """Markdown table of task runs: name, final state, seconds."""
    lines = ["| task | state | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {t.name} | {t.state} | {t.seconds:.2f} |" for t in timings]
    return lines


def load_state() -> str:
    """1-minute load average and core count: the figures are only as quiet as the machine."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"
