"""Model files that run no code when loaded (ctloop/io/model_io.py): skops with checked types, in a
real MLflow SQLite store under tmp_path; legacy cloudpickle versions still load, with a warning;
types outside the trusted modules are refused when saving and when loading."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import BaseEstimator, TransformerMixin

from ctloop.io import model_io, registry, tracking
from ctloop.io.data import Schema
from ctloop.io.model_io import LegacyModelWarning, ModelSafetyError
from ctloop.ml.training import fit_pipeline, make_pipeline

NAME = "safe-model"
SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


class Shift(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom transformer from outside the trusted modules (this test module)."""

    def fit(self, X: Any, y: Any = None) -> Shift:
        return self

    def transform(self, X: Any) -> Any:
        return X + 1.0


def _data(n: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(
        {
            "dist": rng.normal(500, 200, n),
            "hour": rng.integers(5, 23, n).astype(float),
            "carrier": rng.choice(["UA", "AA", "B6"], n),
        }
    )
    X.loc[::9, "dist"] = np.nan
    y = pd.Series(((X["hour"] > 14) ^ (rng.random(n) < 0.2)).astype(int))
    return X, y


SCHEMA = Schema("late", "classification", ("dist", "hour"), ("carrier",), None)


def _pipeline(family: str = "xgboost") -> tuple[Any, pd.DataFrame]:
    """A fitted ctloop pipeline (ctloop/ml/training.py), XGBoost with early stopping by default."""
    X, y = _data()
    if family == "xgboost":
        params: dict[str, Any] = {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.2}
        pipe = make_pipeline(SCHEMA, family, params, seed=3, early_stopping=5)
        fit_pipeline(pipe, X.iloc[:200], y.iloc[:200], (X.iloc[200:], y.iloc[200:]))
    else:
        params = {"n_estimators": 8} if family == "random_forest" else {"C": 1.0}
        pipe = make_pipeline(SCHEMA, family, params, seed=3)
        fit_pipeline(pipe, X, y)
    return pipe, X


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real MLflow SQLite store in a temp dir (created once: the schema costs seconds)."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    return uri, tracking.configure(uri, "models", root / "art")


@pytest.fixture
def store(module_store: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's store as this process's store, its experiment id; the pickle switch unset.
    Each test registers its own model name (`NAME-<test>`)."""
    monkeypatch.delenv(SWITCH, raising=False)
    tracking.use_store(module_store[0])
    return module_store[1]


def _run(experiment: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient().create_run(experiment).info.run_id


# --- pure logic ---------------------------------------------------------------------------


def test_allowlist_matches_whole_top_level_packages() -> None:
    names = ["sklearn.tree._tree.Tree", "xgboost.core.Booster", "numpy.dtype", "scipy.sparse.x"]
    assert model_io.outside_allowlist(names) == []
    evil = ["sklearnx.Evil", "builtins.eval", "os.system", "tests.unit.x.Shift"]
    assert model_io.outside_allowlist([*names, *evil]) == sorted(evil)


def test_check_types_names_every_refused_type() -> None:
    with pytest.raises(ModelSafetyError, match=r"model 'm' v3 .* 2 type\(s\).*builtins.eval, os"):
        model_io.check_types(["numpy.dtype", "os.system", "builtins.eval"], "model 'm' v3")
    with pytest.raises(ModelSafetyError, match=r"not classes of the trusted modules: numpy\.load"):
        model_io.check_types(["numpy.load"], "m")  # a function, not a class
    with pytest.raises(ModelSafetyError, match=r"sklearn\.no_such_module\.X"):
        model_io.check_types(["sklearn.no_such_module.X"], "m")
    assert model_io.check_types(["xgboost.core.Booster", "numpy.dtype"], "m") == [
        "numpy.dtype",
        "xgboost.core.Booster",
    ]


@pytest.mark.parametrize("family", ["xgboost", "random_forest", "linear"])
def test_trusted_types_are_computed_and_round_trip_is_exact(family: str, tmp_path: Path) -> None:
    import skops.io

    pipe, X = _pipeline(family)
    names = model_io.trusted_types(pipe)
    if family == "xgboost":
        assert {"xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"} <= set(names)
    assert all(n.split(".")[0] in model_io.TRUSTED_MODULES for n in names)
    path = tmp_path / "model.skops"
    skops.io.dump(pipe, path)
    loaded = model_io.load_skops(path, "m")
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    if family == "xgboost":  # early stopping state survives: same trees used
        assert loaded[-1].best_iteration == pipe[-1].best_iteration


def test_a_custom_type_is_refused_when_saving_and_when_loading(tmp_path: Path) -> None:
    import skops.io
    from sklearn.pipeline import Pipeline

    X, y = _data()
    pipe = Pipeline([("shift", Shift()), ("model", _pipeline("random_forest")[0][-1])])
    pipe.fit(X[["dist", "hour"]].fillna(0), y)
    refused = f"{__name__}.Shift"
    with pytest.raises(ModelSafetyError, match=f"outside the trusted modules .*: {refused}"):
        model_io.trusted_types(pipe, "the pipeline")
    path = tmp_path / "crafted.skops"
    skops.io.dump(pipe, path)
    with pytest.raises(ModelSafetyError, match=refused):
        model_io.load_skops(path, "model 'm' v9")


# --- a real MLflow store --------------------------------------------------------------------


def test_new_version_is_skops_and_loads_without_the_pickle_switch(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{NAME}-0"
    import mlflow

    pipe, X = _pipeline()
    version = tracking.log_model(_run(store), pipe, X.head(20), None, name)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    conf = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
    assert conf["serialization_format"] == "skops"
    assert "xgboost.sklearn.XGBClassifier" in conf["skops_trusted_types"]
    assert (local / "model.skops").is_file() and not (local / "model.pkl").exists()

    assert SWITCH not in os.environ
    loaded = registry.load_version(name, version)
    assert SWITCH not in os.environ  # nothing turned it on
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))

    monkeypatch.setenv(SWITCH, "false")  # MLflow's loader would refuse even skops now
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no legacy warning
        again = registry.load_version(name, version)
    np.testing.assert_array_equal(again.predict_proba(X), pipe.predict_proba(X))
    assert os.environ[SWITCH] == "false"

    served = model_io.load_pyfunc(name, version)  # what the scoring server serves
    np.testing.assert_array_equal(np.asarray(served.predict(X.head(5))), pipe.predict_proba(X)[:5])


def test_a_pipeline_with_an_untrusted_type_is_not_logged(store: str) -> None:
    name = f"{NAME}-1"
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    X, y = _data()
    features = X[["dist", "hour"]].fillna(0)
    pipe = Pipeline([("shift", Shift()), ("model", _pipeline("random_forest")[0][-1])]).fit(
        features, y
    )
    with pytest.raises(ModelSafetyError, match=f"{__name__}.Shift"):
        tracking.log_model(_run(store), pipe, features.head(5), None, name)
    assert MlflowClient().search_model_versions(f"name = '{name}'") == []


def test_a_tampered_trusted_list_does_not_widen_loading(store: str) -> None:
    """The list in MLmodel is not what ctloop trusts: a file with a custom class is refused
    even when its MLmodel lists that class."""
    name = f"{NAME}-2"
    import mlflow
    from sklearn.pipeline import Pipeline

    X, y = _data()
    features = X[["dist", "hour"]].fillna(0)
    pipe = Pipeline([("shift", Shift()), ("model", _pipeline("random_forest")[0][-1])]).fit(
        features, y
    )
    untrusted = model_io.outside_allowlist([f"{__name__}.Shift"])
    with mlflow.start_run(experiment_id=store):  # MLflow itself accepts the listed type
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            registered_model_name=name,
            serialization_format="skops",
            skops_trusted_types=[*model_io.trusted_types(pipe[-1]), *untrusted],
            pip_requirements=["scikit-learn"],
        )
    with pytest.raises(ModelSafetyError, match=f"v{info.registered_model_version} .*Shift"):
        registry.load_version(name, str(info.registered_model_version))


def test_a_legacy_cloudpickle_version_loads_with_a_warning(store: str) -> None:
    name = f"{NAME}-3"
    import mlflow

    pipe, X = _pipeline()
    with mlflow.start_run(experiment_id=store):
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            registered_model_name=name,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    version = str(info.registered_model_version)
    with pytest.warns(LegacyModelWarning, match=rf"'{name}' v{version} is stored with cloudpickle"):
        loaded = registry.load_version(name, version)
    assert SWITCH not in os.environ  # on for that one load only
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


def test_the_scoring_app_answers_with_probabilities(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ctloop/ops/scoring_app.py: MLflow's scoring app around ctloop's loader, no pickle switch."""
    name = f"{NAME}-4"
    from fastapi.testclient import TestClient

    pipe, X = _pipeline()
    version = tracking.log_model(_run(store), pipe, X.head(20), None, name)
    monkeypatch.setenv(model_io.SERVE_MODEL_ENV, name)
    monkeypatch.setenv(model_io.SERVE_VERSION_ENV, version)
    monkeypatch.delitem(sys.modules, "ctloop.ops.scoring_app", raising=False)
    scoring_app = importlib.import_module("ctloop.ops.scoring_app")
    assert SWITCH not in os.environ
    client = TestClient(scoring_app.app)
    assert client.get("/ping").status_code == 200
    rows = X.iloc[1:4]  # no NaN in a JSON body
    body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], pipe.predict_proba(rows), rtol=1e-6)
