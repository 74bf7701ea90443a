"""Evaluation step: the fitted model on the holdout (metrics, curves), its explanation (importance,
SHAP, calibration or intervals), the learning curve and importance over versions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctloop.core.config import Project
from ctloop.io import files, registry, tracking
from ctloop.ml import insights, plots, training
from ctloop.steps import estimate, serving
from ctloop.steps.fit import TrainingData

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from ctloop.ml.insights import Insights


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics of the model, its plot tables, and `baseline`: the primary metric of a
    constant prediction on the same holdout (training.constant_baseline; the first model's floor
    when promotion.min_score is null)."""

    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame] = field(repr=False)
    baseline: float


def evaluate_holdout(
    project: Project,
    run_id: str,
    model: Pipeline,
    holdout: TrainingData,
    tuning: training.TuningResult,
    train: TrainingData,
) -> Evaluation:
    """Holdout metrics, plot tables and the constant baseline's figure on the same holdout (from
    `train`'s target mean for regression); written under reports/ and logged to the run
    (metrics `holdout_*`, `baseline_<metric>`). With `continuous.estimate` the version's
    performance estimator is fitted on the same holdout and kept with the run
    (ctloop/steps/estimate.py)."""
    tracking.use_experiment(project)
    task, metric = holdout.schema.task, project.params.metric
    scores = training.predict_scores(model, holdout.X, task)
    metrics = training.evaluate(task, holdout.y, scores)
    baseline = training.constant_baseline(task, train.y, holdout.y)
    tables = {
        **plots.curve_tables(task, holdout.y.to_numpy(), scores),
        "importance": plots.feature_importance(model),
        "folds": plots.fold_table(tuning.fold_scores, metric),
    }
    reports = project.path("reports")
    files.write_json(
        reports / "metrics.json",
        {
            "holdout": metrics,
            "cv": {
                f"{metric}_mean": tuning.cv_mean,
                f"{metric}_std": tuning.cv_std,
                "n_trials": len(tuning.trials),
                "n_pruned": tuning.n_pruned,
                "trials_planned": tuning.trials_planned,
            },
            "baseline": {metric: baseline, "what": BASELINE_WHAT[task]},
        },
    )
    (reports / "plots").mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(reports / "plots" / f"{name}.csv", index=False)
    tracking.log_metrics(run_id, metrics, prefix="holdout_")
    tracking.log_metrics(run_id, {metric: baseline}, prefix="baseline_")
    tracking.log_figures(run_id, plots.figures(tables, metric))
    estimate.fit_estimator(project, run_id, model, holdout)  # CBPE/DLE for the monitor
    return Evaluation(metrics, tables, baseline)


BASELINE_WHAT = {
    "classification": "a constant score (ROC AUC 0.5)",
    "regression": "the training target's mean for every holdout row",
}


INSIGHTS_DIR = "insights"  # tables on the run: insights/<name>.csv


IMPORTANCE_TABLE = "permutation_importance"


def explain_model(
    project: Project,
    run_id: str,
    model: Pipeline,
    train: TrainingData,
    holdout: TrainingData,
    tuning: training.TuningResult,
) -> Insights:
    """Explainability, uncertainty and fit reports of the run's model (ctloop/ml/insights.py; the
    learning curve apart: `learning_curve`): tables
    as insights/<name>.csv and figures as plots/<name>.png on the run, CSVs under reports/plots;
    the fold models (and the conformal interval) as uncertainty/ artifacts for serving. The slice
    table is published by the gate (register_challenger), which has the champion's figures."""
    cfg = project.params
    started, cpu = time.perf_counter(), time.process_time()
    ins = insights.compute(cfg, train.schema, model, tuning, train.X, train.y, holdout.X, holdout.y)
    tracking.use_experiment(project)
    tables = {k: v for k, v in ins.tables().items() if k != "slices"}
    figures = insights.figures(ins, cfg.insights.top_features)
    publish_tables(project, run_id, tables, {k: figures[k] for k in tables if k in figures})
    if tuning.fold_models:
        half = ins.interval["half_width"] if ins.interval else None
        if half is not None and not np.isfinite(half):
            print(f"conformal interval: too few out-of-fold residuals for {ins.interval}")
            half = None
        serving.log_uncertainty_artifacts(
            run_id, tuning.fold_models, half, cfg.insights.interval_coverage
        )
    cost = {
        "insights_seconds": time.perf_counter() - started,
        "insights_cpu_seconds": time.process_time() - cpu,  # all threads: load-independent
    }
    tracking.log_metrics(run_id, {**ins.metrics(), **cost}, prefix="")
    return ins


LEARNING_CURVE = "learning_curve"


def learning_curve(
    project: Project,
    model: Pipeline,
    train: TrainingData,
    holdout: TrainingData,
    tuning: training.TuningResult,
) -> pd.DataFrame | None:
    """The learning curve of the run's model (`insights.learning_curve`): one refit with the best
    parameters per share of the training rows below 1. The slowest report, and it needs no
    tracking: the flow computes it in its worker process while the main line explains and
    registers; `record_learning_curve` publishes it."""
    return insights.learning_curve(
        project.params,
        train.schema,
        model,
        tuning.best_params,
        train.X,
        train.y,
        holdout.X,
        holdout.y,
    )


def record_learning_curve(project: Project, run_id: str, curve: pd.DataFrame | None) -> None:
    """insights/learning_curve.csv and plots/learning_curve.png on the run, and the CSV under
    reports/plots (nothing when `insights.learning_curve` is empty)."""
    if curve is None or curve.empty:
        return
    tracking.use_experiment(project)
    figure = insights.curve_figure(curve, project.params.metric)
    publish_tables(project, run_id, {LEARNING_CURVE: curve}, {LEARNING_CURVE: figure})


def publish_tables(
    project: Project, run_id: str, tables: dict[str, pd.DataFrame], figures: dict[str, Any]
) -> None:
    """Each table as reports/plots/<name>.csv (dvc plots) and insights/<name>.csv on the run;
    each figure as plots/<name>.png on the run."""
    folder = project.path("reports") / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        path = folder / f"{name}.csv"
        table.to_csv(path, index=False)
        tracking.log_artifact(run_id, path, INSIGHTS_DIR)
    tracking.log_figures(run_id, figures)


def importance_over_versions(project: Project, run_id: str) -> pd.DataFrame:
    """Permutation importance of every registered version (its run's
    insights/permutation_importance.csv; versions without one are left out), by version and
    window end: plots/importance_over_versions.png and insights/ CSV on this run, and
    reports/plots/importance_over_versions.csv."""
    cfg = project.params
    tracking.use_experiment(project)
    tables = []
    for version in registry.versions(cfg.promotion.model_name):
        table = tracking.read_csv_artifact(version.run_id, f"{INSIGHTS_DIR}/{IMPORTANCE_TABLE}.csv")
        if table is not None:
            end = (version.tags.get("ctloop.holdout_batches") or "?").split(",")[-1]
            tables.append((f"v{version.version} {end}", table))
    history = insights.importance_history(tables)
    figure = insights.history_figure(history, cfg.insights.top_features)
    publish_tables(
        project,
        run_id,
        {"importance_over_versions": history},
        {"importance_over_versions": figure},
    )
    return history
