"""`ctloop stage NAME`: the DVC stages (dvc.yaml). Each reads the previous stage's files, runs its
steps of ctloop/steps/sequence.py (the same steps, in the same order, as the Prefect flow), and
writes the files dvc.yaml declares.

`train` opens the training's MLflow run; `evaluate` and `drift` work on the same run in processes
of their own. Each of the three owns the run while it works (`_owned_run`: RUNNING, tagged with its
process like a flow's run) and ends it FINISHED, or FAILED when it raises: `dvc repro` leaves no
run RUNNING, so the next reconciliation (ctloop/io/recovery.py) finds nothing to tag."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core.config import Project
from ctloop.io import files, tracking, versioning
from ctloop.ml import parallel, training
from ctloop.ml.validation import ValidationFailed, summary_markdown
from ctloop.steps import drift_report, fit, register, sequence, windows
from ctloop.steps import evaluate as evaluate_step
from ctloop.steps import validate as validate_step
from ctloop.steps.config_check import check_project

if TYPE_CHECKING:
    from ctloop.core.approval import Approval
    from ctloop.io.registry import PromotionDecision
    from ctloop.ml.insights import Insights

STAGES = ("ingest", "validate", "train", "evaluate", "drift")


def _train_record(project: Project) -> Path:
    return project.path("models") / "train.json"


def _model_file(project: Project) -> Path:
    return project.path("models") / "model.joblib"


def _tuning_file(project: Project) -> Path:
    """The whole tuning result: trials, the best trial's fold models, out-of-fold scores."""
    return project.path("models") / "tuning.joblib"


def _evaluation_file(project: Project) -> Path:
    """What the evaluate stage found (holdout figures, insights, the gate's decision, the
    answer): the drift stage writes the model card from it, after the drift report."""
    return project.path("models") / "evaluation.joblib"


def _drift_record(project: Project) -> Path:
    """The drift stage's fixed-name output (dvc.yaml needs one; DVC versions it in its cache)."""
    return project.path("reports") / "drift.json"


FAILURE_CHARS = 1000  # of an error message kept in the run's `ctloop.failure` tag


@contextmanager
def _owned_run(project: Project, run_id: str, stage: str) -> Iterator[None]:
    """This stage works on the training run `run_id`: reopened under this process
    (tracking.reopen_run), then FINISHED; FAILED, with `ctloop.failure` naming the stage and the
    error, when the stage raises (the error goes on)."""
    tracking.use_experiment(project)
    tracking.reopen_run(run_id)
    try:
        yield
    except BaseException as err:
        reason = f"dvc stage {stage} failed: {type(err).__name__}: {err}"[:FAILURE_CHARS]
        tracking.finish_run(run_id, failed=True, error=reason)
        raise
    tracking.finish_run(run_id)


def ingest(project: Project) -> None:
    for line in check_project(project).warnings:  # params.yaml against the data, first
        print(f"ctloop: warning: {line}", file=sys.stderr)
    result = sequence.INGEST(project)
    print(f"ingest: {len(result.written)} written, {len(result.unchanged)} unchanged")


def validate(project: Project) -> None:
    window = windows.current_window(project)
    if not validate_step.suite_ready(project):
        sequence.BUILD_EXPECTATIONS(project, window.train)
    reports = sequence.VALIDATE(project, window.used)
    print(summary_markdown(reports))
    failed = [r for r in reports if not r.success]
    if failed:
        raise ValidationFailed(failed)


def train(project: Project) -> None:
    import joblib

    window = windows.current_window(project)
    train_data, holdout = fit.load_training(project, window)  # checked: before any run
    version = versioning.data_version(project.root, project.params.paths.batches) or "unversioned"
    results = json.loads((project.path("reports") / "validation.json").read_text())
    validation = "passed" if all(r["success"] for r in results["reports"]) else "failed"
    run_id = sequence.START_TRAINING_RUN(project, window, version, validation, train_data, holdout)
    with _owned_run(project, run_id, "train"):
        plan = parallel.plan_parallel(project)  # the configured runner, without Prefect
        name = parallel.study_name(project.params.tracking.experiment, run_id, datetime.now(UTC))
        with parallel.plain_runner(plan) as runner:
            tuning, model = sequence.TUNE_AND_FIT(
                project.params, train_data.schema, train_data.X, train_data.y, plan, runner, name
            )
        sequence.RECORD_TUNING(project, run_id, tuning)
        if tuning.budget_note:
            print(f"train: tuning {tuning.budget_note} (tune.timeout_s)")
        _model_file(project).parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, _model_file(project))
        joblib.dump(tuning, _tuning_file(project))
        files.write_json(
            _train_record(project),
            {
                "run_id": run_id,
                "best_params": tuning.best_params,
                "cv_mean": tuning.cv_mean,
                "cv_std": tuning.cv_std,
                "fold_scores": list(tuning.fold_scores),
            },
        )


def evaluate(project: Project) -> None:
    """The `evaluate` stage on the training run `train` recorded (owned, then ended)."""
    window = windows.current_window(project)
    record = json.loads(_train_record(project).read_text())
    run_id = record["run_id"]
    with _owned_run(project, run_id, "evaluate"):
        _evaluate(project, window, run_id)


@dataclass(frozen=True)
class Evaluated:
    """The evaluate stage's findings the drift stage's model card needs."""

    evaluation: evaluate_step.Evaluation
    insights: Insights
    decision: PromotionDecision
    answer: Approval


def _evaluate(project: Project, window: windows.Window, run_id: str) -> None:
    """Holdout metrics, insights, learning curve, registration and gate of the run."""
    import joblib

    tuning: training.TuningResult = joblib.load(_tuning_file(project))
    model = joblib.load(_model_file(project))
    train_data, holdout = fit.load_training(project, window)  # checked: before any run
    curve = sequence.LEARNING_CURVE(project, model, train_data, holdout, tuning)
    evaluation = sequence.EVALUATE_HOLDOUT(project, run_id, model, holdout, tuning, train_data)
    insights = sequence.EXPLAIN_MODEL(project, run_id, model, train_data, holdout, tuning)
    gate = sequence.REGISTER_CHALLENGER(project, run_id, model, holdout, evaluation, window)
    sequence.IMPORTANCE_OVER_VERSIONS(project, run_id)
    sequence.RECORD_LEARNING_CURVE(project, run_id, curve)
    answer = register.no_reviewer(project, gate)  # a DVC stage cannot pause for a reviewer
    decision = sequence.APPLY_PROMOTION(project, run_id, gate, answer)
    joblib.dump(Evaluated(evaluation, insights, decision, answer), _evaluation_file(project))
    print(
        f"evaluate: {project.params.metric} {evaluation.metrics[project.params.metric]:.4f}; "
        f"{decision.reason}"
    )


def drift(project: Project) -> None:
    """The newest batch against the champion's training batches: the keyed report under
    reports/drift/<batch>/ (shared with the flows, never replaced), logged on the training run,
    and reports/drift.json, the stage's fixed-name record of it for DVC; then the version's
    model card, with the drift, as the flow writes it."""
    import joblib

    window = windows.current_window(project)
    record = json.loads(_train_record(project).read_text())
    run_id = record["run_id"]
    with _owned_run(project, run_id, "drift"):
        reference = drift_report.drift_reference(project, window)
        found: Evaluated = joblib.load(_evaluation_file(project))
        summary, paths = sequence.REPORT_DRIFT(
            project, reference, window.current, run_id, None, found.decision.challenger_version
        )
        files.write_json(
            _drift_record(project),
            {
                "batch": window.current,
                "reference": list(reference),
                "run_id": run_id,
                "report": {k: drift_report.project_relative(project, p) for k, p in paths.items()},
                "summary": summary.to_dict(),
            },
        )
        train_data, holdout = fit.load_training(project, window)
        sequence.MODEL_CARD(
            project,
            run_id,
            window,
            versioning.data_version(project.root, project.params.paths.batches) or "unversioned",
            train_data,
            holdout,
            joblib.load(_tuning_file(project)),
            found.evaluation,
            found.decision,
            found.answer,
            (reference, summary),
            found.insights,
        )
    verdict = "drift" if summary.dataset_drift else "no drift"
    print(
        f"drift: {window.current}: {verdict} ({summary.n_drifted}/{summary.n_columns}) -> "
        f"{drift_report.project_relative(project, paths['html'])} "
        f"({drift_report.report_url(project, run_id, paths['html'])})"
    )


def run_stage(project: Project, name: str) -> None:
    {"ingest": ingest, "validate": validate, "train": train, "evaluate": evaluate, "drift": drift}[
        name
    ](project)
