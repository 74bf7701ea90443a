"""Explainability, uncertainty, fit and slice reports on small synthetic data, with directional
checks (what each report must show when the truth is known)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from ctloop.core import promotion
from ctloop.core.config import Params, parse_params
from ctloop.io.data import Schema
from ctloop.ml import insights, training

N = 2000


def _params(task: str = "classification", **changes: Any) -> Params:
    raw: dict[str, Any] = {
        "data": {"target": "y", "task": task},
        "model": {
            "family": "xgboost",
            "fixed": {"xgboost": {"n_estimators": 30, "max_depth": 3, "n_jobs": 1}},
            "search_space": {
                "xgboost": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.3}}
            },
        },
        "slices": {"columns": ["grp"], "min_size": 100, "tolerance": 0.02},
        "insights": {"sample_rows": 1000, "shap_rows": 300, "permutation_repeats": 3},
    }
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_params(raw)


def _schema(task: str = "classification") -> Schema:
    return Schema("y", task, ("signal", "noise"), ("grp",), None)


def _frame(
    n: int = N, seed: int = 0, task: str = "classification"
) -> tuple[pd.DataFrame, pd.Series]:
    """`signal` drives the target, `noise` does not; `grp` is a slice column (a, b, rare c)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "grp": rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.37, 0.03]),
        }
    )
    if task == "classification":
        y = pd.Series((X["signal"] + 0.5 * rng.normal(size=n) > 0).astype(int), name="y")
    else:
        y = pd.Series(3 * X["signal"] + rng.normal(size=n), name="y")
    return X, y


def _fit(params: Params, X: pd.DataFrame, y: pd.Series) -> Any:
    best = {**params.model.fixed["xgboost"], "learning_rate": 0.2}
    return training.fit_final(params, _schema(params.data.task), best, X, y)


@pytest.fixture(scope="module")
def fitted() -> tuple[Params, Any, pd.DataFrame, pd.Series]:
    params = _params()
    X, y = _frame()
    return params, _fit(params, X, y), X, y


def test_sample_rows_is_seeded_and_capped() -> None:
    X, y = _frame(500)
    a, ya = insights.sample_rows(X, y, 100, seed=1)
    b, _ = insights.sample_rows(X, y, 100, seed=1)
    assert len(a) == 100 and a.index.equals(b.index) and a.index.is_monotonic_increasing
    assert ya.index.equals(a.index)
    assert (
        insights.sample_rows(X, y, None, 1)[0] is X and insights.sample_rows(X, y, 900, 1)[0] is X
    )


def test_permutation_importance_ranks_the_informative_column_first(fitted: Any) -> None:
    _, model, _, _ = fitted
    X, y = _frame(1000, seed=1)
    table = insights.permutation_table(model, X, y, "roc_auc", repeats=3, seed=0)
    assert list(table.columns) == ["feature", "importance_mean", "importance_std"]
    assert table["feature"].iloc[0] == "signal"
    imp = table.set_index("feature")["importance_mean"]
    assert imp["signal"] > 0.2 and abs(imp["noise"]) < 0.02


def test_tree_shap_follows_the_signal_and_only_for_xgboost(fitted: Any) -> None:
    params, model, X, y = fitted
    table = insights.tree_shap_table(model, X.head(300))
    assert table is not None and set(table["feature"]) == {"signal", "noise", "grp"}
    shap = table.set_index("feature")["mean_abs_shap"]
    assert shap["signal"] > 5 * shap["noise"]
    linear = parse_params(
        {
            **params.model_dump(by_alias=True),
            "model": {
                "family": "linear",
                "search_space": {"linear": {"C": {"type": "float", "low": 0.1, "high": 1}}},
            },
        }
    )
    other = training.fit_final(linear, _schema(), {"C": 1.0}, X, y)
    assert insights.tree_shap_table(other, X.head(50)) is None


def test_calibration_of_a_calibrated_score_is_near_the_diagonal() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=40_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    table = insights.calibration_table(y, p, bins=10)
    assert len(table) == 10 and table["n"].sum() == p.size
    assert np.allclose(table["fraction_positive"], table["mean_predicted"], atol=0.03)
    assert insights.brier(y, p) == pytest.approx(1 / 6, abs=0.01)  # E[p(1-p)] for uniform p
    skewed = insights.calibration_table(y, p**3, bins=10)  # under-confident on positives
    assert (skewed["fraction_positive"] > skewed["mean_predicted"] + 0.05).sum() >= 5


def test_conformal_intervals_cover_fresh_data_at_the_target_rate() -> None:
    rng = np.random.default_rng(4)
    x_train, x_new = rng.normal(size=5000), rng.normal(size=20_000)
    y_train, y_new = x_train + rng.normal(size=5000), x_new + rng.normal(size=20_000)
    oof = x_train.copy()
    oof[:100] = np.nan  # rows in no validation fold are ignored
    out = insights.conformal_interval(y_train, oof, y_new, x_new, coverage=0.9)
    assert out["half_width"] == pytest.approx(1.645, abs=0.08)
    assert out["coverage_holdout"] == pytest.approx(0.9, abs=0.015)
    assert insights.conformal_half_width(np.array([1.0, 2.0]), 0.9) == float("inf")


def test_the_forward_split_has_the_holdouts_rows_within_bounds() -> None:
    assert insights.min_calibration_rows(0.9) == 9  # ceil(10 * 0.9) = 9 <= 9
    assert insights.min_calibration_rows(0.95) == 19
    assert insights.forward_split_rows(10_000, 2_000, 0.9) == 2_000  # the holdout's horizon
    assert insights.forward_split_rows(10_000, 3, 0.9) == 9  # enough for a finite width
    assert insights.forward_split_rows(1_000, 5_000, 0.9) == 500  # half the training rows


def test_forward_residuals_are_those_of_the_newest_rows_from_a_fit_on_the_older_ones() -> None:
    """The calibration model never sees the rows it is scored on: a target that jumps in the
    newest rows leaves residuals of the jump's size there."""
    params = _params("regression")
    X, y = _frame(1000, task="regression")
    jumped = y.copy()
    jumped.iloc[-200:] += 10.0
    schema = _schema("regression")
    best = {**params.model.fixed["xgboost"], "learning_rate": 0.2}
    plain = insights.forward_residuals(params, schema, best, X, y, 200)
    shifted = insights.forward_residuals(params, schema, best, X, jumped, 200)
    assert plain.shape == (200,) and abs(float(np.mean(plain))) < 0.5
    assert np.allclose(shifted - plain, 10.0)


TREND_DAYS, ROWS_PER_DAY, HOLDOUT_DAYS = 360, 10, 60


def _trending_prices(seed: int) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Daily rows in time order whose price level rises through time (a linear trend) on top of
    what the features explain; `day` (a date's ordinal) is a feature, as a date-derived column
    often is. Trees cannot extrapolate the level beyond the days they saw."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(TREND_DAYS), ROWS_PER_DAY)
    X = pd.DataFrame(
        {
            "signal": rng.normal(size=day.size),
            "noise": rng.normal(size=day.size),
            "grp": rng.choice(["a", "b", "c"], size=day.size),
            "day": day.astype(float),
        }
    )
    level = 0.03 * np.arange(TREND_DAYS)  # +1.8 over the 60 days held out, noise sd 1
    y = level[day] + 2 * X["signal"] + (X["grp"] == "a") + rng.normal(size=day.size)
    return X, pd.Series(y, name="y"), day


def test_time_ordered_intervals_cover_a_trending_holdout_where_shuffled_folds_under_cover() -> None:
    """The issue's case in small: shuffled k-fold on time-ordered prices with a trend calibrates
    on residuals of interpolation and under-covers the next period; the time-ordered split
    predicts its newest rows from the older ones, as the final model predicts the holdout, and
    reaches the target. Coverage is a promise over periods: one 60-day holdout lands within a
    few points of it (0.82-0.93 here), so the target is checked on the mean of six seeded ones."""
    schema = Schema("y", "regression", ("signal", "noise", "day"), ("grp",), None)
    achieved: dict[str, list[float]] = {"kfold": [], "time": []}
    for seed in range(6):
        X, y, day = _trending_prices(seed)
        held = day >= TREND_DAYS - HOLDOUT_DAYS
        Xt, yt = X[~held].reset_index(drop=True), y[~held].reset_index(drop=True)
        Xh, yh = X[held].reset_index(drop=True), y[held].reset_index(drop=True)
        for cv, found in achieved.items():
            params = _params(
                "regression",
                split={"cv": cv, "folds": 5},
                tune={"n_trials": 1, "timeout_s": None, "show_progress_bar": False},
                slices={"columns": []},
                insights={"permutation_repeats": 1, "sample_rows": 300, "shap": False},
            )
            tuning = training.tune(params, schema, Xt, yt)
            model = training.fit_final(params, schema, tuning.best_params, Xt, yt)
            ins = insights.compute(params, schema, model, tuning, Xt, yt, Xh, yh)
            assert ins.interval is not None and ins.interval["coverage_target"] == 0.9
            found.append(ins.interval["coverage_holdout"])
    assert max(achieved["kfold"]) < 0.75  # the field case: far below the 0.9 target
    assert np.mean(achieved["time"]) == pytest.approx(0.9, abs=0.04)
    assert min(achieved["time"]) > max(achieved["kfold"])


def test_trials_table_gap_is_positive_when_overfitting_in_both_directions() -> None:
    rec = training.TrialRecord(0, {}, (0.70, 0.72), "COMPLETE", 1.0, (), (0.90, 0.92))
    pruned = training.TrialRecord(1, {}, (0.60,), "PRUNED", 0.5, (), (0.61,))
    table = insights.trials_table([rec, pruned], greater_is_better=True)
    assert table["gap"].iloc[0] == pytest.approx(0.2) and table["state"].tolist() == [
        "COMPLETE",
        "PRUNED",
    ]
    rmse = training.TrialRecord(0, {}, (12.0,), "COMPLETE", 1.0, (), (8.0,))
    assert insights.trials_table([rmse], greater_is_better=False)["gap"].iloc[0] == 4.0
    assert list(insights.trials_table([], True).columns)[-1] == "gap"


def test_learning_curve_improves_with_rows_and_reuses_the_final_model(fitted: Any) -> None:
    params, model, X, y = fitted
    params = _params(insights={"learning_curve": [0.05, 1.0]})
    Xh, yh = _frame(1000, seed=2)
    best = {**params.model.fixed["xgboost"], "learning_rate": 0.2}
    curve = insights.learning_curve(params, _schema(), model, best, X, y, Xh, yh)
    assert curve is not None and curve["rows"].tolist() == [100, N]
    full = training.evaluate(
        "classification", yh, training.predict_scores(model, Xh, "classification")
    )
    assert curve["holdout"].iloc[-1] == pytest.approx(full["roc_auc"])  # share 1 = the model
    assert curve["holdout"].iloc[-1] > curve["holdout"].iloc[0]
    assert (curve["train"] >= curve["holdout"]).all()
    axes = insights.curve_figure(curve, "roc_auc").axes[0]
    assert [list(line.get_xdata()) for line in axes.get_lines()] == [[100, N], [100, N]]
    assert (
        insights.learning_curve(
            _params(insights={"learning_curve": []}), _schema(), model, best, X, y, Xh, yh
        )
        is None
    )


def test_a_slice_regression_is_caught_and_named() -> None:
    X, y = _frame(3000, seed=5)
    good = X["signal"].to_numpy()
    bad_on_b = np.where(X["grp"] == "b", -good, good)  # the challenger inverts slice b
    scores = insights.slice_scores(X, y, bad_on_b, good, ["grp"], "roc_auc", min_size=200)
    by_value = {s.value: s for s in scores}
    assert [s.value for s in scores] == ["a", "b", "c"]  # largest first
    assert by_value["b"].challenger < 0.1 and by_value["b"].champion > 0.9
    assert not by_value["c"].gated and by_value["a"].gated  # c: about 90 rows < 200
    table = insights.slice_table(scores, greater_is_better=True, tolerance=0.02)
    assert table.loc[table["regression"], "value"].tolist() == ["b"]
    b = table.set_index("value").loc["b"]
    assert b["worse_by"] == pytest.approx(b["champion"] - b["challenger"])
    assert b["worse_by_share"] == pytest.approx(b["worse_by"] / b["champion"])
    # the same figures read as an error metric: slice b improved, nothing regresses
    as_error = insights.slice_table(scores, greater_is_better=False, tolerance=0.02)
    assert not as_error.loc[as_error["value"] == "b", "regression"].any()
    assert as_error["worse_by"].fillna(0).tolist() == (-table["worse_by"]).fillna(0).tolist()
    decision = promotion.decide(
        "roc_auc", "2", 0.80, "1", 0.78, True, 0.0, 0.5, slices=scores, slice_tolerance=0.02
    )
    assert not decision.promote and "grp=b (roc_auc" in decision.reason


def test_slices_without_champion_or_class_and_missing_values() -> None:
    X = pd.DataFrame({"grp": ["a"] * 300 + [None] * 300, "signal": 0.0, "noise": 0.0})
    y = pd.Series([0, 1] * 150 + [1] * 300)
    scores = np.linspace(0, 1, 600)
    out = insights.slice_scores(X, y, scores, None, ["grp"], "roc_auc", min_size=100)
    missing = next(s for s in out if s.value == insights.MISSING)
    assert missing.challenger is None and not missing.gated  # one class only: undefined
    assert all(s.champion is None for s in out)
    with pytest.raises(ValueError, match=r"slices\.columns: 'carrier'"):
        insights.slice_scores(X, y, scores, None, ["carrier"], "roc_auc", 100)


def test_compute_gives_every_report_for_classification_and_regression() -> None:
    for task in ("classification", "regression"):
        params = _params(task, insights={"learning_curve": [0.25, 1.0]})
        X, y = _frame(task=task)
        Xh, yh = _frame(800, seed=9, task=task)
        model = _fit(params, X, y)
        oof = training.predict_scores(model, X, task) if task == "regression" else None
        trial = training.TrialRecord(0, {}, (0.7,), "COMPLETE", 1.0, (), (0.8,))
        tuning = training.TuningResult(
            {**params.model.fixed["xgboost"]}, 0.7, 0.0, (0.7,), (trial,), (), oof
        )
        ins = insights.compute(params, _schema(task), model, tuning, X, y, Xh, yh)
        assert ins.importance["feature"].iloc[0] == "signal"
        assert ins.shap is not None and ins.shap["feature"].iloc[0] == "signal"
        assert ins.sample_rows == 800 and set(ins.seconds) >= {"shap", "slices"}
        assert "learning_curve" not in ins.tables()  # refits apart: insights.learning_curve
        assert (
            ins.slices["value"].tolist() == ["a", "b", "c"] and ins.slices["champion"].isna().all()
        )
        if task == "classification":
            assert ins.calibration is not None and ins.brier is not None and ins.interval is None
        else:
            assert ins.calibration is None and ins.interval is not None
            assert ins.metrics()["interval_coverage_target"] == 0.9
        figures = insights.figures(ins, top=5)
        assert set(figures) == set(ins.tables())
        assert {"permutation_importance", "shap_importance", "slices"} <= set(figures)


def test_importance_history_orders_versions_and_plots_top_features() -> None:
    v1 = pd.DataFrame({"feature": ["a", "b"], "importance_mean": [0.3, 0.1], "importance_std": 0.0})
    v2 = pd.DataFrame({"feature": ["a", "b"], "importance_mean": [0.1, 0.4], "importance_std": 0.0})
    history = insights.importance_history([("v1 2013-06", v1), ("v2 2013-07", v2)])
    assert history.groupby("point")["order"].first().to_dict() == {"v1 2013-06": 0, "v2 2013-07": 1}
    wide = history.pivot(index="point", columns="feature", values="importance")
    assert wide.loc["v2 2013-07", "b"] == 0.4
    fig = insights.history_figure(history, top=1)
    [line] = fig.axes[0].get_lines()
    assert line.get_label() == "b"  # the newest version's top feature
    assert insights.importance_history([]).empty
