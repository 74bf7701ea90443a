"""A real `ctloop up --no-serve` (Prefect and MLflow servers on free ports), then `ctloop down`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctloop.cli import app
from ctloop.core.config import Project
from ctloop.ops import stack
from tests.conftest import free_ports

# end to end: drives the installed `ctloop` (or `dvc repro`) as separate processes, as a user
# does; `make test-e2e` runs it, `make test` does not
pytestmark = pytest.mark.e2e

CTLOOP = str(Path(sys.executable).parent / "ctloop")


def _gone(pid: int, wait_s: float = 15.0) -> bool:
    """True once `pid` no longer exists (its new parent, init, may take a moment to reap it)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def stack_project(make_project: Callable[..., Project]) -> Iterator[Project]:
    prefect_port, mlflow_port = free_ports(2)
    project = make_project(
        {"stack": {"prefect_port": prefect_port, "mlflow_port": mlflow_port}}, name="stackproj"
    )
    yield project
    stack.down(project)  # whatever the test did, nothing of it keeps running


def test_up_then_down_starts_healthy_servers_and_leaves_nothing(stack_project: Project) -> None:
    project = stack_project
    cfg = project.params.stack
    params = str(project.root / "params.yaml")

    began = time.monotonic()
    result = subprocess.run(
        [CTLOOP, "up", "--no-serve", "--params", params],
        capture_output=True,
        text=True,
        timeout=cfg.startup_timeout_s + 30,
        check=False,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"http://127.0.0.1:{cfg.prefect_port}" in result.stdout
    assert f"http://127.0.0.1:{cfg.mlflow_port}" in result.stdout
    assert "stop with: ctloop down" in result.stdout
    print(f"ctloop up healthy after {elapsed:.1f} s")

    info = stack.read_info(project)
    assert info is not None and set(info.processes) == {"prefect", "mlflow"}
    for url in (f"{info.prefect_api_url}/health", f"{info.mlflow_url}/health"):
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    for name in ("prefect", "mlflow"):
        assert (project.root / ".ctloop" / "logs" / f"{name}.log").is_file()
    assert stack.stack_env(project) == {
        "PREFECT_API_URL": info.prefect_api_url,
        "MLFLOW_TRACKING_URI": info.mlflow_url,
    }
    assert (project.root / ".ctloop" / "prefect.db").is_file()  # per-project Prefect database
    # every process of the stack, including the servers' own children (MLflow's uvicorn)
    pids = {pid for sid in info.processes.values() for pid in stack._session_members(sid)}
    assert len(pids) >= 3

    again = CliRunner().invoke(app, ["up", "--no-serve", "--params", params])
    assert again.exit_code == 1 and "already running" in again.output

    stopped = CliRunner().invoke(app, ["down", "--params", params])
    assert stopped.exit_code == 0, stopped.output
    assert "stopped: prefect, mlflow" in stopped.output
    assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p, 0)]
    stack.check_port_free(cfg.host, cfg.prefect_port, "prefect")
    stack.check_port_free(cfg.host, cfg.mlflow_port, "mlflow")
    assert not stack.state_path(project).exists()
    assert stack.stack_env(project) == {}
