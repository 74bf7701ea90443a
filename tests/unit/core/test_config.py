from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctloop.core.config import ConfigError, load_project, override, parse_params

ROOT = Path(__file__).resolve().parents[3]


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_load_into_one_typed_object() -> None:
    project = load_project(ROOT / "params.yaml")
    assert project.params.data.task == "classification"
    assert project.params.metric == "roc_auc"
    assert project.params.cv_kind == "time"  # flights have a time column: forward chaining
    assert project.path("batches") == ROOT / "data" / "batches"


def test_every_problem_is_listed_in_one_error() -> None:
    raw = _params()
    raw["split"]["folds"] = 1
    raw["promotion"]["margin"] = -0.1
    raw["tune"]["n_trials"] = "many"
    raw["surprise"] = True
    raw["model"]["search_space"]["xgboost"] = {}
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    text = str(err.value)
    for where in ("split.folds", "promotion.margin", "tune.n_trials", "surprise", "model"):
        assert where in text
    assert "5 problem(s)" in text


def test_inverted_search_range_is_refused() -> None:
    raw = _params()
    raw["model"]["search_space"]["xgboost"]["max_depth"] = {"type": "int", "low": 9, "high": 3}
    with pytest.raises(ConfigError, match="must not exceed"):
        parse_params(raw)


def test_missing_params_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_project(tmp_path / "params.yaml")


def test_regression_defaults_follow_the_task() -> None:
    raw = _params()
    raw["data"]["task"] = "regression"
    raw["data"]["time_column"] = None
    params = parse_params(raw)
    assert (params.metric, params.greater_is_better, params.cv_kind) == ("rmse", False, "kfold")


@pytest.mark.parametrize(
    ("task", "time_column", "cv", "expected"),
    [
        ("classification", "date", "auto", "time"),
        ("regression", "date", "auto", "time"),
        ("classification", None, "auto", "stratified"),
        ("regression", None, "auto", "kfold"),
        ("classification", "date", "stratified", "stratified"),  # an explicit choice is kept
        ("regression", "date", "kfold", "kfold"),
        ("regression", None, "time", "time"),
    ],
)
def test_auto_cv_is_time_ordered_exactly_when_there_is_a_time_column(
    task: str, time_column: str | None, cv: str, expected: str
) -> None:
    raw = _params()
    raw["data"].update(task=task, time_column=time_column)
    raw["split"]["cv"] = cv
    assert parse_params(raw).cv_kind == expected


def test_override_revalidates_and_rejects_unknown_keys() -> None:
    project = load_project(ROOT / "params.yaml")
    assert override(project, {"tune.n_trials": 3}).params.tune.n_trials == 3
    assert load_project(ROOT / "params.yaml").params == project.params
    with pytest.raises(ConfigError, match="unknown params key"):
        override(project, {"tune.n_trails": 3})
    with pytest.raises(ConfigError, match=r"split\.folds"):
        override(project, {"split.folds": 1})


def test_log_scale_needs_a_positive_low_bound() -> None:
    raw = _params()
    raw["model"]["search_space"]["xgboost"]["learning_rate"] = {
        "type": "float",
        "low": 0,
        "high": 1,
        "log": True,
    }
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        parse_params(raw)


def test_params_hash_the_same_in_every_process() -> None:
    """Prefect's cache keys hash pickled inputs; set order must not leak into them."""
    code = (
        "from ctloop.core.config import load_project; from prefect.utilities.hashing import "
        f"hash_objects; print(hash_objects({{'p': load_project('{ROOT}/params.yaml').params, "
        "'x': [1]}))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(keys) == 1


def test_the_promotion_test_defaults_to_the_bootstrap_and_is_checked() -> None:
    from pydantic import ValidationError

    from ctloop.core.config import PromotionConfig

    default = PromotionConfig()
    assert (default.test, default.bootstrap_rounds, default.confidence) == ("bootstrap", 1000, 0.95)
    assert PromotionConfig(test="none").test == "none"
    for bad in ({"test": "delong"}, {"bootstrap_rounds": 10}, {"confidence": 1.0}):
        with pytest.raises(ValidationError):
            PromotionConfig(**bad)


def test_shadows_are_off_by_default_and_checked() -> None:
    from pydantic import ValidationError

    from ctloop.core.config import PromotionConfig

    default = PromotionConfig()
    assert (default.shadow_batches, default.shadow) == (0, "refused")
    assert PromotionConfig(shadow_batches=3, shadow="all").shadow == "all"
    for bad in ({"shadow_batches": -1}, {"shadow": "everyone"}):
        with pytest.raises(ValidationError):
            PromotionConfig(**bad)


def test_shadow_promotion_and_required_approval_are_refused_together() -> None:
    """A promotion out of shadow has no reviewer step: the two settings cannot be mixed."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["promotion"] |= {"require_approval": True, "shadow_batches": 2}
    with pytest.raises(ConfigError, match=r"shadow_batches.*require_approval"):
        parse_params(raw)
    raw["promotion"]["shadow_batches"] = 0
    assert parse_params(raw).promotion.require_approval
