"""Preconditions of a training plan, checked before any tuning, MLflow run or registration
(pure: no Prefect, no MLflow; shared by the train-model flow and the DVC stages through
ctloop/steps/fit.py `load_training`).

What is checked on the labelled rows of the window (after `split.max_train_rows`):
- features empty (no usable value: all null, or only ±inf) in the training part are dropped
  from training and holdout, with a warning (a column without values teaches the model nothing
  and makes Evidently fail); when every feature is empty the plan is refused;
- constant features (one distinct value) are kept, with a warning;
- classification: every class needs at least `split.folds` rows in the training part (else a
  fold scores NaN and Optuna completes no trial), and the holdout needs both classes (ROC AUC
  is undefined on one class); with folds that are not stratified (`time`, `kfold`), the very
  folds the search will use are computed and each one's training and validation rows must hold
  both classes (a forward-chaining fold of a rare class can miss it whatever the totals);
- regression: at least 2 rows per validation fold and 2 holdout rows (R² needs 2).
Refusals raise PreconditionError (every problem in one message, naming the keys to change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctloop.ml import training

REGRESSION_ROWS_PER_FOLD = 2  # R² of a validation fold needs at least two rows
BINARY_CLASSES = (0, 1)


class PreconditionError(ValueError):
    """The training plan cannot give a meaningful CV or holdout score; the message names the
    params keys, the batches and the counts."""


@dataclass(frozen=True)
class Part:
    """One side of the plan: its labelled features and target, and how to name it.

    `label` names the rows in messages, e.g. "the training window 2013-01..2013-03" or
    "holdout 2013-04"; `cap` is split.max_train_rows when it down-sampled this part."""

    X: pd.DataFrame
    y: pd.Series
    label: str
    cap: int | None = None


@dataclass(frozen=True)
class PlanCheck:
    """What the check found: features to drop (empty), kept constant ones, and the warnings
    (one line each, printed and recorded on the MLflow run, the model card and the summary)."""

    dropped: tuple[str, ...] = ()
    constant: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def usable_count(column: pd.Series) -> int:
    """Values a model or a drift test can use: not null and, for numbers, finite."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return int(np.isfinite(values).sum())
    return int(column.notna().sum())


def empty_columns(frame: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> list[str]:
    """The `columns` of `frame` without a single usable value (all of them when it has no rows)."""
    return [c for c in columns if usable_count(frame[c]) == 0]


def constant_columns(frame: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> list[str]:
    """The `columns` of `frame` holding exactly one distinct non-null value."""
    return [c for c in columns if frame[c].nunique(dropna=True) == 1]


def check_training_plan(
    task: str,
    folds: int,
    target: str,
    train: Part,
    holdout: Part,
    *,
    cv: str = "stratified",
    seed: int = 0,
) -> PlanCheck:
    """Check a plan (see the module docstring); returns what to drop and the warnings.

    `task` is "classification" (binary, labels 0/1) or "regression"; `folds` is split.folds;
    `cv` the scheme (`Params.cv_kind`: stratified, kfold or time; `train` in time order for
    time) and `seed` the params seed the folds are drawn with. Raises PreconditionError listing
    every refusal (class counts, classes per fold, rows, holdout classes, no usable feature)."""
    features = list(train.X.columns)
    dropped = empty_columns(train.X, features)
    kept = [c for c in features if c not in dropped]
    constant = constant_columns(train.X, kept)
    problems: list[str] = []
    warnings: list[str] = []
    if dropped:
        warnings.append(
            f"feature(s) {_names(dropped)}: rule 'empty_feature': no value in "
            f"{train.label} ({len(train.X)} rows); dropped from training (the model does not "
            "use them)"
        )
    if features and not kept:
        problems.append(
            f"features: every feature is empty in {train.label} ({_names(features)}); "
            "nothing to train on"
        )
    if constant:
        warnings.append(
            f"feature(s) {_names(constant)}: rule 'constant_feature': one value in "
            f"{train.label}; kept (no signal yet; it may vary in later batches)"
        )
    shared = [c for c in kept if c in holdout.X.columns]
    holdout_empty = empty_columns(holdout.X, shared) if len(holdout.X) else []
    if holdout_empty:
        warnings.append(
            f"feature(s) {_names(holdout_empty)}: rule 'empty_feature': no value in "
            f"{holdout.label}; scored as missing"
        )
    if task == "classification":
        problems += _class_problems(folds, target, train, holdout)
        if cv != "stratified" and min(class_counts(train.y).values()) >= folds:
            problems += _fold_class_problems(cv, folds, seed, target, train)
    else:
        problems += _regression_problems(folds, train, holdout, cv)
    if problems:
        raise PreconditionError(
            f"the training plan cannot be cross-validated and scored "
            f"({len(problems)} problem(s)):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return PlanCheck(tuple(dropped), tuple(constant), tuple(warnings))


def class_counts(y: pd.Series) -> dict[int, int]:
    """Rows per class, the binary classes 0 and 1 always present (count 0 when absent)."""
    counts = {c: 0 for c in BINARY_CLASSES}
    for value, n in y.value_counts().items():
        counts[int(value)] = int(n)
    return dict(sorted(counts.items()))


def _class_problems(folds: int, target: str, train: Part, holdout: Part) -> list[str]:
    problems = []
    counts = class_counts(train.y)
    if min(counts.values()) < folds:
        cap = (
            f" (down-sampled to split.max_train_rows={train.cap})" if train.cap is not None else ""
        )
        advice = "lower split.folds or widen the window (split.window_start/window_end)"
        if train.cap is not None:
            advice += " or raise split.max_train_rows"
        problems.append(
            f"split.folds: {folds} folds need at least {folds} rows of each class; "
            f"{train.label}{cap} has {_describe_counts(counts, target)}; {advice}"
        )
    held = {c: n for c, n in class_counts(holdout.y).items() if n}
    if len(held) < 2:
        only = f"only {_class_label(next(iter(held)), target)}" if held else "no class"
        problems.append(
            f"{holdout.label}: {sum(held.values())} labelled row(s), {only}: roc_auc needs "
            "both classes; choose another holdout (split.window_end, split.holdout_periods)"
        )
    return problems


CV_NAMES = {"time": "time-ordered", "kfold": "shuffled k-fold", "stratified": "stratified"}
SHOWN_FOLDS = 3  # folds named in a refusal; the others are counted


def _fold_class_problems(cv: str, folds: int, seed: int, target: str, train: Part) -> list[str]:
    """The folds of a non-stratified scheme whose training or validation rows lack a class
    (the same folds `training.cv_splits` gives the search); one line for all of them."""
    bad = []
    for i, (tr, va) in enumerate(training.cv_splits(cv, folds, seed, train.X, train.y), 1):
        for side, rows in (("trains", tr), ("validates", va)):
            counts = class_counts(train.y.iloc[rows])
            if min(counts.values()) == 0:
                span = f"rows {int(rows.min()) + 1}-{int(rows.max()) + 1}"
                bad.append(f"fold {i} {side} on {span} ({_describe_counts(counts, target)})")
    if not bad:
        return []
    order = " in time order" if cv == "time" else ""
    more = f"; and {len(bad) - SHOWN_FOLDS} more" if len(bad) > SHOWN_FOLDS else ""
    return [
        f"split.cv: {CV_NAMES.get(cv, cv)} folds ({folds}) without both classes in "
        f"{train.label} ({len(train.y)} rows{order}): {'; '.join(bad[:SHOWN_FOLDS])}{more}; "
        "a fold needs both classes to fit and for roc_auc; lower split.folds, widen the window "
        "(split.window_start) or set split.cv: stratified"
    ]


def _regression_problems(folds: int, train: Part, holdout: Part, cv: str) -> list[str]:
    problems = []
    # forward chaining cuts folds + 1 blocks of n // (folds + 1) rows; the first one only trains
    need = REGRESSION_ROWS_PER_FOLD * (folds + 1 if cv == "time" else folds)
    if len(train.y) < need:
        cap = f" (split.max_train_rows={train.cap})" if train.cap is not None else ""
        scheme = f" ({CV_NAMES['time']}: one more block that only trains)" if cv == "time" else ""
        problems.append(
            f"split.folds: {folds} folds{scheme} need at least {need} labelled rows "
            f"({REGRESSION_ROWS_PER_FOLD} per validation fold); {train.label}{cap} has "
            f"{len(train.y)}; lower split.folds or widen the window"
        )
    if len(holdout.y) < REGRESSION_ROWS_PER_FOLD:
        problems.append(
            f"{holdout.label}: {len(holdout.y)} labelled row(s); rmse and r2 need at least "
            f"{REGRESSION_ROWS_PER_FOLD}: choose another holdout (split.window_end, "
            "split.holdout_periods)"
        )
    return problems


def _describe_counts(counts: dict[int, int], target: str) -> str:
    """'3 positives (is_late=1) and 37 negatives (is_late=0)': positives first."""
    order = sorted(counts, key=lambda c: (c != 1, c != 0, c))
    parts = [_class_name(c, target, counts[c]) for c in order]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]


def _class_name(value: int, target: str, n: int) -> str:
    """'3 positives (is_late=1)', '1 negative (is_late=0)', '2 rows (is_late=2)'."""
    noun = {1: "positive", 0: "negative"}.get(value, "row")
    return f"{n} {noun if n == 1 else noun + 's'} ({target}={value})"


def _class_label(value: int, target: str) -> str:
    """'positives (is_late=1)': a class named without a count."""
    noun = {1: "positives", 0: "negatives"}.get(value, "rows")
    return f"{noun} ({target}={value})"


def _names(columns: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"'{c}'" for c in columns)
