"""A real `ctloop up --no-serve` (Prefect, MLflow and Evidently UI servers on free ports), then
`ctloop down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctloop.cli import app
from ctloop.core.config import Project
from ctloop.io import dashboard as store
from ctloop.ops import stack
from ctloop.steps import dashboard
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
    prefect_port, mlflow_port, evidently_port = free_ports(3)
    ports = {"prefect_port": prefect_port, "mlflow_port": mlflow_port}
    project = make_project({"stack": {**ports, "evidently_port": evidently_port}}, name="stackproj")
    yield project
    stack.down(project)  # whatever the test did, nothing of it keeps running


def test_up_then_down_starts_healthy_servers_and_leaves_nothing(stack_project: Project) -> None:
    project = stack_project
    cfg = project.params.stack
    params = str(project.root / "params.yaml")
    snapshot_url = _one_snapshot(project)  # what a monitored batch leaves in the workspace

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
    assert f"http://127.0.0.1:{cfg.evidently_port}" in result.stdout
    assert "stop with: ctloop down" in result.stdout
    print(f"ctloop up healthy after {elapsed:.1f} s")

    info = stack.read_info(project)
    assert info is not None and set(info.processes) == {"prefect", "mlflow", "evidently"}
    for url in (f"{info.prefect_api_url}/health", f"{info.mlflow_url}/health", snapshot_url):
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    # the dashboard lists the model's project and its snapshot
    project_id = dashboard.project_id(project.params.promotion.model_name)
    with urllib.request.urlopen(f"{info.evidently_url}/api/projects", timeout=5) as response:
        assert str(project_id) in {p["id"] for p in json.load(response)}
    with urllib.request.urlopen(
        f"{info.evidently_url}/api/projects/{project_id}/reports", timeout=5
    ) as response:
        assert snapshot_url.rsplit("/", 1)[1] in response.read().decode()
    assert any("evidently" in line and "running" in line for line in stack.status(project))
    for name in ("prefect", "mlflow", "evidently"):
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
    assert "stopped: prefect, mlflow, evidently" in stopped.output
    assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p, 0)]
    stack.check_port_free(cfg.host, cfg.prefect_port, "prefect")
    stack.check_port_free(cfg.host, cfg.mlflow_port, "mlflow")
    stack.check_port_free(cfg.host, cfg.evidently_port, "evidently")
    assert not stack.state_path(project).exists()
    assert stack.stack_env(project) == {}


def _one_snapshot(project: Project) -> str:
    """A snapshot in the project's dashboard workspace as the monitor writes it (ctloop values
    only: no batch is monitored here); the URL of its page in the Evidently UI."""
    name = project.params.promotion.model_name
    folder, pid = project.path("dashboard"), dashboard.project_id(name)
    store.ensure_project(folder, pid, name, "test", dashboard.panels("roc_auc"))
    sid = dashboard.snapshot_id(name, "2013-04", "1", "0" * 12)
    model = store.build_snapshot(
        [],
        "monitor 2013-04",
        "Batch 2013-04",
        datetime(2013, 4, 1),
        {},
        ["batch:2013-04"],
        {"drifted_share": 0.25, "rows": 100.0},
    )
    assert store.write_snapshot(folder, pid, sid, model)
    return dashboard.snapshot_url(project, name, sid)
