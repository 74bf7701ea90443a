"""Serving on a real trained champion (one small training for the module): the predict-batch
flow and `ctloop predict` score like the champion itself, with its version and the fold
models' spread; a mismatching file fails naming the column; `ctloop serve-model` answers a real
`dataframe_split` request with the champion's probabilities."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ctloop.cli import app
from ctloop.core.config import Project
from ctloop.io import registry
from ctloop.ml.suite_rules import ContractViolation
from ctloop.steps import serving
from ctloop.steps.serving import SignatureMismatch
from flows.predict_batch import predict_batch
from flows.train_model import train_model
from tests.conftest import free_ports, new_project
from tests.integration.conftest import SMALL, latest_artifact

CTLOOP = str(Path(sys.executable).parent / "ctloop")
SERVER_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def trained(slice_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The small project (train Jan-Feb, holdout Mar) trained once, with one Optuna trial on two
    folds (serving needs a champion, not a good one): v1 is the champion."""
    changes: dict[str, Any] = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(slice_file)},
        "split": {**SMALL["split"], "folds": 2},
        "tune": {**SMALL["tune"], "n_trials": 1},
    }
    project = new_project(tmp_path_factory.mktemp("serving") / "proj", changes)
    train_model(params_path=str(project.root / "params.yaml"))
    return project


@pytest.fixture(scope="module")
def april(trained: Project, slice_file: Path) -> pd.DataFrame:
    """April rows (after the training window), with the label and date the model ignores."""
    frame = pd.read_parquet(slice_file)
    return frame[frame["date"] >= "2013-04-01"].head(400).reset_index(drop=True)


def _champion(project: Project) -> tuple[str, Any]:
    serving.connect(project)
    name = project.params.promotion.model_name
    version = serving.champion_version(project)
    return version, registry.load_version(name, version)


def _features(model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(model.feature_names_in_)]


def _record_fold_models(project: Project, model: Any, frame: pd.DataFrame) -> list[Any]:
    """Fold models of the champion's kind (refitted on halves of the training months), logged on
    its training run as the training side does."""
    from mlflow import MlflowClient
    from sklearn.base import clone

    target = project.params.data.target
    months = frame[(frame["date"] < "2013-03-01") & frame[target].notna()]
    X, y = _features(model, months), months[target].astype(int)
    folds = [clone(model).fit(X.iloc[i::2], y.iloc[i::2]) for i in range(2)]
    name = project.params.promotion.model_name
    run_id = MlflowClient().get_model_version(name, serving.champion_version(project)).run_id
    serving.log_uncertainty_artifacts(run_id, folds, half_width=None)
    return folds


def test_flow_and_cli_score_like_the_champion(
    trained: Project, april: pd.DataFrame, slice_file: Path, tmp_path: Path
) -> None:
    version, model = _champion(trained)
    folds = _record_fold_models(trained, model, pd.read_parquet(slice_file))
    expected = model.predict_proba(_features(model, april))[:, 1]
    spread = np.std([f.predict_proba(_features(model, april))[:, 1] for f in folds], axis=0)
    source = tmp_path / "april.parquet"
    april.to_parquet(source, index=False)

    report = predict_batch(input_path=str(source), params_path=str(trained.root / "params.yaml"))
    out = pd.read_parquet(report.output)
    assert Path(report.output) == trained.path("predictions") / f"april.champion-v{version}.parquet"
    assert report.rows == len(april) and report.version == version
    assert list(out.columns) == [
        "row",
        *(c for c in april.columns if c in ("date", "is_late")),  # not used by the model: kept
        "prediction",
        "score",
        "model_version",
        "uncertainty",
    ]
    np.testing.assert_allclose(out["score"], expected, rtol=1e-6)
    assert (out["prediction"] == (expected >= 0.5).astype(int)).all()
    assert set(out["model_version"]) == {version}
    np.testing.assert_allclose(out["uncertainty"], spread, rtol=1e-5)
    assert out["date"].tolist() == april["date"].tolist()  # identifying columns kept

    csv_in, csv_out = tmp_path / "april.csv", tmp_path / "scored" / "april.csv"
    april.to_csv(csv_in, index=False)
    params = str(trained.root / "params.yaml")
    result = CliRunner().invoke(app, ["predict", str(csv_in), "-o", str(csv_out), "-p", params])
    assert result.exit_code == 0, result.output
    assert f"with {trained.params.promotion.model_name} v{version}" in result.output
    np.testing.assert_allclose(pd.read_csv(csv_out)["score"], expected, rtol=1e-6)


def test_a_mismatching_file_fails_naming_the_columns(
    trained: Project, april: pd.DataFrame, tmp_path: Path
) -> None:
    bad = april.drop(columns=["distance"]).assign(temp="hot")
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    params = str(trained.root / "params.yaml")
    result = CliRunner().invoke(app, ["predict", str(path), "-p", params])
    assert result.exit_code == 1
    assert f"{path}: does not match the signature of model" in result.output
    assert "column 'distance': rule 'missing_column'" in result.output
    assert "column 'temp': rule 'type': expected double" in result.output
    with pytest.raises(SignatureMismatch, match="column 'distance'"):
        predict_batch(input_path=str(path), params_path=params)
    assert not list(trained.path("predictions").glob("bad.*"))


def _case_rows(april: pd.DataFrame) -> pd.DataFrame:
    """The field case `infinite-values-at-predict`: five real rows, +inf in `temp` of one and
    -inf in `pressure` of another (its prediction flipped when they were scored as they were)."""
    rows = april.head(5).copy()
    rows.loc[0, "temp"] = np.inf
    rows.loc[1, "pressure"] = -np.inf
    return rows


def test_infinite_values_are_refused_naming_file_column_and_rule(
    trained: Project, april: pd.DataFrame, tmp_path: Path
) -> None:
    params = str(trained.root / "params.yaml")
    rows = _case_rows(april)
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    rows.to_csv(tmp_path / "rows.csv", index=False)  # inf and -inf as text
    for path in (tmp_path / "rows.parquet", tmp_path / "rows.csv"):
        result = CliRunner().invoke(app, ["predict", str(path), "-p", params])
        assert result.exit_code == 1, result.output
        assert f"ctloop: error: {path}: breaks the data contract of model" in result.output
        assert "nothing was scored" in result.output
        assert (
            "column 'temp': rule 'ranges' (critical): 1 infinite values (none allowed), e.g. inf"
            in result.output
        )
        assert (
            "column 'pressure': rule 'ranges' (critical): 1 infinite values (none allowed), "
            "e.g. -inf" in result.output
        )
    with pytest.raises(ContractViolation, match="column 'temp': rule 'ranges'") as failure:
        predict_batch(input_path=str(tmp_path / "rows.parquet"), params_path=params)
    assert {(p.split("'")[1], p.split("'")[3]) for p in failure.value.problems} == {
        ("temp", "ranges"),
        ("pressure", "ranges"),
    }
    assert not list(trained.path("predictions").glob("rows.*"))  # nothing written


def test_unseen_categories_are_counted_scored_and_flagged(
    trained: Project, april: pd.DataFrame, tmp_path: Path
) -> None:
    version, model = _champion(trained)
    rows = april.copy()
    renamed = [3, 50, 51, 200, 399]  # 5 of 400: above the 1% tolerance, a warning
    rows.loc[renamed, "carrier"] = ["ZZ", "ZZ", "QQ", "ZZ", "ZZ"]
    source, target = tmp_path / "new-carriers.parquet", tmp_path / "scored.parquet"
    rows.to_parquet(source, index=False)
    params = str(trained.root / "params.yaml")
    result = CliRunner().invoke(app, ["predict", str(source), "-o", str(target), "-p", params])
    assert result.exit_code == 0, result.output
    assert "data contract: 5 row(s) flagged in ctloop_flags" in result.output
    [line] = [x for x in result.output.splitlines() if "column 'carrier'" in x]
    assert "rule 'categories' (warning): 5 values outside the known categories" in line
    assert "e.g. 'ZZ', 'QQ'" in line
    out = pd.read_parquet(target)
    assert list(out.columns)[-1] == "ctloop_flags"
    assert out.loc[renamed, "ctloop_flags"].tolist() == ["carrier:categories"] * 5
    assert (out.drop(index=renamed)["ctloop_flags"] == "").all()
    expected = model.predict_proba(_features(model, rows))[:, 1]  # scored as the model scores
    np.testing.assert_allclose(out["score"], expected, rtol=1e-6)

    report = predict_batch(input_path=str(source), params_path=params)
    assert report.flagged == 5 and report.version == version
    assert any(
        "column 'carrier': rule 'categories' (warning): 5 values" in x for x in report.contract
    )
    artifact = _artifact("predictions")
    assert artifact is not None
    assert "Data contract: 5 row(s) flagged in `ctloop_flags`" in str(artifact.data)
    assert "column 'carrier': rule 'categories' (warning): 5 values" in str(artifact.data)


def test_out_of_range_values_and_replaced_categories_are_refused(
    trained: Project, april: pd.DataFrame, tmp_path: Path
) -> None:
    params = str(trained.root / "params.yaml")
    far = april.copy()
    far.loc[7, "distance"] = far.loc[7, "distance"] * 1000  # 1 of 400: beyond the 0.1% allowed
    renamed = april.assign(carrier=april["carrier"] + "-2")  # every code renamed
    for name, frame, line in (
        ("far", far, "column 'distance': rule 'ranges' (critical): 1 values (0.25%) outside ["),
        ("renamed", renamed, "column 'carrier': rule 'categories_replaced' (critical): 400 of 400"),
    ):
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        result = CliRunner().invoke(app, ["predict", str(path), "-p", params])
        assert result.exit_code == 1, result.output
        assert f"ctloop: error: {path}: breaks the data contract" in result.output
        assert line in result.output, result.output
        assert not list(trained.path("predictions").glob(f"{name}.*"))


_artifact = latest_artifact


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_until_ready(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The command's output once it says the server is ready (it checked /ping itself)."""
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text()
        if "stop with Ctrl-C" in text:
            return text
        assert proc.poll() is None, f"ctloop serve-model exited with {proc.returncode}:\n{text}"
        time.sleep(0.5)
    raise AssertionError(f"not ready in {SERVER_TIMEOUT_S:g} s:\n{log.read_text()}")


def test_serve_model_answers_a_real_request(
    trained: Project, april: pd.DataFrame, tmp_path: Path
) -> None:
    version, model = _champion(trained)
    rows = _features(model, april.head(3))
    [port] = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    params = str(trained.root / "params.yaml")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [CTLOOP, "serve-model", "--params", params, "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        ready = _wait_until_ready(log, proc)
        assert f"models:/{trained.params.promotion.model_name}@champion (v{version})" in ready
        assert f"{url}/invocations" in ready
        assert "answers one [p(class 0), p(class 1)] pair per row" in ready
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        answer = _post(f"{url}/invocations", body)
        np.testing.assert_allclose(
            np.asarray(answer["predictions"]), model.predict_proba(rows), rtol=1e-5
        )
        [curl] = [line.strip() for line in ready.splitlines() if line.strip().startswith("curl")]
        printed = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, check=True)
        assert np.asarray(json.loads(printed.stdout)["predictions"]).shape == (2, 2)
    finally:
        proc.send_signal(signal.SIGTERM)  # ctloop stops the server's process group and waits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "scoring server stopped" in log.read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/ping", timeout=2)  # the server is gone
