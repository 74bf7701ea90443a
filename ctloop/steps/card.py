"""Model card step: the card of a registered version built from the run's figures
(ctloop/steps/model_card.py) and published to the run, the version and reports/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core import approval
from ctloop.core.config import Project
from ctloop.io import files, registry, tracking
from ctloop.ml import training
from ctloop.steps import drift_report, model_card
from ctloop.steps.evaluate import Evaluation
from ctloop.steps.fit import TrainingData
from ctloop.steps.windows import Window

if TYPE_CHECKING:
    from ctloop.ml.drift import DriftSummary
    from ctloop.ml.insights import Insights
    from ctloop.steps.model_card import ModelCard


def build_model_card(
    project: Project,
    run_id: str,
    window: Window,
    data_version: str,
    train: TrainingData,
    holdout: TrainingData,
    tuning: training.TuningResult,
    evaluation: Evaluation,
    decision: registry.PromotionDecision,
    answer: approval.Approval | None,
    drift: tuple[tuple[str, ...], DriftSummary] | None = None,
    insights: Insights | None = None,
    drift_note: str = "not measured in this run",
) -> ModelCard:
    """The card of the run's version from what the run produced and checked: validation results
    (reports/validation.json), the registered signature, the run's tags; `drift` is the
    (reference batches, summary) of the newest batch; None parts are said so on the card."""
    cfg, metric = project.params, project.params.metric
    name = cfg.promotion.model_name
    tracking.use_experiment(project)
    tags = tracking.run_tags(run_id)
    results = project.path("reports") / "validation.json"
    validation = (
        model_card.ValidationStatus.from_results(json.loads(results.read_text()))
        if results.is_file()
        else None
    )
    return model_card.ModelCard(
        model_name=name,
        version=decision.challenger_version,
        run_id=run_id,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        task=cfg.data.task,
        metric=metric,
        greater_is_better=cfg.greater_is_better,
        family=cfg.model.family,
        data_version=data_version,
        train_batches=window.train,
        holdout_batches=window.holdout,
        train_rows=len(train.y),
        holdout_rows=len(holdout.y),
        unlabelled_rows=train.unlabelled_rows + holdout.unlabelled_rows,
        cv_kind=cfg.cv_kind,
        folds=cfg.split.folds,
        cv_mean=tuning.cv_mean,
        cv_std=tuning.cv_std,
        n_trials=len(tuning.trials),
        n_pruned=tuning.n_pruned,
        budget_note=tuning.budget_note,
        best_params=dict(tuning.best_params),
        holdout=dict(evaluation.metrics),
        decision=decision,
        seed=cfg.seed,
        git_commit=tags.get("ctloop.git_commit", "unknown"),
        intended_use=cfg.model_card.intended_use,
        limitations=tuple(cfg.model_card.limitations),
        approval=answer,
        validation=validation,
        signature_logged=tracking.has_signature(name, decision.challenger_version),
        slice_columns=tuple(cfg.slices.columns),
        slice_min_size=cfg.slices.min_size,
        slice_tolerance=cfg.slices.tolerance,
        importance=None if insights is None else insights.importance,
        shap=None if insights is None else insights.shap,
        top_features=cfg.insights.top_features,
        brier=evaluation.metrics.get("brier") if insights is None else insights.brier,
        interval=None if insights is None else insights.interval,
        drift=None if drift is None else _drift_status(project, run_id, window, drift, tags),
        drift_note=drift_note,
        plan_warnings=train.warnings,
    )


def _drift_status(
    project: Project,
    run_id: str,
    window: Window,
    drift: tuple[tuple[str, ...], DriftSummary],
    tags: dict[str, str],
) -> model_card.DriftStatus:
    """The card's drift: the summary, the report's file (the run's tag) and its page over HTTP
    (the MLflow UI's page of the copy logged on the run)."""
    report = tags.get(tracking.DRIFT_REPORT_TAG)
    url = None if report is None else drift_report.report_url(project, run_id, Path(report))
    return model_card.DriftStatus.from_summary(
        window.current or "-", drift[0], drift[1], report, url
    )


def publish_model_card(project: Project, run_id: str, card: ModelCard) -> Path:
    """reports/model_card.md, `model_card.md` of the run, and the registered version's
    description (what the MLflow UI shows on the version page)."""
    text = card.render()
    path = project.path("reports") / "model_card.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text_atomic(path, text)
    tracking.use_experiment(project)
    tracking.log_text(run_id, text, "model_card.md")
    tracking.set_version_description(card.model_name, card.version, card.for_registry())
    return path


def write_model_card(
    project: Project,
    run_id: str,
    window: Window,
    data_version: str,
    train: TrainingData,
    holdout: TrainingData,
    tuning: training.TuningResult,
    evaluation: Evaluation,
    decision: registry.PromotionDecision,
    answer: approval.Approval | None,
    drift: tuple[tuple[str, ...], DriftSummary] | None = None,
    insights: Insights | None = None,
    drift_note: str = "not measured in this run",
) -> ModelCard:
    """Build the version's card (build_model_card) and publish it (publish_model_card)."""
    card = build_model_card(
        project,
        run_id,
        window,
        data_version,
        train,
        holdout,
        tuning,
        evaluation,
        decision,
        answer,
        drift,
        insights,
        drift_note=drift_note,
    )
    publish_model_card(project, run_id, card)
    return card
