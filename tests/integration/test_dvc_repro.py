"""`dvc repro` runs the same stages end to end in a temporary project; a second run is a no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ctloop.core.config import Project
from ctloop.io import recovery, registry, tracking, versioning
from ctloop.steps import fit

# end to end: drives the installed `ctloop` (or `dvc repro`) as separate processes, as a user
# does; `make test-e2e` runs it, `make test` does not
pytestmark = pytest.mark.e2e


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_dvc_repro_runs_every_stage_then_is_a_no_op(small_project: Project) -> None:
    p = small_project
    first = _dvc(p.root, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("ingest", "validate", "train", "evaluate", "drift"):
        assert f"Running stage '{stage}'" in first.stdout

    metrics = json.loads((p.path("reports") / "metrics.json").read_text())
    assert 0.5 < metrics["holdout"]["roc_auc"] <= 1.0
    assert (p.path("reports") / "plots" / "roc.csv").is_file()
    for name in ("permutation_importance", "learning_curve", "slices", "importance_over_versions"):
        assert (p.path("reports") / "plots" / f"{name}.csv").is_file(), name  # explain + gate
    assert (p.path("models") / "tuning.joblib").is_file()  # fold models for the evaluate stage
    record = json.loads((p.path("reports") / "drift.json").read_text())  # the stage's fixed out
    report = p.root / record["report"]["html"]
    assert report.parent == p.path("reports") / "drift" / "2013-04" and report.is_file()
    assert report.name.startswith("ref-2013-01..2013-02-")
    assert versioning.data_version(p.root, p.params.paths.batches)
    tracking.use_store(p.tracking_uri)
    assert (
        tracking.run_tags(record["run_id"])[tracking.DRIFT_REPORT_TAG] == record["report"]["html"]
    )
    # every stage ended the MLflow runs it opened or reopened: none is left RUNNING, and the
    # reconciliation `ctloop run` starts with finds nothing to mark or tag
    statuses = _run_statuses(p)
    assert statuses and set(statuses.values()) == {"FINISHED"}, statuses
    assert fit.reconcile_runs(p) == []
    assert _run_statuses(p) == statuses
    champion = registry.get_alias("ctloop-test", registry.CHAMPION)
    assert champion is not None
    card = (p.path("reports") / "model_card.md").read_text()  # the same card as the flow's
    assert card.startswith("# Model card: ctloop-test v1")
    assert champion.description.startswith(card[:200]) and len(champion.description) <= 5000
    # written by the drift stage after the report, with its verdict, as the flow writes it
    assert "2013-04 vs 2013-01..2013-02: " in card
    assert f"(in the project: `{record['report']['html']}`)" in card and "Report: <http://" in card

    report_bytes = report.read_bytes()
    second = _dvc(p.root, "repro")
    assert second.returncode == 0, second.stderr
    assert report.read_bytes() == report_bytes
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout

    shown = _dvc(p.root, "metrics", "show", "--json")
    assert "holdout" in shown.stdout
    assert not registry.get_alias("ctloop-test", registry.CHAMPION).tags.get(recovery.VERSION_TAG)


def _run_statuses(p: Project) -> dict[str, str]:
    """run name -> status of every MLflow run of the project's experiment."""
    from mlflow import MlflowClient

    exp = tracking.use_experiment(p)
    runs = MlflowClient().search_runs([exp], "", max_results=500)
    return {r.info.run_name: r.info.status for r in runs}


def test_a_failing_dvc_stage_leaves_its_run_failed(small_project: Project) -> None:
    """`evaluate` on a training run finished by `train`: it reopens the run, and when it raises
    (here a model file that cannot be read) the run ends FAILED, naming the stage and error."""
    p = small_project
    trained = _dvc(p.root, "repro", "train")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run_id = json.loads((p.path("models") / "train.json").read_text())["run_id"]
    (p.path("models") / "model.joblib").write_bytes(b"not a model")

    failed = _dvc(p.root, "repro", "--single-item", "evaluate")
    assert failed.returncode != 0
    tracking.use_store(p.tracking_uri)
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[recovery.FAILURE_TAG].startswith("dvc stage evaluate failed: ")
    assert run.data.tags[recovery.PID_TAG] != str(os.getpid())  # recorded by the stage process
    assert "RUNNING" not in _run_statuses(p).values()
    assert fit.reconcile_runs(p) == []


def test_failed_validation_stops_dvc_repro_with_a_named_reason(small_project: Project) -> None:
    p = small_project
    source = pd.read_parquet(p.params.data.source)
    april = source["date"].dt.month == 4
    source.loc[april, "distance"] = source.loc[april, "distance"] * 1000  # wrong unit
    corrupt = p.root / "flights-corrupt.parquet"
    source.to_parquet(corrupt, index=False)
    params = yaml.safe_load((p.root / "params.yaml").read_text())
    params["data"]["source"] = str(corrupt)
    (p.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = _dvc(p.root, "repro")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "2013-04" in out and "distance" in out and "ranges" in out
    assert "Running stage 'train'" not in out
    assert (p.path("quarantine") / "2013-04" / "reason.txt").is_file()
