from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from ctloop.core.config import CategoricalParam, FloatParam, IntParam, Params, parse_params
from ctloop.io.data import Schema
from ctloop.ml import training

SCHEMA = Schema(
    target="y", task="classification", numeric=("a", "b"), categorical=("c",), time_column=None
)


def _frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], size=n)}
    )
    X.loc[::17, "b"] = np.nan
    y = pd.Series(((X.a + (X.c == "x")) > 0.5).astype(int), name="y")
    return X, y


def test_suggest_follows_the_declared_space() -> None:
    space = {
        "d": IntParam(type="int", low=2, high=4),
        "lr": FloatParam(type="float", low=0.1, high=0.2, log=True),
        "k": CategoricalParam(type="categorical", choices=["a", "b"]),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = training.suggest(study.ask(), space)
        assert 2 <= params["d"] <= 4 and 0.1 <= params["lr"] <= 0.2 and params["k"] in {"a", "b"}


def test_cv_splits_kinds() -> None:
    X, y = _frame()
    strat = training.cv_splits("stratified", 4, 0, X, y)
    assert len(strat) == 4
    rates = [y.iloc[va].mean() for _, va in strat]
    assert max(rates) - min(rates) < 0.05
    for tr, va in training.cv_splits("time", 3, 0, X, y):
        assert tr.max() < va.min()  # never trains on the future


@pytest.mark.parametrize("family", ["xgboost", "linear", "random_forest"])
def test_every_family_fits_with_missing_values_and_unseen_categories(family: str) -> None:
    X, y = _frame()
    pipe = training.make_pipeline(
        SCHEMA, family, {"n_estimators": 20} if family != "linear" else {}, seed=0
    )
    training.fit_pipeline(pipe, X, y)
    new = X.head(10).assign(c="never-seen")
    scores = training.predict_scores(pipe, new, "classification")
    assert scores.shape == (10,) and np.all((scores >= 0) & (scores <= 1))


def test_xgboost_early_stops_on_the_eval_set() -> None:
    X, y = _frame(600)
    pipe = training.make_pipeline(
        SCHEMA, "xgboost", {"n_estimators": 500, "learning_rate": 0.5}, seed=0, early_stopping=5
    )
    training.fit_pipeline(pipe, X.iloc[:400], y.iloc[:400], eval_set=(X.iloc[400:], y.iloc[400:]))
    assert pipe.named_steps["model"].best_iteration < 499


def test_evaluate_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = training.evaluate("classification", y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["accuracy"] == 1.0
    reg = training.evaluate("regression", np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    assert reg["rmse"] == pytest.approx(np.sqrt(2)) and reg["mae"] == 1.0


def _tuning_params(n_trials: int, pruning: bool) -> Params:
    raw = yaml.safe_load((Path(__file__).parents[3] / "params.yaml").read_text())
    raw["data"].update(target="y", derive_target=None, time_column=None)
    raw["model"]["fixed"]["xgboost"] = {"n_estimators": 30, "n_jobs": 1}
    raw["split"]["folds"] = 3
    raw["tune"].update(n_trials=n_trials, pruning=pruning, show_progress_bar=False)
    return parse_params(raw)


def test_tune_keeps_the_best_trials_fold_models_and_out_of_fold_scores() -> None:
    X, y = _frame(600)
    result = training.tune(_tuning_params(4, pruning=False), SCHEMA, X, y)
    assert len(result.fold_models) == 3
    assert result.oof_scores is not None and not np.isnan(result.oof_scores).any()
    splits = training.cv_splits("stratified", 3, 42, X, y)
    refit = [  # each kept model scores its own validation fold as the search recorded
        training.evaluate("classification", y.iloc[va], result.oof_scores[va])["roc_auc"]
        for _, va in splits
    ]
    assert refit == pytest.approx(list(result.fold_scores))
    for model, (_, va) in zip(result.fold_models, splits, strict=True):
        scores = training.predict_scores(model, X.iloc[va], "classification")
        assert scores == pytest.approx(result.oof_scores[va])
    best = max((t for t in result.trials if t.state == "COMPLETE"), key=lambda t: t.mean)
    assert result.cv_mean == pytest.approx(best.mean)


def test_tpe_models_the_search_after_the_configured_random_start_up_trials() -> None:
    """With n_trials <= tune.n_startup_trials every trial is a seeded random draw (the same
    points as a longer start-up); with fewer start-up trials TPE proposes the later points from
    the scores seen so far, so they differ, while the random start-up trials stay the same."""
    X, y = _frame(400)

    def points(startup: int) -> list[dict[str, object]]:
        params = _tuning_params(6, pruning=False)
        params = params.model_copy(
            update={"tune": params.tune.model_copy(update={"n_startup_trials": startup})}
        )
        return [t.params for t in training.tune(params, SCHEMA, X, y).trials]

    random_only, tpe_after_two = points(10), points(2)
    assert len(random_only) == len(tpe_after_two) == 6
    assert random_only[:2] == tpe_after_two[:2]
    assert random_only[2:] != tpe_after_two[2:]
