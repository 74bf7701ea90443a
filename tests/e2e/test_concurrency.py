"""Concurrency against a real stack (`ctloop up` on free ports: Prefect server, MLflow tracking
server, served deployments), after an initial training on Jan-Mar:

- two `ctloop monitor` processes ingest the same landed file at the same moment: one writes and
  monitors the batch, the other finds it already ingested; DVC records one new version;
- ten `ctloop.drift.detected` events (the `retrain` deployment) and a run of the scheduled `train`
  deployment, all at once, for a window with a new labelled batch: both deployments' runs are in
  flight together, yet their plan-train-gate sections never overlap, one new model version is
  registered and `champion` moves at most once, to a READY version.

The test holds the project lock itself while the runs start, so that they are truly simultaneous
(all of them waiting on the lock) whatever the machine's speed; then it lets them go.
The policy's own retrain triggers are switched off: only the test's events start retrains."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from ctloop.core.config import Project, load_project
from ctloop.io import audit, data, locks, tracking, versioning
from ctloop.ops import stack
from ctloop.ops.project_init import scaffold
from ctloop.steps import ingest, replay
from tests.conftest import ROOT, _merge, free_ports, sample_months

CTLOOP = str(Path(sys.executable).parent / "ctloop")
MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]
MODEL = "ctloop-concurrency"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
WAIT_S = 480.0  # each flow run is a new process: about 20 s apiece when the 2 cores are busy
BURST = 10


def _make_project(root: Path, changes: dict[str, Any]) -> Project:
    """Like tests/conftest.py `make_project`, for a module-scoped folder."""
    root.mkdir()
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    scaffold(root)  # dvc.yaml as `ctloop init` writes it, and the DVC repository
    return load_project(root / "params.yaml")


@pytest.fixture(scope="module")
def months(default_batches: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return sample_months(default_batches, MONTHS, 1000)


@pytest.fixture(scope="module")
def loop(
    months: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, stack.StackInfo]]:
    """A small project trained on Jan-Mar (v1 champion) under a running stack of its own."""
    tmp = tmp_path_factory.mktemp("concurrency")
    source = tmp / "initial.parquet"
    months[months["date"] < "2013-04-01"].to_parquet(source, index=False)
    prefect_port, mlflow_port, evidently_port = free_ports(3)
    changes: dict[str, Any] = {
        "data": {"source": str(source), "derive_target": None, "drop_columns": []},
        "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
        "model": {"fixed": {"xgboost": {"n_estimators": 40, "tree_method": "hist", "n_jobs": 1}}},
        "tune": {"n_trials": 2, "timeout_s": None, "show_progress_bar": False},
        # the point gate: identical retrains reach the promotion these tests exercise
        "promotion": {"min_score": 0.55, "margin": 0.0, "test": "none", "model_name": MODEL},
        "continuous": {
            "window": "expanding",
            "cooldown_minutes": 0,  # only the lock and the window check may stop a retrain
            "retrain_on_drift": False,  # the monitor emits no retrain trigger of its own
            "retrain_on_decay": False,
            "schedule": None,  # `train` runs when the test starts it, not on a clock
        },
        "stack": {
            "prefect_port": prefect_port,
            "mlflow_port": mlflow_port,
            "evidently_port": evidently_port,
        },
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp / "prefect-home"))
        mp.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")  # the serve loop picks runs up at once
        mp.setenv("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "1")
        project = _make_project(tmp / "proj", changes)
        params = project.root / "params.yaml"
        try:
            info = stack.up(project, serve=True, params_path=params)
            subprocess.run([CTLOOP, "run", "--params", str(params)], env=_env(info), check=True)
            tracking.use_store(info.mlflow_url)
            yield project, info
        finally:
            stack.down(project)


def _env(info: stack.StackInfo) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": info.prefect_api_url}
    env["MLFLOW_TRACKING_URI"] = info.mlflow_url
    return env


@contextlib.contextmanager
def _client(api: str) -> Iterator[Any]:
    """A synchronous Prefect client of the stack's API."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


def _poll(
    what: str, check: Callable[[], Any], timeout: float = WAIT_S, seen: Callable[[], Any] = list
) -> Any:
    """Call `check` every second until it returns something truthy (bounded); on time-out the
    failure shows `seen()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; seen: {seen()}")


def _flow_runs(api: str, since: datetime) -> list[tuple[Any, str, str]]:
    """(flow run, flow name, deployment name) of the runs created since `since`."""
    with _client(api) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        deployments = {d.id: d.name for d in client.read_deployments()}
        return [
            (r, flows.get(r.flow_id, "-"), deployments.get(r.deployment_id, "-"))
            for r in client.read_flow_runs(limit=200)
            if r.created is not None and r.created >= since
        ]


def _task_runs(api: str, flow_run_ids: list[Any]) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client(api) as client:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        return list(client.read_task_runs(flow_run_filter=runs, limit=200))


def _state(run: Any) -> str:
    return run.state_type.value if run.state_type else ""


def _seen(info: stack.StackInfo, since: datetime) -> Callable[[], list[tuple[str, str, str]]]:
    """(flow, deployment, state) of the runs since `since`, for a failure message."""
    return lambda: [(f, d, _state(r)) for r, f, d in _flow_runs(info.prefect_api_url, since)]


# --- two simultaneous ingestions of one landed file --------------------------------------------


def _dir_objects(project: Project) -> set[Path]:
    """Directory manifests (one per version of the batch folder) in the DVC remote."""
    return set(project.path("dvc_remote").rglob("*.dir"))


def test_two_simultaneous_ingestions_of_a_file_leave_one_version(
    loop: tuple[Project, stack.StackInfo], months: pd.DataFrame
) -> None:
    project, info = loop
    params = str(project.root / "params.yaml")
    cfg = project.params.data
    april = months[months["date"].dt.strftime("%Y-%m") == "2013-04"].reset_index(drop=True)
    # a subfolder of the landing folder: the stack's watcher announces top-level files only, so
    # no third (deployment) run joins in; the monitor accepts any file inside the landing folder
    landed = project.path("landing") / "concurrent" / "2013-04.parquet"
    landed.parent.mkdir(parents=True)
    replay.delivery_frame(april, cfg, labelled=True).to_parquet(landed, index=False)
    expected = data.split_batches(data.prepare(pd.read_parquet(landed), cfg), cfg)["2013-04"]
    versions_before = _dir_objects(project)

    since = datetime.now(UTC) - timedelta(seconds=1)
    argv = [CTLOOP, "monitor", str(landed.relative_to(project.path("landing")))]
    procs: list[subprocess.Popen[str]] = []

    def both_waiting() -> bool:
        runs = _flow_runs(info.prefect_api_url, since)
        monitors = [r.id for r, flow, _ in runs if flow == "monitor-batch"]
        ingesting = [
            t
            for t in _task_runs(info.prefect_api_url, monitors)
            if t.name.startswith("ingest-landed") and _state(t) == "RUNNING"
        ]
        return len(ingesting) == 2 or any(p.poll() is not None for p in procs)

    try:
        with locks.project_lock(project, locks.DATA, timeout_s=10, purpose="test barrier"):
            for _ in range(2):
                procs.append(
                    subprocess.Popen(
                        [*argv, "--params", params],
                        env=_env(info),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            waiting = "both monitors to wait on the data lock"
            _poll(waiting, both_waiting, 120, _seen(info, since))
        outputs = [p.communicate(timeout=WAIT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert [p.returncode for p in procs] == [0, 0], outputs
    statuses = sorted(
        line.split(": ", 1)[1].split(" ")[0]
        for out in outputs
        for line in out.splitlines()
        if line.startswith("2013-04: ")
    )
    assert statuses == ["duplicate", "monitored"], outputs
    ingested = f"batch 2013-04 ({len(expected)} rows)"
    assert sum(f"{ingested} written" in out for out in outputs) == 1, outputs
    assert sum(f"{ingested} unchanged" in out for out in outputs) == 1, outputs

    # the batch is whole, and nothing of the losing write is left
    folder = project.path("batches")
    stored = pd.read_parquet(data.batch_path(folder, "2013-04"))
    assert data.content_hash(stored) == data.content_hash(expected)
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]

    # DVC: one new version of the batch folder, recorded in dvc.lock, status clean
    new = _dir_objects(project) - versions_before
    assert len(new) == 1, new
    [manifest] = new
    assert "2013-04.parquet" in {e["relpath"] for e in json.loads(manifest.read_text())}
    recorded = versioning.data_version(project.root, project.params.paths.batches)
    assert recorded is not None and manifest.name == f"{recorded.removesuffix('.dir')[2:]}.dir"
    from dvc.repo import Repo

    with Repo(str(project.root)) as repo:
        assert repo.status(targets=[f"{project.root / 'dvc.yaml'}:ingest"]) == {}

    # monitored once: one monitoring run in MLflow for the batch
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(
        tracking.monitoring_experiment_name(project.params.tracking.experiment)
    )
    monitored = client.search_runs(
        [experiment.experiment_id],
        "tags.`ctloop.kind` = 'monitoring' and tags.`ctloop.batch` = '2013-04'",
    )
    assert len(monitored) == 1


# --- ten simultaneous retrain triggers plus the scheduled deployment -----------------------------


def _emit_drift(api: str, batch: str, n: int) -> None:
    """Emit `n` drift events for `batch` from another process, as monitors would."""
    code = (
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        "from ctloop.core import events\n"
        f"e = events.batch_event(events.DRIFT_DETECTED, {batch!r}, {{'reason': 'burst'}})\n"
        f"for _ in range({n}):\n"
        "    assert emit_event(event=e.name, resource=e.resource, payload=e.payload)\n"
        "EventsWorker.drain_all()\n"
    )
    env = {**os.environ, "PREFECT_API_URL": api}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)


def _new_labelled_batch(project: Project, months: pd.DataFrame, period: str) -> None:
    """Deliver a labelled month straight into the batch folder, versioned with DVC."""
    cfg = project.params.data
    rows = months[months["date"].dt.strftime("%Y-%m") == period]
    batch = data.split_batches(data.prepare(rows, cfg), cfg)[period]
    assert data.write_batch(project.path("batches"), period, batch, label_column=cfg.target).written
    ingest.version_data(project)


def test_simultaneous_retrain_triggers_train_once_and_promote_at_most_once(
    loop: tuple[Project, stack.StackInfo], months: pd.DataFrame
) -> None:
    from mlflow import MlflowClient

    project, info = loop
    api = info.prefect_api_url
    _new_labelled_batch(project, months, "2013-05")
    client = MlflowClient()
    versions_before = len(client.search_model_versions(f"name = '{MODEL}'"))
    events_before = len(audit.history(MODEL))

    since = datetime.now(UTC) - timedelta(seconds=1)
    with locks.project_lock(project, locks.RETRAIN, timeout_s=10, purpose="test barrier"):
        _emit_drift(api, "2013-05", BURST)
        with _client(api) as prefect:
            train = prefect.read_deployment_by_name("retrain-model/train")
            prefect.create_flow_run_from_deployment(train.id)

        def both_in_flight() -> bool:
            running = {dep for r, _, dep in _flow_runs(api, since) if _state(r) == "RUNNING"}
            return {"train", "retrain"} <= running

        both = "a `train` and a `retrain` run in flight together"
        _poll(both, both_in_flight, 120, _seen(info, since))

    def all_done() -> list[tuple[Any, str, str]] | None:
        runs = [x for x in _flow_runs(api, since) if x[2] in {"train", "retrain"}]
        deps = [dep for _, _, dep in runs]
        done = all(_state(r) in TERMINAL for r, _, _ in runs)
        complete = deps.count("retrain") == BURST and deps.count("train") == 1
        return runs if complete and done else None

    runs = _poll(
        f"{BURST} retrain runs and 1 train run to finish", all_done, seen=_seen(info, since)
    )
    assert all(_state(r) == "COMPLETED" for r, _, _ in runs), [(d, _state(r)) for r, _, d in runs]

    # from the Prefect API: the plan-train-gate sections of all 11 runs never overlapped
    retrain_ids = [r.id for r, _, _ in runs]
    tasks = _task_runs(api, retrain_ids)
    subflows = {
        r.parent_task_run_id: r for r, flow, _ in _flow_runs(api, since) if flow == "train-model"
    }
    assert len(subflows) == 1, "exactly one run trained"
    sections = []
    for run_id in retrain_ids:
        own = [t for t in tasks if t.flow_run_id == run_id]
        [plan] = [t for t in own if t.name.startswith("plan-retrain")]
        trained = [subflows[t.id] for t in own if t.id in subflows]
        end = trained[0].end_time if trained else plan.end_time
        sections.append((plan.start_time, end))
    sections.sort()
    for (_, end), (start, _) in itertools.pairwise(sections):
        assert end <= start, sections

    # the decisions: one retrain, ten skips because the window was trained meanwhile
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with _client(api) as prefect:
        decisions = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["retrain-decision"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=retrain_ids),
            )
        )
    texts = [str(a.data) for a in decisions]
    assert len(texts) == BURST + 1
    assert sum(t.startswith("### Retrained on 2013-01..2013-05") for t in texts) == 1, texts
    skipped = [t for t in texts if t.startswith("### Retrain skipped")]
    assert len(skipped) == BURST and all("unchanged since the last training" in t for t in skipped)

    # MLflow: one new version, at most one promotion, and the champion is a READY version
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == versions_before + 1
    new = max(versions, key=lambda v: int(v.version))
    assert new.status == "READY"
    assert new.tags["ctloop.trigger"] in {"schedule", "ctloop.drift.detected"}
    promotions = audit.history(MODEL)[events_before:]
    assert len(promotions) <= 1 and all(e.action == "promote" for e in promotions)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.status == "READY"
    assert champion.version == (new.version if promotions else "1")
