"""Evaluation curves and importances: as tables (for `dvc plots`) and figures (for MLflow)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.pipeline import Pipeline


def curve_tables(task: str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, pd.DataFrame]:
    """ROC and PR curves (classification) or predicted-vs-actual residuals (regression)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if task == "classification":
        fpr, tpr, _ = roc_curve(y_true, scores)
        precision, recall, _ = precision_recall_curve(y_true, scores)
        return {
            "roc": _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr})),
            "precision_recall": _thin(pd.DataFrame({"recall": recall, "precision": precision})),
        }
    actual = np.asarray(y_true, dtype=float)
    frame = pd.DataFrame({"actual": actual, "predicted": scores, "residual": actual - scores})
    return {"residuals": frame.sample(min(len(frame), 2000), random_state=0).sort_index()}


def _thin(frame: pd.DataFrame, points: int = 500) -> pd.DataFrame:
    """Keep at most `points` rows, evenly spaced, so plot files stay small."""
    if len(frame) <= points:
        return frame.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(frame) - 1, points).astype(int))
    return frame.iloc[idx].reset_index(drop=True)


def feature_importance(pipeline: Pipeline) -> pd.DataFrame:
    """Model-native importance per input column (gain for trees, |coef| for linear models)."""
    pre, model = pipeline.named_steps["preprocess"], pipeline.named_steps["model"]
    names = list(pre.get_feature_names_out())
    if hasattr(model, "feature_importances_"):
        values = np.asarray(model.feature_importances_, dtype=float)
    else:
        values = np.abs(np.ravel(model.coef_)).astype(float)
    frame = pd.DataFrame({"feature": names, "importance": values})
    return frame.sort_values("importance", ascending=False, ignore_index=True)


def fold_table(fold_scores: tuple[float, ...], metric: str) -> pd.DataFrame:
    return pd.DataFrame({"fold": range(1, len(fold_scores) + 1), metric: fold_scores})


def figures(tables: dict[str, pd.DataFrame], metric: str) -> dict[str, Figure]:
    """One matplotlib figure per table (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out: dict[str, Figure] = {}
    for name, table in tables.items():
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        if name == "roc":
            ax.plot(table["fpr"], table["tpr"])
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
        elif name == "precision_recall":
            ax.plot(table["recall"], table["precision"])
            ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
        elif name == "residuals":
            ax.scatter(table["predicted"], table["residual"], s=4, alpha=0.5)
            ax.axhline(0, color="grey", linestyle="--")
            ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (holdout)")
        elif name == "importance":
            top = table.head(20).iloc[::-1]
            ax.barh(top["feature"], top["importance"])
            ax.set(xlabel="importance", title="Feature importance")
        elif name == "folds":
            ax.bar(table["fold"].astype(str), table[metric])
            ax.set(xlabel="fold", ylabel=metric, title=f"CV {metric} per fold (best trial)")
        out[name] = fig
    return out
