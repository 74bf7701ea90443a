"""`ctloop up` / `down` without real servers: commands, stack.json, pid safety, port checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ctloop.cli import app
from ctloop.core.config import Project, load_project
from ctloop.ops import stack
from tests.conftest import ROOT

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def project_with(tmp_path: Path) -> Callable[..., Project]:
    """A project folder whose params.yaml has the given `stack` section."""

    def build(**stack_cfg: Any) -> Project:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        stack_cfg.setdefault("evidently_port", _free_port())  # 8000 may be taken here
        params["stack"] = {**params["stack"], **stack_cfg}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return load_project(tmp_path / "params.yaml")

    return build


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process of our own in a session of its own (like a stack child)."""
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _listening_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def _record(project: Project, pid: int, identity: str) -> None:
    api, ui, mlflow = stack.urls(project)
    info = stack.StackInfo(
        prefect_api_url=api,
        prefect_ui_url=ui,
        mlflow_url=mlflow,
        processes={"prefect": pid},
        logs={"prefect": str(stack.log_dir(project) / "prefect.log")},
        identities={"prefect": identity},
        boot_id=stack.boot_id(),
    )
    stack.write_info(project, info)


def test_commands_use_configured_host_ports_and_absolute_paths(
    project_with: Callable[..., Project],
) -> None:
    project = project_with(host="127.0.0.2", prefect_port=4999, mlflow_port=5999)
    cmds = stack.commands(project)
    bin_dir = Path(sys.executable).parent

    assert cmds["prefect"][:3] == [str(bin_dir / "prefect"), "server", "start"]
    assert cmds["prefect"][3:] == ["--host", "127.0.0.2", "--port", "4999"]
    mlflow = cmds["mlflow"]
    assert mlflow[:2] == [str(bin_dir / "mlflow"), "server"]
    store = mlflow[mlflow.index("--backend-store-uri") + 1]
    assert store == f"sqlite:///{project.root / 'mlflow.db'}" and Path(store[10:]).is_absolute()
    artifacts = mlflow[mlflow.index("--artifacts-destination") + 1]
    assert Path(artifacts) == project.root / "mlartifacts" and Path(artifacts).is_absolute()
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.2"
    assert mlflow[mlflow.index("--port") + 1] == "5999"
    assert mlflow[mlflow.index("--workers") + 1] == "1"
    assert cmds["serve"] == [
        sys.executable,
        *("-m", "deployments.serve", "--params", str(project.root / "params.yaml")),
    ]
    assert stack.urls(project) == (
        "http://127.0.0.2:4999/api",
        "http://127.0.0.2:4999",
        "http://127.0.0.2:5999",
    )


def test_children_get_telemetry_off_and_the_stack_urls(
    project_with: Callable[..., Project],
) -> None:
    project = project_with(prefect_port=4999, mlflow_port=5999)
    for name in ("prefect", "mlflow", "serve"):
        env = stack.child_env(project, name)
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
        assert env["DO_NOT_TRACK"] == "true"
        assert env["PREFECT_API_URL"] == "http://127.0.0.1:4999/api"
    assert stack.child_env(project, "mlflow")["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert stack.child_env(project, "serve")["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"


def test_stack_json_round_trip(project_with: Callable[..., Project]) -> None:
    project = project_with()
    info = stack.StackInfo(
        prefect_api_url="http://127.0.0.1:1/api",
        prefect_ui_url="http://127.0.0.1:1",
        mlflow_url="http://127.0.0.1:2",
        processes={"prefect": 11, "mlflow": 12},
        logs={"prefect": "/x/prefect.log", "mlflow": "/x/mlflow.log"},
        identities={"prefect": "1 a", "mlflow": "2 b"},
        boot_id="boot",
    )
    path = stack.write_info(project, info)

    assert path == project.root / ".ctloop" / "stack.json"
    assert stack.read_info(project) == info
    assert [p.name for p in path.parent.iterdir()] == ["stack.json"]  # no temporary file left


def test_unreadable_stack_json_names_the_file(project_with: Callable[..., Project]) -> None:
    project = project_with()
    stack.state_path(project).parent.mkdir(parents=True)
    stack.state_path(project).write_text("{not json")
    with pytest.raises(stack.StackError, match=r"stack\.json is unreadable"):
        stack.read_info(project)


def test_down_without_a_stack_says_nothing_runs(project_with: Callable[..., Project]) -> None:
    project = project_with()
    assert stack.down(project) == []
    result = CliRunner().invoke(app, ["down", "--params", str(project.root / "params.yaml")])
    assert result.exit_code == 0
    assert "nothing is running" in result.output


def test_down_never_kills_a_pid_whose_identity_differs(
    project_with: Callable[..., Project], sleeper: subprocess.Popen[bytes]
) -> None:
    project = project_with()
    _record(project, sleeper.pid, "12345 /venv/bin/prefect server start")  # a recycled pid

    assert stack.down(project) == []
    assert sleeper.poll() is None  # still running
    os.kill(sleeper.pid, 0)
    assert not stack.state_path(project).exists()


def test_down_stops_a_recorded_process_of_ours(
    project_with: Callable[..., Project], sleeper: subprocess.Popen[bytes]
) -> None:
    project = project_with()
    identity = stack.child_identity(sleeper)
    assert identity.endswith(" ".join(SLEEPER))
    _record(project, sleeper.pid, identity)

    assert stack.down(project, timeout=5) == ["prefect"]
    assert sleeper.wait(timeout=5) == -15  # SIGTERM, not SIGKILL
    assert not stack.state_path(project).exists()


def test_up_refuses_while_a_recorded_stack_runs(
    project_with: Callable[..., Project], sleeper: subprocess.Popen[bytes]
) -> None:
    project = project_with()
    _record(project, sleeper.pid, stack.child_identity(sleeper))
    with pytest.raises(stack.StackError, match=r"already running.*ctloop down"):
        stack.up(project, serve=False)
    assert sleeper.poll() is None


def test_port_taken_error_names_host_port_and_the_fix(
    project_with: Callable[..., Project],
) -> None:
    sock, port = _listening_port()
    with sock:
        with pytest.raises(stack.StackError) as err:
            stack.check_port_free("127.0.0.1", port, "mlflow")
        assert f"127.0.0.1:{port}" in str(err.value)
        assert "stack.mlflow_port" in str(err.value)

        project = project_with(prefect_port=port)
        result = CliRunner().invoke(app, ["up", "--params", str(project.root / "params.yaml")])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.output and "stack.prefect_port" in result.output
    assert not stack.state_path(project).exists()  # nothing was started


def _fake_commands(code: str) -> Callable[..., dict[str, list[str]]]:
    def commands(project: Project, params_path: Path | None = None) -> dict[str, list[str]]:
        argv = [sys.executable, "-c", code]
        return {"prefect": argv, "mlflow": argv, "evidently": argv, "serve": argv}

    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_up_fails_fast_when_a_child_exits_and_cleans_up(
    project_with: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_with(prefect_port=_free_port(), mlflow_port=_free_port())
    monkeypatch.setattr(stack, "commands", _fake_commands("print('boom: bad config'); exit(3)"))
    with pytest.raises(stack.StackError, match=r"exited with code 3(.|\n)*boom: bad config"):
        stack.up(project, serve=False)
    assert not stack.state_path(project).exists()


def test_up_times_out_stops_what_it_started_and_shows_the_log(
    project_with: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_with(prefect_port=_free_port(), mlflow_port=_free_port(), startup_timeout_s=1)
    code = "import time; print('still migrating', flush=True); time.sleep(60)"
    monkeypatch.setattr(stack, "commands", _fake_commands(code))
    pids: list[int] = []
    real_write = stack.write_info
    monkeypatch.setattr(
        stack, "write_info", lambda p, i: pids.extend(i.processes.values()) or real_write(p, i)
    )
    with pytest.raises(stack.StackError, match=r"did not answer http://(.|\n)*still migrating"):
        stack.up(project, serve=False)
    assert pids
    for pid in set(pids):
        assert stack.process_identity(pid) is None  # stopped (and reaped)
    assert not stack.state_path(project).exists()


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_stack_env_only_for_an_answering_stack(project_with: Callable[..., Project]) -> None:
    project = project_with(prefect_port=_free_port())
    assert stack.stack_env(project) == {}
    _record(project, os.getpid(), "x")
    assert stack.stack_env(project) == {}  # recorded, but the Prefect server does not answer

    httpd = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        project = project_with(prefect_port=httpd.server_port)
        _record(project, os.getpid(), "x")
        assert stack.stack_env(project) == {
            "PREFECT_API_URL": f"http://127.0.0.1:{httpd.server_port}/api",
            "MLFLOW_TRACKING_URI": stack.urls(project)[2],
        }
    finally:
        httpd.shutdown()
