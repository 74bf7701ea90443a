"""The training plan's preconditions (ctloop/ml/preconditions.py) on small frames, the search's own
error when every trial scores NaN, and the drift step with an empty column on one side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core.config import DriftConfig, parse_params
from ctloop.io.data import Schema
from ctloop.ml import preconditions, training
from ctloop.ml.drift import DriftError, DriftSummary, compute_drift, drift_markdown
from ctloop.ml.preconditions import Part, PreconditionError, check_training_plan

TRAIN = "the training window 2013-01..2013-03"
HOLDOUT = "holdout 2013-04"


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "k": rng.choice(["x", "y"], size=n)}
    )


def _labels(positives: int, negatives: int, seed: int = 0) -> pd.Series:
    y = np.array([1] * positives + [0] * negatives)
    return pd.Series(np.random.default_rng(seed).permutation(y), name="is_late")


def _holdout(n: int = 20) -> Part:
    return Part(_frame(n, 9), _labels(n // 2, n - n // 2), HOLDOUT)


def test_fewer_positives_than_folds_names_the_folds_and_the_class_counts() -> None:
    train = Part(_frame(40), _labels(3, 37), TRAIN, cap=40)
    with pytest.raises(PreconditionError) as failure:
        check_training_plan("classification", 5, "is_late", train, _holdout())
    message = str(failure.value)
    assert "split.folds: 5 folds need at least 5 rows of each class" in message
    assert "3 positives (is_late=1) and 37 negatives (is_late=0)" in message
    assert TRAIN in message and "split.max_train_rows=40" in message


def test_one_class_in_the_training_part_is_refused_with_a_zero_count() -> None:
    train = Part(_frame(30), _labels(0, 30), TRAIN)
    with pytest.raises(PreconditionError, match=r"0 positives \(is_late=1\) and 30 negatives"):
        check_training_plan("classification", 3, "is_late", train, _holdout())


def test_a_single_class_holdout_names_the_batch_and_the_class() -> None:
    train = Part(_frame(40), _labels(20, 20), TRAIN)
    holdout = Part(_frame(12), _labels(0, 12), HOLDOUT)
    with pytest.raises(PreconditionError) as failure:
        check_training_plan("classification", 5, "is_late", train, holdout)
    assert "holdout 2013-04: 12 labelled row(s), only negatives (is_late=0)" in str(failure.value)


def test_every_problem_is_listed_in_one_error() -> None:
    train = Part(_frame(10), _labels(1, 9), TRAIN)
    holdout = Part(_frame(5), _labels(5, 0), HOLDOUT)
    with pytest.raises(PreconditionError, match=r"\(2 problem\(s\)\)") as failure:
        check_training_plan("classification", 3, "is_late", train, holdout)
    assert "only positives (is_late=1)" in str(failure.value)


def test_an_empty_feature_is_dropped_with_a_warning_and_a_constant_one_kept() -> None:
    X = _frame(40).assign(empty=np.nan, const="same", inf_only=np.inf)
    X.loc[::3, "const"] = None  # nulls do not make a second value
    check = check_training_plan(
        "classification", 5, "is_late", Part(X, _labels(20, 20), TRAIN), _holdout()
    )
    assert check.dropped == ("empty", "inf_only")
    assert check.constant == ("const",)
    [dropped, constant] = check.warnings
    assert "'empty', 'inf_only': rule 'empty_feature'" in dropped and TRAIN in dropped
    assert "'const': rule 'constant_feature'" in constant and "kept" in constant


def test_a_feature_empty_only_in_the_holdout_is_kept_with_a_warning() -> None:
    holdout = Part(_frame(20, 9).assign(b=np.nan), _labels(10, 10), HOLDOUT)
    check = check_training_plan(
        "classification", 5, "is_late", Part(_frame(40), _labels(20, 20), TRAIN), holdout
    )
    assert check.dropped == ()
    assert any("'b'" in w and HOLDOUT in w and "scored as missing" in w for w in check.warnings)


def test_every_feature_empty_is_refused() -> None:
    X = pd.DataFrame({"a": [np.nan] * 40, "k": [None] * 40})
    with pytest.raises(PreconditionError, match="every feature is empty in the training window"):
        check_training_plan(
            "classification", 5, "is_late", Part(X, _labels(20, 20), TRAIN), _holdout()
        )


def test_regression_needs_two_rows_per_fold_and_two_holdout_rows() -> None:
    y = pd.Series(np.arange(9.0))
    holdout = Part(_frame(1), pd.Series([1.0]), HOLDOUT)
    with pytest.raises(PreconditionError) as failure:
        check_training_plan("regression", 5, "delay", Part(_frame(9), y, TRAIN), holdout)
    message = str(failure.value)
    assert "5 folds need at least 10 labelled rows" in message and "has 9" in message
    assert "holdout 2013-04: 1 labelled row(s)" in message
    ok = Part(_frame(10), pd.Series(np.arange(10.0)), TRAIN)
    assert check_training_plan("regression", 5, "delay", ok, _holdout()).warnings == ()


@settings(max_examples=60, deadline=None)
@given(
    positives=st.integers(0, 30),
    negatives=st.integers(0, 30),
    folds=st.integers(2, 8),
    seed=st.integers(0, 2**16),
)
def test_a_plan_passes_exactly_when_every_stratified_fold_can_score_both_classes(
    positives: int, negatives: int, folds: int, seed: int
) -> None:
    """The check's rule is the one that matters: when it passes, every validation fold of
    stratified k-fold holds both classes (ROC AUC is defined); when it refuses, a class has
    fewer rows than folds."""
    y = _labels(positives, negatives, seed)
    train = Part(_frame(len(y), seed), y, TRAIN)
    try:
        check_training_plan("classification", folds, "is_late", train, _holdout())
    except PreconditionError as err:
        assert min(positives, negatives) < folds
        assert f"{positives} positive" in str(err) and f"{negatives} negative" in str(err)
        return
    assert min(positives, negatives) >= folds
    for _, va in training.cv_splits("stratified", folds, seed, train.X, y):
        assert set(y.iloc[va]) == {0, 1}


@settings(max_examples=60, deadline=None)
@given(
    masks=st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=5),
    categorical=st.booleans(),
)
def test_exactly_the_columns_without_a_value_are_dropped(
    masks: list[list[bool]], categorical: bool
) -> None:
    """A column is dropped iff none of its rows has a value, whatever its type."""
    columns = {}
    for i, mask in enumerate(masks):
        values = (
            ["v" if m else None for m in mask]
            if categorical
            else [1.0 if m else None for m in mask]
        )
        columns[f"f{i}"] = pd.Series(values, dtype=object if categorical else "float64")
    X = pd.DataFrame(columns)
    expected = tuple(f"f{i}" for i, mask in enumerate(masks) if not any(mask))
    y = pd.Series([0, 1] * 3)
    if len(expected) == len(masks):
        with pytest.raises(PreconditionError, match="every feature is empty"):
            check_training_plan("classification", 2, "y", Part(X, y, TRAIN), _holdout())
        return
    assert (
        check_training_plan("classification", 2, "y", Part(X, y, TRAIN), _holdout()).dropped
        == expected
    )


def test_usable_count_ignores_nulls_and_infinities() -> None:
    assert preconditions.usable_count(pd.Series([np.inf, -np.inf, np.nan, 1.0])) == 1
    assert preconditions.usable_count(pd.Series([None, "x"], dtype=object)) == 1
    assert preconditions.usable_count(pd.Series([pd.NA, 2], dtype="Int64")) == 1


# --- the search without any finite score --------------------------------------------------


def test_a_search_whose_trials_all_score_nan_raises_ctloops_error() -> None:
    """A validation fold with one class scores NaN: Optuna would say only 'No trials are
    completed yet'; the search says why and which params to change."""
    raw = yaml.safe_load((Path(__file__).parents[3] / "params.yaml").read_text())
    raw["data"].update(target="y", derive_target=None, time_column=None)
    raw["model"]["fixed"]["xgboost"] = {"n_estimators": 10, "n_jobs": 1}
    raw["split"].update(folds=2, cv="time")
    raw["tune"].update(n_trials=2, timeout_s=None, show_progress_bar=False)
    params = parse_params(raw)
    X = _frame(30).drop(columns="k")
    y = pd.Series([0, 1] * 5 + [0] * 10 + [0, 1] * 5)  # time fold 1 validates rows 10-19: all 0
    schema = Schema("y", "classification", ("a", "b"), (), None)
    with pytest.raises(training.TuningError) as failure:
        training.tune(params, schema, X, y)
    message = str(failure.value)
    assert message.startswith("tune: Optuna study")
    assert "2 of 2 trial(s) scored NaN on a validation fold" in message
    assert "split.folds" in message


# --- drift with an empty column ----------------------------------------------------------

DRIFT_SCHEMA = Schema("y", "classification", ("a", "b", "e"), ("k",), None)


@pytest.mark.parametrize("side", ["reference", "current", "both"])
def test_drift_reports_a_column_empty_on_a_side_instead_of_failing(side: str) -> None:
    ref, cur = _frame(400, 1).assign(e=1.0), _frame(400, 2).assign(e=2.0)
    if side in ("reference", "both"):
        ref["e"] = np.nan
    if side in ("current", "both"):
        cur["e"] = np.nan
    _, summary = compute_drift(ref, cur, DRIFT_SCHEMA, DriftConfig(), seed=0)
    assert [c.column for c in summary.columns] == ["a", "b", "k"]
    assert [(e.column, e.side) for e in summary.empty_columns] == [("e", side)]
    assert DriftSummary.from_dict(summary.to_dict()) == summary
    assert summary.to_dict()["empty_columns"] == {"e": side}
    assert "Not compared: 'e' (no value " in drift_markdown(summary, "x")


def test_drift_without_any_comparable_feature_is_a_ctloop_error() -> None:
    ref = pd.DataFrame({"a": [np.nan] * 5, "b": [1.0] * 5, "e": [1.0] * 5, "k": ["x"] * 5})
    cur = ref.assign(b=np.nan, e=np.inf, k=None)
    with pytest.raises(DriftError, match="batch 7 against 1: no feature has values on both sides"):
        compute_drift(ref, cur, DRIFT_SCHEMA, DriftConfig(), seed=0, what="batch 7 against 1")


# --- folds that are not stratified (split.cv: time, kfold) -------------------------------


def test_a_forward_fold_without_positives_is_refused_naming_the_fold_and_the_fix() -> None:
    """Positives only in the newest rows: enough of each class overall (the stratified rule
    passes), but the first forward-chaining fold trains on negatives alone."""
    y = pd.Series([0] * 50 + [1, 0] * 5, name="is_late")  # 5 positives, all in the last 10 rows
    train = Part(_frame(len(y)), y, TRAIN)
    assert check_training_plan("classification", 5, "is_late", train, _holdout()).dropped == ()
    with pytest.raises(PreconditionError) as failure:
        check_training_plan("classification", 5, "is_late", train, _holdout(), cv="time")
    message = str(failure.value)
    assert "split.cv: time-ordered folds (5) without both classes" in message
    assert "fold 1 trains on rows 1-10 (0 positives (is_late=1) and 10 negatives" in message
    assert "set split.cv: stratified" in message and "(60 rows in time order)" in message


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=4, max_size=60),
    folds=st.integers(2, 5),
    cv=st.sampled_from(["time", "kfold"]),
    seed=st.integers(0, 2**16),
)
def test_a_plan_passes_exactly_when_every_fold_of_its_scheme_holds_both_classes(
    labels: list[int], folds: int, cv: str, seed: int
) -> None:
    """For folds that are not stratified the check computes the search's own folds: it passes
    exactly when each class has `folds` rows and every fold trains and validates on both."""
    y = pd.Series(labels, name="is_late")
    train = Part(_frame(len(y), seed), y, TRAIN)
    enough = min(int(y.sum()), int((y == 0).sum())) >= folds
    both = enough and all(
        y.iloc[tr].nunique() == 2 and y.iloc[va].nunique() == 2
        for tr, va in training.cv_splits(cv, folds, seed, train.X, y)
    )
    try:
        check_training_plan("classification", folds, "is_late", train, _holdout(), cv=cv, seed=seed)
    except PreconditionError as err:
        assert not both
        assert ("split.cv:" in str(err)) == enough  # the fold rule speaks once totals suffice
        return
    assert both


def test_time_ordered_regression_needs_two_rows_per_block_including_the_first() -> None:
    """Forward chaining cuts folds + 1 blocks (the first only trains): 2 × (folds + 1) rows."""
    short = Part(_frame(11), pd.Series(np.arange(11.0)), TRAIN)
    with pytest.raises(PreconditionError, match="need at least 12 labelled rows"):
        check_training_plan("regression", 5, "delay", short, _holdout(), cv="time")
    assert check_training_plan("regression", 5, "delay", short, _holdout()).dropped == ()
    ok = Part(_frame(12), pd.Series(np.arange(12.0)), TRAIN)
    check_training_plan("regression", 5, "delay", ok, _holdout(), cv="time")
