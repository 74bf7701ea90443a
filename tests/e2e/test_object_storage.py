"""Object storage and workers for a shared server, for real on loopback (README "Scaling out").

One local S3 server (moto), one `prefect server start` and one `mlflow server` whose artifacts
live in S3 (`--artifacts-destination s3://<bucket>/mlflow`) serve the whole module. A small git
project whose default DVC remote is the bucket (committed in .dvc/config, with its endpoint):

- `ctloop setup` keeps that remote;
- a training run (`ctloop run`) pushes the batches there (`version-data`), and the model, plots
  and reports land in the bucket through the tracking server; `ctloop predict` loads the
  champion through it;
- a fresh `git clone` gets the data back with `dvc pull`; `dvc repro` then runs nothing;
- a process work pool, `prefect deploy --all` of the project's generated prefect.yaml and a
  `prefect worker` as a separate process: `ctloop ingest` of a month makes the `monitor` and
  `retrain` runs execute in that worker (same tracking server, same bucket); the worker stops
  cleanly on SIGTERM and leaves no process behind;
- the credentials (environment only) appear in no file the run wrote, no server log and no
  MLflow param or tag.

Needs the optional extra `ctloop[s3]` (`make install-s3`; `make test-e2e` installs it)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from ctloop.core.config import Project, load_project
from ctloop.io import data
from tests.conftest import ROOT, _merge, sample_months
from tests.e2e.conftest import (
    BIN,
    S3,
    WorkerExit,
    files_holding,
    mlflow_server,
    prefect_server,
    process_worker,
    run,
)

pytestmark = pytest.mark.e2e

MODEL = "ctloop-s3"
WAIT_S = 600.0
CHANGES: dict[str, Any] = {
    "data": {"derive_target": None, "drop_columns": [], "ingest_until": "2013-03"},
    "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
    "model": {"fixed": {"xgboost": {"n_estimators": 40, "tree_method": "hist", "n_jobs": 1}}},
    "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
    "promotion": {"min_score": 0.55, "margin": 0.0, "test": "none", "model_name": MODEL},
    "insights": {
        "permutation_repeats": 2,
        "sample_rows": 500,
        "shap_rows": 50,
        "learning_curve": [0.5, 1.0],
    },
    # every new labelled batch is due for a retrain: the worker test sees monitor, then retrain
    "continuous": {"retrain_every_n_batches": 1, "window": "expanding"},
}


@dataclass(frozen=True)
class Stores:
    s3: S3
    prefect_api: str
    mlflow_url: str
    logs: list[Path]  # the servers' own files (logs, Prefect's and MLflow's databases)

    def env(self, home: Path) -> dict[str, str]:
        """A client's environment: both servers, the venv first on PATH (DVC stage commands),
        the S3 credentials (already in os.environ for the module)."""
        return {
            **os.environ,
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_HOME": str(home),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }


@pytest.fixture(scope="module")
def stores(s3_server: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """A Prefect server (SQLite) and an MLflow server (SQLite, artifacts in the bucket)."""
    home = tmp_path_factory.mktemp("servers")
    backend = f"sqlite:///{home / 'mlflow.db'}"
    artifacts = f"s3://{s3_server.bucket}/mlflow"
    with (
        prefect_server(home / "prefect") as api,
        mlflow_server(backend, artifacts, home / "mlflow-server.log") as url,
    ):
        yield Stores(s3_server, api, url, [home])


def _git(root: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    run(["git", *args], root, env)


@pytest.fixture(scope="module")
def project(
    stores: Stores,
    default_batches: dict[str, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> Project:
    """A git project (Jan-Apr, 800 real rows a month; April arrives later) whose committed
    default DVC remote is the bucket; `ctloop setup` has run."""
    from ctloop.ops.project_init import scaffold

    base = tmp_path_factory.mktemp("s3proj")
    source = base / "source.parquet"
    months = ["2013-01", "2013-02", "2013-03", "2013-04"]
    sample_months(default_batches, months, 800).to_parquet(source, index=False)
    root = base / "proj"
    root.mkdir()
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), CHANGES)
    params["data"]["source"] = str(source)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _git(root, "init", "-q", "-b", "main")
    scaffold(root)  # DVC with git, as `ctloop init` in a git checkout
    env = stores.env(base / "home")
    url = f"s3://{stores.s3.bucket}/data"
    run([str(BIN / "dvc"), "remote", "add", "-d", "store", url], root, env)
    run(
        [str(BIN / "dvc"), "remote", "modify", "store", "endpointurl", stores.s3.endpoint],
        root,
        env,
    )
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "project")
    run([str(BIN / "ctloop"), "setup", "--params", "params.yaml"], root, env)
    return load_project(root / "params.yaml")


def test_setup_keeps_the_s3_default_remote(project: Project, stores: Stores) -> None:
    from dvc.repo import Repo

    with Repo(str(project.root)) as repo:
        config = repo.config
        assert config["core"]["remote"] == "store"
        assert config["remote"]["store"]["url"] == f"s3://{stores.s3.bucket}/data"
        assert config["remote"]["store"]["endpointurl"] == stores.s3.endpoint
    assert (
        "remote" not in (project.root / ".dvc" / "config.local").read_text(encoding="utf-8")
        if (project.root / ".dvc" / "config.local").exists()
        else True
    )
    assert not project.path("dvc_remote").exists()  # no local remote made beside it


@dataclass(frozen=True)
class Trained:
    run_output: str
    keys_after_run: list[str]
    predictions: Path


@pytest.fixture(scope="module")
def trained(project: Project, stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """`ctloop run` through both servers, then `ctloop predict` of March with the champion."""
    env = stores.env(tmp_path_factory.mktemp("client"))
    done = run([str(BIN / "ctloop"), "run", "--params", "params.yaml"], project.root, env)
    keys = stores.s3.keys()
    march = project.root / "march.parquet"
    pd.read_parquet(data.batch_path(project.path("batches"), "2013-03")).to_parquet(march)
    out = project.root / "scored.parquet"
    run([str(BIN / "ctloop"), "predict", str(march), "-o", str(out)], project.root, env)
    return Trained(done.stdout + done.stderr, keys, out)


def test_training_run_pushes_batches_and_artifacts_to_the_bucket(
    project: Project, stores: Stores, trained: Trained
) -> None:
    from dvc.repo import Repo

    from ctloop.io import tracking

    batches = sorted(data.list_batches(project.path("batches")))
    assert batches == ["2013-01", "2013-02", "2013-03"]
    # version-data: the folder's .dir listing and every batch file, content-addressed by DVC
    with Repo(str(project.root)) as repo:
        [out] = [o for s in repo.index.stages if s.name == "ingest" for o in s.outs]
        folder_md5 = out.hash_info.value  # "<md5>.dir"
    data_keys = [k for k in trained.keys_after_run if k.startswith("data/files/md5/")]
    assert f"data/files/md5/{folder_md5[:2]}/{folder_md5[2:]}" in data_keys
    assert len(data_keys) == len(batches) + 1, data_keys  # + the .dir object
    # MLflow artifacts: through the tracking server into s3://bucket/mlflow
    tracking.use_store(stores.mlflow_url)
    from mlflow import MlflowClient

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    run_keys = [k for k in trained.keys_after_run if k.startswith("mlflow/")]
    assert any(f"/{champion.run_id}/artifacts/" in k for k in run_keys), run_keys[:20]
    mine = [k for k in run_keys if f"/{champion.run_id}/artifacts/" in k]
    assert any(k.endswith(".png") for k in mine), mine  # plots
    assert any(k.endswith(".json") for k in mine), mine  # reports
    assert any(k.endswith(("MLmodel", "model.skops", "model.pkl")) for k in run_keys), run_keys
    assert not project.path("mlflow_artifacts").exists() or not any(
        project.path("mlflow_artifacts").iterdir()
    )  # nothing beside the project: the server stored it
    # `ctloop predict` loaded the champion (its files from S3 through the server)
    scored = pd.read_parquet(trained.predictions)
    assert len(scored) == len(pd.read_parquet(project.root / "march.parquet"))
    assert scored.filter(like="pred").notna().all().all()


def test_fresh_clone_pulls_the_data_and_repro_is_a_no_op(
    project: Project, stores: Stores, trained: Trained, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dvc = str(BIN / "dvc")
    env = stores.env(tmp_path_factory.mktemp("clone-home"))
    root = project.root
    # the pipeline through DVC on the pushed data, its outputs pushed, the record committed
    run([dvc, "repro"], root, env, timeout_s=900)
    run([dvc, "push"], root, env)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "trained")

    clone = tmp_path_factory.mktemp("clone") / "proj"
    run(["git", "clone", "-q", str(root), str(clone)], clone.parent, env)
    assert not (clone / project.params.paths.batches).exists()
    pulled = run([dvc, "pull"], clone, env)
    for name in data.list_batches(project.path("batches")):
        mine = data.batch_path(project.path("batches"), name).read_bytes()
        theirs = data.batch_path(clone / project.params.paths.batches, name).read_bytes()
        assert mine == theirs, name
    assert (clone / project.params.paths.models / "model.joblib").is_file(), pulled.stdout
    status = run([dvc, "status"], clone, env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    again = run([dvc, "repro"], clone, env)
    assert "Running stage" not in again.stdout, again.stdout


def _flow_runs(api: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_flow_runs()


def _deployments(api: str) -> dict[Any, str]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return {d.id: d.name for d in client.read_deployments()}


def wait_for_runs(api: str, want: dict[str, int], log: Path) -> list[tuple[str, Any]]:
    """(deployment name, flow run) of every run once each deployment in `want` has that many
    terminal runs (bounded by WAIT_S; the worker's log in the failure)."""
    terminal = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        names = _deployments(api)
        runs = [(names.get(r.deployment_id, "-"), r) for r in _flow_runs(api)]
        done = {
            n: sum(1 for d, r in runs if d == n and r.state_type.value in terminal) for n in want
        }
        if all(done[n] >= k for n, k in want.items()):
            return runs
        time.sleep(3)
    pytest.fail(f"timed out waiting for {want}; worker log:\n{log.read_text()[-4000:]}")


def wait_for_exit(infrastructure_pids: list[str | None], log: Path, timeout_s: float = 120) -> None:
    """Wait until the flow runs' processes (Prefect's infrastructure pid, `host:pid`) are gone."""
    pids = [int(str(p).rpartition(":")[2]) for p in infrastructure_pids if p]
    deadline = time.monotonic() + timeout_s
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"flow-run processes {pids} still running; worker log:\n{log.read_text()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def worker_ran(
    project: Project, stores: Stores, trained: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[tuple[str, Any]], WorkerExit]]:
    """The project's deployments on the shared server, a process worker running them, and April
    delivered with `ctloop ingest`; yields the flow runs and how the worker stopped."""
    home = tmp_path_factory.mktemp("worker-home")
    env = {**stores.env(home), "CTLOOP_ROOT": str(project.root)}
    april = home / "april.csv"
    source = pd.read_parquet(project.params.data.source)
    source[source["date"] >= "2013-04-01"].to_csv(april, index=False)
    with process_worker(project.root, env, home / "worker.log") as worker:
        run([str(BIN / "ctloop"), "ingest", str(april)], project.root, env)
        runs = wait_for_runs(stores.prefect_api, {"monitor": 1, "retrain": 1}, worker.log)
        # a run reports COMPLETED before its process has exited: stop an idle worker, as a
        # person would (stopping one in the middle of a run is another test's question)
        wait_for_exit([r.infrastructure_pid for _, r in runs], worker.log)
    yield runs, worker.exit


def test_worker_runs_monitor_and_retrain_then_stops_cleanly(
    project: Project, stores: Stores, worker_ran: tuple[list[tuple[str, Any]], WorkerExit]
) -> None:
    runs, stopped = worker_ran
    ran = {name: r for name, r in runs if name in {"monitor", "retrain"}}
    assert set(ran) == {"monitor", "retrain"}, [(n, r.name) for n, r in runs]
    for name, flow_run in ran.items():
        assert flow_run.state_type.value == "COMPLETED", (name, flow_run.state)
        assert flow_run.work_pool_name == "ctloop", (name, flow_run.work_pool_name)
        # the worker started the run's process: its pid is the run's infrastructure
        assert flow_run.infrastructure_pid, name
    assert "2013-04" in data.list_batches(project.path("batches"))
    # the new batch went to the bucket (April's file + a new .dir listing)
    data_keys = [k for k in stores.s3.keys("data/files/md5/")]
    assert len(data_keys) >= 4 + 2, data_keys
    # the monitoring run logged through the same tracking server: its artifacts are in S3
    from mlflow import MlflowClient

    from ctloop.io import tracking

    tracking.use_store(stores.mlflow_url)
    client = MlflowClient()
    monitoring = tracking.monitoring_experiment_name(project.params.tracking.experiment)
    experiment = client.get_experiment_by_name(monitoring)
    monitored = client.search_runs([experiment.experiment_id], "tags.`ctloop.kind` = 'monitoring'")
    assert [r.data.tags["ctloop.batch"] for r in monitored] == ["2013-04"]
    assert any(f"/{monitored[0].info.run_id}/artifacts/" in k for k in stores.s3.keys("mlflow/"))
    # stopped by SIGTERM: it exited by itself, and nothing it started is left running
    assert stopped.signalled_exit_s is not None, stopped
    assert stopped.leftover == [], stopped


def test_credentials_are_written_nowhere(
    project: Project,
    stores: Stores,
    trained: Trained,
    worker_ran: tuple[list[tuple[str, Any]], WorkerExit],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every file of the project (and its clone), the servers' logs and databases, the worker's
    log, the run's output, and every MLflow param and tag: no access key, no secret."""
    secrets = [stores.s3.access_key, stores.s3.secret_key]
    base = tmp_path_factory.getbasetemp()
    assert files_holding([base], secrets) == []
    assert not any(s in trained.run_output for s in secrets)
    from mlflow import MlflowClient

    from ctloop.io import tracking

    tracking.use_store(stores.mlflow_url)
    client = MlflowClient()
    written: list[str] = []
    for experiment in client.search_experiments():
        written += [str(experiment.tags)]
        for found in client.search_runs([experiment.experiment_id]):
            written += [str(found.data.params), str(found.data.tags)]
    for version in client.search_model_versions(f"name = '{MODEL}'"):
        written += [str(version.tags)]
    written += [str(m.tags) for m in client.search_registered_models()]
    assert len(written) > 3
    assert not [w for w in written if any(s in w for s in secrets)]
    assert not [r for _, r in worker_ran[0] if any(s in str(r.parameters) for s in secrets)]
