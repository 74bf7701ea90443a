"""The training flow's Prefect tasks: each is one library step (ctloop/steps/, called through
ctloop/steps/sequence.py) with its operational settings only: its name, retries on transient
I/O (`IO`), a cache policy keyed by content for deterministic compute, and the artifacts and
log lines the Prefect UI shows. A step with nothing to add is declared as `task(step, ...)`,
not wrapped in a function."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import Task, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy, CachePolicy
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, TaskRun
from prefect.results import get_result_store
from prefect.runtime import flow_run as this_flow_run
from prefect.runtime import task_run as this_task_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ctloop.core import fingerprint
from ctloop.core.config import Params, Project
from ctloop.io import data, tracking
from ctloop.ml import parallel, training
from ctloop.ml.drift import drift_markdown
from ctloop.ml.validation import ValidationFailed, summary_markdown
from ctloop.steps import card as card_step
from ctloop.steps import drift_report, evaluate, fit, ingest, rerun, sequence, validate, windows

if TYPE_CHECKING:
    import pandas as pd
    from prefect.context import TaskRunContext
    from prefect.futures import PrefectFuture
    from sklearn.pipeline import Pipeline

    from ctloop.core.approval import Approval
    from ctloop.io.registry import PromotionDecision
    from ctloop.ml.drift import DriftOutputs, DriftSummary
    from ctloop.ml.insights import Insights
    from ctloop.ml.validation import ValidationReport

TRANSIENT = (OSError, ConnectionError, TimeoutError)
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry I/O hiccups only; a deterministic failure (bad data, bad params) fails at once."""
    try:
        state.result()
    except PERMANENT:
        return False
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


def cached_by(key: Callable[[dict[str, Any]], str]) -> CachePolicy:
    """Cache on `key(inputs)` (a content fingerprint of what the step reads,
    ctloop/core/fingerprint.py)
    and the task's own source: unlike INPUTS, unrelated params (the model card text, the serving
    port) and paths do not change it, and the data counts by content."""

    def cache_key(ctx: TaskRunContext, inputs: dict[str, Any]) -> str:
        return key(inputs)

    return CacheKeyFnPolicy(cache_key_fn=cache_key) + TASK_SOURCE


def _tuning_key(inputs: dict[str, Any]) -> str:
    return fingerprint.tuning_key(inputs["params"], inputs["X"], inputs["y"], inputs.get("plan"))


def _validation_key(project: Project, name: str) -> str:
    batch = data.batch_path(project.path("batches"), name)
    return fingerprint.validation_key(batch, name, validate.suite_file(project))


def _drift_key(inputs: dict[str, Any]) -> str:
    return drift_report.drift_key(inputs["project"], inputs["reference"], inputs["current"])


IO = dict(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)


@task(name="reconcile-runs", **IO)
def reconcile_runs(project: Project) -> list[str]:
    """Runs a killed process left RUNNING on this host: marked FAILED before anything starts."""
    found = fit.reconcile_runs(project)
    for run in found:
        versions = f", registered v{', v'.join(run.versions)}" if run.versions else ""
        what = f"MLflow run {run.run_name} ({run.kind} {run.run_id}{versions})"
        print(f"{what} marked FAILED: {run.reason}")
    return [run.run_id for run in found]


@task(name="ingest-batches", **IO)
def ingest_batches(project: Project) -> ingest.IngestResult:
    result = sequence.INGEST(project)
    print(
        f"ingested {len(result.written)} new batch(es), {len(result.unchanged)} unchanged; "
        f"{result.unlabelled_rows} unlabelled rows kept in the batches, excluded from training"
    )
    return result


version_data = task(ingest.version_data, name="version-data", **IO)


build_expectations = task(
    sequence.BUILD_EXPECTATIONS.fn, name="build-expectations", cache_policy=NO_CACHE
)


@task(name="validate-batches", cache_policy=NO_CACHE)
def validate_batches(
    project: Project, names: list[str], results: str = "validation.json"
) -> list[ValidationReport]:
    """Validate the batches in ONE task run, quarantine failures, save results, publish the
    `validation` artifact.

    Each batch's report is cached by content (`fingerprint.validation_key`: the batch's bytes,
    name and path, the suite's bytes, the validation code and library versions) in Prefect's
    result storage: a batch validated before with the same key is read back, not validated
    again. The others are validated together (`validate.validate_many`: one Great Expectations
    context, suite and plan for all). One task run rather than one per batch: at 365 daily
    batches, a task run per batch cost more than the validation itself and flooded the UI."""
    validated: list[str] = []

    def from_cache(project: Project, names: list[str]) -> list[ValidationReport]:
        reports, todo = cached_reports(project, names)
        validated.extend(todo)
        return reports

    reports = sequence.VALIDATE(project, names, results, from_cache)
    line = cache_line(len(validated), len(names) - len(validated))
    markdown = summary_markdown(reports) + f"\n{line}\n"
    create_markdown_artifact(markdown, key="validation", description="Great Expectations gate")
    print(markdown)
    return reports


def cached_reports(project: Project, names: list[str]) -> tuple[list[ValidationReport], list[str]]:
    """Every batch's report, in order, and the names of those validated now (the others came
    from the result store under their `_validation_key`); new reports are stored there."""
    store = get_result_store()
    keys = {name: _validation_key(project, name) for name in names}
    found = {name: store.read(key).result for name, key in keys.items() if store.exists(key)}
    todo = [name for name in names if name not in found]
    fresh = dict(zip(todo, validate.validate_many(project, todo), strict=True)) if todo else {}
    for name, report in fresh.items():
        store.write(report, key=keys[name])
    return [found[n] if n in found else fresh[n] for n in names], todo


def cache_line(validated: int, cached: int) -> str:
    """What validate-batches did, as printed and in its artifact."""
    return (
        f"validation: {validated} batch(es) validated, {cached} taken from the cache "
        "(same batch bytes, suite and code)"
    )


@task(name="gate-validation", cache_policy=NO_CACHE)
def gate_validation(reports: list[ValidationReport]) -> str:
    """Raise on any critical failure (the batches are already in quarantine)."""
    failed = [r for r in reports if not r.success]
    if failed:
        raise ValidationFailed(failed)
    warned = sum(len(r.warnings) for r in reports)
    return f"passed ({len(reports)} batches, {warned} warning(s))"


plan_window = task(windows.current_window, name="plan-window", cache_policy=NO_CACHE)


@task(name="load-training-data", **IO)
def load_training_data(
    project: Project, window: windows.Window
) -> tuple[fit.TrainingData, fit.TrainingData]:
    """The window's labelled rows, checked before anything is tuned, logged or registered
    (fit.check_plan: empty features dropped with a warning; PreconditionError otherwise)."""
    train, holdout = fit.load_training(project, window)
    print(
        f"training rows {len(train.y)} from {window.train[0]}..{window.train[-1]}, holdout rows "
        f"{len(holdout.y)} ({', '.join(window.holdout)}); unlabelled rows excluded: "
        f"{train.unlabelled_rows + holdout.unlabelled_rows}"
    )
    return train, holdout


drift_reference = task(drift_report.drift_reference, name="drift-reference", **IO)


start_training_run = task(sequence.START_TRAINING_RUN.fn, name="start-training-run", **IO)


@task(name="tune-and-fit", cache_policy=cached_by(_tuning_key))
def tune_and_fit(
    params: Params, X: pd.DataFrame, y: pd.Series, plan: parallel.ParallelPlan | None = None
) -> tuple[training.TuningResult, Pipeline]:
    """Search, then refit with the best parameters. Cached across runs for the same params, data,
    plan and code (one task: its inputs hash the same in every process). The trials run as the
    plan says (`parallel.plan_parallel(project)`; None: sequential, in memory)."""
    if plan is None:
        if params.parallel.runner != "sequential" or params.tune.storage:
            raise ValueError(
                "tune-and-fit: parallel.runner / tune.storage need a plan "
                "(ctloop.ml.parallel.plan_parallel(project))"
            )
        plan = parallel.ParallelPlan("sequential", 1, None, 0)
    schema = data.infer_schema(X.assign(**{params.data.target: y}), params.data)
    runner = trial_runner(plan) if plan.parallel else None
    study = _study_name(params) if plan.storage else None
    return sequence.TUNE_AND_FIT(params, schema, X, y, plan, runner, study)


run_trials = task(training.run_trials, name="run-trials", cache_policy=NO_CACHE)


def task_runner(plan: parallel.ParallelPlan, api_url: str | None = None) -> TaskRunner[Any]:
    """Prefect's runner for the plan: a thread pool, or prefect-dask on a local cluster
    (`parallel.workers` single-threaded processes whose task runs report to `api_url`) or on
    the scheduler `parallel.dask_address` (its workers need PREFECT_API_URL set themselves)."""
    if plan.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=plan.workers)
    if plan.runner == "dask":
        from prefect_dask import DaskTaskRunner  # noqa: PLC0415 (heavy: loads dask, distributed)

        if plan.dask_address:
            return DaskTaskRunner(address=plan.dask_address)
        env = {"PREFECT_API_URL": api_url} if api_url else None
        return DaskTaskRunner(cluster_kwargs=parallel.local_cluster_kwargs(plan, env))
    raise ValueError(f"parallel.runner: no task runner for '{plan.runner}'")


def trial_runner(plan: parallel.ParallelPlan) -> training.TrialRunner:
    """Each trial is a `run-trials` task run submitted to the plan's task runner. A local Dask
    cluster's workers report to this process's API, even a temporary server (else each worker
    would start its own)."""

    def run(jobs: list[training.TrialJob]) -> list[training.TrialsOutcome]:
        local_dask = plan.runner == "dask" and not plan.dask_address
        with task_runner(plan, _api_url() if local_dask else None) as runner:
            futures = [
                runner.submit(run_trials.with_options(task_run_name=f"trial-{j.index}"), {"job": j})
                for j in jobs
            ]
            return [f.result() for f in futures]

    return run


def _api_url() -> str:
    """The Prefect API this process reports to (PREFECT_API_URL, or its temporary server)."""
    with get_client(sync_client=True) as client:
        return str(client.api_url)


def _study_name(params: Params) -> str:
    """Unique per search: the experiment, UTC time and the flow run (or task run) that tuned."""
    key = this_flow_run.get_id() or this_task_run.get_id() or "local"
    return parallel.study_name(params.tracking.experiment, str(key), datetime.now(UTC))


record_tuning = task(sequence.RECORD_TUNING.fn, name="record-tuning", **IO)


evaluate_holdout = task(
    sequence.EVALUATE_HOLDOUT.fn, name="evaluate-holdout", cache_policy=NO_CACHE
)


@task(name="explain-model", cache_policy=NO_CACHE)
def explain_model(
    project: Project,
    run_id: str,
    model: Pipeline,
    train: fit.TrainingData,
    holdout: fit.TrainingData,
    tuning: training.TuningResult,
) -> Insights:
    """Importance, SHAP, calibration or intervals, train vs validation (learning-curve apart)."""
    ins = sequence.EXPLAIN_MODEL(project, run_id, model, train, holdout, tuning)
    top = ", ".join(ins.importance["feature"].head(5))
    cost = ", ".join(f"{k} {v:.1f}s" for k, v in ins.seconds.items())
    print(f"insights: top features by permutation importance: {top} ({cost})")
    return ins


@task(name="learning-curve", cache_policy=NO_CACHE)
def learning_curve(
    project: Project,
    model: Pipeline,
    train: fit.TrainingData,
    holdout: fit.TrainingData,
    tuning: training.TuningResult,
) -> pd.DataFrame | None:
    """Refits on growing shares of the training rows (compute only: the flow runs it in its
    worker process beside explain-model and register-challenger)."""
    started = time.perf_counter()
    curve = sequence.LEARNING_CURVE(project, model, train, holdout, tuning)
    print(
        f"learning curve: {0 if curve is None else len(curve)} point(s) in "
        f"{time.perf_counter() - started:.1f}s"
    )
    return curve


record_learning_curve = task(sequence.RECORD_LEARNING_CURVE.fn, name="record-learning-curve", **IO)


@task(name="importance-over-versions", **IO)
def importance_over_versions(project: Project, run_id: str) -> None:
    history = sequence.IMPORTANCE_OVER_VERSIONS(project, run_id)
    print(f"importance over versions: {history['point'].nunique()} version(s) with importance")


register_challenger = task(
    sequence.REGISTER_CHALLENGER.fn, name="register-challenger", cache_policy=NO_CACHE
)


@task(name="apply-promotion", cache_policy=NO_CACHE)
def apply_promotion(
    project: Project, run_id: str, decision: PromotionDecision, answer: Approval | None = None
) -> PromotionDecision:
    decision = sequence.APPLY_PROMOTION(project, run_id, decision, answer)
    verdict = "PROMOTED to champion" if decision.promote else "kept as challenger"
    create_markdown_artifact(
        f"### Model v{decision.challenger_version}: {verdict}\n\n{decision.reason}\n",
        key="promotion",
        description="Champion/challenger gate",
    )
    return decision


compute_drift = task(
    drift_report.compute_drift, name="compute-drift", cache_policy=cached_by(_drift_key)
)


def drift_beside(
    project: Project, reference: tuple[str, ...], current: str
) -> PrefectFuture[DriftOutputs] | None:
    """Submit compute-drift to the flow's task runner (a worker process in train-model) unless
    reports/drift/ already holds this very report (its result is then in the cache: no process
    is started for it). Call from a flow; pass the future to `wait_for`."""
    if drift_report.drift_reported(project, reference, current):
        return None
    return compute_drift.submit(project, reference, current)


def wait_for(future: PrefectFuture[Any] | None) -> None:
    """Wait until a step submitted beside the main line is done (its result is in the cache)."""
    if future is not None:
        future.wait()


@task(name="report-drift", cache_policy=NO_CACHE)
def report_drift(
    project: Project,
    reference: tuple[str, ...],
    current: str,
    run_id: str | None,
    version: str | None = None,
) -> tuple[DriftSummary, dict[str, Path]]:
    """The report of `current` against `reference`: the stored one of the same inputs (not
    computed again) or compute-drift's (cached), written once under its keyed name
    (drift_report.write_drift); the `drift` and `drift-report` artifacts name that file, never the
    replaced "latest" copy, so an artifact keeps opening the report it was made with. `version`:
    the model version compared (the page of the report titled with it: drift_report.run_drift)."""
    summary, paths = sequence.REPORT_DRIFT(
        project, reference, current, run_id, compute_drift, version
    )
    ref = f"{reference[0]}..{reference[-1]}" if reference else "-"
    relative = drift_report.project_relative(project, paths["html"])
    url = None if run_id is None else drift_report.report_url(project, run_id, paths["html"])
    over_http = "" if url is None else f", over HTTP: [{paths['html'].name}]({url})"
    title = f"Drift of {current} against {ref}" + (f" (v{version})" if version else "")
    create_markdown_artifact(
        drift_markdown(summary, title) + f"\nReport: `{relative}`{over_http}\n",
        key="drift",
        description="Evidently data drift",
    )
    print(f"drift report: {url or relative}" + (f" ({relative})" if url else ""))
    if url is not None:  # logged on the run: served over HTTP by the MLflow UI
        create_link_artifact(
            url,
            link_text=f"drift report {current} against {ref} ({paths['html'].name})",
            key="drift-report",
            description="Evidently HTML on the MLflow run (MLflow UI, served by `ctloop up`)",
        )
    return summary, paths


@task(name="write-model-card", **IO)
def write_model_card(
    project: Project,
    run_id: str,
    window: windows.Window,
    data_version: str,
    train: fit.TrainingData,
    holdout: fit.TrainingData,
    tuning: training.TuningResult,
    evaluation: evaluate.Evaluation,
    decision: PromotionDecision,
    answer: Approval | None,
    drift: tuple[tuple[str, ...], DriftSummary] | None = None,
    insights: Insights | None = None,
    draft: bool = False,
) -> str:
    """The version's model card (ctloop/steps/model_card.py) to reports/, the run, the version's
    description and the `model-card` artifact. A `draft` is the card a reviewer reads while the
    run waits for approval (drift comes later): the flow's own, not a step of the sequence the
    DVC stages share. Returns the Markdown."""
    note = "measured after the approval: see the final card" if draft else "not measured"
    write = card_step.write_model_card if draft else sequence.MODEL_CARD
    card = write(
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
        drift_note=note,
    )
    text = card.render()
    state = "draft, waiting for approval" if draft else "final"
    create_markdown_artifact(
        text, key="model-card", description=f"Model card v{card.version} ({state})"
    )
    return text


finish_run = task(tracking.finish_run, name="finish-run", **IO)


fingerprint_run = task(rerun.run_fingerprint, name="fingerprint-run", cache_policy=NO_CACHE)


@task(name="find-unchanged", **IO)
def find_unchanged(project: Project, fingerprint: str) -> rerun.PreviousTraining | None:
    """A finished training of the same data, params and code: nothing to train or register."""
    previous = rerun.find_unchanged(project, fingerprint)
    if previous is not None:
        print(
            f"unchanged: same data, params and code as v{previous.version} "
            f"(MLflow run {previous.run_id}): nothing to train or register"
        )
    return previous


unchanged_summary = task(rerun.unchanged_summary, name="unchanged-summary", **IO)


record_summary = task(rerun.record_summary, name="record-summary", **IO)
