"""Model pipelines, cross-validation and Optuna tuning (pure: no Prefect, no MLflow).

Preprocessing lives inside a scikit-learn Pipeline fitted per fold, so CV has no leakage.
XGBoost early-stops on each fold's validation part; Optuna prunes a trial after any fold.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctloop.core.config import CategoricalParam, FloatParam, IntParam, Params, SearchParam
from ctloop.core.faults import crash_point
from ctloop.core.schema import Schema
from ctloop.core.tuning import (  # the search's outcome, shared with tracking and the card
    TIME_BUDGET,
    ParamValue,
    TrialRecord,
    TuningResult,
)

if TYPE_CHECKING:
    import optuna
    from sklearn.pipeline import Pipeline


class TuningError(ValueError):
    """The search ended without a usable trial (every trial failed, scored NaN or was pruned);
    the message says why and which params to change."""


class TimeBudget:
    """`tune.timeout_s` as a deadline on the wall clock (epoch seconds: the same in every worker
    process). It is checked only before a trial that is not the search's first: a started trial
    always finishes and a search always runs at least one trial. Off (None): the trial count is
    tune.n_trials whatever the machine's load."""

    def __init__(self, timeout_s: float | None, now: float | None = None) -> None:
        start = time.time() if now is None else now
        self.deadline = None if timeout_s is None else start + timeout_s

    def spent(self, now: float | None = None) -> bool:
        """True once the deadline has passed (never when there is no budget)."""
        return self.deadline is not None and (time.time() if now is None else now) >= self.deadline


# --- building blocks -------------------------------------------------------------------


def make_preprocessor(schema: Schema, family: str) -> Any:
    """Trees get ordinal-encoded categories and raw numbers (NaN kept); linear models get
    imputation, scaling and one-hot encoding."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    cats, nums = list(schema.categorical), list(schema.numeric)
    if family == "linear":
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        categorical = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="__missing__"),
            OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20),
        )
    else:
        numeric = SimpleImputer(strategy="median") if family == "random_forest" else "passthrough"
        categorical = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
        )
    return ColumnTransformer(
        [("num", numeric, nums), ("cat", categorical, cats)],
        verbose_feature_names_out=False,
    )


def make_estimator(
    family: str, task: str, params: dict[str, ParamValue], seed: int, early_stopping: int | None
) -> Any:
    """The model at the end of the pipeline; `params` are fixed + tuned parameters."""
    if family == "xgboost":
        from xgboost import XGBClassifier, XGBRegressor

        cls = XGBClassifier if task == "classification" else XGBRegressor
        metric = "logloss" if task == "classification" else "rmse"
        return cls(
            **params, random_state=seed, eval_metric=metric, early_stopping_rounds=early_stopping
        )
    if family == "linear":
        from sklearn.linear_model import LogisticRegression, Ridge

        if task == "classification":
            return LogisticRegression(**params, random_state=seed)
        return Ridge(
            **{("alpha" if k == "C" else k): v for k, v in params.items() if k != "max_iter"},
            random_state=seed,
        )
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
        return cls(**params, random_state=seed)
    raise ValueError(f"model.family: unknown family '{family}'")


def make_pipeline(
    schema: Schema,
    family: str,
    params: dict[str, ParamValue],
    seed: int,
    early_stopping: int | None = None,
) -> Pipeline:
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("preprocess", make_preprocessor(schema, family)),
            ("model", make_estimator(family, schema.task, params, seed, early_stopping)),
        ]
    )


def fit_pipeline(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    eval_set: tuple[pd.DataFrame, pd.Series] | None = None,
) -> Pipeline:
    """Fit; with an eval set, XGBoost sees it preprocessed by the fold's own preprocessor."""
    if eval_set is None or not _is_xgboost(pipeline):
        return pipeline.fit(X, y)
    pre = pipeline.named_steps["preprocess"].fit(X, y)
    Xe, ye = eval_set
    pipeline.named_steps["model"].fit(
        pre.transform(X), y, eval_set=[(pre.transform(Xe), ye)], verbose=False
    )
    return pipeline


def _is_xgboost(pipeline: Pipeline) -> bool:
    return type(pipeline.named_steps["model"]).__module__.startswith("xgboost")


def predict_scores(pipeline: Pipeline, X: pd.DataFrame, task: str) -> np.ndarray:
    """Probability of the positive class (classification) or the prediction (regression)."""
    if task == "classification":
        return pipeline.predict_proba(X)[:, 1]
    return pipeline.predict(X)


def evaluate(task: str, y_true: pd.Series | np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Metrics of one prediction set; the primary metric is roc_auc or rmse."""
    from sklearn import metrics as m

    y = np.asarray(y_true)
    if task == "classification":
        labels = (scores >= 0.5).astype(int)
        return {
            "roc_auc": float(m.roc_auc_score(y, scores)),
            "pr_auc": float(m.average_precision_score(y, scores)),
            "log_loss": float(m.log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
            "brier": float(m.brier_score_loss(y, scores)),
            "accuracy": float(m.accuracy_score(y, labels)),
            "f1": float(m.f1_score(y, labels, zero_division=0)),
        }
    return {
        "rmse": float(m.root_mean_squared_error(y, scores)),
        "mae": float(m.mean_absolute_error(y, scores)),
        "r2": float(m.r2_score(y, scores)),
    }


def constant_baseline(
    task: str, y_train: pd.Series | np.ndarray, y_holdout: pd.Series | np.ndarray
) -> float:
    """The primary metric of a constant prediction on the holdout: what any model must beat.

    Classification: ROC AUC 0.5 (a constant score ranks no positive above a negative). Regression:
    the RMSE of predicting the training target's mean for every holdout row (target units).
    Raises ValueError when a regression side has no rows."""
    if task == "classification":
        return 0.5
    train, holdout = np.asarray(y_train, dtype=float), np.asarray(y_holdout, dtype=float)
    if train.size == 0 or holdout.size == 0:
        raise ValueError(
            f"constant baseline: {train.size} training and {holdout.size} holdout target(s); "
            "need both"
        )
    return float(np.sqrt(np.mean((holdout - train.mean()) ** 2)))


def cv_splits(kind: str, folds: int, seed: int, X: pd.DataFrame, y: pd.Series) -> list[tuple]:
    """Fold indices (train rows, validation rows) as positions: stratified or shuffled k-fold,
    or `time`: forward chaining (scikit-learn's TimeSeriesSplit; rows must be in time order, as
    `ctloop.steps.fit.training_data` gives them): the rows are cut into k + 1 blocks and fold
    i (from 1) trains on blocks 1..i and validates on block i + 1. The first block is never
    validated (its out-of-fold score is NaN); every validation row is predicted by a model of
    its past."""
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    if kind == "time":
        return list(TimeSeriesSplit(n_splits=folds).split(X))
    if kind == "stratified":
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y))
    return list(KFold(folds, shuffle=True, random_state=seed).split(X))


# --- tuning ----------------------------------------------------------------------------


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> dict[str, ParamValue]:
    """Sample one point of the params.yaml search space."""
    out: dict[str, ParamValue] = {}
    for name, spec in space.items():
        if isinstance(spec, IntParam):
            out[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, FloatParam):
            out[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, CategoricalParam):
            out[name] = trial.suggest_categorical(name, spec.choices)
    return out


@dataclass
class _FoldRun:
    scores: list[float] = field(default_factory=list)
    train_scores: list[float] = field(default_factory=list)
    best_iterations: list[int] = field(default_factory=list)
    models: list[Pipeline] = field(default_factory=list)
    oof: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (rows, scores)

    def oof_scores(self, n_rows: int) -> np.ndarray:
        """Out-of-fold score of every training row (NaN for rows in no validation fold)."""
        out = np.full(n_rows, np.nan)
        for rows, scores in self.oof:
            out[rows] = scores
        return out


def run_folds(
    schema: Schema,
    family: str,
    params: dict[str, ParamValue],
    seed: int,
    X: pd.DataFrame,
    y: pd.Series,
    splits: list[tuple],
    metric: str,
    early_stopping: int | None,
    report: Callable[[int, float], None] | None = None,
    run: _FoldRun | None = None,
) -> _FoldRun:
    """Fit and score each fold into `run` (kept when `report(step, mean)` raises to prune)."""
    run = run if run is not None else _FoldRun()
    for i, (tr, va) in enumerate(splits):
        pipe = make_pipeline(schema, family, params, seed, early_stopping)
        fit_pipeline(pipe, X.iloc[tr], y.iloc[tr], eval_set=(X.iloc[va], y.iloc[va]))
        va_scores = predict_scores(pipe, X.iloc[va], schema.task)
        run.scores.append(evaluate(schema.task, y.iloc[va], va_scores)[metric])
        run.models.append(pipe)
        run.oof.append((np.asarray(va), va_scores))
        run.train_scores.append(
            evaluate(schema.task, y.iloc[tr], predict_scores(pipe, X.iloc[tr], schema.task))[metric]
        )
        best = getattr(pipe.named_steps["model"], "best_iteration", None)
        if best is not None:
            run.best_iterations.append(int(best) + 1)
        if report is not None:
            report(i, float(np.mean(run.scores)))
    return run


@dataclass(frozen=True)
class _Search:
    """What every trial of one search shares, derived from params (same in every worker)."""

    family: str
    metric: str
    seed: int
    fixed: dict[str, ParamValue]
    space: dict[str, SearchParam]
    splits: list[tuple]
    early_stopping: int | None
    direction: str

    @classmethod
    def of(cls, params: Params, X: pd.DataFrame, y: pd.Series) -> _Search:
        family = params.model.family
        return cls(
            family=family,
            metric=params.metric,
            seed=params.seed,
            fixed=dict(params.model.fixed.get(family, {})),
            space=params.model.search_space[family],
            splits=cv_splits(params.cv_kind, params.split.folds, params.seed, X, y),
            early_stopping=params.tune.early_stopping_rounds if family == "xgboost" else None,
            direction="maximize" if params.greater_is_better else "minimize",
        )


def _sampler(params: Params, seed: int, constant_liar: bool = False) -> optuna.samplers.TPESampler:
    """Optuna's TPE sampler, seeded, starting to model the search after
    `tune.n_startup_trials` seeded random trials (Bergstra et al., "Algorithms for
    Hyper-Parameter Optimization", NeurIPS 2011; Optuna's TPESampler docs)."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=params.tune.n_startup_trials, constant_liar=constant_liar
    )


def _pruner(params: Params) -> optuna.pruners.BasePruner:
    import optuna

    if params.tune.pruning:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna RDB storage. SQLite: its folder is created, and a busy database is waited for
    (trials of several workers write to it) instead of failing at once."""
    import optuna

    engine: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        engine = {"connect_args": {"timeout": 60}}
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def _objective(
    search: _Search,
    schema: Schema,
    X: pd.DataFrame,
    y: pd.Series,
    fixed: dict[str, ParamValue],
    records: list[TrialRecord],
    kept: dict[int, _FoldRun],
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """One trial: the folds of a sampled point, reported per fold for pruning; its record goes
    to `records` and its folds to `kept` while it is the best complete trial seen here."""
    import optuna

    def keep_if_best(number: int, folds: _FoldRun) -> None:
        best = next(iter(kept.values()), None)
        mean = float(np.mean(folds.scores))
        if best is None or _better_mean(mean, float(np.mean(best.scores)), search.direction):
            kept.clear()
            kept[number] = folds

    def objective(trial: optuna.Trial) -> float:
        started, tuned = time.perf_counter(), suggest(trial, search.space)
        folds = _FoldRun()

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        state = "COMPLETE"
        try:
            run_folds(
                schema,
                search.family,
                {**fixed, **tuned},
                search.seed,
                X,
                y,
                search.splits,
                search.metric,
                search.early_stopping,
                report,
                run=folds,
            )
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except Exception:
            state = "FAIL"
            raise
        else:
            if np.isnan(np.mean(folds.scores)):  # Optuna fails a trial whose value is NaN
                state = "FAIL"
        finally:
            rec = TrialRecord(
                trial.number,
                tuned,
                tuple(folds.scores),
                state,
                time.perf_counter() - started,
                tuple(folds.best_iterations),
                tuple(folds.train_scores),
            )
            records.append(rec)
            if on_trial is not None:
                on_trial(rec)
            crash_point("tuning")  # tests only (CTLOOP_CRASH_AT): killed after the first trial
        if state == "COMPLETE":
            keep_if_best(trial.number, folds)
        return float(np.mean(folds.scores))

    return objective


@dataclass(frozen=True)
class TrialJob:
    """Trials of one shared study, with everything a worker needs (picklable: Dask ships it)."""

    params: Params
    schema: Schema
    X: pd.DataFrame
    y: pd.Series
    study_name: str
    storage: str  # RDB URL every worker reaches
    index: int  # seeds this job's sampler (seed + index), so jobs draw different points
    fit_threads: int  # n_jobs of each fit: the cores are shared with the other workers
    deadline: float | None = None  # epoch seconds: no trial but job 0's starts after it
    n_trials: int = 1
    point: dict[str, ParamValue] | None = None  # tried instead of a sampled point (first trial)


@dataclass(frozen=True)
class TrialsOutcome:
    """A job's trial records, and the folds (models, out-of-fold scores) of its best trial."""

    records: tuple[TrialRecord, ...]
    best_number: int | None = None
    fold_models: tuple[Pipeline, ...] = field(default=(), repr=False)
    oof_scores: np.ndarray | None = field(default=None, repr=False)
    skipped: int = 0  # trials not started: the deadline (tune.timeout_s) had passed


TrialRunner = Callable[[list[TrialJob]], list[TrialsOutcome]]
"""Runs jobs somewhere (threads, Dask workers...) and returns their outcomes in order."""


def with_fit_threads(
    family: str, fixed: dict[str, ParamValue], threads: int
) -> dict[str, ParamValue]:
    """Fixed parameters with each fit limited to `threads` cores (multi-threaded families)."""
    if family in ("xgboost", "random_forest"):
        return {**fixed, "n_jobs": threads}
    return dict(fixed)


def run_trials(job: TrialJob) -> TrialsOutcome:
    """Worker function: run `job.n_trials` trials of the shared study (any runner can call it).
    The study lives in RDB storage, so pruning and TPE see the trials of every worker. Past
    `job.deadline` no trial starts, except the very first one of job 0 (every search runs at
    least one trial); the trials not started are counted in `skipped`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = _Search.of(job.params, job.X, job.y)
    storage = open_storage(job.storage)
    tpe = _sampler(job.params, job.params.seed + job.index, constant_liar=True)
    records: list[TrialRecord] = []
    kept: dict[int, _FoldRun] = {}
    fixed = with_fit_threads(search.family, search.fixed, job.fit_threads)
    objective = _objective(search, job.schema, job.X, job.y, fixed, records, kept)
    skipped = 0
    for i in range(job.n_trials):
        first = job.index == 0 and i == 0  # the search's first trial always runs
        if not first and job.deadline is not None and time.time() >= job.deadline:
            skipped = job.n_trials - i
            break
        # a job's own point goes through its own sampler, not the study's shared queue: popping
        # an enqueued trial is not atomic on SQLite (two workers could take the same one)
        sampler: optuna.samplers.BaseSampler = tpe
        if i == 0 and job.point is not None:
            with warnings.catch_warnings():  # "experimental" since Optuna 2.4, still there in 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.PartialFixedSampler(dict(job.point), tpe)
        study = optuna.load_study(
            study_name=job.study_name, storage=storage, sampler=sampler, pruner=_pruner(job.params)
        )
        study.optimize(objective, n_trials=1, gc_after_trial=False)
    number, folds = next(iter(kept.items()), (None, None))
    return TrialsOutcome(
        tuple(records),
        number,
        tuple(folds.models) if folds else (),
        folds.oof_scores(len(job.X)) if folds else None,
        skipped,
    )


def tune(
    params: Params,
    schema: Schema,
    X: pd.DataFrame,
    y: pd.Series,
    on_trial: Callable[[TrialRecord], None] | None = None,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    runner: TrialRunner | None = None,
    fit_threads: int = 1,
    enqueue: Sequence[dict[str, ParamValue]] = (),
) -> TuningResult:
    """Seeded TPE search over params.yaml's space with per-fold median pruning.

    Without `runner` the trials run here one after another (deterministic; the study is in
    memory, or in `storage` under `study_name`). With a runner, each trial is a `TrialJob` of
    one study in `storage` and the runner spreads them over its workers: the trial order then
    depends on timing, so TPE and the pruner see a different history run to run. `enqueue`:
    points tried first, in order (e.g. the same trials for every runner in a benchmark).

    `tune.timeout_s` (off by default) is a wall-time budget: once spent, no further trial starts
    and the result says so (`stopped_by`, `budget_note`); the number of trials then depends on
    the machine's load. Without it the figures depend only on data, params and code.
    Raises TuningError when no trial completed (NaN scores say so, with the params to change)."""
    if runner is not None:
        if storage is None or study_name is None:
            raise ValueError("parallel tuning needs an RDB storage URL and a study name")
        return _tune_parallel(
            params, schema, X, y, on_trial, storage, study_name, runner, fit_threads, enqueue
        )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = _Search.of(params, X, y)
    study = optuna.create_study(
        direction=search.direction,
        pruner=_pruner(params),
        sampler=_sampler(params, search.seed),
        storage=open_storage(storage) if storage else None,
        study_name=study_name,
    )
    for point in enqueue:
        study.enqueue_trial(dict(point))
    records: list[TrialRecord] = []
    kept: dict[int, _FoldRun] = {}  # the best complete trial's folds (models, out-of-fold scores)
    budget = TimeBudget(params.tune.timeout_s)

    def stop_when_spent(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if budget.spent():  # checked after each trial: the first one always runs
            study.stop()

    study.optimize(
        _objective(search, schema, X, y, search.fixed, records, kept, on_trial),
        n_trials=params.tune.n_trials,
        callbacks=[stop_when_spent],
        show_progress_bar=params.tune.show_progress_bar,
        gc_after_trial=False,
    )
    if not any(r.state == "COMPLETE" for r in records):
        raise TuningError(_no_complete_trial(study_name or "in memory", records, budget))
    try:
        best_number = study.best_trial.number
    except ValueError as err:  # Optuna's "No trials are completed yet": never shown bare
        raise TuningError(_no_complete_trial(study_name or "in memory", records, budget)) from err
    folds = kept.get(best_number)
    return _result(
        best_number,
        records,
        search.fixed,
        tuple(folds.models) if folds else (),
        folds.oof_scores(len(X)) if folds else None,
        study_name if storage else None,
        params.tune.n_trials,
        TIME_BUDGET if len(records) < params.tune.n_trials else None,
    )


def _tune_parallel(
    params: Params,
    schema: Schema,
    X: pd.DataFrame,
    y: pd.Series,
    on_trial: Callable[[TrialRecord], None] | None,
    storage: str,
    study_name: str,
    runner: TrialRunner,
    fit_threads: int,
    enqueue: Sequence[dict[str, ParamValue]],
) -> TuningResult:
    """Create the shared study, hand one job per trial to the runner, keep the best trial."""
    import optuna

    search = _Search.of(params, X, y)
    optuna.create_study(
        storage=open_storage(storage), study_name=study_name, direction=search.direction
    )
    budget = TimeBudget(params.tune.timeout_s)
    points = list(enqueue)
    jobs = [
        TrialJob(
            params,
            schema,
            X,
            y,
            study_name,
            storage,
            i,
            fit_threads,
            budget.deadline,
            point=points[i] if i < len(points) else None,
        )
        for i in range(params.tune.n_trials)
    ]
    outcomes = runner(jobs)
    records = sorted((r for o in outcomes for r in o.records), key=lambda r: r.number)
    for rec in records:
        if on_trial is not None:
            on_trial(rec)
    complete = [r for r in records if r.state == "COMPLETE"]
    if not complete:
        raise TuningError(_no_complete_trial(study_name, records, budget))
    sign = 1.0 if search.direction == "maximize" else -1.0
    best = max(complete, key=lambda r: (sign * r.mean, -r.number))
    holder = next(o for o in outcomes if o.best_number == best.number)
    skipped = sum(o.skipped for o in outcomes)
    return _result(
        best.number,
        records,
        search.fixed,
        holder.fold_models,
        holder.oof_scores,
        study_name,
        params.tune.n_trials,
        TIME_BUDGET if skipped else None,
    )


def _no_complete_trial(study: str, records: list[TrialRecord], budget: TimeBudget) -> str:
    """Why a search has no complete trial, and what to change."""
    nan = [r for r in records if r.state == "FAIL" and any(np.isnan(r.fold_scores))]
    if nan:
        return (
            f"tune: Optuna study '{study}': no trial completed: {len(nan)} of {len(records)} "
            "trial(s) scored NaN on a validation fold (a fold with one class, or too few rows "
            "for the metric); lower split.folds, widen the window (split.window_start) or raise "
            "split.max_train_rows"
        )
    advice = "raise tune.timeout_s or tune.n_trials" if budget.deadline else "raise tune.n_trials"
    return f"tune: Optuna study '{study}': no trial completed ({len(records)} ran; {advice})"


def _better_mean(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def _result(
    best_number: int,
    records: list[TrialRecord],
    fixed: dict[str, ParamValue],
    fold_models: tuple[Pipeline, ...],
    oof_scores: np.ndarray | None,
    study_name: str | None,
    trials_planned: int,
    stopped_by: str | None,
) -> TuningResult:
    rec = next(r for r in records if r.number == best_number)
    best: dict[str, ParamValue] = {**fixed, **rec.params}
    if rec.best_iterations:  # refit without early stopping, with the trees the folds needed
        best["n_estimators"] = int(np.ceil(np.mean(rec.best_iterations)))
    return TuningResult(
        best,
        rec.mean,
        float(np.std(rec.fold_scores)),
        rec.fold_scores,
        tuple(sorted(records, key=lambda r: r.number)),
        fold_models,
        oof_scores,
        study_name,
        trials_planned,
        stopped_by,
    )


def fit_final(
    params: Params,
    schema: Schema,
    best_params: dict[str, ParamValue],
    X: pd.DataFrame,
    y: pd.Series,
) -> Pipeline:
    """Refit on the whole training part of the window with the best parameters."""
    pipe = make_pipeline(schema, params.model.family, best_params, params.seed)
    return fit_pipeline(pipe, X, y)
