"""`ctloop batch replace FILE --reason TEXT` on a real project trained once (real DVC repo and
remote, real MLflow store, the session's Prefect test server): the corrected rows replace the
batch, the old content stays retrievable from DVC, the audit trail holds the reason, the next
training uses the corrected rows under a new data version; a bad or misplaced file changes
nothing; through the CLI too."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ctloop.core.config import Project, load_project
from ctloop.io import data, tracking, versioning
from ctloop.ml.validation import ValidationFailed
from ctloop.steps import correction, monitoring
from ctloop.steps.correction import CorrectionError
from flows.train_model import train_model
from tests.conftest import new_project
from tests.integration.conftest import SMALL

MODEL = "ctloop-replace"
TARGET = "is_late"
WINDOW = ("2013-01", "2013-02", "2013-03")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, slice_file: Path) -> Project:
    """The small real project (train Jan-Feb, holdout Mar, Apr monitored), trained once."""
    changes = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(slice_file)},
        "promotion": {**SMALL["promotion"], "model_name": MODEL},
    }
    p = new_project(tmp_path_factory.mktemp("replace") / "proj", changes)
    summary = train_model(params_path=str(p.root / "params.yaml"))
    assert summary.model_version == "1" and summary.promoted
    return load_project(p.root / "params.yaml")


@dataclass(frozen=True)
class State:
    files: dict[str, str]  # every file of the batch folder (ledger included) -> sha256
    dvc_lock: str
    model_tags: dict[str, str]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(p: Project) -> State:
    from mlflow import MlflowClient

    tracking.use_store(p.tracking_uri)
    folder = p.path("batches")
    return State(
        files={f.name: _sha(f) for f in sorted(folder.iterdir()) if f.is_file()},
        dvc_lock=_sha(p.root / "dvc.lock"),
        model_tags=dict(MlflowClient().get_registered_model(MODEL).tags),
    )


def _batch(p: Project, name: str) -> pd.DataFrame:
    return pd.read_parquet(data.batch_path(p.path("batches"), name))


def _cached(root: Path, md5: str) -> Path:
    """DVC 3's content-addressed file for a hash (cache or remote root)."""
    return root / "files" / "md5" / md5[:2] / md5[2:]


def _training_rows(run_id: str) -> int:
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    [found] = [
        d.dataset
        for d in run.inputs.dataset_inputs
        if any(t.key == "mlflow.data.context" and t.value == "training" for t in d.tags)
    ]
    return int(json.loads(found.profile)["num_rows"])


# --- refusals: nothing changes ---------------------------------------------------------------


def test_a_file_breaking_a_critical_rule_replaces_nothing(project: Project, tmp_path: Path) -> None:
    before = snapshot(project)
    bad = _batch(project, "2013-02").assign(temp=500.0)  # far outside the suite's range
    file = tmp_path / "feb-bad.parquet"
    bad.to_parquet(file, index=False)
    with pytest.raises(ValidationFailed) as failure:
        correction.replace_batch(project, file, "corrected temperatures")
    message = str(failure.value)
    assert "feb-bad.parquet" in message and "column 'temp'" in message
    assert "rule 'ranges'" in message
    assert snapshot(project) == before  # byte-identical batches, dvc.lock, no audit event
    assert file.is_file()  # the user's file stays where it is


@pytest.mark.parametrize(
    ("shift", "rule"), [(pd.DateOffset(years=1), "batch_exists"), (None, "one_period")]
)
def test_a_file_without_exactly_one_existing_period_replaces_nothing(
    project: Project, tmp_path: Path, shift: pd.DateOffset | None, rule: str
) -> None:
    before = snapshot(project)
    feb = _batch(project, "2013-02")
    if shift is not None:  # 2014-02: no such batch
        frame = feb.assign(date=feb["date"] + shift)
    else:  # February and March in one file
        frame = pd.concat([feb, _batch(project, "2013-03")], ignore_index=True)
    file = tmp_path / "wrong-period.csv"
    frame.to_csv(file, index=False)
    with pytest.raises(CorrectionError) as failure:
        correction.replace_batch(project, file, "fix")
    assert str(file) in str(failure.value) and f"rule '{rule}'" in str(failure.value)
    assert snapshot(project) == before


# --- the correction ---------------------------------------------------------------------------


def test_replace_then_retrain_on_the_corrected_rows(project: Project, tmp_path: Path) -> None:
    p, folder = project, project.path("batches")
    feb_path = data.batch_path(folder, "2013-02")
    old_bytes, old_version = feb_path.read_bytes(), versioning.data_version(p.root, "data/batches")
    champion = monitoring.current_champion(p)
    assert champion is not None
    monitor_run = monitoring.start_monitor_run(p, "2013-02", champion)  # a real monitoring run
    tracking.finish_run(monitor_run)

    corrected = _batch(p, "2013-02").iloc[300:].reset_index(drop=True)  # 300 bad rows removed
    file = tmp_path / "2013-02-corrected.parquet"
    corrected.to_parquet(file, index=False)
    reason = "February: 300 rows of a replayed feed were duplicates"
    out = correction.replace_batch(p, file, reason)

    entry = out.replacement
    assert entry is not None and not out.finished
    assert (entry.batch, entry.reason, entry.old_rows, entry.new_rows) == (
        "2013-02",
        reason,
        1500,
        1200,
    )
    # new content on disk
    assert data.content_hash(pd.read_parquet(feb_path)) == data.content_hash(corrected)
    assert entry.new_md5 == hashlib.md5(feb_path.read_bytes()).hexdigest()
    # the old content stays in DVC's cache and remote, listed by the old data version
    assert entry.old_md5 == hashlib.md5(old_bytes).hexdigest()
    assert entry.old_data_version == old_version != out.new_data_version
    assert _cached(p.root / ".dvc" / "cache", entry.old_md5).read_bytes() == old_bytes
    assert _cached(p.path("dvc_remote"), entry.old_md5).read_bytes() == old_bytes
    listing = json.loads(_cached(p.root / ".dvc" / "cache", old_version or "").read_text())
    assert {"md5": entry.old_md5, "relpath": "2013-02.parquet"} in listing
    assert versioning.data_version(p.root, "data/batches") == out.new_data_version
    # the records: ledger, audit event on the model, superseded monitoring, the champion's use
    assert correction.read_ledger(folder)[-1] == entry
    [event] = [e for e in correction.batch_events(MODEL) if e["id"] == entry.id]
    assert (event["action"], event["batch"]) == ("replace-batch", "2013-02")
    assert event["reason"] == reason
    assert event["old_data_version"] == old_version
    assert event["new_data_version"] == out.new_data_version
    assert monitor_run in out.superseded_runs
    from mlflow import MlflowClient

    tag = MlflowClient().get_run(monitor_run).data.tags[correction.SUPERSEDED_TAG]
    assert reason in tag
    assert out.champion_trained_on == "v1 (training window)"
    assert monitoring.corrected_since_training(p, WINDOW) == ["2013-02"]

    # the same file again: nothing replaced, the records are checked, none added
    events = len(correction.batch_events(MODEL))
    again = correction.replace_batch(p, file, reason)
    assert again.finished and again.replacement == entry
    assert again.new_data_version == out.new_data_version
    assert len(correction.read_ledger(folder)) == 1
    assert len(correction.batch_events(MODEL)) == events

    # the next run re-ingests the source (old February in it), keeps the correction and trains
    summary = train_model(params_path=str(p.root / "params.yaml"))
    assert not summary.unchanged and summary.model_version == "2"
    assert summary.data_version == out.new_data_version
    jan = _batch(p, "2013-01")
    expected = int(jan[TARGET].notna().sum() + corrected[TARGET].notna().sum())
    assert _training_rows(summary.mlflow_run_id) == expected
    assert data.content_hash(pd.read_parquet(feb_path)) == data.content_hash(corrected)
    assert monitoring.corrected_since_training(p, WINDOW) == []


# --- through the CLI ----------------------------------------------------------------------------


def _ctloop(p: Project, *args: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    cmd = [str(Path(sys.executable).parent / "ctloop"), *args]
    cmd += ["--params", str(p.root / "params.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=p.root)


def test_cli_replace_refuse_and_history(
    project: Project, tmp_path: Path, make_project: Callable[..., Project]
) -> None:
    p = project
    jan = _batch(p, "2013-01")
    before = snapshot(p)

    missing = tmp_path / "jan-2014.csv"
    jan.assign(date=jan["date"] + pd.DateOffset(years=1)).to_csv(missing, index=False)
    refused = _ctloop(p, "batch", "replace", str(missing), "--reason", "fix")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("ctloop: error: ")
    assert "jan-2014.csv" in refused.stderr and "rule 'batch_exists'" in refused.stderr
    assert snapshot(p) == before

    no_reason = _ctloop(p, "batch", "replace", str(missing))
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr  # usage error

    # a corrected January delivered as a new file: refused, naming the replace command
    fixed = tmp_path / "2013-01-fixed.parquet"
    jan.iloc[100:].to_parquet(fixed, index=False)
    ingest = _ctloop(p, "ingest", str(fixed), "--here")
    assert ingest.returncode == 1, ingest.stderr
    assert "rule 'immutable_batch'" in ingest.stderr
    assert "use `ctloop batch replace FILE --reason TEXT`" in ingest.stderr
    assert snapshot(p).files == before.files

    done = _ctloop(p, "batch", "replace", str(fixed), "--reason", "January: 100 test rows")
    assert done.returncode == 0, done.stderr
    assert "replaced batch 2013-01: 1500 -> 1400 rows" in done.stdout
    assert "audit event  : model 'ctloop-replace' tag ctloop.batch_event." in done.stdout
    assert len(pd.read_parquet(data.batch_path(p.path("batches"), "2013-01"))) == 1400

    history = _ctloop(p, "history")
    assert history.returncode == 0, history.stderr
    assert "replace-batch 2013-01: 1500 -> 1400 rows" in history.stdout
    assert "January: 100 test rows" in history.stdout

    # no model registered yet: the ledger is the only record, the command still succeeds
    fresh = make_project(
        {**SMALL, "data": {**SMALL["data"], "source": str(p.root / "unused")}}, name="fresh"
    )
    data.write_batch(fresh.path("batches"), "2013-01", jan)  # the content before the correction
    shutil.copytree(p.path("expectations"), fresh.path("expectations"))
    early = _ctloop(fresh, "batch", "replace", str(fixed), "--reason", "before any model")
    assert early.returncode == 0, early.stderr
    assert "audit event  : none (no model 'ctloop-test' registered yet" in early.stdout
    assert correction.read_ledger(fresh.path("batches"))[-1].reason == "before any model"
