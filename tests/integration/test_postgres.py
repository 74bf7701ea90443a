"""The scale-out stores on a real PostgreSQL server: a `prefect server start` on PostgreSQL,
MLflow tracking and registry on PostgreSQL, and the Optuna study of a parallel (threads) search
on PostgreSQL; `ctloop run` trains through all three, and each store is read back with SQL.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, an existing database `test` to
connect to); skipped with the reason when it does not answer. Each run creates three fresh
databases (Prefect, MLflow and Optuna each keep an `alembic_version` table: one database each)
and drops them afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctloop.core.config import Project
from tests.conftest import ROOT, free_ports

HOST, PORT, USER, ADMIN_DB = "127.0.0.1", 5432, "postgres", "test"
STORES = ("prefect", "mlflow", "optuna")
BIN = ROOT / ".venv" / "bin"

pytestmark = pytest.mark.postgres


def _connect(dbname: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=dbname, connect_timeout=3)
    conn.autocommit = True
    return conn


def _query(dbname: str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(_connect(dbname)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Three fresh databases for this run, dropped afterwards (even if a client still holds one)."""
    import psycopg2

    try:
        admin = _connect(ADMIN_DB)
    except psycopg2.OperationalError as err:
        pytest.skip(f"no PostgreSQL at {HOST}:{PORT} (user {USER}, database {ADMIN_DB}): {err}")
    prefix = f"ctloop_{uuid.uuid4().hex[:8]}"
    names = {store: f"{prefix}_{store}" for store in STORES}
    try:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'CREATE DATABASE "{name}"')
        yield names
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _url(dbname: str, driver: str = "postgresql") -> str:
    return f"{driver}://{USER}@{HOST}:{PORT}/{dbname}"


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def prefect_on_postgres(
    databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real `prefect server start` whose database is PostgreSQL; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-pg")
    [port] = free_ports(1)
    api = f"http://{HOST}:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": _url(databases["prefect"], "postgresql+asyncpg"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
    }
    argv = [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(api):
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"Prefect server not healthy: {home}/server.log"
            time.sleep(0.5)
        yield api
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def pg_project(
    make_project: Callable[..., Project], slice_file: Path, databases: dict[str, str]
) -> Project:
    """The small real project, its Optuna study in PostgreSQL and trials on two threads."""
    from tests.integration.conftest import SMALL

    return make_project(
        {
            **SMALL,
            "data": {**SMALL["data"], "source": str(slice_file)},
            "tune": {**SMALL["tune"], "storage": _url(databases["optuna"])},
            "parallel": {"runner": "threads", "workers": 2},
            "promotion": {**SMALL["promotion"], "model_name": "ctloop-pg"},
        }
    )


def test_flow_runs_tracking_registry_and_study_live_in_postgres(
    pg_project: Project, prefect_on_postgres: str, databases: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_on_postgres,
        "PREFECT_HOME": str(tmp_path / "client-home"),
        "MLFLOW_TRACKING_URI": _url(databases["mlflow"]),
    }
    done = subprocess.run(
        [str(BIN / "ctloop"), "run", "--params", "params.yaml"],
        cwd=pg_project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert yaml.safe_load((pg_project.root / "params.yaml").read_text())["parallel"]["runner"] == (
        "threads"
    )

    # Prefect: the flow run, and one task run per trial, in the server's PostgreSQL database
    prefect_db = databases["prefect"]
    flows = _query(prefect_db, "SELECT name, state_type FROM flow_run")
    assert [state for _, state in flows] == ["COMPLETED"]
    trials = _query(
        prefect_db, "SELECT name, state_type FROM task_run WHERE name LIKE 'trial-%' ORDER BY name"
    )
    assert trials == [(f"trial-{i}", "COMPLETED") for i in range(3)]

    # MLflow: the finished training run and the registered version 1 (champion)
    mlflow_db = databases["mlflow"]
    runs = _query(mlflow_db, "SELECT run_uuid, status FROM runs WHERE name LIKE '%train %'")
    assert len(runs) == 1 and runs[0][1] == "FINISHED"
    versions = _query(
        mlflow_db, "SELECT version, run_id FROM model_versions WHERE name = 'ctloop-pg'"
    )
    assert versions == [(1, runs[0][0])]
    aliases = _query(mlflow_db, "SELECT alias, version FROM registered_model_aliases")
    assert ("champion", 1) in aliases

    # Optuna: one study, its three trials finished, named after this flow run
    optuna_db = databases["optuna"]
    [(study_id, study_name)] = _query(optuna_db, "SELECT study_id, study_name FROM studies")
    states = _query(optuna_db, f"SELECT state FROM trials WHERE study_id = {study_id}")
    assert len(states) == 3 and {s for (s,) in states} <= {"COMPLETE", "PRUNED"}
    tag = _query(
        mlflow_db,
        f"SELECT value FROM tags WHERE key = 'ctloop.optuna_study' AND run_uuid = '{runs[0][0]}'",
    )
    assert tag == [(study_name,)]
