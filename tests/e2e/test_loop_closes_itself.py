"""The loop closes itself: a real Prefect server, MLflow tracking server and serve process (`ctloop
up` on free ports), an initial training, then a data-arrived event for a drifted batch. The
automation-triggered monitor and retrain runs must complete and MLflow must hold the new version
with its decision; a duplicate delivery and a burst of drift events must not train again; the
scheduled `train` deployment has its upcoming runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop.core import events
from ctloop.core.config import Project
from ctloop.io import data, tracking
from ctloop.ops import stack
from tests.conftest import free_ports, sample_months

CTLOOP = str(Path(sys.executable).parent / "ctloop")
WAIT_S = 420.0


@pytest.fixture(scope="module")
def months(default_batches: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return sample_months(default_batches, ["2013-01", "2013-02", "2013-03", "2013-04"], 1000)


@pytest.fixture
def loop(
    make_project: Callable[..., Project],
    months: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Project, stack.StackInfo]]:
    """A small project trained on Jan-Mar under a running stack (its own Prefect database)."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "5")
    source = tmp_path / "source.parquet"  # Jan-Mar as recorded, then a drifted April
    april = months["date"] >= "2013-04-01"
    pd.concat([months[~april], _drifted(months[april])]).to_parquet(source, index=False)
    prefect_port, mlflow_port, evidently_port = free_ports(3)
    changes: dict[str, Any] = {
        "data": {
            "source": str(source),
            "derive_target": None,
            "drop_columns": [],
            "ingest_until": "2013-03",  # April arrives later (`ctloop replay`)
        },
        "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
        "model": {"fixed": {"xgboost": {"n_estimators": 40, "tree_method": "hist", "n_jobs": 1}}},
        "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
        # the point gate: retrains on a little more data reach the promotion the loop needs
        "promotion": {"min_score": 0.55, "margin": 0.0, "test": "none", "model_name": "ctloop-e2e"},
        "drift": {"drift_share": 0.3},
        "continuous": {"retrain_on_drift": True, "window": "expanding", "cooldown_minutes": 30},
        "stack": {
            "prefect_port": prefect_port,
            "mlflow_port": mlflow_port,
            "evidently_port": evidently_port,
        },
    }
    project = make_project(changes, name="e2e")
    params = project.root / "params.yaml"
    try:
        info = stack.up(project, serve=True, params_path=params)
        env = {**os.environ, "PREFECT_API_URL": info.prefect_api_url}
        env["MLFLOW_TRACKING_URI"] = info.mlflow_url
        subprocess.run([CTLOOP, "run", "--params", str(params)], env=env, check=True)
        yield project, info
    finally:
        stack.down(project)


def _runs(api: str) -> list[tuple[str, str]]:
    """(deployment name, state type) of every flow run on the server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        names = {d.id: d.name for d in client.read_deployments()}
        return [
            (names.get(r.deployment_id, "-"), r.state_type.value if r.state_type else "")
            for r in client.read_flow_runs()
        ]


def _wait_for(api: str, want: dict[str, int], what: str) -> list[tuple[str, str]]:
    """Poll until each deployment has at least `want[name]` terminal runs (bounded)."""
    terminal = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        runs = _runs(api)
        done = {n: sum(1 for d, s in runs if d == n and s in terminal) for n in want}
        if all(done[n] >= k for n, k in want.items()):
            return runs
        time.sleep(2)
    pytest.fail(f"timed out after {WAIT_S:.0f} s waiting for {what}: {_runs(api)}")


def _drifted(rows: pd.DataFrame) -> pd.DataFrame:
    """Injected drift inside the validation ranges: one carrier and airport, hotter, later."""
    return rows.assign(carrier="UA", origin="EWR", temp=rows["temp"] + 25, sched_dep_time=2100)


def _emit(api: str, event: str, n: int) -> None:
    """Emit `n` copies of an event (a `ctloop.core.events` builder call) from another process, as a
    second monitor or a retried delivery would."""
    code = (
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        "from ctloop.core import events\n"
        f"e = events.{event}\n"
        f"for _ in range({n}):\n"
        "    assert emit_event(event=e.name, resource=e.resource, payload=e.payload)\n"
        "EventsWorker.drain_all()\n"
    )
    env = {**os.environ, "PREFECT_API_URL": api}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=Path.cwd())


def test_data_event_triggers_monitor_then_retrain_and_bursts_train_once(
    loop: tuple[Project, stack.StackInfo], months: pd.DataFrame
) -> None:
    project, info = loop
    params = str(project.root / "params.yaml")
    api = info.prefect_api_url

    # production delivers the (drifted) April: `ctloop replay` finds the running stack, lands the
    # file, the stack's watcher announces it, and replay waits until the triggered runs finished
    command = [CTLOOP, "replay", "--start", "2013-04", "--end", "2013-04", "--params", params]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert "have finished" in done.stdout
    runs = _runs(api)
    assert ("monitor", "COMPLETED") in runs and ("retrain", "COMPLETED") in runs
    assert not [s for d, s in runs if d in {"monitor", "retrain"} and s != "COMPLETED"], runs

    tracking.use_store(f"sqlite:///{project.path('mlflow_db')}")
    client = MlflowClient()
    versions = client.search_model_versions("name = 'ctloop-e2e'")
    assert len(versions) == 2
    v2 = client.get_model_version("ctloop-e2e", "2")
    assert v2.tags["ctloop.trigger"] in {events.DRIFT_DETECTED, events.PERFORMANCE_DEGRADED}
    assert "2013-04" in v2.tags["ctloop.trigger_reason"]
    assert v2.tags["promotion.reason"]  # the gate's decision is on the version
    assert "2013-04" in data.list_batches(project.path("batches"))

    # a duplicate data-arrived event: a monitor run, but no second ingestion and no monitoring
    _emit(api, "data_arrived('delivery-2013-04.parquet', 'delivery-2013-04.parquet')", 1)
    # and a burst of drift events for the batch: one retrain already covers it
    _emit(api, "batch_event(events.DRIFT_DETECTED, '2013-04', {'reason': 'burst'})", 3)
    retrains = sum(1 for d, _ in runs if d == "retrain")
    runs = _wait_for(api, {"monitor": 2, "retrain": retrains + 3}, "the duplicate and the burst")
    assert all(s == "COMPLETED" for d, s in runs if d in {"monitor", "retrain"}), runs
    assert len(client.search_model_versions("name = 'ctloop-e2e'")) == 2
    experiment = client.get_experiment_by_name("ctloop-monitoring").experiment_id
    monitored = client.search_runs([experiment], "tags.`ctloop.kind` = 'monitoring'")
    assert [r.data.tags["ctloop.batch"] for r in monitored] == ["2013-04"]
    # the cron of params.yaml reached the server: the scheduler created the `train` deployment's
    # upcoming runs
    assert ("train", "SCHEDULED") in runs
