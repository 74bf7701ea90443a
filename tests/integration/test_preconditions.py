"""The training plan's preconditions end to end on real rows (the field cases
`empty-feature-column` and `too-few-positives-for-folds`): real Prefect test server, MLflow on
SQLite, DVC, GX; the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.models import get_model_info

from ctloop.core.config import Project, load_project
from ctloop.io import tracking
from ctloop.ml.preconditions import PreconditionError
from ctloop.ops import stages
from ctloop.steps import drift_report, fit, ingest, validate, windows
from flows.train_model import train_model
from tests.integration.conftest import SMALL

EMPTY = "runway_visual_range"  # the case's column: no value in any row


def _project(make_project: Callable[..., Project], source: Path, **split: Any) -> Project:
    changes: dict[str, Any] = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(source)},
        "split": {**SMALL["split"], **split},
    }
    return make_project(changes)


def _store(p: Project) -> tuple[MlflowClient, list[str]]:
    """The project's MLflow client and the ids of its experiment's runs (none when it has no
    experiment yet)."""
    tracking.use_store(p.tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(p.params.tracking.experiment)
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    return client, [r.info.run_id for r in runs]


def _versions(client: MlflowClient, p: Project) -> list[Any]:
    return client.search_model_versions(f"name = '{p.params.promotion.model_name}'")


def test_an_empty_feature_is_dropped_with_a_recorded_warning_and_drift_does_not_fail(
    make_project: Callable[..., Project], slice_file: Path, tmp_path: Path
) -> None:
    source = tmp_path / "flights-empty-column.parquet"
    pd.read_parquet(slice_file).assign(**{EMPTY: np.nan}).to_parquet(source, index=False)
    p = _project(make_project, source)

    summary = train_model(params_path=str(p.root / "params.yaml"))

    # trained, registered and reported as usual, without the empty column
    assert summary.model_version == "1"
    client, _ = _store(p)
    assert [str(v.version) for v in _versions(client, p)] == ["1"]
    inputs = get_model_info(f"models:/{p.params.promotion.model_name}/1").signature.inputs
    assert EMPTY not in inputs.input_names() and "temp" in inputs.input_names()
    # the warning: summary, MLflow run (tagged when the run started: checked before it),
    # model card
    [warning] = [w for w in summary.warnings if EMPTY in w]
    assert "rule 'empty_feature'" in warning and "2013-01..2013-02" in warning
    assert f"warning          : feature(s) '{EMPTY}'" in summary.render()
    tags = tracking.run_tags(summary.mlflow_run_id)
    assert tags[fit.DROPPED_FEATURES_TAG] == EMPTY
    assert warning in tags[fit.PRECONDITIONS_TAG]
    card = (p.path("reports") / "model_card.md").read_text()
    assert f"Training plan warning: {warning}" in card
    # the drift step ran to the end and says the column was not compared
    # the run links its model version's page of the report; the summary sits beside the report
    report = summary.drift_report
    drift = json.loads(report.with_name(f"{drift_report.report_stem(report)}.json").read_text())
    assert drift["empty_columns"] == {EMPTY: "both"}
    assert EMPTY not in {c["column"] for c in drift["columns"]}
    assert client.get_run(summary.mlflow_run_id).info.status == "FINISHED"


def test_fewer_positives_than_folds_is_refused_before_any_run_or_version(
    make_project: Callable[..., Project], slice_file: Path
) -> None:
    """As the field case: split.max_train_rows leaves fewer positives than folds. The flow, the
    DVC stage and the CLI refuse with the folds and the class counts; MLflow holds no run."""
    p = _project(make_project, slice_file, max_train_rows=25)
    ingest.run_ingest(p)
    window = windows.current_window(p)
    rows = fit.training_data(p, validate.load_batches(p, window.train))
    positives, negatives = int(rows.y.sum()), int((rows.y == 0).sum())
    folds = max(2, positives + 1)  # one fold more than there are positives
    assert negatives >= folds and rows.sampled_to == 25
    raw = yaml.safe_load((p.root / "params.yaml").read_text())
    raw["split"]["folds"] = folds
    (p.root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    p = load_project(p.root / "params.yaml")
    expected = (
        f"split.folds: {folds} folds need at least {folds} rows of each class; the training "
        f"window 2013-01..2013-02 (down-sampled to split.max_train_rows=25) has "
        f"{positives} positive{'s' if positives != 1 else ''} (is_late=1) and {negatives} "
        "negatives (is_late=0)"
    )

    with pytest.raises(PreconditionError) as failure:
        train_model(params_path=str(p.root / "params.yaml"))
    assert expected in str(failure.value)
    client, runs = _store(p)
    assert runs == [] and _versions(client, p) == []

    with pytest.raises(PreconditionError, match=r"split\.folds"):  # the DVC stage: same check
        stages.train(p)
    assert _store(p)[1] == [] and not (p.path("models") / "model.joblib").exists()

    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    ctloop = Path(sys.executable).parent / "ctloop"
    cmd = [str(ctloop), "run", "--params", str(p.root / "params.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=p.root)
    assert done.returncode == 1, done.stderr[-3000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("ctloop: error:")]
    assert "the training plan cannot be cross-validated and scored" in line
    assert expected in done.stderr
    # Prefect logs the failed flow run first (its traceback goes to the UI, not the terminal);
    # ctloop's error ends stderr
    assert done.stderr.rstrip().splitlines()[-2] == line
    assert "Traceback" not in done.stderr
    client, runs = _store(p)
    assert runs == [] and _versions(client, p) == []


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())
