"""What a trained version relies on, how sure it is, how it fits and where it is weak (pure: no
Prefect, no MLflow).

Permutation importance and TreeSHAP on a seeded holdout sample; calibration and Brier score
(classification); split-conformal intervals from the out-of-fold residuals of the tuning, or,
on time-ordered data, from a forward split of the newest training rows (regression); train vs
validation per trial and a learning curve (under/overfitting); metrics per slice of the
holdout. Every table is a DataFrame, so it goes to MLflow, `dvc plots` and the model card alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ctloop.core import promotion
from ctloop.core.config import Params
from ctloop.core.schema import Schema
from ctloop.core.thresholds import Change
from ctloop.ml import training

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.pipeline import Pipeline

MISSING = "<missing>"
SLICE_COLUMNS = [
    "column",
    "value",
    "n",
    "challenger",
    "champion",
    "worse_by",  # challenger worse than champion, metric units (+: worse; NaN: not comparable)
    "worse_by_share",  # worse_by / |champion| (the unit of slices.tolerance)
    "gated",
    "regression",
]


@dataclass(frozen=True, eq=False)
class Insights:
    """The reports of one trained version; tables are None when they do not apply (SHAP for a
    non-XGBoost model, calibration for regression, intervals for classification)."""

    metric: str
    task: str
    importance: pd.DataFrame  # feature, importance_mean, importance_std (permutation, holdout)
    shap: pd.DataFrame | None  # feature, mean_abs_shap
    calibration: pd.DataFrame | None  # bin, bin_low, bin_high, n, mean_predicted, fraction_positive
    brier: float | None
    # coverage_target, half_width, coverage_holdout, calibration_rows, holdout_rows
    interval: dict[str, float] | None
    trials: pd.DataFrame  # trial, state, folds, train, validation, gap
    slices: pd.DataFrame  # column, value, n, challenger, champion, gated, regression
    sample_rows: int = 0  # holdout rows behind importance and SHAP
    seconds: dict[str, float] = field(default_factory=dict)  # cost of each part

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table that applies, by file stem (`insights/<stem>.csv`, reports/plots)."""
        named = {
            "permutation_importance": self.importance,
            "shap_importance": self.shap,
            "calibration": self.calibration,
            "train_vs_validation": self.trials,
            "slices": self.slices,
        }
        return {k: v for k, v in named.items() if v is not None}

    def metrics(self) -> dict[str, float]:
        """Scalar figures for the run's metrics."""
        out: dict[str, float] = {}  # (the Brier score is already holdout_brier)
        if self.interval is not None:
            out["interval_half_width"] = self.interval["half_width"]
            out["interval_coverage_target"] = self.interval["coverage_target"]
            out["holdout_interval_coverage"] = self.interval["coverage_holdout"]
            out["interval_calibration_rows"] = self.interval["calibration_rows"]
        return out


# --- sampling and scoring --------------------------------------------------------------


def sample_rows(
    X: pd.DataFrame, y: pd.Series, n: int | None, seed: int
) -> tuple[pd.DataFrame, pd.Series]:
    """A seeded sample of at most `n` rows (all of them when n is None or larger), in order."""
    if n is None or len(X) <= n:
        return X, y
    rows = np.sort(np.random.default_rng(seed).choice(len(X), size=n, replace=False))
    return X.iloc[rows], y.iloc[rows]


def score(metric: str, y: np.ndarray | pd.Series, scores: np.ndarray) -> float:
    """The primary metric on one set of rows; NaN when undefined (ROC AUC of one class)."""
    from sklearn.metrics import roc_auc_score, root_mean_squared_error

    y = np.asarray(y)
    if metric == "roc_auc":
        return float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan")
    if metric == "rmse":
        return float(root_mean_squared_error(y, scores)) if len(y) else float("nan")
    raise ValueError(f"unknown metric '{metric}'")


_SCORERS = {"roc_auc": "roc_auc", "rmse": "neg_root_mean_squared_error"}


# --- importance ------------------------------------------------------------------------


def permutation_table(
    model: Pipeline, X: pd.DataFrame, y: pd.Series, metric: str, repeats: int, seed: int
) -> pd.DataFrame:
    """Drop of the primary metric when one raw input column is shuffled (whole pipeline, so the
    preprocessing is included); positive = the model relies on the column."""
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        model, X, y, scoring=_SCORERS[metric], n_repeats=repeats, random_state=seed, n_jobs=1
    )
    frame = pd.DataFrame(
        {
            "feature": list(X.columns),
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return frame.sort_values("importance_mean", ascending=False, ignore_index=True)


def tree_shap_table(model: Pipeline, X: pd.DataFrame) -> pd.DataFrame | None:
    """Mean |SHAP value| per input column from XGBoost's own TreeSHAP (`pred_contribs`); None
    for other model families."""
    if not training._is_xgboost(model):
        return None
    import xgboost

    pre, estimator = model.named_steps["preprocess"], model.named_steps["model"]
    contribs = estimator.get_booster().predict(
        xgboost.DMatrix(pre.transform(X)), pred_contribs=True
    )
    contribs = np.asarray(contribs)
    if contribs.ndim == 3:  # multi-output: one block per class
        contribs = contribs[:, -1, :]
    values = np.abs(contribs[:, :-1]).mean(axis=0)  # the last column is the bias
    frame = pd.DataFrame({"feature": list(pre.get_feature_names_out()), "mean_abs_shap": values})
    return frame.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


# --- uncertainty -----------------------------------------------------------------------


def calibration_table(y: np.ndarray | pd.Series, scores: np.ndarray, bins: int) -> pd.DataFrame:
    """Observed share of positives against the mean predicted probability, per equal-width bin
    of the score (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "score": scores, "y": np.asarray(y, dtype=float)})
    table = frame.groupby("bin").agg(
        n=("y", "size"), mean_predicted=("score", "mean"), fraction_positive=("y", "mean")
    )
    table = table.reset_index()
    table.insert(1, "bin_low", edges[table["bin"]])
    table.insert(2, "bin_high", edges[table["bin"] + 1])
    return table


def brier(y: np.ndarray | pd.Series, scores: np.ndarray) -> float:
    return float(np.mean((np.asarray(scores, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def conformal_half_width(residuals: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ceil((n+1)·coverage)-th smallest |residual| (infinite when
    there are too few residuals for that coverage). NaN residuals are ignored.

    Vovk, Gammerman & Shafer (2005), *Algorithmic learning in a random world*; Lei, G'Sell,
    Rinaldo, Tibshirani & Wasserman (2018), "Distribution-free predictive inference for
    regression" (JASA): `prediction ± half_width` covers a new target with probability at least
    `coverage` when residuals and new point are exchangeable."""
    r = np.sort(np.abs(residuals[~np.isnan(residuals)]))
    k = math.ceil((len(r) + 1) * coverage)
    return float(r[k - 1]) if 0 < k <= len(r) else float("inf")


def min_calibration_rows(coverage: float) -> int:
    """Fewest residuals giving a finite split-conformal half-width: n with ceil((n+1)·c) <= n."""
    n = 1
    while math.ceil((n + 1) * coverage) > n:
        n += 1
    return n


def forward_split_rows(train_rows: int, holdout_rows: int, coverage: float) -> int:
    """Rows of the time-ordered calibration split: the holdout's row count (the same horizon),
    at least `min_calibration_rows(coverage)`, at most half the training rows."""
    return min(max(holdout_rows, min_calibration_rows(coverage)), train_rows // 2)


def forward_residuals(
    params: Params,
    schema: Schema,
    best_params: dict[str, training.ParamValue],
    X: pd.DataFrame,
    y: pd.Series,
    rows: int,
) -> np.ndarray:
    """Residuals (target units) of the latest `rows` training rows (X, y in time order), predicted
    by one fit with the best parameters on the rows before them.

    Split-conformal with a time-ordered split (Lei et al. 2018: proper training set, then
    calibration set): the calibration rows come right after the rows their model saw, `rows`
    of them like the holdout after the final model, so their errors include the drift of one
    holdout's horizon, which residuals of shuffled folds leave out. Using only the newest
    residuals is the simplest case of the recency weights of Barber, Candès, Ramdas &
    Tibshirani (2023), "Conformal prediction beyond exchangeability" (Ann. Statist.). Costs one
    fit on len(X) - rows rows."""
    cut = len(X) - rows
    pipe = training.make_pipeline(schema, params.model.family, best_params, params.seed)
    training.fit_pipeline(pipe, X.iloc[:cut], y.iloc[:cut])
    predicted = training.predict_scores(pipe, X.iloc[cut:], schema.task)
    return np.asarray(y.iloc[cut:], dtype=float) - predicted


def conformal_interval(
    y_train: np.ndarray | pd.Series,
    oof_scores: np.ndarray,
    y_holdout: np.ndarray | pd.Series,
    holdout_scores: np.ndarray,
    coverage: float,
) -> dict[str, float]:
    """Intervals `prediction ± half_width` from the out-of-fold residuals of the tuning, with the
    share of holdout targets they actually cover (see `interval_from_residuals`)."""
    residuals = np.asarray(y_train, dtype=float) - np.asarray(oof_scores, dtype=float)
    return interval_from_residuals(residuals, y_holdout, holdout_scores, coverage)


def interval_from_residuals(
    residuals: np.ndarray,
    y_holdout: np.ndarray | pd.Series,
    holdout_scores: np.ndarray,
    coverage: float,
) -> dict[str, float]:
    """Split-conformal intervals from calibration residuals, and what they did on the holdout.
    Keys: coverage_target, half_width (target units; inf when too few residuals),
    coverage_holdout (share of holdout targets inside; NaN without holdout rows),
    calibration_rows (residuals used, NaN ones left out) and holdout_rows."""
    half = conformal_half_width(residuals, coverage)
    covered = np.abs(np.asarray(y_holdout, dtype=float) - holdout_scores) <= half
    return {
        "coverage_target": coverage,
        "half_width": half,
        "coverage_holdout": float(np.mean(covered)) if len(covered) else float("nan"),
        "calibration_rows": float(np.count_nonzero(~np.isnan(residuals))),
        "holdout_rows": float(len(covered)),
    }


# --- under/overfitting -----------------------------------------------------------------


def trials_table(trials: Sequence[training.TrialRecord], greater_is_better: bool) -> pd.DataFrame:
    """Mean train and validation score of each trial's folds; `gap` > 0 = better on its own
    training rows than on unseen ones (overfitting grows with it)."""
    rows = []
    for rec in trials:
        train = float(np.mean(rec.train_scores)) if rec.train_scores else float("nan")
        val = rec.mean
        rows.append(
            {
                "trial": rec.number,
                "state": rec.state,
                "folds": len(rec.fold_scores),
                "train": train,
                "validation": val,
                "gap": train - val if greater_is_better else val - train,
            }
        )
    columns = ["trial", "state", "folds", "train", "validation", "gap"]
    return pd.DataFrame(rows, columns=columns)


def learning_curve(
    params: Params,
    schema: Schema,
    model: Pipeline,
    best_params: dict[str, training.ParamValue],
    X: pd.DataFrame,
    y: pd.Series,
    X_holdout: pd.DataFrame,
    y_holdout: pd.Series,
) -> pd.DataFrame | None:
    """Holdout and own-training-rows score of one seeded fit per share of the training rows
    (`insights.learning_curve`; nested subsets). Share 1 is the final model itself: no refit.
    Training scores use at most `insights.sample_rows` rows of each subset."""
    shares = sorted(set(params.insights.learning_curve))
    if not shares:
        return None
    order = np.random.default_rng(params.seed).permutation(len(X))
    rows = []
    for share in shares:
        n = max(2, round(share * len(X)))
        if n >= len(X):
            pipe, picked = model, np.arange(len(X))
        else:
            picked = np.sort(order[:n])
            if schema.task == "classification" and y.iloc[picked].nunique() < 2:
                continue  # too few rows for both classes: no fit possible
            pipe = training.make_pipeline(schema, params.model.family, best_params, params.seed)
            training.fit_pipeline(pipe, X.iloc[picked], y.iloc[picked])
        Xs, ys = sample_rows(
            X.iloc[picked], y.iloc[picked], params.insights.sample_rows, params.seed
        )
        rows.append(
            {
                "share": share,
                "rows": len(picked),
                "train": score(params.metric, ys, training.predict_scores(pipe, Xs, schema.task)),
                "holdout": score(
                    params.metric, y_holdout, training.predict_scores(pipe, X_holdout, schema.task)
                ),
            }
        )
    return pd.DataFrame(rows, columns=["share", "rows", "train", "holdout"])


# --- slices ----------------------------------------------------------------------------


def slice_scores(
    X: pd.DataFrame,
    y: pd.Series,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    columns: Sequence[str],
    metric: str,
    min_size: int,
) -> tuple[promotion.SliceScore, ...]:
    """The metric of challenger (and champion, when given) per value of each slice column; a
    slice gates when it has at least `min_size` rows (and both classes, for ROC AUC)."""
    out = []
    y_arr = np.asarray(y)
    for column in columns:
        if column not in X.columns:
            raise ValueError(
                f"slices.columns: '{column}' is not a feature of the data "
                f"(features: {', '.join(X.columns)})"
            )
        keys = X[column].astype("string").fillna(MISSING).to_numpy()
        values, counts = np.unique(keys, return_counts=True)
        for value in values[np.argsort(-counts, kind="stable")]:
            rows = keys == value
            ch = score(metric, y_arr[rows], challenger[rows])
            cp = score(metric, y_arr[rows], champion[rows]) if champion is not None else None
            defined = not math.isnan(ch)
            out.append(
                promotion.SliceScore(
                    column,
                    str(value),
                    int(rows.sum()),
                    ch if defined else None,
                    None if cp is None or math.isnan(cp) else cp,
                    gated=defined and int(rows.sum()) >= min_size,
                )
            )
    return tuple(out)


def slice_table(
    slices: Sequence[promotion.SliceScore],
    greater_is_better: bool,
    tolerance: float,
    confidence: float | None = None,
) -> pd.DataFrame:
    """The slices as a table: how much worse the challenger is than the champion on each, in
    metric units and as a share of the champion's figure (`tolerance`'s unit); `regression`
    marks those the promotion gate refuses (`confidence`: the bootstrap gate's, None: the point
    gate; ctloop/core/promotion.py slice_regressions)."""
    refused = {
        s.label
        for s in promotion.slice_regressions(slices, greater_is_better, tolerance, confidence)
    }
    rows = []
    for s in slices:
        change = (
            None
            if s.challenger is None or s.champion is None
            else Change(s.challenger, s.champion, greater_is_better)
        )
        rows.append(
            {
                "column": s.column,
                "value": s.value,
                "n": s.n,
                "challenger": np.nan if s.challenger is None else s.challenger,
                "champion": np.nan if s.champion is None else s.champion,
                "worse_by": np.nan if change is None else change.worsening,
                "worse_by_share": np.nan if change is None else change.relative,
                "gated": s.gated,
                "regression": s.label in refused,
            }
        )
    return pd.DataFrame(rows, columns=SLICE_COLUMNS)


# --- everything ------------------------------------------------------------------------


def compute(
    params: Params,
    schema: Schema,
    model: Pipeline,
    tuning: training.TuningResult,
    X_train: pd.DataFrame,
    y_train: pd.Series,
    X_holdout: pd.DataFrame,
    y_holdout: pd.Series,
    champion_scores: np.ndarray | None = None,
) -> Insights:
    """All reports of one trained version but the learning curve, whose refits run apart
    (`learning_curve`); the holdout is the one the gate uses."""
    cfg, metric, seed = params.insights, params.metric, params.seed
    clock: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        clock[name] = round(now - started, 3)
        started = now

    scores = training.predict_scores(model, X_holdout, schema.task)
    Xs, ys = sample_rows(X_holdout, y_holdout, cfg.sample_rows, seed)
    importance = permutation_table(model, Xs, ys, metric, cfg.permutation_repeats, seed)
    lap("permutation_importance")
    shap = tree_shap_table(model, sample_rows(Xs, ys, cfg.shap_rows, seed)[0]) if cfg.shap else None
    lap("shap")
    calibration = bs = interval = None
    if schema.task == "classification":
        calibration = calibration_table(y_holdout, scores, cfg.calibration_bins)
        bs = brier(y_holdout, scores)
    elif params.cv_kind == "time":  # rows in time order: calibrate on the newest ones
        rows = forward_split_rows(len(X_train), len(y_holdout), cfg.interval_coverage)
        residuals = forward_residuals(params, schema, tuning.best_params, X_train, y_train, rows)
        interval = interval_from_residuals(residuals, y_holdout, scores, cfg.interval_coverage)
    elif tuning.oof_scores is not None:  # exchangeable rows: every out-of-fold residual
        interval = conformal_interval(
            y_train, tuning.oof_scores, y_holdout, scores, cfg.interval_coverage
        )
    lap("calibration_intervals")
    slices = slice_scores(
        X_holdout,
        y_holdout,
        scores,
        champion_scores,
        params.slices.columns,
        metric,
        params.slices.min_size,
    )
    lap("slices")
    return Insights(
        metric=metric,
        task=schema.task,
        importance=importance,
        shap=shap,
        calibration=calibration,
        brier=bs,
        interval=interval,
        trials=trials_table(tuning.trials, params.greater_is_better),
        slices=slice_table(slices, params.greater_is_better, params.slices.tolerance),
        sample_rows=len(Xs),
        seconds=clock,
    )


# --- importance across versions --------------------------------------------------------


def importance_history(tables: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Long table (point, order, feature, importance) of permutation importances across versions;
    `point` labels the version (e.g. `v3 2013-06`), in the given order."""
    parts = [
        pd.DataFrame(
            {
                "point": label,
                "order": i,
                "feature": t["feature"],
                "importance": t["importance_mean"],
            }
        )
        for i, (label, t) in enumerate(tables)
    ]
    if not parts:
        return pd.DataFrame(columns=["point", "order", "feature", "importance"])
    return pd.concat(parts, ignore_index=True)


# --- figures ---------------------------------------------------------------------------


def _figure() -> tuple[Figure, object]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    return fig, fig.subplots()


def figures(ins: Insights, top: int) -> dict[str, Figure]:
    """One figure per report (`plots/<name>.png` on the run)."""
    out: dict[str, Figure] = {
        "permutation_importance": _bars(
            ins.importance.head(top),
            "importance_mean",
            "importance_std",
            f"drop of holdout {ins.metric} when shuffled",
            f"Permutation importance ({ins.sample_rows} holdout rows)",
        )
    }
    if ins.shap is not None:
        out["shap_importance"] = _bars(
            ins.shap.head(top),
            "mean_abs_shap",
            None,
            "mean |SHAP value| (log-odds / target)",
            "TreeSHAP importance",
        )
    if ins.calibration is not None:
        out["calibration"] = _calibration(ins.calibration, ins.brier)
    if not ins.trials.empty:
        out["train_vs_validation"] = _trials(ins.trials, ins.metric)
    if not ins.slices.empty:
        out["slices"] = slices_figure(ins.slices, ins.metric)
    return out


def _bars(table: pd.DataFrame, value: str, err: str | None, xlabel: str, title: str) -> Figure:
    fig, ax = _figure()
    rows = table.iloc[::-1]
    ax.barh(rows["feature"], rows[value], xerr=None if err is None else rows[err])
    ax.set(xlabel=xlabel, title=title)
    return fig


def _calibration(table: pd.DataFrame, brier_score: float | None) -> Figure:
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(table["mean_predicted"], table["fraction_positive"], marker="o", label="model")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed share of positives",
        title=f"Calibration (holdout, Brier {brier_score:.4f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend()
    return fig


def _trials(table: pd.DataFrame, metric: str) -> Figure:
    fig, ax = _figure()
    ax.plot(table["trial"], table["train"], marker="o", label="train (fold fits)")
    ax.plot(table["trial"], table["validation"], marker="o", label="validation (folds)")
    pruned = table[table["state"] == "PRUNED"]
    ax.scatter(pruned["trial"], pruned["validation"], marker="x", color="black", label="pruned")
    ax.set(xlabel="trial", ylabel=metric, title=f"Train vs validation {metric} per trial")
    ax.legend()
    return fig


def curve_figure(table: pd.DataFrame, metric: str) -> Figure:
    """The learning curve (`learning_curve`): score against training rows, own rows and holdout."""
    fig, ax = _figure()
    ax.plot(table["rows"], table["train"], marker="o", label="own training rows")
    ax.plot(table["rows"], table["holdout"], marker="o", label="holdout")
    ax.set(xlabel="training rows", ylabel=metric, title=f"Learning curve ({metric})")
    ax.legend()
    return fig


def slices_figure(table: pd.DataFrame, metric: str) -> Figure:
    """One panel per slice column: challenger (and champion) per value; refused slices in red."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    columns = list(dict.fromkeys(table["column"]))
    height = max(3.0, 0.25 * len(table) + 1.5 * len(columns))
    fig = Figure(figsize=(7, height), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(columns), 1, squeeze=False)[:, 0])
    for ax, column in zip(axes, columns, strict=True):
        part = table[table["column"] == column].iloc[::-1]
        pos = np.arange(len(part))
        labels = [f"{v} (n={n})" for v, n in zip(part["value"], part["n"], strict=True)]
        colors = [
            "tab:red" if r else ("tab:blue" if g else "lightsteelblue")
            for r, g in zip(part["regression"], part["gated"], strict=True)
        ]
        ax.barh(pos + 0.2, part["challenger"], height=0.4, color=colors, label="challenger")
        if part["champion"].notna().any():
            ax.barh(pos - 0.2, part["champion"], height=0.4, color="grey", label="champion")
        ax.set_yticks(pos, labels)
        ax.set(
            xlabel=metric, title=f"{metric} per {column} (holdout; pale: not gated, red: refused)"
        )
        ax.legend(loc="lower right")
    return fig


def history_figure(history: pd.DataFrame, top: int) -> Figure:
    """Permutation importance per feature across versions (the `top` of the newest version)."""
    fig, ax = _figure()
    if history.empty:
        ax.set(title="Permutation importance across versions (none recorded yet)")
        return fig
    newest = history[history["order"] == history["order"].max()]
    keep = newest.nlargest(top, "importance")["feature"]
    wide = history[history["feature"].isin(keep)].pivot_table(
        index=["order", "point"], columns="feature", values="importance"
    )
    x = np.arange(len(wide))
    for feature in keep:
        if feature in wide.columns:
            ax.plot(x, wide[feature], marker="o", label=feature)
    ax.set_xticks(x, [p for _, p in wide.index], rotation=30, ha="right")
    ax.set(
        xlabel="version (window end)",
        ylabel="permutation importance",
        title="Permutation importance across versions",
    )
    ax.legend(fontsize="small", ncols=2)
    return fig
