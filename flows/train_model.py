"""Training flow: ingest -> validate -> version -> tune (CV) -> fit -> evaluate -> explain ->
register and gate (metric, slices) -> [approval: the run pauses] -> promote -> drift -> model card.
The drift report and the learning curve compute beside the main line, in a worker process.
Only wiring here; the work is in tasks/."""

from __future__ import annotations

import os

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ProcessPoolTaskRunner

from ctloop.core import approval, events
from ctloop.core.config import load_project, override
from ctloop.core.env import background_worker
from ctloop.ml.parallel import plan_parallel
from ctloop.steps import drift_report, validate
from ctloop.steps.summary import TrainingSummary
from flows import naming
from flows.approval import ask_approval
from tasks import monitoring as ct
from tasks import training as t


# `.submit` goes to a process of its own: the drift report computes beside validation and
# tuning, the learning curve beside explanation and registration, on the other core (a thread
# would fight the main line for the GIL and slow it down)
@flow(
    name="train-model",
    flow_run_name=naming.train_run_name,
    log_prints=True,
    task_runner=ProcessPoolTaskRunner(max_workers=1, initializer=background_worker),
)
def train_model(
    params_path: str = "params.yaml",
    n_trials: int | None = None,
    model_family: str | None = None,
    window_start: str | None = None,
    window_end: str | None = None,
    trigger: str = "manual",
) -> TrainingSummary:
    """Train, gate and register a model on the configured window (or the one given: retrains
    pass theirs); report drift of the newest batch against the champion's training data."""
    project = load_project(params_path)
    changes = {
        "tune.n_trials": n_trials,
        "model.family": model_family,
        "split.window_start": window_start,
        "split.window_end": window_end,
    }
    project = override(project, {k: v for k, v in changes.items() if v is not None})

    t.reconcile_runs(project)  # runs left RUNNING by a killed process are marked FAILED first
    t.ingest_batches(project)
    window = t.plan_window(project)
    early_reference = t.drift_reference(project, window)  # the champion's data before this run
    early_drift = t.drift_beside(project, early_reference, window.current)  # worker process
    if not validate.suite_ready(project):
        t.build_expectations(project, window.train)
    reports = t.validate_batches(project, window.used)
    data_version = t.version_data(project)
    validation = t.gate_validation(reports)

    train, holdout = t.load_training_data(project, window)
    fingerprint = t.fingerprint_run(project, data_version, window, train, holdout)
    previous = t.find_unchanged(project, fingerprint)
    if previous is not None:  # same data, params and code as a gated version: report it
        t.wait_for(early_drift)
        drift, paths = t.report_drift(project, early_reference, window.current, None)
        api = os.environ.get("PREFECT_API_URL")
        return _publish(t.unchanged_summary(project, previous, drift, paths["html"], api))
    run_id = t.start_training_run(
        project, window, data_version, validation, train, holdout, trigger, fingerprint
    )
    try:
        plan = plan_parallel(project)  # sequential, threads or Dask (params `parallel`)
        tuning, model = t.tune_and_fit(project.params, train.X, train.y, plan)
        # the learning curve's refits run in the worker process while this line explains and
        # registers; they are recorded before any decision is applied
        curve = t.learning_curve.submit(project, model, train, holdout, tuning)
        t.record_tuning(project, run_id, tuning)
        evaluation = t.evaluate_holdout(project, run_id, model, holdout, tuning, train)
        insights = t.explain_model(project, run_id, model, train, holdout, tuning)
        decision = t.register_challenger(
            project, run_id, model, holdout, evaluation, window, fingerprint
        )
        t.importance_over_versions(project, run_id)
        t.record_learning_curve(project, run_id, curve.result())
        facts = (project, run_id, window, data_version, train, holdout, tuning, evaluation)
        draft = None
        if approval.needed(project.params.promotion.require_approval, decision):
            draft = t.write_model_card(*facts, decision, None, None, insights, draft=True)
        answer = ask_approval(project, decision, draft)  # flow level: only a flow run can pause
        decision = t.apply_promotion(project, run_id, decision, answer)
        reference = t.drift_reference(project, window)
        t.wait_for(early_drift)  # computed beside the main line: report-drift takes it cached
        drift, paths = t.report_drift(
            project, reference, window.current, run_id, decision.challenger_version
        )
        t.write_model_card(*facts, decision, answer, (reference, drift), insights)
    except BaseException as err:  # the MLflow run says what failed; a re-run finishes it
        t.finish_run(run_id, failed=True, error=f"{type(err).__name__}: {err}")
        raise

    verdict = "promoted" if decision.promote else "kept"
    details = {
        "window": f"{window.used[0]}..{window.used[-1]}",
        "trigger": trigger,
        "holdout_score": decision.challenger_score,
        "champion_score": decision.champion_score,
        "reason": decision.reason,
    }
    name, metric = project.params.promotion.model_name, project.params.metric
    ct.emit(
        events.model_trained(
            name, decision.challenger_version, window.holdout[-1], metric, verdict, details
        )
    )
    summary = TrainingSummary(
        data_version=data_version,
        batches=f"{window.used[0]}..{window.used[-1]}",
        validation=validation,
        metric=project.params.metric,
        best_params=tuning.best_params,
        cv_mean=tuning.cv_mean,
        cv_std=tuning.cv_std,
        n_trials=len(tuning.trials),
        n_pruned=tuning.n_pruned,
        budget_note=tuning.budget_note,
        holdout_score=evaluation.metrics[project.params.metric],
        holdout_batches=",".join(window.holdout),
        model_version=decision.challenger_version,
        promoted=decision.promote,
        promotion_reason=decision.reason,
        drift_batch=window.current,
        dataset_drift=drift.dataset_drift,
        drifted_columns=tuple(drift.drifted_columns),
        drift_report=paths["html"],
        drift_report_url=drift_report.report_url(project, run_id, paths["html"]),
        validation_report=project.path("reports") / "validation.json",
        tracking_uri=project.tracking_uri,
        mlflow_port=project.params.stack.mlflow_port,
        mlflow_run_id=run_id,
        mlflow_run_url=drift_report.run_url(project, run_id),
        prefect_api_url=os.environ.get("PREFECT_API_URL"),
        warnings=train.warnings,
    )
    t.record_summary(project, run_id, summary)  # an unchanged re-run reports it
    t.finish_run(run_id)
    return _publish(summary)


def _publish(summary: TrainingSummary) -> TrainingSummary:
    """Print the summary and keep it as the flow run's artifact."""
    text = summary.render()
    create_markdown_artifact(
        f"```\n{text}\n```", key="training-summary", description="ctloop training summary"
    )
    print(text)
    return summary
