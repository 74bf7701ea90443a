"""The loop's steps, shared by the Prefect tasks (tasks/training.py) and the DVC stages
(`ctloop stage NAME`): each step reads its inputs, calls the pure functions and writes its outputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctloop.core import approval, promotion
from ctloop.core.config import Project, SplitConfig
from ctloop.core.faults import crash_point
from ctloop.core.thresholds import first_model_floor
from ctloop.io import data, files, locks, recovery, registry, tracking, versioning
from ctloop.ml import training

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from sklearn.pipeline import Pipeline

    from ctloop.core.config import Params
    from ctloop.io.data import Schema
    from ctloop.ml.drift import DriftOutputs, DriftSummary
    from ctloop.ml.insights import Insights
    from ctloop.ml.parallel import ParallelPlan
    from ctloop.ml.preconditions import PlanCheck
    from ctloop.ml.validation import ValidationReport
    from ctloop.steps.correction import Replacement
    from ctloop.steps.model_card import ModelCard
    from ctloop.steps.summary import TrainingSummary

SUITE_REFERENCE_TAG = "ctloop.train_batches"


# --- window ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Batches that train, the holdout (latest labelled ones) and the batch monitored for drift."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    current: str | None

    @property
    def used(self) -> list[str]:
        names = [*self.train, *self.holdout]
        return names + ([self.current] if self.current and self.current not in names else [])


class WindowError(ValueError):
    """The configured training window does not contain enough batches."""


def plan_window(
    split: SplitConfig, available: list[str], labelled: list[str] | None = None
) -> Window:
    """Training window from params; its latest labelled periods are the holdout (periods without
    any label yet are left out); the newest batch is the one monitored for drift."""
    inside = data.select_periods(available, split.window_start, split.window_end)
    if labelled is not None:
        inside = [n for n in inside if n in set(labelled)]
    if len(inside) <= split.holdout_periods:
        raise WindowError(
            f"split: window {split.window_start}..{split.window_end} holds {len(inside)} batch(es) "
            f"(available: {', '.join(available) or 'none'}); need more than "
            f"holdout_periods={split.holdout_periods}"
        )
    cut = len(inside) - split.holdout_periods
    newest = sorted(available)[-1]
    return Window(tuple(inside[:cut]), tuple(inside[cut:]), newest)


def current_window(project: Project) -> Window:
    """The window over the batches written so far."""
    folder = project.path("batches")
    available = data.list_batches(folder)
    labelled = data.labelled_batches(folder, available, project.params.data.target)
    return plan_window(project.params.split, available, labelled)


# --- ingestion -------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    source_rows: int
    unlabelled_rows: int

    @property
    def batches(self) -> list[str]:
        return sorted([*self.written, *self.unchanged])


def run_ingest(project: Project) -> IngestResult:
    """Cut the configured source into period batches (up to data.ingest_until) and write them.

    The source goes through the same edge as a landed file (`monitoring.cut_source`: the data
    contract, the cut-off, label and time checks) and is refused whole, before any batch is
    written, when one of them fails or a period conflicts with an existing batch.
    Leftovers of a killed write (`.*.tmp-<pid>` of a dead writer) are removed first; each batch is
    written atomically, so a crash in between loses nothing: the next run writes the rest."""
    from ctloop.steps import correction

    cfg = project.params.data
    for path in recovery.clean_stale_temp_files(project.path("batches")):
        print(f"removed {path.name}: left by an interrupted batch write")
    from ctloop.steps import (
        monitoring,
    )  # the landing folder's edge: the same reads, contract, checks

    # dropped columns are never read; the raw and prepared frames are freed once used
    skip = data.unused_columns(cfg)
    blocks = monitoring.block_rule(project)  # without a time column: file order, by blocks
    batches = monitoring.cut_source(cfg, cfg.source, project.root, cfg.source, skip, blocks)
    names = data.select_periods(list(batches), None, cfg.ingest_until)
    folder = project.path("batches")
    corrected = correction.replaced_batches(folder)  # `ctloop batch replace`: the source is stale
    # all or nothing, like a landed file: a period conflicting with a batch refuses the source
    # (a corrected batch is kept over the source's stale rows of its period)
    selected = {n: batches[n] for n in names if n not in corrected}
    monitoring.check_overlaps(folder, selected, cfg.target, Path(cfg.source))
    writes = []
    unlabelled = 0
    for n in names:
        if n in corrected and data.batch_path(folder, n).is_file():
            writes.append(_kept_correction(folder, n, corrected[n]))
            stored = pd.read_parquet(writes[-1].path, columns=[cfg.target])
            unlabelled += int(stored[cfg.target].isna().sum())
            continue
        writes.append(data.write_batch(folder, n, batches[n]))
        unlabelled += int(batches[n][cfg.target].isna().sum())
        crash_point("ingest")  # tests only (CTLOOP_CRASH_AT): killed after the first batch
    return IngestResult(
        written=tuple(w.name for w in writes if w.written),
        unchanged=tuple(w.name for w in writes if not w.written),
        source_rows=sum(w.rows for w in writes),
        unlabelled_rows=unlabelled,
    )


def _kept_correction(folder: Path, name: str, entry: Replacement) -> data.BatchWrite:
    """A batch replaced by `ctloop batch replace` stays as corrected: the source's rows of its
    period are superseded (said once per ingestion), never a conflict."""
    import pyarrow.parquet as pq

    path = data.batch_path(folder, name)
    print(
        f"{name}: kept the corrected batch (replaced {entry.id}: {entry.reason}); the source's "
        "rows of this period are superseded"
    )
    rows = int(pq.read_metadata(path).num_rows)
    return data.BatchWrite(name, path, rows, entry.new_digest, written=False)


def version_data(project: Project) -> str:
    """Commit the batch folder to DVC (dvc.lock + cache), push it, return its data version.
    Under the project's data lock: no batch is written while DVC hashes the folder, and two
    flows never commit at once (DVC's own repo lock would fail the second after a few seconds)."""
    with locks.project_lock(project, locks.DATA, purpose="dvc commit + push"):
        versioning.ensure_remote(project.root, project.path("dvc_remote"))
        versioning.commit_and_push(project.root)
        return versioning.data_version(project.root, project.params.paths.batches) or "unversioned"


# --- validation ------------------------------------------------------------------------


def load_batches(project: Project, names: list[str] | tuple[str, ...]) -> pd.DataFrame:
    return data.read_batches(project.path("batches"), list(names))


def build_expectations(project: Project, reference: list[str] | tuple[str, ...]) -> Path:
    """Build the baseline suite from reference batches and save it in the file-backed context."""
    from ctloop.ml import validation

    frame = load_batches(project, reference)
    schema = data.infer_schema(frame, project.params.data)
    suite = validation.build_suite(
        frame,
        schema,
        project.params.validation,
        rows_per_batch=reference_batch_rows(project, frame, reference),
    )
    return validation.save_suite(project.path("expectations"), suite)


def reference_batch_rows(
    project: Project, frame: pd.DataFrame, reference: list[str] | tuple[str, ...]
) -> float:
    """Rows per batch the row_count rule is sized on: the reference's mean with a time column
    (periods hold what they hold); without one `data.rows_per_batch`, the size every block is
    cut to (`data.BlockRule`), whatever the reference's own remainder."""
    cfg = project.params.data
    return float(cfg.rows_per_batch) if cfg.time_column is None else len(frame) / len(reference)


def run_validation(
    project: Project,
    names: list[str],
    results: str = "validation.json",
    validate: Callable[[Project, list[str]], list[ValidationReport]] | None = None,
) -> list[ValidationReport]:
    """Validate each batch; move critical failures to quarantine; save all results as JSON
    (`results`, under the reports folder). `validate` replaces validate_many (the flow passes
    its reader of cached reports)."""
    reports = (validate or validate_many)(project, names)
    record_validation(project, reports, results)
    return reports


def validate_many(project: Project, names: Sequence[str]) -> list[ValidationReport]:
    """The suite's verdict on each batch, in order (reads the batch files and the suite; writes
    nothing). One Great Expectations context, suite and plan for all of them
    (`validation.validate_batches`): 365 daily batches cost little more than 12 monthly ones."""
    from ctloop.ml import validation

    folder = project.path("batches")

    def frames() -> Iterator[validation.BatchFrame]:
        for name in names:
            path = data.batch_path(folder, name)
            yield validation.BatchFrame(name, str(path), pd.read_parquet(path))

    return validation.validate_batches(
        frames(), project.path("expectations"), project.params.validation.suite_name
    )


def record_validation(
    project: Project, reports: list[ValidationReport], results: str = "validation.json"
) -> None:
    """Move the batches that failed a critical rule to quarantine; save every result as JSON."""
    from ctloop.ml import validation

    for report in reports:
        if not report.success:
            path = data.batch_path(project.path("batches"), report.batch)
            validation.quarantine_batch(
                path, report, project.path("quarantine"), files.write_text_atomic
            )
    validation.save_results(reports, project.path("reports") / results, files.write_text_atomic)


def suite_file(project: Project) -> Path:
    """The expectation suite's JSON (what a validation reads besides the batch)."""
    from ctloop.ml import validation

    return validation.suite_file(project.path("expectations"), project.params.validation.suite_name)


def suite_ready(project: Project) -> bool:
    from ctloop.ml import validation

    return validation.suite_exists(
        project.path("expectations"), project.params.validation.suite_name
    )


# --- training --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    X: pd.DataFrame
    y: pd.Series
    schema: data.Schema
    unlabelled_rows: int
    sampled_to: int | None = None  # split.max_train_rows, when it down-sampled these rows
    dropped: tuple[str, ...] = ()  # features left out by the plan's checks (empty)
    warnings: tuple[str, ...] = ()  # the plan's warnings (ctloop/ml/preconditions.py)


def training_data(project: Project, frame: pd.DataFrame) -> TrainingData:
    """Features and target of the labelled rows (unlabelled ones are counted, not used), in time
    order when the data has a time column (stable sort: time-ordered CV folds rely on it, even
    for a batch whose rows were not written in time order)."""
    cfg = project.params
    rows, unlabelled = data.labelled(frame, cfg.data.target)
    if cfg.data.time_column and cfg.data.time_column in rows.columns:
        rows = rows.sort_values(cfg.data.time_column, kind="stable", ignore_index=True)
    cap = cfg.split.max_train_rows
    sampled = cap is not None and len(rows) > cap
    if sampled:
        rows = rows.sample(cap, random_state=cfg.seed).sort_index().reset_index(drop=True)
    schema = data.infer_schema(frame, cfg.data)
    y = rows[schema.target]
    if schema.task == "classification":
        y = y.astype(int)
    return TrainingData(rows[schema.features], y, schema, unlabelled, cap if sampled else None)


PRECONDITIONS_TAG = "ctloop.preconditions"  # the plan's warnings on the training run
DROPPED_FEATURES_TAG = "ctloop.dropped_features"  # features the plan left out (comma-separated)
_TAG_LIMIT = 5000  # characters of a tag value kept (MLflow refuses values above 8000)


def load_training(project: Project, window: Window) -> tuple[TrainingData, TrainingData]:
    """Training and holdout rows of the window, checked by `check_plan`: what the flow and the
    DVC stages train and evaluate on. Raises preconditions.PreconditionError."""
    train = training_data(project, load_batches(project, window.train))
    holdout = training_data(project, load_batches(project, window.holdout))
    return check_plan(project, window, train, holdout)


def check_plan(
    project: Project, window: Window, train: TrainingData, holdout: TrainingData
) -> tuple[TrainingData, TrainingData]:
    """The training plan's preconditions (ctloop/ml/preconditions.py), before anything is tuned,
    logged or registered: features empty in the training part are dropped from both parts,
    each warning is printed (`ctloop: warning: ...`) and kept on both parts (`warnings`: the
    MLflow run, the model card and the summary record them). Raises PreconditionError naming
    the folds, batches and class counts when the plan cannot be cross-validated or scored."""
    from ctloop.ml import preconditions

    cfg = project.params
    span = f"{window.train[0]}..{window.train[-1]}" if window.train else "(no batch)"
    check = preconditions.check_training_plan(
        cfg.data.task,
        cfg.split.folds,
        train.schema.target,
        preconditions.Part(train.X, train.y, f"the training window {span}", train.sampled_to),
        preconditions.Part(
            holdout.X, holdout.y, f"holdout {', '.join(window.holdout)}", holdout.sampled_to
        ),
        cv=cfg.cv_kind,
        seed=cfg.seed,
    )
    for line in check.warnings:
        print(f"ctloop: warning: {line}")
    return _planned(train, check), _planned(holdout, check)


def _planned(part: TrainingData, check: PlanCheck) -> TrainingData:
    """`part` without the dropped features (X and schema), with the plan's warnings."""
    from dataclasses import replace

    drop = set(check.dropped)
    schema = replace(
        part.schema,
        numeric=tuple(c for c in part.schema.numeric if c not in drop),
        categorical=tuple(c for c in part.schema.categorical if c not in drop),
    )
    X = part.X.drop(columns=[c for c in check.dropped if c in part.X.columns])
    return replace(part, X=X, schema=schema, dropped=check.dropped, warnings=check.warnings)


def use_experiment(project: Project) -> str:
    """Point MLflow at the project's store and experiment (every step that writes to MLflow
    calls this first: a DVC stage is a process of its own); returns the experiment id."""
    return tracking.configure(
        project.tracking_uri, project.params.tracking.experiment, project.path("mlflow_artifacts")
    )


def reconcile_runs(project: Project) -> list[recovery.Interrupted]:
    """Mark the runs a killed process left RUNNING on this host as FAILED
    (ctloop/io/recovery.py)."""
    exp = use_experiment(project)
    return recovery.reconcile_runs(exp, project.params.promotion.model_name)


def start_training_run(
    project: Project,
    window: Window,
    data_version: str,
    validation: str,
    train: TrainingData,
    holdout: TrainingData,
    trigger: str = "manual",
    fingerprint: str | None = None,
) -> str:
    """Open the parent MLflow run with lineage and tags (with `fingerprint`, an unchanged re-run
    finds it: `find_unchanged`); returns its id."""
    cfg = project.params
    exp = use_experiment(project)
    tags = {
        **({FINGERPRINT_TAG: fingerprint} if fingerprint else {}),
        "ctloop.kind": "training",
        "ctloop.trigger": trigger,
        "ctloop.git_commit": tracking.git_commit(project.root),
        "ctloop.data_version": data_version,
        "ctloop.validation": validation,
        SUITE_REFERENCE_TAG: ",".join(window.train),
        "ctloop.holdout_batches": ",".join(window.holdout),
        "ctloop.model_family": cfg.model.family,
        "ctloop.unlabelled_rows_excluded": str(train.unlabelled_rows + holdout.unlabelled_rows),
        **plan_tags(train),
    }
    run_id = tracking.start_parent_run(exp, f"train-{window.train[0]}..{window.holdout[-1]}", tags)
    source = str(project.path("batches"))
    for name, part in (("training", train), ("holdout", holdout)):
        frame = part.X.assign(**{part.schema.target: part.y.to_numpy()})
        tracking.log_dataset(
            run_id, frame, source, f"{name}-{data_version[:12]}", part.schema.target, name
        )
    tracking.set_tags(run_id, {"ctloop.seed": str(cfg.seed), "ctloop.cv": cfg.cv_kind})
    return run_id


def plan_tags(train: TrainingData) -> dict[str, str]:
    """The plan's warnings and dropped features as run tags (none when the plan had none)."""
    tags = {}
    if train.warnings:
        tags[PRECONDITIONS_TAG] = "\n".join(train.warnings)[:_TAG_LIMIT]
    if train.dropped:
        tags[DROPPED_FEATURES_TAG] = ",".join(train.dropped)[:_TAG_LIMIT]
    return tags


def tune_and_fit(
    params: Params,
    schema: Schema,
    X: pd.DataFrame,
    y: pd.Series,
    plan: ParallelPlan,
    runner: training.TrialRunner | None = None,
    study_name: str | None = None,
) -> tuple[training.TuningResult, Pipeline]:
    """Search (Optuna, CV), then refit on all of X with the best parameters. The trials run as
    `plan` says: in this process, or through `runner` (the flow's Prefect task runner, the DVC
    stage's plain pool), in the shared study `study_name` when the plan has a storage."""
    tuning = training.tune(
        params,
        schema,
        X,
        y,
        storage=plan.storage,
        study_name=study_name if plan.storage else None,
        runner=runner,
        fit_threads=plan.fit_threads,
    )
    return tuning, training.fit_final(params, schema, tuning.best_params, X, y)


def record_tuning(project: Project, run_id: str, tuning: training.TuningResult) -> None:
    """Nested run per trial, then best params and CV mean/std on the parent."""
    exp = use_experiment(project)
    for rec in tuning.trials:
        tracking.log_trial(run_id, exp, rec, project.params.metric)
    tracking.log_tuning(run_id, tuning, project.params.metric)


# --- evaluation ------------------------------------------------------------------------


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
    (metrics `holdout_*`, `baseline_<metric>`)."""
    from ctloop.ml import plots

    use_experiment(project)
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
    write_json(
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
    return Evaluation(metrics, tables, baseline)


BASELINE_WHAT = {
    "classification": "a constant score (ROC AUC 0.5)",
    "regression": "the training target's mean for every holdout row",
}


# --- insights --------------------------------------------------------------------------

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
    import time

    from ctloop.ml import insights
    from ctloop.steps import serving

    cfg = project.params
    started, cpu = time.perf_counter(), time.process_time()
    ins = insights.compute(cfg, train.schema, model, tuning, train.X, train.y, holdout.X, holdout.y)
    use_experiment(project)
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
    from ctloop.ml import insights

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
    from ctloop.ml import insights

    if curve is None or curve.empty:
        return
    use_experiment(project)
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
    from ctloop.ml import insights

    cfg = project.params
    use_experiment(project)
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


# --- registry --------------------------------------------------------------------------


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
    use_experiment(project)
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
            SUITE_REFERENCE_TAG: ",".join(window.train),
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
    decision = promotion.decide(
        metric,
        version,
        evaluation.metrics[metric],
        str(champion.version) if champion else None,
        champion_score,
        cfg.greater_is_better,
        cfg.promotion.margin,
        floor.value,
        slices=compare_slices(project, model, holdout, champion_scores),
        slice_tolerance=cfg.slices.tolerance,
        floor_origin=floor.origin,
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
    exp = use_experiment(project)
    name = project.params.promotion.model_name
    for failed in tracking.finished_runs_tagged(exp, FINGERPRINT_TAG, fingerprint, status="FAILED"):
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
    and
    the approval on the version and run, and move `champion` when it promotes."""
    answer = answer or no_reviewer(project, decision)
    decision = approval.resolve(decision, answer)
    use_experiment(project)
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
    write_json(project.path("reports") / "promotion.json", decision.to_dict())
    return decision


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
    model: Pipeline,
    holdout: TrainingData,
    champion_scores: np.ndarray | None,
) -> tuple[promotion.SliceScore, ...]:
    """Challenger (and champion) metric per value of each `slices.columns` column."""
    from ctloop.ml import insights

    cfg = project.params
    return insights.slice_scores(
        holdout.X,
        holdout.y,
        training.predict_scores(model, holdout.X, holdout.schema.task),
        champion_scores,
        cfg.slices.columns,
        cfg.metric,
        cfg.slices.min_size,
    )


def publish_slices(project: Project, run_id: str, decision: registry.PromotionDecision) -> None:
    """The gate's slice table (with the champion's figures and the refused slices) as
    insights/slices.csv and plots/slices.png on the run, and reports/plots/slices.csv."""
    from ctloop.ml import insights

    cfg = project.params
    table = insights.slice_table(decision.slices, cfg.greater_is_better, cfg.slices.tolerance)
    if table.empty:
        return
    publish_tables(
        project, run_id, {"slices": table}, {"slices": insights.slices_figure(table, cfg.metric)}
    )


# --- drift -----------------------------------------------------------------------------


def drift_reference(project: Project, window: Window) -> tuple[str, ...]:
    """Training batches of the current champion (this window's when there is none yet)."""
    use_experiment(project)
    champion = registry.get_alias(project.params.promotion.model_name, registry.CHAMPION)
    tagged = champion.tags.get(SUITE_REFERENCE_TAG, "") if champion else ""
    available = set(data.list_batches(project.path("batches")))
    names = tuple(n for n in tagged.split(",") if n in available)
    return names or window.train


def run_drift(
    project: Project,
    reference: tuple[str, ...],
    current: str,
    run_id: str | None = None,
    compute: Callable[[Project, tuple[str, ...], str], DriftOutputs] | None = None,
) -> tuple[DriftSummary, dict[str, Path]]:
    """Drift of one batch against reference batches: HTML + JSON reports (the stored report of
    the same inputs when there is one: not computed again), logged to MLflow when `run_id` is
    given. `compute` replaces compute_drift (the flows pass their cached Prefect task)."""
    stored = read_drift(project, reference, current)
    if stored is None:
        outputs = (compute or compute_drift)(project, reference, current)
        return outputs.summary, write_drift(project, outputs, reference, current, run_id)
    summary, paths = stored
    write_latest(project, current, paths)
    if run_id is not None:
        record_drift(project, run_id, summary, paths)
    return summary, paths


def compute_drift(project: Project, reference: tuple[str, ...], current: str) -> DriftOutputs:
    """Evidently's drift of `current` against the reference batches (reads them; writes
    nothing): the same batches and settings always give the same outputs."""
    from ctloop.ml import drift

    ref, cur = load_batches(project, reference), load_batches(project, [current])
    schema = data.infer_schema(ref, project.params.data)
    snapshot, summary = drift.compute_drift(
        ref,
        cur,
        schema,
        project.params.drift,
        project.params.seed,
        what=f"batch {current} against {', '.join(reference)}",
    )
    return drift.render_outputs(snapshot, summary)


def drift_files(project: Project, reference: tuple[str, ...], current: str) -> list[Path]:
    """The batch files a drift computation reads: the reference ones, then the current one."""
    folder = project.path("batches")
    return [data.batch_path(folder, n) for n in (*reference, current)]


def drift_key(project: Project, reference: tuple[str, ...], current: str) -> str:
    """Fingerprint of a drift computation's inputs (both sides' bytes, settings, code)."""
    from ctloop.core import fingerprint

    files = drift_files(project, reference, current)
    return fingerprint.drift_key(project.params, files[:-1], files[-1], current)


DRIFT_REPORT_TAG = "ctloop.drift_report"
DRIFT_KEY_CHARS = 12  # of the inputs' fingerprint in a report's name


def drift_name(reference: tuple[str, ...], key: str) -> str:
    """A report's file stem: `ref-<first>..<last>-<key>` (key: drift_key's first 12 hex digits).

    The reference batches are readable in the name; the key makes it unambiguous (the same
    window with other batch bytes, drift settings or code is another report)."""
    ref = f"{reference[0]}..{reference[-1]}" if reference else "none"
    return f"ref-{ref}-{key[:DRIFT_KEY_CHARS]}"


def drift_location(
    project: Project, reference: tuple[str, ...], current: str, key: str | None = None
) -> tuple[Path, str]:
    """(folder, stem) of the report of `current` against `reference`:
    reports/drift/<current>/ref-<first>..<last>-<key>.{html,json,evidently.json,inputs}."""
    key = key or drift_key(project, reference, current)
    return project.path("reports") / "drift" / current, drift_name(reference, key)


def _drift_marker(folder: Path, stem: str) -> Path:
    """Written last, with the full key: the report of this name is complete."""
    return folder / f"{stem}.inputs"


def drift_reported(project: Project, reference: tuple[str, ...], current: str) -> bool:
    """Whether reports/drift/ already holds the complete report of exactly these inputs."""
    return read_drift(project, reference, current) is not None


def read_drift(
    project: Project, reference: tuple[str, ...], current: str
) -> tuple[DriftSummary, dict[str, Path]] | None:
    """The stored report of exactly these inputs (summary, paths), None when there is none yet:
    an unchanged re-run reuses it instead of computing it again."""
    from ctloop.ml import drift

    key = drift_key(project, reference, current)
    folder, stem = drift_location(project, reference, current, key)
    try:
        recorded = _drift_marker(folder, stem).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    paths = drift.report_paths(folder, stem)
    if recorded != key or not all(p.is_file() for p in paths.values()):
        return None
    raw = json.loads(paths["summary"].read_text(encoding="utf-8"))
    return drift.DriftSummary.from_dict(raw), paths


def write_drift(
    project: Project,
    outputs: DriftOutputs,
    reference: tuple[str, ...],
    current: str,
    run_id: str | None = None,
) -> dict[str, Path]:
    """The report of these inputs under reports/drift/<current>/ (written once, never replaced:
    see drift_location), the convenience copies reports/drift/drift-<current>.{html,json} (the
    latest report of the batch, replaced each time: nothing links to them), and, when `run_id`
    is given, on the MLflow run with the tag `ctloop.drift_report` naming the report's file."""
    from ctloop.ml import drift

    for empty in outputs.summary.empty_columns:
        print(f"ctloop: warning: drift of {current}: feature {empty.describe()}: not compared")
    key = drift_key(project, reference, current)
    folder, stem = drift_location(project, reference, current, key)
    paths = drift.write_outputs(outputs, folder, stem, files.write_once)
    marker = _drift_marker(folder, stem)
    if not marker.exists():
        write_text_atomic(marker, key)
    write_latest(project, current, paths)
    if run_id is not None:
        record_drift(project, run_id, outputs.summary, paths)
    return paths


def write_latest(project: Project, current: str, paths: dict[str, Path]) -> None:
    """reports/drift/drift-<current>.{html,json}: copies of the batch's latest report, replaced
    each time (a convenience to open by name; no link or record points to them)."""
    latest = project.path("reports") / "drift"
    latest.mkdir(parents=True, exist_ok=True)
    files.copy_atomic(paths["html"], latest / f"drift-{current}.html")
    files.copy_atomic(paths["summary"], latest / f"drift-{current}.json")


def record_drift(
    project: Project, run_id: str, summary: DriftSummary, paths: dict[str, Path]
) -> None:
    """The report on the MLflow run: its HTML and summary as artifacts under drift/, its file as
    the tag `ctloop.drift_report` (relative to the project), the drifted share as metrics."""
    use_experiment(project)
    tracking.log_artifact(run_id, paths["html"], "drift")
    tracking.log_artifact(run_id, paths["summary"], "drift")
    tracking.set_tags(run_id, {DRIFT_REPORT_TAG: project_relative(project, paths["html"])})
    tracking.log_metrics(
        run_id,
        {"drifted_share": summary.drifted_share, "dataset_drift": float(summary.dataset_drift)},
        "drift_",
    )


def project_relative(project: Project, path: Path) -> str:
    """`path` relative to the project root when inside it (portable in records), else absolute."""
    resolved, root = path.resolve(), project.root.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)


# --- model card ------------------------------------------------------------------------


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
    from ctloop.steps import model_card

    cfg, metric = project.params, project.params.metric
    name = cfg.promotion.model_name
    use_experiment(project)
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
        drift=None
        if drift is None
        else model_card.DriftStatus.from_summary(
            window.current or "-", drift[0], drift[1], tags.get(DRIFT_REPORT_TAG)
        ),
        drift_note=drift_note,
        plan_warnings=train.warnings,
    )


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


def publish_model_card(project: Project, run_id: str, card: ModelCard) -> Path:
    """reports/model_card.md, `model_card.md` of the run, and the registered version's
    description (what the MLflow UI shows on the version page)."""
    text = card.render()
    path = project.path("reports") / "model_card.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text_atomic(path, text)
    use_experiment(project)
    tracking.log_text(run_id, text, "model_card.md")
    tracking.set_version_description(card.model_name, card.version, card.for_registry())
    return path


# --- unchanged runs --------------------------------------------------------------------

FINGERPRINT_TAG = "ctloop.fingerprint"
SUMMARY_ARTIFACT = "summary.json"


def run_fingerprint(
    project: Project, data_version: str, window: Window, train: TrainingData, holdout: TrainingData
) -> str:
    """What a training run's outcome depends on: data version, window, rows, params, code
    (ctloop/core/fingerprint.py)."""
    from ctloop.core import fingerprint

    return fingerprint.training_fingerprint(
        project.params, data_version, window, (train.X, train.y), (holdout.X, holdout.y)
    )


@dataclass(frozen=True)
class PreviousTraining:
    """A finished training run with the same fingerprint, its gated version and summary."""

    run_id: str
    version: str
    summary: TrainingSummary


def find_unchanged(project: Project, fingerprint: str) -> PreviousTraining | None:
    """The newest FINISHED training run tagged with `fingerprint` whose version is READY, gated
    and not interrupted, with its summary; None when there is none (then train)."""
    from ctloop.steps.summary import TrainingSummary

    exp = use_experiment(project)
    name = project.params.promotion.model_name
    for run_id in tracking.finished_runs_tagged(exp, FINGERPRINT_TAG, fingerprint):
        version = registry.gated_version_of_run(name, run_id)
        raw = tracking.read_json_artifact(run_id, SUMMARY_ARTIFACT) if version else None
        if version is not None and raw is not None:
            return PreviousTraining(run_id, str(version.version), TrainingSummary.from_dict(raw))
    return None


def record_summary(project: Project, run_id: str, summary: TrainingSummary) -> None:
    """Keep the run's summary on the run (an unchanged re-run reports it instead of training)."""
    use_experiment(project)
    tracking.log_json(run_id, summary.to_dict(), SUMMARY_ARTIFACT)


def unchanged_summary(
    project: Project,
    previous: PreviousTraining,
    drift: DriftSummary,
    drift_report: Path,
    prefect_api_url: str | None,
) -> TrainingSummary:
    """The summary of a re-run that found nothing changed: the previous run's figures, where its
    version stands now, and the drift of the newest batch against the current champion."""
    from dataclasses import replace

    name, version = project.params.promotion.model_name, previous.version
    champion = registry.get_alias(name, registry.CHAMPION)
    where = (
        f"v{version} is @champion"
        if champion is not None and str(champion.version) == version
        else f"champion is {'v' + str(champion.version) if champion else 'none'}; "
        f"v{version}'s gate: {previous.summary.promotion_reason}"
    )
    return replace(
        previous.summary,
        model_version=version,
        promoted=False,
        unchanged=True,
        promotion_reason=f"same data, params and code as v{version} "
        f"(run {previous.run_id}); {where}",
        dataset_drift=drift.dataset_drift,
        drifted_columns=tuple(drift.drifted_columns),
        drift_report=drift_report,
        prefect_api_url=prefect_api_url,
    )


# --- files -----------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a small text file atomically (temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_text_atomic(path, text + "\n")


def write_json(path: Path, payload: Any) -> Path:
    """Atomic JSON write (numpy scalars and dataclasses converted)."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
