"""Registration step: the challenger registered in MLflow, the gate's decision
(ctloop/core/promotion.py)
taken with slices compared against the champion, and the approved decision applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ctloop.core import approval, names, promotion
from ctloop.core.config import Project
from ctloop.core.faults import crash_point
from ctloop.core.thresholds import first_model_floor
from ctloop.io import files, registry, tracking
from ctloop.ml import comparison, insights, training
from ctloop.steps import shadow
from ctloop.steps.evaluate import Evaluation, publish_tables
from ctloop.steps.fit import TrainingData
from ctloop.steps.windows import Window

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def register_challenger(
    project: Project,
    run_id: str,
    model: Pipeline,
    holdout: TrainingData,
    evaluation: Evaluation,
    window: Window,
    fingerprint: str | None = None,
) -> registry.PromotionDecision:
    """Register the challenger and score the champion on the same holdout: the gate's decision,
    not yet applied (an approval step may sit between the two).

    With `fingerprint`, a version that a failed training run of the same data, params and code
    registered is adopted instead of registering an identical one (`find_failed_registration`);
    when that version already holds `champion`, its recorded decision is returned as it was."""
    cfg, metric = project.params, project.params.metric
    name = cfg.promotion.model_name
    tracking.use_experiment(project)
    adopted = find_failed_registration(project, fingerprint) if fingerprint else None
    if adopted is None:
        example = holdout.X.head(5)
        scores = training.predict_scores(model, example, holdout.schema.task)
        version = tracking.log_model(run_id, model, example, scores, name)
        crash_point("registration")  # tests only (CTLOOP_CRASH_AT): version without its tags
    else:
        version = adopted.version
        registry.adopt_version(name, version, run_id, adopted.run_id)
        print(
            f"v{version} was registered by the failed run {adopted.run_id} with the same data, "
            "params and code: this run finishes it (no second version)"
        )
    champion = registry.get_alias(name, registry.CHAMPION)
    if adopted is not None and champion is not None and str(champion.version) == version:
        recorded = registry.PromotionDecision.from_tags(adopted.tags)
        if recorded is not None:
            return recorded
    registry.mark_challenger(
        name,
        version,
        {
            registry.RUN_TAG: run_id,
            tracking.SUITE_REFERENCE_TAG: ",".join(window.train),
            "ctloop.holdout_batches": ",".join(window.holdout),
            f"ctloop.holdout_{metric}": str(evaluation.metrics[metric]),
        },
    )
    champion_scores = _champion_scores(name, champion, holdout) if champion else None
    champion_score = (
        None
        if champion_scores is None
        else training.evaluate(holdout.schema.task, holdout.y, champion_scores)[metric]
    )
    floor = first_model_floor(cfg.promotion.min_score, evaluation.baseline)
    challenger_scores = training.predict_scores(model, holdout.X, holdout.schema.task)
    slices = compare_slices(project, challenger_scores, holdout, champion_scores)
    interval = None
    if cfg.promotion.test == promotion.BOOTSTRAP and champion_scores is not None:
        interval, slices = paired_test(project, challenger_scores, champion_scores, holdout, slices)
    decision = promotion.decide(
        metric,
        version,
        evaluation.metrics[metric],
        str(champion.version) if champion else None,
        champion_score,
        cfg.greater_is_better,
        cfg.promotion.margin,
        floor.value,
        slices=slices,
        slice_tolerance=cfg.slices.tolerance,
        floor_origin=floor.origin,
        test=cfg.promotion.test,
        interval=interval,
    )
    publish_slices(project, run_id, decision)
    return decision


@dataclass(frozen=True)
class FailedRegistration:
    """A READY version registered by a FAILED training run (`run_id`), with its tags."""

    run_id: str
    version: str
    tags: dict[str, str]


def find_failed_registration(project: Project, fingerprint: str) -> FailedRegistration | None:
    """The newest READY version registered by a FAILED training run (an exception after
    registration, or a killed process once reconciled) with `fingerprint`: the same data,
    params and code. A re-run finishes that version instead of registering a duplicate."""
    exp = tracking.use_experiment(project)
    name = project.params.promotion.model_name
    for failed in tracking.finished_runs_tagged(
        exp, tracking.FINGERPRINT_TAG, fingerprint, status="FAILED"
    ):
        for version in registry.registered_by(name, failed):
            return FailedRegistration(failed, str(version.version), dict(version.tags or {}))
    return None


def apply_promotion(
    project: Project,
    run_id: str,
    decision: registry.PromotionDecision,
    answer: approval.Approval | None = None,
) -> registry.PromotionDecision:
    """Apply the approval (ctloop/core/approval.py; None: nobody asked), record the final decision
    and the approval on the version and run, and move `champion` when it promotes; a challenger
    kept back goes to shadow when `promotion.shadow_batches` > 0 (ctloop/steps/shadow.py)."""
    answer = answer or no_reviewer(project, decision)
    gate, decision = decision, approval.resolve(decision, answer)
    tracking.use_experiment(project)
    name = project.params.promotion.model_name
    tracking.set_version_tags(name, decision.challenger_version, answer.tags())
    registry.apply_decision(name, decision)
    tracking.set_tags(
        run_id,
        {
            "ctloop.promotion": "promoted" if decision.promote else "rejected",
            "ctloop.promotion_reason": decision.reason,
            "ctloop.model_version": decision.challenger_version,
            approval.TAG: answer.outcome,
        },
    )
    describe_run(run_id, decision)
    files.write_json(project.path("reports") / "promotion.json", decision.to_dict())
    shadow.enter_shadow(project, run_id, gate, decision)  # promotion.shadow_batches > 0 only
    return decision


def describe_run(run_id: str, decision: registry.PromotionDecision) -> None:
    """Name the training run after its version (`v3 train 2013-01..06 manual`: the MLflow runs
    table shows about 20 characters) and put the decision in its description."""
    tags = tracking.run_tags(run_id)
    train = tags.get(tracking.SUITE_REFERENCE_TAG, "").split(",")
    holdout = tags.get("ctloop.holdout_batches", "").split(",")
    if not train[0] or not holdout[-1]:
        return  # not a training run of the flow (nothing to name it after)
    trigger = tags.get("ctloop.trigger")
    version = decision.challenger_version
    verdict = "promoted to champion" if decision.promote else "kept (not promoted)"
    tracking.rename_run(run_id, names.training_run(version, train[0], holdout[-1], trigger))
    note = names.training_note(
        train[0], holdout[-1], trigger, "", version, f"{verdict}: {decision.reason}"
    )
    tracking.set_note(run_id, note)


def no_reviewer(project: Project, decision: registry.PromotionDecision) -> approval.Approval:
    """The approval of a step that cannot ask anyone (a DVC stage): not required when approval
    is off or the gate refuses, otherwise unavailable (a veto: the version stays challenger)."""
    if not approval.needed(project.params.promotion.require_approval, decision):
        return approval.not_required()
    return approval.unavailable("this step cannot pause for a reviewer; run the train-model flow")


def _champion_scores(name: str, champion: Any, holdout: TrainingData) -> np.ndarray | None:
    """The champion's scores of the challenger's holdout; None when it cannot score this data."""
    model = registry.load_version(name, champion.version)
    try:
        return training.predict_scores(model, holdout.X, holdout.schema.task)
    except (KeyError, ValueError) as err:
        print(f"champion v{champion.version} cannot score the holdout ({err}); comparing to floor")
        return None


def compare_slices(
    project: Project,
    challenger_scores: np.ndarray,
    holdout: TrainingData,
    champion_scores: np.ndarray | None,
) -> tuple[promotion.SliceScore, ...]:
    """Challenger (and champion) metric per value of each `slices.columns` column."""
    cfg = project.params
    return insights.slice_scores(
        holdout.X,
        holdout.y,
        challenger_scores,
        champion_scores,
        cfg.slices.columns,
        cfg.metric,
        cfg.slices.min_size,
    )


def paired_test(
    project: Project,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray,
    holdout: TrainingData,
    slices: tuple[promotion.SliceScore, ...],
) -> tuple[promotion.GainInterval, tuple[promotion.SliceScore, ...]]:
    """`promotion.test: bootstrap`: the paired bootstrap of the gain on the whole holdout and on
    each gated slice (ctloop/ml/comparison.py; `promotion.bootstrap_rounds`,
    `promotion.confidence`, seeded from `seed`)."""
    cfg = project.params
    rounds, confidence = cfg.promotion.bootstrap_rounds, cfg.promotion.confidence
    whole = comparison.paired_bootstrap(
        holdout.y,
        challenger_scores,
        champion_scores,
        cfg.metric,
        cfg.greater_is_better,
        rounds,
        confidence,
        cfg.seed,
    )
    tested = comparison.bootstrap_slices(
        holdout.X,
        holdout.y,
        challenger_scores,
        champion_scores,
        slices,
        cfg.metric,
        cfg.greater_is_better,
        cfg.slices.tolerance,
        rounds,
        confidence,
        cfg.seed,
    )
    return whole.interval, tested


def publish_slices(project: Project, run_id: str, decision: registry.PromotionDecision) -> None:
    """The gate's slice table (with the champion's figures and the refused slices) as
    insights/slices.csv and plots/slices.png on the run, and reports/plots/slices.csv."""
    cfg = project.params
    table = insights.slice_table(
        decision.slices, cfg.greater_is_better, cfg.slices.tolerance, decision.confidence
    )
    if table.empty:
        return
    publish_tables(
        project, run_id, {"slices": table}, {"slices": insights.slices_figure(table, cfg.metric)}
    )
