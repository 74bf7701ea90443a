"""MLflow tracking: experiment set-up, parent/trial runs, lineage, plots and model logging.

No Prefect here. MLflow is imported inside functions (it is heavy and must not load at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ctloop.core.env import apply_env_defaults
from ctloop.core.tuning import TrialRecord, TuningResult
from ctloop.io import model_io
from ctloop.io.recovery import FAILURE_TAG, process_tags

# tags ctloop writes on MLflow runs and reads back (the window, the inputs' fingerprint, the report)
SUITE_REFERENCE_TAG = "ctloop.train_batches"
DRIFT_REPORT_TAG = "ctloop.drift_report"
FINGERPRINT_TAG = "ctloop.fingerprint"


if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.pipeline import Pipeline

    from ctloop.core.config import Project


# The MLflow 3 UI opens an experiment in its GenAI view (traces, token usage) unless the
# experiment's type says otherwise; `custom_model_development` is its classic ML kind (the values
# are those of the UI bundle's ExperimentKind: genai_development, custom_model_development, ...)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows on a run or experiment
MONITORING_SUFFIX = "-monitoring"  # monitoring runs live in `<experiment>-monitoring`

EXPERIMENT_NOTES = {
    "training": (
        "ctloop's **training runs**, one per training (`v<N> train <window> <trigger>`), with "
        "one nested run per tuning trial. Monitoring runs are in the experiment `{monitoring}`."
    ),
    "monitoring": (
        "ctloop's **monitoring runs**, one per batch and champion (`monitor <batch> v<N>`): "
        "the champion's score on the batch, drift, estimated performance and the policy's "
        "verdict. Training runs are in the experiment `{training}`."
    ),
}


def configure(
    tracking_uri: str, experiment: str, artifact_root: Path, purpose: str = "training"
) -> str:
    """Point MLflow at the store and get-or-create the experiment; returns its id.

    With a database URI (the embedded SQLite default) artifacts go to the project's artifact
    folder, not to ./mlruns of whatever the working directory is; a tracking server keeps its own.
    The experiment is tagged as a classic ML experiment (the MLflow UI then opens on its runs,
    not on traces) and described (`purpose`: `training` or `monitoring`), also when an older
    ctloop created it without those tags.
    """
    import mlflow
    from mlflow import MlflowClient

    apply_env_defaults()
    use_store(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = str(found.experiment_id)
        tags = dict(found.tags or {})
    else:
        where = None if tracking_uri.startswith("http") else (artifact_root / experiment).as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=where)
        tags = {}
    base = experiment.removesuffix(MONITORING_SUFFIX)
    note = EXPERIMENT_NOTES[purpose].format(training=base, monitoring=base + MONITORING_SUFFIX)
    client = MlflowClient()
    for key, value in ((EXPERIMENT_KIND_TAG, CLASSIC_ML_KIND), (NOTE_TAG, note)):
        if key not in tags:
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def use_store(tracking_uri: str) -> None:
    """Make `tracking_uri` this process's tracking and registry store.

    mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; that is undone here, so the
    variable keeps meaning "the user's override" for the next project loaded in this process.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def git_commit(root: Path) -> str:
    """Commit of the code (with a -dirty suffix for uncommitted changes), or 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def start_parent_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a parent run (left RUNNING until finish_run) and return its id. The owning process
    is tagged (ctloop/io/recovery.py: a run whose process died is marked FAILED later)."""
    from mlflow import MlflowClient

    run = MlflowClient().create_run(
        experiment_id, run_name=run_name, tags={**tags, **process_tags()}
    )
    return run.info.run_id


@contextmanager
def resumed(run_id: str) -> Iterator[None]:
    """`run_id` as the active run for MLflow's fluent API, left RUNNING on exit.

    `with mlflow.start_run(run_id=...)` would end it FINISHED: a crash later in the training
    would then leave a run that looks complete. Only finish_run closes a ctloop run."""
    import mlflow

    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        mlflow.end_run(status="RUNNING")


def reopen_run(run_id: str) -> None:
    """Take over a run another process started and finished (a later DVC stage of the same
    training): it is RUNNING again and tagged with this process, so a crash of this process is
    found by the next reconciliation and a live one is left alone. Close it with finish_run."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in process_tags().items():
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status="RUNNING")


def finish_run(run_id: str, failed: bool = False, error: str | None = None) -> None:
    """End a run FINISHED, or FAILED with `error` (what went wrong) in the `ctloop.failure` tag,
    so the MLflow UI shows why a step after registration failed."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if failed and error:
            client.set_tag(run_id, FAILURE_TAG, error[:4000])
    finally:  # the status is set even when the tag cannot be
        client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def log_trial(parent_run_id: str, experiment_id: str, rec: TrialRecord, metric: str) -> None:
    """One nested run per tuning trial: parameters, fold scores, train scores, state."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=f"trial-{rec.number:03d}",
        tags={
            "mlflow.parentRunId": parent_run_id,
            "ctloop.kind": "trial",
            "ctloop.trial_state": rec.state,
            **process_tags(),
        },
    )
    ts = int(pd.Timestamp.now().timestamp() * 1000)
    metrics = [Metric(f"fold_{metric}", s, ts, i) for i, s in enumerate(rec.fold_scores)]
    metrics += [Metric(f"fold_train_{metric}", s, ts, i) for i, s in enumerate(rec.train_scores)]
    if rec.fold_scores:
        metrics.append(Metric(f"cv_{metric}_mean", rec.mean, ts, 0))
    metrics.append(Metric("trial_seconds", rec.seconds, ts, 0))
    params = [Param(k, str(v)) for k, v in rec.params.items()]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=params,
        tags=[RunTag("ctloop.folds_done", str(len(rec.fold_scores)))],
    )
    client.set_terminated(run.info.run_id, "FINISHED" if rec.state == "COMPLETE" else "KILLED")


def log_dataset(
    run_id: str, df: pd.DataFrame, source: str, name: str, target: str, context: str
) -> str:
    """Dataset lineage (with MLflow's content digest) on the run; returns the digest.

    Through the client, so the run stays RUNNING (see resumed)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # the integer-column hint concerns model signatures only
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        dataset = mlflow.data.from_pandas(df, source=source, targets=target, name=name)
        # MLflow infers text columns value by value in Python (seconds per 100k rows); the
        # schema of a few representative rows is the same (see schema_rows)
        dataset.__dict__["schema"] = infer_schema(df.iloc[schema_rows(df)])
    entry = DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
    MlflowClient().log_inputs(run_id, datasets=[entry])
    return dataset.digest


def schema_rows(df: pd.DataFrame) -> list[int]:
    """Positions of the first present and the first missing value of every column: MLflow infers
    the same column types and required flags from these rows as from the whole table."""
    rows: set[int] = set()
    for col in df.columns:
        missing = df[col].isna().to_numpy()
        for wanted in (False, True):
            hits = (missing == wanted).nonzero()[0]
            if len(hits):
                rows.add(int(hits[0]))
    return sorted(rows)


def infer_schema(df: pd.DataFrame) -> Any:
    """MLflow's own schema inference (mlflow.types.Schema) of a table."""
    from mlflow.models import infer_signature

    return infer_signature(df).inputs


STOPPED_BY_TAG = "ctloop.tune.stopped_by"  # time_budget (tune.timeout_s) or n_trials
BUDGET_NOTE_TAG = "ctloop.tune.budget_note"  # "stopped by the time budget after k of n trials"


def log_tuning(run_id: str, tuning: TuningResult, metric: str) -> None:
    """Best parameters, CV mean and std, per-fold scores of the best trial; trials planned and
    run (metrics `tune_trials_planned`, `tune_trials_run`) and what ended the search (tag
    `ctloop.tune.stopped_by`, and `ctloop.tune.budget_note` when the time budget cut it short);
    the Optuna study (tag `ctloop.optuna_study`) when it lives in tune.storage."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    ts = int(pd.Timestamp.now().timestamp() * 1000)
    metrics = [
        Metric(f"cv_{metric}_mean", tuning.cv_mean, ts, 0),
        Metric(f"cv_{metric}_std", tuning.cv_std, ts, 0),
        Metric("n_trials", float(len(tuning.trials)), ts, 0),
        Metric("n_pruned", float(tuning.n_pruned), ts, 0),
        Metric("tune_trials_planned", float(tuning.trials_planned), ts, 0),
        Metric("tune_trials_run", float(tuning.trials_run), ts, 0),
    ]
    metrics += [Metric(f"cv_fold_{metric}", s, ts, i) for i, s in enumerate(tuning.fold_scores)]
    params = [Param(k, str(v)) for k, v in tuning.best_params.items()]
    tags = [RunTag(STOPPED_BY_TAG, tuning.stopped_by or "n_trials")]
    if tuning.budget_note:
        tags.append(RunTag(BUDGET_NOTE_TAG, tuning.budget_note))
    if tuning.study_name:
        tags.append(RunTag("ctloop.optuna_study", tuning.study_name))
    MlflowClient().log_batch(run_id, metrics=metrics, params=params, tags=tags)


def log_metrics(run_id: str, metrics: dict[str, float], prefix: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, f"{prefix}{key}", value)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    """Tags on a registered model version (the registry page of the version shows them)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def run_tags(run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_run(run_id).data.tags)


def run_experiment(run_id: str) -> str:
    """The id of the experiment a run is in (training or monitoring)."""
    from mlflow import MlflowClient

    return str(MlflowClient().get_run(run_id).info.experiment_id)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, text, artifact_file)


def set_version_description(name: str, version: str, text: str) -> None:
    """The version's description: Markdown the MLflow UI shows on the version page."""
    from mlflow import MlflowClient

    MlflowClient().update_model_version(name, version, description=text)


def has_signature(name: str, version: str) -> bool:
    """Whether the registered version carries a model signature (read back from its MLmodel)."""
    from mlflow.models import get_model_info

    return get_model_info(f"models:/{name}/{version}").signature is not None


def log_figures(run_id: str, figures: dict[str, Figure]) -> None:
    """Each figure as plots/<name>.png on the run."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for name, fig in figures.items():
        client.log_figure(run_id, fig, f"plots/{name}.png")


def log_artifact(run_id: str, path: Path, folder: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_artifact(run_id, str(path), folder)


def log_json(run_id: str, payload: dict[str, Any], path: str) -> None:
    """A JSON document as an artifact of the run (e.g. summary.json)."""
    from mlflow import MlflowClient

    MlflowClient().log_dict(run_id, payload, path)


def read_json_artifact(run_id: str, path: str) -> dict[str, Any] | None:
    """A JSON artifact of a run; None when the run has no such artifact."""
    from mlflow import MlflowClient

    client = MlflowClient()
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())


def finished_runs_tagged(
    experiment_id: str, key: str, value: str, limit: int = 5, status: str = "FINISHED"
) -> list[str]:
    """Ids of the experiment's runs in `status` (FINISHED, FAILED) with tag `key` = `value`,
    newest first."""
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id],
        f"tags.`{key}` = '{value}' and attributes.status = '{status}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [r.info.run_id for r in runs]


def read_csv_artifact(run_id: str, path: str) -> pd.DataFrame | None:
    """A CSV artifact of a run as a table; None when the run has no such artifact."""
    return _read_table_artifact(run_id, path, pd.read_csv)


def _read_table_artifact(
    run_id: str, path: str, reader: Callable[[str], pd.DataFrame]
) -> pd.DataFrame | None:
    """The artifact `path` of the run read by `reader` from a temporary download; None when the
    run has no such artifact."""
    from mlflow import MlflowClient

    client = MlflowClient()
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return reader(client.download_artifacts(run_id, path, tmp))


def log_parquet(run_id: str, frame: pd.DataFrame, path: str) -> None:
    """A table as a Parquet artifact of the run at `path` (`folder/name.parquet`; index dropped)."""
    from mlflow import MlflowClient

    folder, _, name = path.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        frame.to_parquet(local, index=False)
        MlflowClient().log_artifact(run_id, str(local), folder or None)


def read_parquet_artifact(run_id: str, path: str) -> pd.DataFrame | None:
    """A Parquet artifact of a run as a table; None when the run has no such artifact."""
    return _read_table_artifact(run_id, path, pd.read_parquet)


def log_model(
    run_id: str, pipeline: Pipeline, example: pd.DataFrame, scores: Any, registered_name: str
) -> str:
    """Log the fitted pipeline with signature and input example; register it as a new version
    and return the version number.

    Saved in the skops format with exactly the checked types the pipeline contains
    (model_io.trusted_types), so loading it runs no code; a type outside the trusted modules
    raises model_io.ModelSafetyError before anything is logged.

    The pyfunc flavor (what `mlflow models serve` and `ctloop serve-model` answer with) predicts
    probabilities for a classifier (`predict_proba`: one [p(class 0), p(class 1)] pair per row),
    labels being a threshold away; a regressor predicts values. The sklearn flavor, which ctloop
    loads itself (registry.load_version), is the plain pipeline either way."""
    import mlflow
    import sklearn
    import skops
    import xgboost
    from mlflow.models import infer_signature

    trusted = model_io.trusted_types(pipeline, f"the pipeline of run {run_id}")

    # integers as doubles: a later batch with a missing value must still match the signature
    ints = example.select_dtypes("integer").columns
    example = example.astype(dict.fromkeys(ints, "float64"))
    predict_fn = "predict_proba" if hasattr(pipeline, "predict_proba") else "predict"
    outputs = pipeline.predict_proba(example) if predict_fn == "predict_proba" else scores
    signature = infer_signature(example, outputs)
    requirements = [
        f"scikit-learn=={sklearn.__version__}",
        f"xgboost=={xgboost.__version__}",
        f"pandas=={pd.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"skops=={skops.__version__}",
    ]
    with resumed(run_id):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=requirements,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted,
            pyfunc_predict_fn=predict_fn,
        )
    return str(info.registered_model_version)


def use_experiment(project: Project) -> str:
    """Point MLflow at the project's store and experiment (every step that writes to MLflow
    calls this first: a DVC stage is a process of its own); returns the experiment id. The
    training runs are there; the monitoring runs in `use_monitoring_experiment`'s."""
    return configure(
        project.tracking_uri, project.params.tracking.experiment, project.path("mlflow_artifacts")
    )


def monitoring_experiment_name(experiment: str) -> str:
    """`ctloop` -> `ctloop-monitoring`: the experiment of the monitoring runs."""
    return experiment + MONITORING_SUFFIX


def use_monitoring_experiment(project: Project) -> str:
    """Like `use_experiment`, for the experiment of the monitoring runs
    (`<tracking.experiment>-monitoring`): the MLflow UI lists trainings and monitoring apart."""
    return configure(
        project.tracking_uri,
        monitoring_experiment_name(project.params.tracking.experiment),
        project.path("mlflow_artifacts"),
        purpose="monitoring",
    )


def set_note(run_id: str, text: str) -> None:
    """The run's description (Markdown; the MLflow UI shows it on the run page)."""
    from mlflow import MlflowClient

    MlflowClient().set_tag(run_id, NOTE_TAG, text[:5000])


def rename_run(run_id: str, name: str) -> None:
    """Give a run a new name (e.g. with the model version once it is registered)."""
    from mlflow import MlflowClient

    MlflowClient().update_run(run_id, name=name)
