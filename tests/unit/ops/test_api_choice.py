"""The choice of a command's Prefect API and the locks around the run server (no server here:
tests/integration/test_run_api.py starts real ones)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ctloop.core.config import Project
from ctloop.ops import run_api, stack


def test_an_explicit_api_url_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api")
    with run_api.prefect_api(tmp_path, lambda: "http://127.0.0.1:1/api") as api:
        assert (api.url, api.source) == ("http://prefect.example:4200/api", "environment")
    assert not (tmp_path / run_api.API_DIR).exists()  # nothing started, nothing locked


def test_the_running_stack_is_used_and_nothing_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with run_api.prefect_api(tmp_path, lambda: "http://127.0.0.1:4999/api") as api:
        assert (api.url, api.source, api.ui) == ("http://127.0.0.1:4999/api", "stack", True)
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4999/api"
        assert os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] == "false"  # children too
        assert run_api.run_server_record(tmp_path) is None
    assert "PREFECT_API_URL" not in os.environ  # restored on exit


def test_a_held_start_lock_fails_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    folder = tmp_path / run_api.API_DIR
    folder.mkdir()
    with (folder / run_api.START_LOCK).open("a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with (
            pytest.raises(run_api.ApiError, match=r"start\.lock stayed locked"),
            run_api.prefect_api(tmp_path, lock_timeout_s=0.3),
        ):
            pass


def test_the_project_database_is_the_one_ctloop_up_serves(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    project = make_project()
    expected = f"sqlite+aiosqlite:///{project.path('stack').resolve() / 'prefect.db'}"
    assert run_api.database_url(stack.stack_dir(project)) == expected
    env = stack.child_env(project, "prefect")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == expected
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg:///x")
    assert run_api.database_url(stack.stack_dir(project)) == "postgresql+asyncpg:///x"


def test_up_refuses_while_a_command_serves_the_database(
    make_project: Callable[..., Project],
) -> None:
    """A record naming a live process (this one) stands for a command's run server."""
    project = make_project()
    folder = stack.stack_dir(project) / run_api.API_DIR
    folder.mkdir(parents=True)
    record = run_api.ServerRecord(
        url="http://127.0.0.1:45678/api",
        pid=os.getpid(),
        identity=run_api.process_identity(os.getpid()) or "",
        boot_id=run_api.boot_id(),
        database="sqlite+aiosqlite:///x.db",
    )
    run_api._write_record(folder / run_api.STATE_FILE, record)
    assert run_api.run_server_record(stack.stack_dir(project)) == record
    with pytest.raises(stack.StackError, match=r"run server \(pid \d+, http://127.0.0.1:45678"):
        stack.up(project, serve=False)
    assert stack.read_info(project) is None  # nothing was started
    assert any("run server" in line for line in stack.status(project))


def test_a_record_of_a_gone_process_is_not_a_server(tmp_path: Path) -> None:
    folder = tmp_path / run_api.API_DIR
    folder.mkdir()
    stale = run_api.ServerRecord("http://127.0.0.1:1/api", 2**22 + 7, "x", run_api.boot_id(), "")
    run_api._write_record(folder / run_api.STATE_FILE, stale)
    assert run_api.run_server_record(tmp_path) is None
    (folder / run_api.STATE_FILE).write_text("{not json")
    assert run_api.run_server_record(tmp_path) is None
