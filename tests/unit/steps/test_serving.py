"""Batch scoring, pure parts: signature checks and casts, input/output files, the output
columns, uncertainty figures, the uncertainty artifacts round trip in a real MLflow store, and the
scoring server's command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.io import data
from ctloop.steps import serving
from ctloop.steps.serving import InputColumn, SignatureMismatch

COLUMNS = (
    InputColumn("distance", "double"),
    InputColumn("wind_gust", "double", required=False),
    InputColumn("carrier", "string"),
)


def _frame(**changes: object) -> pd.DataFrame:
    base = pd.DataFrame(
        {
            "flight": [11, 12, 13],
            "distance": [200, 1000, 2500],  # integers: cast to double like the signature
            "wind_gust": [np.nan, 20.7, 25.3],
            "carrier": ["UA", "DL", "B6"],
        }
    )
    return base.assign(**changes)


# --- signature checks ----------------------------------------------------------------------


def test_matching_input_is_cast_and_extra_columns_are_reported() -> None:
    checked = serving.validate_input(_frame(), COLUMNS, "in.csv")
    assert list(checked.features.columns) == ["distance", "wind_gust", "carrier"]
    assert checked.features["distance"].dtype == "float64"
    assert checked.features["distance"].tolist() == [200.0, 1000.0, 2500.0]
    assert checked.ignored == ("flight",)
    assert checked.filled == ()


def test_every_problem_is_listed_with_file_column_and_rule() -> None:
    frame = _frame(carrier=[1, 2, 3], wind_gust=["7", "windy", None]).drop(columns="distance")
    with pytest.raises(SignatureMismatch) as err:
        serving.validate_input(frame, COLUMNS, "/data/july.csv", "model 'm' v3")
    text = str(err.value)
    assert text.startswith("/data/july.csv: does not match the signature of model 'm' v3")
    assert "3 problem(s)" in text
    assert "column 'distance': rule 'missing_column': required by the model (double)" in text
    assert "column 'wind_gust': rule 'type': expected double: 1 value(s) are not numbers" in text
    assert "'windy'" in text
    assert "column 'carrier': rule 'type': expected string, got int64" in text
    assert len(err.value.problems) == 3
    assert isinstance(err.value, data.DataError)  # the CLI reports it and exits 1


def test_numeric_text_is_cast_and_an_absent_optional_column_is_filled() -> None:
    frame = _frame(distance=["200", "1000", "2500.5"]).drop(columns="wind_gust")
    checked = serving.validate_input(frame, COLUMNS, "in.csv")
    assert checked.features["distance"].tolist() == [200.0, 1000.0, 2500.5]
    assert checked.filled == ("wind_gust",)
    assert checked.features["wind_gust"].isna().all()


def test_an_all_empty_column_fits_any_type() -> None:
    """A CSV column with no value reads as float NaN: fine for a string column too."""
    checked = serving.validate_input(_frame(carrier=[np.nan] * 3), COLUMNS, "in.csv")
    assert checked.features["carrier"].isna().all()


@pytest.mark.parametrize(
    ("values", "kind", "ok"),
    [
        (pd.Series([1, 2]), "long", True),
        (pd.Series([1.0, 2.5]), "long", False),  # not whole numbers
        (pd.Series([1.0, None]), "long", False),  # missing in an integer column
        (pd.Series([True, False]), "boolean", True),
        (pd.Series(["yes", "no"]), "boolean", False),
        (pd.Series(["2013-07-01", "2013-07-02"]), "datetime", True),
        (pd.Series(["2013-07-01", "soon"]), "datetime", False),
        (pd.Series(pd.to_datetime(["2013-07-01"])), "double", False),
        (pd.Series(["a", "b"], dtype="category"), "string", True),
    ],
)
def test_casts_are_safe_or_refused(values: pd.Series, kind: str, ok: bool) -> None:
    _, problem = serving.cast_column(values, kind)
    assert (problem is None) is ok, problem


def test_signature_columns_come_from_a_real_mlflow_signature() -> None:
    from mlflow.models import infer_signature

    example = pd.DataFrame({"distance": [1.0, 2.0], "wind_gust": [np.nan, 3.0], "carrier": "UA"})
    signature = infer_signature(example, np.array([0.1, 0.2]))
    assert serving.signature_columns(signature, "m") == COLUMNS
    with pytest.raises(serving.ServingError, match="m: no column signature"):
        serving.signature_columns(None, "m")


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("in.txt", b"a,b\n1,2\n", "file_type"),
        ("in", b"a,b\n1,2\n", "file_type"),
        ("in.csv", b"", "not_empty"),  # no columns at all
        ("in.csv", b"distance,carrier\n", "not_empty"),  # a header and no row
        ("in.parquet", b"not parquet", "readable"),
        ("in.csv", b"\xff\xfe\x00bad", "encoding"),
    ],
)
def test_unreadable_inputs_name_the_file_and_rule(
    tmp_path: Path, name: str, content: bytes, rule: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=rf"^{path}: rule '{rule}'"):
        serving.read_input(path)


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match=rf"{tmp_path}/nope.csv: rule 'exists'"):
        serving.read_input(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_output_is_written_by_extension_atomically(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"row": [0, 1], "score": [0.25, 0.75], "model_version": ["3", "3"]})
    path = tmp_path / "out" / f"pred{suffix}"
    path.parent.mkdir()
    path.write_text("an older file")
    serving.write_output(frame, path)
    back = serving.read_input(path)
    assert back["score"].tolist() == [0.25, 0.75]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_output_of_another_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match=r"out.json: rule 'file_type': the output must be"):
        serving.write_output(pd.DataFrame({"a": [1]}), tmp_path / "out.json")
    assert not list(tmp_path.iterdir())


# --- scores and output columns -----------------------------------------------------------


class _Constant:
    """A fitted-model stand-in: scores every row with a fixed probability or value."""

    classes_ = np.array([0, 1])

    def __init__(self, value: float) -> None:
        self.value = value

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.full(len(X), self.value)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.value)


def _served(task: str, folds: tuple[float, ...], half_width: float | None) -> serving.ServingModel:
    ref = serving.ChampionRef("m", "7", "run", COLUMNS)
    uncertainty = serving.Uncertainty(tuple(_Constant(v) for v in folds), half_width)
    return serving.ServingModel(ref, task, _Constant(0.6), uncertainty)  # type: ignore[arg-type]


def test_classification_output_columns() -> None:
    frame = _frame(score=[9, 9, 9])  # an input column named like an output column
    checked = serving.validate_input(frame, COLUMNS, "in.csv")
    scored = serving.score(_served("classification", (0.2, 0.4, 0.6), None), checked)
    out = serving.assemble(frame, checked, scored)
    assert list(out.columns) == [
        "row",
        "flight",
        "input_score",
        "prediction",
        "score",
        "model_version",
        "uncertainty",
    ]
    assert out["row"].tolist() == [0, 1, 2]
    assert out["prediction"].tolist() == [1, 1, 1]
    assert out["score"].tolist() == pytest.approx([0.6] * 3)
    assert out["model_version"].tolist() == ["7"] * 3
    assert out["uncertainty"].tolist() == pytest.approx([np.std([0.2, 0.4, 0.6])] * 3)


def test_regression_interval_and_missing_uncertainty() -> None:
    checked = serving.validate_input(_frame(), COLUMNS, "in.csv")
    scored = serving.score(_served("regression", (), 1.5), checked)
    assert scored["lower"].tolist() == pytest.approx([0.6 - 1.5] * 3)
    assert scored["upper"].tolist() == pytest.approx([0.6 + 1.5] * 3)
    assert scored["uncertainty"].isna().all()  # no fold models recorded
    no_interval = serving.score(_served("regression", (1.0, 2.0), None), checked)
    assert no_interval["lower"].isna().all() and no_interval["upper"].isna().all()
    assert no_interval["uncertainty"].tolist() == pytest.approx([0.5] * 3)


def test_summary_figures() -> None:
    scored = pd.DataFrame({"score": [0.1, 0.6, 0.8], "uncertainty": [0.01, 0.02, 0.03]})
    summary = serving.summarize(scored, "classification")
    assert summary["positive_share"] == pytest.approx(2 / 3)
    assert summary["score_median"] == pytest.approx(0.6)
    assert summary["uncertainty_mean"] == pytest.approx(0.02)


# --- uncertainty artifacts in a real MLflow store ------------------------------------------


def test_uncertainty_artifacts_round_trip(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    from ctloop.io import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.configure(uri, "serving", tmp_path / "art")
    client = MlflowClient()
    old, new = (client.create_run(experiment).info.run_id for _ in range(2))
    X, y = pd.DataFrame({"x": [0.0, 1.0, 2.0]}), pd.Series([0.0, 1.0, 2.0])
    folds = [LinearRegression().fit(X, y), LinearRegression().fit(X, y * 2)]
    serving.log_uncertainty_artifacts(new, folds, half_width=0.75, coverage=0.8)

    loaded = serving.load_uncertainty(new, "regression", "model 'm' v2")
    assert loaded.notes == ()
    assert (loaded.half_width, loaded.coverage) == (0.75, 0.8)
    spread = serving.fold_spread(loaded.fold_models, pd.DataFrame({"x": [4.0]}), "regression")
    assert spread.tolist() == pytest.approx([2.0])  # predictions 4 and 8

    missing = serving.load_uncertainty(old, "regression", "model 'm' v1")
    assert missing.fold_models == () and missing.half_width is None
    assert any(f"run {old} has no uncertainty/fold_models.skops" in n for n in missing.notes)
    assert any("conformal.json: lower and upper are NaN" in n for n in missing.notes)
    with pytest.raises(ValueError, match="no fold models"):
        serving.log_uncertainty_artifacts(old, [], None)


def test_legacy_pickled_fold_models_still_load_with_a_note(tmp_path: Path) -> None:
    """Runs from before skops recorded uncertainty/fold_models.joblib: still read, with a note."""
    import joblib
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    from ctloop.io import tracking

    experiment = tracking.configure(f"sqlite:///{tmp_path}/mlflow.db", "legacy", tmp_path / "art")
    run = MlflowClient().create_run(experiment).info.run_id
    X, y = pd.DataFrame({"x": [0.0, 1.0, 2.0]}), pd.Series([0.0, 1.0, 2.0])
    joblib.dump([LinearRegression().fit(X, y)], tmp_path / serving.LEGACY_FOLD_MODELS)
    MlflowClient().log_artifact(run, str(tmp_path / serving.LEGACY_FOLD_MODELS), "uncertainty")
    loaded = serving.load_uncertainty(run, "classification", "model 'm' v1")
    assert len(loaded.fold_models) == 1
    assert loaded.fold_models[0].predict(pd.DataFrame({"x": [4.0]})) == pytest.approx([4.0])
    assert any("fold_models.joblib" in n and "pickled" in n for n in loaded.notes)


# --- the scoring server ------------------------------------------------------------------


def test_server_command_environment_and_request(tmp_path: Path) -> None:
    argv = serving.serve_command(tmp_path, "127.0.0.1", 5001)
    assert argv[0] == str(tmp_path / "uvicorn")
    assert argv[1] == "ctloop.ops.scoring_app:app"  # MLflow's scoring app around ctloop's loader
    assert argv[argv.index("--port") + 1] == "5001"
    base = {"PATH": "/usr/bin", "HOME": "/h", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    env = serving.serve_env(base, "sqlite:////p/mlflow.db", tmp_path, "m", "3")
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////p/mlflow.db"
    assert (env["CTLOOP_SERVE_MODEL"], env["CTLOOP_SERVE_VERSION"]) == ("m", "3")
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in env  # skops versions need no pickle
    assert env["PATH"].split(":")[0] == str(tmp_path)  # MLflow starts `uvicorn` by name
    assert env["HOME"] == "/h"
    assert serving.serve_url("0.0.0.0", 5001) == "http://127.0.0.1:5001"
    body = {"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}
    curl = serving.curl_command("http://127.0.0.1:5001", body)
    assert curl.startswith("curl -s http://127.0.0.1:5001/invocations ")
    assert json.loads(curl.split(" -d ", 1)[1].strip("'")) == body
