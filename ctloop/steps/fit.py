"""Training step: the window's labelled rows checked, the MLflow training run started, the search
and the final fit (tune-then-fit, one function for the flow and the DVC stage), the trials
recorded."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd

from ctloop.core import names
from ctloop.core.config import Project
from ctloop.io import data, recovery, tracking
from ctloop.ml import preconditions, training
from ctloop.steps.validate import load_batches
from ctloop.steps.windows import Window

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from ctloop.core.config import Params
    from ctloop.io.data import Schema
    from ctloop.ml.parallel import ParallelPlan
    from ctloop.ml.preconditions import PlanCheck


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
    drop = set(check.dropped)
    schema = replace(
        part.schema,
        numeric=tuple(c for c in part.schema.numeric if c not in drop),
        categorical=tuple(c for c in part.schema.categorical if c not in drop),
    )
    X = part.X.drop(columns=[c for c in check.dropped if c in part.X.columns])
    return replace(part, X=X, schema=schema, dropped=check.dropped, warnings=check.warnings)


def reconcile_runs(project: Project) -> list[recovery.Interrupted]:
    """Mark the runs a killed process left RUNNING on this host as FAILED
    (ctloop/io/recovery.py), training and monitoring runs alike."""
    name = project.params.promotion.model_name
    found = recovery.reconcile_runs(tracking.use_experiment(project), name)
    return found + recovery.reconcile_runs(tracking.use_monitoring_experiment(project), name)


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
    exp = tracking.use_experiment(project)
    tags = {
        **({tracking.FINGERPRINT_TAG: fingerprint} if fingerprint else {}),
        "ctloop.kind": "training",
        "ctloop.trigger": trigger,
        "ctloop.git_commit": tracking.git_commit(project.root),
        "ctloop.data_version": data_version,
        "ctloop.validation": validation,
        tracking.SUITE_REFERENCE_TAG: ",".join(window.train),
        "ctloop.holdout_batches": ",".join(window.holdout),
        "ctloop.model_family": cfg.model.family,
        "ctloop.unlabelled_rows_excluded": str(train.unlabelled_rows + holdout.unlabelled_rows),
        **plan_tags(train),
    }
    first, holdout_batch = window.train[0], window.holdout[-1]
    name = names.training_run(None, first, holdout_batch, trigger)  # the version comes later
    run_id = tracking.start_parent_run(exp, name, tags)
    tracking.set_note(run_id, names.training_note(first, holdout_batch, trigger))
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


def record_tuning(project: Project, run_id: str, tuning: training.TuningResult) -> None:
    """Nested run per trial, then best params and CV mean/std on the parent."""
    exp = tracking.use_experiment(project)
    for rec in tuning.trials:
        tracking.log_trial(run_id, exp, rec, project.params.metric)
    tracking.log_tuning(run_id, tuning, project.params.metric)


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
