"""Behavioural tests of the default model on real data: skill, determinism, invariance and
direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import Project, override
from ctloop.io import data
from ctloop.ml import training
from tests.conftest import sample_months


@pytest.fixture(scope="module")
def small(repo_project: Project) -> Project:
    return override(
        repo_project,
        {
            "tune.n_trials": 3,
            "tune.timeout_s": None,
            "split.folds": 3,
            "tune.show_progress_bar": False,
            "model.fixed": {"xgboost": {"n_estimators": 80, "n_jobs": 1}},
        },
    )


@pytest.fixture(scope="module")
def frames(
    default_batches: dict[str, pd.DataFrame], repo_project: Project
) -> tuple[pd.DataFrame, pd.DataFrame, data.Schema]:
    train, _ = data.labelled(
        sample_months(default_batches, ["2013-01", "2013-02"], 4000), "is_late"
    )
    holdout, _ = data.labelled(sample_months(default_batches, ["2013-03"], 4000), "is_late")
    return train, holdout, data.infer_schema(train, repo_project.params.data)


@pytest.fixture(scope="module")
def fitted(small: Project, frames: tuple) -> tuple[training.TuningResult, object]:
    train, _, schema = frames
    y = train[schema.target].astype(int)
    tuning = training.tune(small.params, schema, train[schema.features], y)
    model = training.fit_final(small.params, schema, tuning.best_params, train[schema.features], y)
    return tuning, model


def test_beats_the_trivial_baseline_by_a_margin(frames: tuple, fitted: tuple) -> None:
    _, holdout, schema = frames
    y = holdout[schema.target].astype(int).to_numpy()
    scores = training.predict_scores(fitted[1], holdout[schema.features], "classification")
    model = training.evaluate("classification", y, scores)
    prior = np.full(len(y), frames[0][schema.target].mean())
    baseline = training.evaluate("classification", y, prior)
    assert model["roc_auc"] >= baseline["roc_auc"] + 0.1
    assert model["brier"] < baseline["brier"]


def test_same_seed_gives_the_same_metrics(small: Project, frames: tuple, fitted: tuple) -> None:
    train, _, schema = frames
    again = training.tune(
        small.params, schema, train[schema.features], train[schema.target].astype(int)
    )
    assert again.best_params == fitted[0].best_params
    assert again.fold_scores == fitted[0].fold_scores


def test_predictions_do_not_depend_on_column_order(frames: tuple, fitted: tuple) -> None:
    _, holdout, schema = frames
    X = holdout[schema.features]
    shuffled = X[list(reversed(X.columns))]
    np.testing.assert_array_equal(
        training.predict_scores(fitted[1], X, "classification"),
        training.predict_scores(fitted[1], shuffled, "classification"),
    )


def test_evening_departures_are_predicted_later_than_morning_ones(
    frames: tuple, fitted: tuple
) -> None:
    """Directional: delays build up during the day (a well-known effect in this data)."""
    _, holdout, schema = frames
    X = holdout[schema.features]
    morning = X.assign(hour=7, sched_dep_time=700)
    evening = X.assign(hour=19, sched_dep_time=1900)
    p_morning = training.predict_scores(fitted[1], morning, "classification").mean()
    p_evening = training.predict_scores(fitted[1], evening, "classification").mean()
    assert p_evening > p_morning + 0.03


def test_it_relies_on_departure_time_and_its_probabilities_rank_outcomes(
    frames: tuple, fitted: tuple
) -> None:
    """Explainability on real data: the time of day leads the permutation importance, and the
    observed late share rises along the calibration curve."""
    from ctloop.ml import insights

    _, holdout, schema = frames
    X, y = holdout[schema.features], holdout[schema.target].astype(int)
    Xs, ys = insights.sample_rows(X, y, 2000, seed=0)
    importance = insights.permutation_table(fitted[1], Xs, ys, "roc_auc", repeats=2, seed=0)
    assert {"hour", "sched_dep_time"} & set(importance["feature"].head(3))
    scores = training.predict_scores(fitted[1], X, "classification")
    curve = insights.calibration_table(y, scores, bins=5)
    curve = curve[curve["n"] >= 50]
    assert curve["fraction_positive"].is_monotonic_increasing
