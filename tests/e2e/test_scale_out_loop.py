"""The whole loop past one machine, on this one: Prefect, MLflow and Optuna on PostgreSQL, data
and artifacts in a local S3 server, flows run by a process worker (README "Scaling out").

A `prefect server start` on one fresh database, an `mlflow server` on another with its artifacts
in the bucket, the Optuna study in a third; the project's default DVC remote is the bucket. An
initial `ctloop run` trains the champion on Jan-Feb; `ctloop replay` then delivers March and April
(the loop's first two months, labelled) and waits for the runs each triggered, which the worker
executes from the project's prefect.yaml. What ran and what was stored is read back with SQL
(flow runs; MLflow runs, versions, artifact locations; Optuna studies and trials) and S3 listings.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database `test`): skipped with the
reason when it does not answer; the databases are created fresh and dropped after. Needs the
optional extra `ctloop[s3]` (fails without it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ctloop.core.config import Project
from tests.conftest import new_project, sample_months
from tests.e2e.conftest import (
    BIN,
    S3,
    files_holding,
    mlflow_server,
    prefect_server,
    process_worker,
    run,
)
from tests.integration.test_postgres import _query, _url, databases

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
__all__ = ["databases"]  # the fixture: three fresh databases, dropped after

MODEL = "ctloop-scale"


@pytest.fixture(scope="module")
def source(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("scale-source") / "flights.parquet"
    months = ["2013-01", "2013-02", "2013-03", "2013-04"]
    sample_months(default_batches, months, 800).to_parquet(path, index=False)
    return path


def _changes(source: Path, databases: dict[str, str]) -> dict[str, Any]:
    return {
        "data": {
            "source": str(source),
            "derive_target": None,
            "drop_columns": [],
            "ingest_until": "2013-02",  # March and April are delivered by the replay
        },
        "split": {"window_start": "2013-01", "window_end": "2013-02", "folds": 3},
        "model": {"fixed": {"xgboost": {"n_estimators": 40, "tree_method": "hist", "n_jobs": 1}}},
        "tune": {
            "n_trials": 2,
            "timeout_s": None,
            "show_progress_bar": False,
            "storage": _url(databases["optuna"]),
        },
        "promotion": {"min_score": 0.55, "margin": 0.0, "test": "none", "model_name": MODEL},
        "insights": {
            "permutation_repeats": 2,
            "sample_rows": 500,
            "shap_rows": 50,
            "learning_curve": [0.5, 1.0],
        },
        # every labelled month retrains (no cooldown): two monitors and two retrains
        "continuous": {"retrain_every_n_batches": 1, "window": "expanding", "cooldown_minutes": 0},
        "replay": {"start": "2013-03", "end": "2013-04", "pace_s": 0, "label_delay": 0},
    }


@pytest.fixture(scope="module")
def loop(
    databases: dict[str, str],
    s3_server: S3,
    source: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Project, str]]:
    """Servers on PostgreSQL + S3, the initial training, then `ctloop replay` run by a worker;
    yields the project and replay's output."""
    base = tmp_path_factory.mktemp("scale")
    prefect_db = _url(databases["prefect"], "postgresql+asyncpg")
    with (
        prefect_server(base / "prefect", prefect_db) as api,
        mlflow_server(
            _url(databases["mlflow"]),
            f"s3://{s3_server.bucket}/mlflow",
            base / "mlflow-server.log",
        ) as mlflow_url,
    ):
        project = new_project(base / "proj", _changes(source, databases))
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(base / "client-home"),
            "MLFLOW_TRACKING_URI": mlflow_url,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "CTLOOP_ROOT": str(project.root),
        }
        dvc, root = str(BIN / "dvc"), project.root
        run([dvc, "remote", "add", "-d", "store", f"s3://{s3_server.bucket}/data"], root, env)
        run([dvc, "remote", "modify", "store", "endpointurl", s3_server.endpoint], root, env)
        ctloop = str(BIN / "ctloop")
        run([ctloop, "run", "--params", "params.yaml"], root, env)
        with process_worker(root, env, base / "worker.log") as worker:
            done = run([ctloop, "replay", "--params", "params.yaml"], root, env, timeout_s=1500)
        assert worker.exit.leftover == [], worker.exit
        yield project, done.stdout


def test_replay_on_postgres_and_object_storage(
    loop: tuple[Project, str],
    databases: dict[str, str],
    s3_server: S3,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    project, output = loop
    assert output.count("have finished") == 2, output

    # Prefect (PostgreSQL): the initial training, and per month one monitor and one retrain, both
    # started by the worker of the `ctloop` process pool
    flow_runs = _query(
        databases["prefect"],
        "SELECT coalesce(d.name, '-'), f.state_type, p.name, f.infrastructure_pid IS NOT NULL "
        "FROM flow_run f LEFT JOIN deployment d ON d.id = f.deployment_id "
        "LEFT JOIN work_queue q ON q.id = f.work_queue_id "
        "LEFT JOIN work_pool p ON p.id = q.work_pool_id",
    )
    by_deployment: dict[str, list[tuple[str, str | None, bool]]] = {}
    for name, state, pool, started_by_worker in flow_runs:
        by_deployment.setdefault(name, []).append((state, pool, started_by_worker))
    # no deployment: `ctloop run`, and the train-model subflow of each retrain
    assert [s for s, _, _ in by_deployment["-"]] == ["COMPLETED"] * 3, flow_runs
    assert by_deployment["monitor"] == [("COMPLETED", "ctloop", True)] * 2, flow_runs
    assert by_deployment["retrain"] == [("COMPLETED", "ctloop", True)] * 2, flow_runs

    # MLflow (PostgreSQL): two monitoring runs, a version per training, artifacts proxied to S3
    mlflow_db = databases["mlflow"]
    monitored = _query(
        mlflow_db,
        "SELECT t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
        "WHERE t.key = 'ctloop.batch' AND r.name LIKE 'monitor %' ORDER BY t.value",
    )
    assert monitored == [("2013-03",), ("2013-04",)]
    versions = _query(
        mlflow_db, f"SELECT version, run_id FROM model_versions WHERE name = '{MODEL}'"
    )
    assert sorted(v for v, _ in versions) == [1, 2, 3]
    locations = _query(mlflow_db, "SELECT DISTINCT artifact_location FROM experiments")
    assert all(loc.startswith("mlflow-artifacts:") for (loc,) in locations), locations
    keys = s3_server.keys("mlflow/")
    for _, run_id in versions:  # each version's run: its model files are in the bucket
        assert any(f"/{run_id}/artifacts/" in k for k in keys), run_id

    # Optuna (PostgreSQL): one study per training, each with its two trials
    studies = _query(
        databases["optuna"],
        "SELECT s.study_name, count(t.trial_id) FROM studies s "
        "LEFT JOIN trials t ON t.study_id = s.study_id GROUP BY s.study_name",
    )
    assert len(studies) == 3 and all(n == 2 for _, n in studies), studies

    # DVC data in S3: the four monthly batches (and the folder listings of each version)
    from ctloop.io import data

    assert sorted(data.list_batches(project.path("batches"))) == [
        "2013-01",
        "2013-02",
        "2013-03",
        "2013-04",
    ]
    data_keys = s3_server.keys("data/files/md5/")
    assert len([k for k in data_keys if k.endswith(".dir")]) >= 3, data_keys
    assert len([k for k in data_keys if not k.endswith(".dir")]) >= 4, data_keys

    # the credentials: in no file written (project, logs, worker) and in no MLflow param or tag
    secrets = [s3_server.access_key, s3_server.secret_key]
    assert files_holding([tmp_path_factory.getbasetemp()], secrets) == []
    for table in ("params", "tags", "model_version_tags", "registered_model_tags"):
        rows = _query(mlflow_db, f"SELECT value FROM {table}")
        assert not [v for (v,) in rows if v and any(s in v for s in secrets)], table
