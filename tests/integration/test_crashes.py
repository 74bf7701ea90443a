"""Crashes and partial failure: `ctloop run` SIGKILLed (a real subprocess) during ingestion,
tuning, registration and promotion (ctloop/core/faults.py). Afterwards the champion is a READY
version
that loads and predicts, every batch is a complete Parquet file and none is lost, the interrupted
MLflow run is FAILED once the next run has reconciled, and that re-run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from typer.testing import CliRunner

from ctloop.cli import app
from ctloop.core.config import Project
from ctloop.core.faults import CRASH_ENV
from ctloop.io import audit, data, recovery, registry, tracking
from ctloop.steps.summary import TrainingSummary
from flows.train_model import train_model
from tests.conftest import ROOT, sample_months
from tests.integration.conftest import MONTHS

# end to end: drives the installed `ctloop` (or `dvc repro`) as separate processes, as a user
# does; `make test-e2e` runs it, `make test` does not
pytestmark = pytest.mark.e2e

MODEL = "ctloop-crash"
KILLED = -signal.SIGKILL
TINY = {
    "data": {"derive_target": None, "drop_columns": [], "ingest_until": None},
    "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
    "model": {"fixed": {"xgboost": {"n_estimators": 40, "tree_method": "hist", "n_jobs": 1}}},
    "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
    # margin 0: a re-run training the same model again is promoted, so it reaches the alias move
    # the point gate: identical retrains reach the promotion these tests exercise
    "promotion": {"min_score": 0.55, "margin": 0.0, "test": "none", "model_name": MODEL},
}


@pytest.fixture(scope="module")
def tiny_source(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """1,000 real rows per month, January to April 2013."""
    path = tmp_path_factory.mktemp("crash-source") / "flights.parquet"
    sample_months(default_batches, MONTHS, 1000).to_parquet(path, index=False)
    return path


@pytest.fixture
def project(make_project: Callable[..., Project], tiny_source: Path) -> Project:
    return make_project({**TINY, "data": {**TINY["data"], "source": str(tiny_source)}})


@dataclass(frozen=True)
class Exited:
    pid: int
    returncode: int
    output: str


@pytest.fixture
def ctloop_run(project: Project, tmp_path: Path) -> Callable[..., Exited]:
    """`ctloop run` as a real process against the session's Prefect test server (no temporary
    server per process); its own PREFECT_HOME, so results cached by another test never skip the
    step a test wants to kill."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if k not in {CRASH_ENV, "MLFLOW_TRACKING_URI"}}
    env |= {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "prefect")}

    def run(crash_at: str | None = None) -> Exited:
        cmd = [str(ROOT / ".venv" / "bin" / "ctloop"), "run", "--params", "params.yaml"]
        extra = {CRASH_ENV: crash_at} if crash_at else {}
        with subprocess.Popen(
            cmd,
            cwd=project.root,
            env=env | extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            out, _ = proc.communicate(timeout=300)
        done = Exited(proc.pid, proc.returncode, out)
        expected = KILLED if crash_at else 0
        assert done.returncode == expected, f"{crash_at}: rc {done.returncode}\n{out[-3000:]}"
        return done

    return run


def _client(project: Project) -> MlflowClient:
    tracking.use_store(project.tracking_uri)
    return MlflowClient()


def _runs(project: Project, where: str = "") -> list[Run]:
    client = _client(project)
    exp = client.get_experiment_by_name(project.params.tracking.experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], where)


def _killed_run(project: Project, pid: int) -> Run:
    [run] = _runs(project, f"tags.`ctloop.kind` = 'training' and tags.`ctloop.pid` = '{pid}'")
    return run


def _champion_loads_and_predicts(project: Project) -> str:
    """The champion is a READY version whose model loads and scores the holdout."""
    champion = registry.get_alias(MODEL, registry.CHAMPION)
    assert champion is not None and champion.status == "READY"
    model = registry.load_version(MODEL, str(champion.version))
    holdout = data.read_batches(project.path("batches"), ["2013-03"])
    scores = model.predict_proba(holdout[model.feature_names_in_])[:, 1]
    assert len(scores) == len(holdout) and ((scores >= 0) & (scores <= 1)).all()
    return str(champion.version)


def _batches_complete(project: Project, expected: list[str]) -> None:
    """Only whole Parquet batches in the folder, each equal to its period of the source."""
    cfg = project.params.data
    source = data.split_batches(data.prepare(data.load_source(cfg.source, project.root), cfg), cfg)
    folder = project.path("batches")
    assert sorted(p.name for p in folder.iterdir()) == [f"{n}.parquet" for n in expected]
    for name in expected:
        stored = pd.read_parquet(data.batch_path(folder, name))
        assert len(stored) == 1000
        assert data.content_hash(stored) == data.content_hash(source[name])


def _failed_as_interrupted(project: Project, run_id: str, pid: int) -> None:
    run = _client(project).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[recovery.FAILURE_TAG] == f"interrupted (process {pid} gone)"
    assert not _runs(project, "attributes.status = 'RUNNING'")  # nothing else left hanging


def _train_here(project: Project) -> TrainingSummary:
    """The flow in this process: the same code as `ctloop run` without paying another process's
    imports (the ingestion test re-runs through the CLI)."""
    return train_model(params_path=str(project.root / "params.yaml"))


def _first_champion(project: Project) -> None:
    summary = _train_here(project)
    assert summary.promoted and summary.model_version == "1"
    # the next runs must train again to reach their kill point: the same model (margin 0 still
    # promotes it), but a different run (an unchanged re-run would only report v1)
    path = project.root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["model_card"]["intended_use"] = "crash tests: the same model trained again"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _version_tags(project: Project, version: str) -> dict[str, Any]:
    return dict(_client(project).get_model_version(MODEL, version).tags)


def test_kill_during_ingestion(
    project: Project, tiny_source: Path, ctloop_run: Callable[..., Exited]
) -> None:
    killed = ctloop_run("ingest")
    # the first batch is complete, the others simply not there yet; nothing trained
    _batches_complete(project, ["2013-01"])
    assert not _runs(project, "tags.`ctloop.kind` = 'training'")
    # a kill between a batch's temporary file and its rename leaves this (simulated: same pid)
    leftover = project.path("batches") / f".2013-02.parquet.0123abcd.tmp-{killed.pid}"
    leftover.write_bytes(pd.read_parquet(tiny_source).head(10).to_parquet()[:300])
    old = time.time() - 2 * recovery.STALE_TEMP_AGE_S
    os.utime(leftover, (old, old))

    ctloop_run()
    _batches_complete(project, MONTHS)  # leftover removed, no batch lost or doubled
    assert _champion_loads_and_predicts(project) == "1"
    [run] = _runs(project, "tags.`ctloop.kind` = 'training'")
    assert run.info.status == "FINISHED"


def test_kill_during_tuning(project: Project, ctloop_run: Callable[..., Exited]) -> None:
    _first_champion(project)
    killed = ctloop_run("tuning")
    run = _killed_run(project, killed.pid)
    assert run.info.status == "RUNNING"  # what SIGKILL leaves; the next start reconciles it
    assert _champion_loads_and_predicts(project) == "1"
    versions = _client(project).search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]

    rerun = _train_here(project)
    _failed_as_interrupted(project, run.info.run_id, killed.pid)
    assert rerun.model_version == "2"  # nothing registered by the killed run
    assert _champion_loads_and_predicts(project) in {"1", "2"}
    _batches_complete(project, MONTHS)


def test_kill_during_registration(project: Project, ctloop_run: Callable[..., Exited]) -> None:
    _first_champion(project)
    killed = ctloop_run("registration")
    run = _killed_run(project, killed.pid)
    # v2 exists without its challenger record; champion and challenger untouched
    assert "ctloop.run_id" not in _version_tags(project, "2")
    assert not any(k.startswith("promotion.") for k in _version_tags(project, "2"))
    assert _champion_loads_and_predicts(project) == "1"
    # `challenger` left v1 when it became champion; the killed run set it on no version
    assert registry.get_alias(MODEL, registry.CHALLENGER) is None

    rerun = _train_here(project)
    _failed_as_interrupted(project, run.info.run_id, killed.pid)
    # the re-run (same data, params and code) finished v2 instead of registering a duplicate
    tags = _version_tags(project, "2")
    assert tags[registry.RECOVERED_TAG].startswith(run.info.run_id)
    assert recovery.VERSION_TAG not in tags  # moved into the recovered tag, not lost
    assert tags[registry.RUN_TAG] != run.info.run_id
    assert (rerun.model_version, rerun.promoted) == ("2", True)
    assert [str(v.version) for v in registry.versions(MODEL)] == ["1", "2"]
    assert _champion_loads_and_predicts(project) == "2"
    assert [(e.to_version, e.applied) for e in audit.history(MODEL)] == [("1", True), ("2", True)]
    assert _train_here(project).unchanged  # and a third run finds it finished: nothing to do
    _batches_complete(project, MONTHS)


def test_kill_during_promotion(project: Project, ctloop_run: Callable[..., Exited]) -> None:
    _first_champion(project)
    killed = ctloop_run("promotion")
    run = _killed_run(project, killed.pid)
    # the decision and its event are written, the alias did not move: v1 still serves
    assert _version_tags(project, "2")["promotion.promote"] == "True"
    assert _champion_loads_and_predicts(project) == "1"
    assert [(e.to_version, e.applied) for e in audit.history(MODEL)] == [("1", True), ("2", False)]

    rerun = _train_here(project)
    _failed_as_interrupted(project, run.info.run_id, killed.pid)
    # the re-run finished v2 (gated again against v1: the same decision) instead of a v3
    assert (rerun.model_version, rerun.promoted) == ("2", True)
    assert [str(v.version) for v in registry.versions(MODEL)] == ["1", "2"]
    assert _champion_loads_and_predicts(project) == "2"
    events = audit.history(MODEL)
    print([(e.to_version, e.from_version, e.applied) for e in events])
    assert [(e.to_version, e.applied) for e in events][-1] == ("2", True)
    assert events[-1].from_version == "1"
    shown = CliRunner().invoke(app, ["history", "--params", str(project.root / "params.yaml")])
    assert shown.exit_code == 0 and shown.output.count("promote (not applied)") == 1
    _batches_complete(project, MONTHS)
