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
from ctloop.config import Project
from flows.predict_batch import predict_batch
from flows.train_model import train_model
from tasks import registry, serving
from tasks.serving import SignatureMismatch
from tests.conftest import free_ports, new_project
from tests.integration.conftest import SMALL

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
