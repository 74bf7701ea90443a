"""Batch scoring with the registered `champion`: read a CSV/Parquet file, check it against the
model's MLflow signature before scoring, score it (with the fold models' spread and conformal
intervals when the training run recorded them), write the predictions atomically.

No Prefect here (thin wrappers: tasks/scoring.py). MLflow, scikit-learn and skops are
imported inside functions. Models are read only from the project's own registry
(ctloop/io/registry.py), which ctloop writes itself, in the skops format (ctloop/io/model_io.py).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctloop.core.config import Project
from ctloop.io import data, files, model_io, registry
from ctloop.io.tracking import use_store
from ctloop.ml import suite_rules, training, validation
from ctloop.ml.suite_rules import ContractCheck

if TYPE_CHECKING:
    from mlflow.models.signature import ModelSignature
    from sklearn.pipeline import Pipeline

SUFFIXES = (".csv", ".parquet")
UNCERTAINTY_DIR = "uncertainty"
FOLD_MODELS = "fold_models.skops"  # skops, checked types (ctloop/io/model_io.py)
LEGACY_FOLD_MODELS = "fold_models.joblib"  # runs from before skops: pickled
CONFORMAL = "conformal.json"
ROW = "row"
OUTPUT_COLUMNS = ("prediction", "score", "model_version", "uncertainty", "lower", "upper")
FLAGS = suite_rules.FLAGS
_NUMERIC = {"double", "float", "long", "integer"}


class ServingError(RuntimeError):
    """The model side cannot serve: no MLflow store, no champion, broken uncertainty artifacts."""


class SignatureMismatch(data.DataError):
    """The input file does not match the model signature; `problems` lists each column's rule."""

    def __init__(self, message: str, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.problems = problems


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InputColumn:
    """One input column of the model signature: name, MLflow type name, required or not."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class Uncertainty:
    """What the version's training run recorded for per-prediction uncertainty."""

    fold_models: tuple[Pipeline, ...] = ()
    half_width: float | None = None
    coverage: float | None = None
    notes: tuple[str, ...] = ()  # why a figure is missing (printed as warnings)


@dataclass(frozen=True)
class ChampionRef:
    """The version holding `champion` and its signature: enough to check an input before any
    model is loaded."""

    name: str
    version: str
    run_id: str | None
    columns: tuple[InputColumn, ...]

    @property
    def label(self) -> str:
        return f"model '{self.name}' v{self.version}"


@dataclass(frozen=True)
class ServingModel:
    """The champion as scored here: its pipeline and uncertainty artifacts."""

    ref: ChampionRef
    task: str
    model: Pipeline = field(repr=False)
    uncertainty: Uncertainty = field(default_factory=Uncertainty, repr=False)

    @property
    def version(self) -> str:
        return self.ref.version


def connect(project: Project) -> None:
    """Point MLflow at the project's store; a missing default SQLite store is an error (MLflow
    would silently create an empty one)."""
    uri, db = project.tracking_uri, project.path("mlflow_db")
    if uri == f"sqlite:///{db}" and not db.exists():
        raise ServingError(f"no MLflow store at {db}: train a model first (ctloop run)")
    use_store(uri)


def champion_version(project: Project) -> str:
    """The version number holding `champion` (ServingError before the first promotion)."""
    connect(project)
    name = project.params.promotion.model_name
    found = registry.get_alias(name, registry.CHAMPION)
    if found is None:
        raise ServingError(
            f"model '{name}' has no '{registry.CHAMPION}' alias yet: train and promote a model "
            "first (ctloop run)"
        )
    return str(found.version)


def signature_columns(signature: ModelSignature | None, where: str) -> tuple[InputColumn, ...]:
    """The named input columns of a signature (ServingError when there is none to check)."""
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise ServingError(f"{where}: no column signature: the input cannot be checked")
    return tuple(
        InputColumn(c.name, getattr(c.type, "name", str(c.type)), bool(c.required))
        for c in signature.inputs.inputs
    )


def resolve_champion(project: Project) -> ChampionRef:
    """The `champion` of `promotion.model_name`: version, source run and signature columns."""
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    name = project.params.promotion.model_name
    version = champion_version(project)
    where = f"model '{name}' v{version}"
    columns = signature_columns(get_model_info(f"models:/{name}/{version}").signature, where)
    run_id = MlflowClient().get_model_version(name, version).run_id
    return ChampionRef(name, version, run_id, columns)


def load_champion(project: Project, ref: ChampionRef) -> ServingModel:
    """The resolved champion's pipeline (registry.load_version) and uncertainty artifacts."""
    task = project.params.data.task
    return ServingModel(
        ref=ref,
        task=task,
        model=registry.load_version(ref.name, ref.version),
        uncertainty=load_uncertainty(ref.run_id, task, ref.label),
    )


# --- uncertainty artifacts (written by the training run, read here) ------------------------


def log_uncertainty_artifacts(
    run_id: str,
    fold_models: Sequence[Pipeline],
    half_width: float | None,
    coverage: float = 0.9,
) -> None:
    """Record on a training run what serving needs for per-prediction uncertainty: the CV fold
    models (`uncertainty/fold_models.skops`: a list, types checked by model_io.trusted_types,
    which raises ModelSafetyError) and, for regression, the conformal interval
    (`uncertainty/conformal.json`: coverage and half width). MLflow must already point at the
    project's store (tracking.use_experiment)."""
    import skops.io
    from mlflow import MlflowClient

    if not fold_models:
        raise ValueError(f"run {run_id}: no fold models to record")
    if half_width is not None and not (math.isfinite(half_width) and half_width >= 0):
        raise ValueError(f"run {run_id}: conformal half width must be >= 0, got {half_width}")
    model_io.trusted_types(list(fold_models), f"the fold models of run {run_id}")
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        models_path = Path(tmp) / FOLD_MODELS
        skops.io.dump(list(fold_models), models_path)
        client.log_artifact(run_id, str(models_path), UNCERTAINTY_DIR)
        if half_width is not None:
            conformal = Path(tmp) / CONFORMAL
            conformal.write_text(json.dumps({"coverage": coverage, "half_width": half_width}))
            client.log_artifact(run_id, str(conformal), UNCERTAINTY_DIR)


def load_uncertainty(run_id: str | None, task: str, where: str) -> Uncertainty:
    """The fold models (and for regression the conformal interval) of a version's training run.
    Missing artifacts (versions trained before they were recorded) give notes, not errors; a
    present but unreadable artifact is an error."""
    from mlflow import MlflowClient

    if not run_id:
        return Uncertainty(notes=(f"{where} has no source run: uncertainty is NaN",))
    names = {Path(a.path).name for a in MlflowClient().list_artifacts(run_id, UNCERTAINTY_DIR)}
    notes: list[str] = []
    fold_models: tuple[Pipeline, ...] = ()
    if FOLD_MODELS in names:
        fold_models = _read_fold_models(run_id, where, FOLD_MODELS)
    elif LEGACY_FOLD_MODELS in names:
        fold_models = _read_fold_models(run_id, where, LEGACY_FOLD_MODELS)
        notes.append(
            f"{where}: {UNCERTAINTY_DIR}/{LEGACY_FOLD_MODELS} of run {run_id} is pickled (from "
            "before skops): loaded because it comes from this project's store; a new training "
            f"records {FOLD_MODELS}"
        )
    else:
        notes.append(
            f"{where}: its training run {run_id} has no {UNCERTAINTY_DIR}/{FOLD_MODELS} (trained "
            "before fold models were recorded): uncertainty is NaN"
        )
    if task != "regression":
        return Uncertainty(fold_models, notes=tuple(notes))
    if CONFORMAL not in names:
        notes.append(
            f"{where}: its training run {run_id} has no {UNCERTAINTY_DIR}/{CONFORMAL}: "
            "lower and upper are NaN"
        )
        return Uncertainty(fold_models, notes=tuple(notes))
    half_width, coverage = _read_conformal(run_id, where)
    return Uncertainty(fold_models, half_width, coverage, tuple(notes))


def _download(run_id: str, name: str) -> Path:
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="ctloop-uncertainty-"))
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{UNCERTAINTY_DIR}/{name}", dst_path=str(folder)
        )
    )


def _read_fold_models(run_id: str, where: str, name: str) -> tuple[Pipeline, ...]:
    """The fold models of `name`: skops (checked types, no pickle) or the legacy joblib file."""
    path = _download(run_id, name)
    if name == FOLD_MODELS:
        loaded = model_io.load_skops(path, f"{where}: {UNCERTAINTY_DIR}/{name} of run {run_id}")
    else:
        import joblib

        loaded = joblib.load(path)
    if not isinstance(loaded, list | tuple) or not loaded:
        raise ServingError(
            f"{where}: {UNCERTAINTY_DIR}/{name} of run {run_id} is not a non-empty list "
            f"of fitted pipelines (got {type(loaded).__name__})"
        )
    for i, model in enumerate(loaded):
        if not hasattr(model, "predict"):
            raise ServingError(
                f"{where}: {UNCERTAINTY_DIR}/{name} of run {run_id}: item {i} is a "
                f"{type(model).__name__}, not a fitted pipeline"
            )
    return tuple(loaded)


def _read_conformal(run_id: str, where: str) -> tuple[float, float]:
    path = _download(run_id, CONFORMAL)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return float(raw["half_width"]), float(raw["coverage"])
    except (ValueError, KeyError, TypeError) as err:
        raise ServingError(
            f"{where}: {UNCERTAINTY_DIR}/{CONFORMAL} of run {run_id} is not "
            f'{{"coverage": float, "half_width": float}} ({err!r})'
        ) from None


# --- input -------------------------------------------------------------------------------


def check_suffix(path: Path, role: str) -> None:
    """Only CSV and Parquet are read and written."""
    if path.suffix.lower() not in SUFFIXES:
        raise data.DataError(
            f"{path}: rule 'file_type': the {role} must be .csv or .parquet, "
            f"got '{path.suffix or '(no extension)'}'"
        )


def read_input(path: Path) -> pd.DataFrame:
    """The file to score; missing, unreadable, empty or of another type raise DataError."""
    check_suffix(path, "input")
    if not path.is_file():
        raise data.DataError(f"{path}: rule 'exists': no such file")
    frame = data.read_table(path)
    if frame.empty:
        raise data.DataError(f"{path}: rule 'not_empty': file holds no rows to score")
    return frame


@dataclass(frozen=True)
class CheckedInput:
    """An input that matches the signature: the model's columns cast to its types, the columns
    the model ignores, the optional columns that were absent (filled with NaN), and once checked
    against the data contract (check_contract) what its rows broke."""

    features: pd.DataFrame
    ignored: tuple[str, ...]
    filled: tuple[str, ...]
    contract: ContractCheck | None = None


def validate_input(
    frame: pd.DataFrame, columns: Sequence[InputColumn], source: str, model: str = "the model"
) -> CheckedInput:
    """Check every signature column before scoring and cast it to the signature's type (integers
    to doubles, numeric text to numbers); every problem is listed in one SignatureMismatch naming
    the file, the column and the rule. Extra columns are ignored (and reported)."""
    problems: list[str] = []
    cast: dict[str, pd.Series] = {}
    filled: list[str] = []
    for col in columns:
        if col.name not in frame.columns:
            if col.required:
                problems.append(
                    f"column '{col.name}': rule 'missing_column': required by the model "
                    f"({col.type})"
                )
            else:
                filled.append(col.name)
                cast[col.name] = pd.Series(np.nan, index=frame.index, dtype="float64")
            continue
        series, problem = cast_column(frame[col.name], col.type)
        if problem:
            problems.append(f"column '{col.name}': rule 'type': {problem}")
        else:
            cast[col.name] = series
    if problems:
        raise SignatureMismatch(
            f"{source}: does not match the signature of {model} ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems),
            tuple(problems),
        )
    wanted = {c.name for c in columns}
    ignored = tuple(c for c in frame.columns if c not in wanted)
    features = pd.DataFrame({c.name: cast[c.name] for c in columns}, index=frame.index)
    return CheckedInput(features, ignored, tuple(filled))


def check_contract(
    project: Project, checked: CheckedInput, source: str, model: str = "the model"
) -> CheckedInput:
    """Apply the data contract of ingestion (the project's expectation suite,
    ctloop/ml/suite_rules.py)
    to a signature-checked input: a critical failure (±inf, values outside the widened range
    beyond its tolerance, replaced categories, nulls where the suite forbids them) raises
    ContractViolation naming the file, each column and rule, before any model is loaded;
    anything else is kept on the result (reported, rows flagged in `ctloop_flags`). DataError
    (rule `suite`) without a readable suite."""
    suite = validation.suite_file(
        project.path("expectations"), project.params.validation.suite_name
    )
    rules = suite_rules.load_contract(suite, list(checked.features.columns))
    found = suite_rules.check(rules, checked.features)
    if found.critical_failures:
        raise suite_rules.ContractViolation(source, model, found)
    return replace(checked, contract=found)


def cast_column(series: pd.Series, kind: str) -> tuple[pd.Series, str | None]:
    """The column as the signature type, or why it cannot be cast safely."""
    if kind in _NUMERIC:
        return _as_number(series, kind)
    if kind == "string":
        return _as_text(series)
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(series) or series.isna().all():
            return series.astype("boolean"), None
        return series, f"expected boolean, got {series.dtype}"
    if kind == "datetime":
        parsed = pd.to_datetime(series, errors="coerce")
        return _unless_lost(series, parsed, "datetime", "dates")
    return series, None  # binary and other types: handed to the model as they are


def _as_number(series: pd.Series, kind: str) -> tuple[pd.Series, str | None]:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        numbers = series.astype("float64")
    elif pd.api.types.is_datetime64_any_dtype(series):
        return series, f"expected {kind}, got {series.dtype}"
    else:
        parsed = pd.to_numeric(series, errors="coerce").astype("float64")
        numbers, problem = _unless_lost(series, parsed, kind, "numbers")
        if problem:
            return series, problem
    if kind in {"long", "integer"}:
        values = numbers.dropna()
        if len(values) < len(numbers) or not np.all(np.mod(values, 1) == 0):
            return series, f"expected {kind}: values must be whole numbers, with no missing value"
        return numbers.astype("int64"), None
    return numbers, None


def _as_text(series: pd.Series) -> tuple[pd.Series, str | None]:
    if series.isna().all():
        return series.astype(object).where(series.notna(), None), None
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series, (
            f"expected string, got {series.dtype} (numbers are not turned into text: "
            "they would not match the categories the model learned)"
        )
    if isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(series):
        return series.astype(object).where(series.notna(), None), None
    return series, f"expected string, got {series.dtype}"


def _unless_lost(
    raw: pd.Series, parsed: pd.Series, kind: str, what: str
) -> tuple[pd.Series, str | None]:
    """Parsed values, or how many non-empty values were not `what` (with an example)."""
    lost = parsed.isna() & raw.notna()
    if not lost.any():
        return parsed, None
    example = raw[lost].iloc[0]
    return raw, f"expected {kind}: {int(lost.sum())} value(s) are not {what}, e.g. {example!r}"


# --- scoring -----------------------------------------------------------------------------


def score(serving: ServingModel, checked: CheckedInput) -> pd.DataFrame:
    """prediction (label or value), score (positive-class probability or value), model_version,
    uncertainty (spread of the fold models' scores), and lower/upper for regression."""
    X = checked.features
    scores = training.predict_scores(serving.model, X, serving.task).astype("float64")
    out = pd.DataFrame(index=X.index)
    out["prediction"] = _labels(serving.model, scores) if serving.task != "regression" else scores
    out["score"] = scores
    out["model_version"] = serving.version
    out["uncertainty"] = fold_spread(serving.uncertainty.fold_models, X, serving.task)
    if serving.task == "regression":
        half = serving.uncertainty.half_width
        width = np.nan if half is None else half
        out["lower"] = scores - width
        out["upper"] = scores + width
    return out


def _labels(model: Pipeline, scores: np.ndarray) -> np.ndarray:
    """The class with probability >= 0.5 (binary), as the model's own labels."""
    classes = np.asarray(getattr(model, "classes_", [0, 1]))
    return classes[(scores >= 0.5).astype(int)]


def fold_spread(fold_models: Sequence[Pipeline], X: pd.DataFrame, task: str) -> np.ndarray:
    """Standard deviation across the fold models of their score for each row (NaN without)."""
    if not fold_models:
        return np.full(len(X), np.nan)
    per_model = np.vstack([training.predict_scores(m, X, task) for m in fold_models])
    return per_model.astype("float64").std(axis=0)


def assemble(frame: pd.DataFrame, checked: CheckedInput, scored: pd.DataFrame) -> pd.DataFrame:
    """The output rows: position in the input, the input's columns the model does not use (ids,
    times, labels), then the scores, then `ctloop_flags` when a row broke a rule of the data
    contract (only then: a clean file's output is unchanged). Input columns named like an
    output column get `input_`."""
    flags = checked.contract.flags if checked.contract is not None else None
    flagged = flags is not None and bool((flags != "").any())
    kept = frame[list(checked.ignored)].rename(
        columns={c: f"input_{c}" for c in checked.ignored if c in (*OUTPUT_COLUMNS, ROW, FLAGS)}
    )
    parts = [kept, scored, flags.rename(FLAGS)] if flagged and flags is not None else [kept, scored]
    out = pd.concat(parts, axis=1).reset_index(drop=True)
    out.insert(0, ROW, np.arange(len(out)))
    return out


# --- output ------------------------------------------------------------------------------


def write_output(frame: pd.DataFrame, path: Path) -> Path:
    """Write CSV or Parquet by the extension, atomically (temporary file, then rename)."""
    check_suffix(path, "output")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        return files.write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    return files.write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def default_output(project: Project, input_path: Path, version: str) -> Path:
    """`<paths.predictions>/<input stem>.champion-v<N>.parquet`."""
    return project.path("predictions") / f"{input_path.stem}.champion-v{version}.parquet"


# --- the whole path ----------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionReport:
    """What a scoring run did: where, how many rows, which version, and the score summary."""

    input: str
    output: str
    rows: int
    model: str
    version: str
    ignored: tuple[str, ...]
    summary: dict[str, float]
    warnings: tuple[str, ...]
    contract: tuple[str, ...] = ()  # one line per column and rule the rows broke
    flagged: int = 0  # rows with a non-empty ctloop_flags

    def lines(self) -> list[str]:
        """Terminal summary."""
        figures = ", ".join(f"{k} {v:.4g}" for k, v in self.summary.items())
        out = [
            f"scored {self.rows} row(s) of {self.input} with {self.model} v{self.version}",
            f"  output  : {self.output}",
            f"  summary : {figures}",
        ]
        if self.ignored:
            out.append(f"  ignored by the model (kept in the output): {', '.join(self.ignored)}")
        if self.contract:
            out.append(f"  data contract: {self.flagged} row(s) flagged in {FLAGS}:")
            out += [f"    - {line}" for line in self.contract]
        return out


def summarize(scored: pd.DataFrame, task: str) -> dict[str, float]:
    """Score distribution, positive share (classification) and mean uncertainty."""
    s = scored["score"].astype("float64")
    out = {
        "score_mean": float(s.mean()),
        "score_min": float(s.min()),
        "score_median": float(s.median()),
        "score_max": float(s.max()),
    }
    if task != "regression":
        out["positive_share"] = float((s >= 0.5).mean())
    out["uncertainty_mean"] = float(scored["uncertainty"].mean())
    return out


def resolve_input(project: Project, input_path: str | Path) -> Path:
    """A relative input path is relative to the project root (the folder of params.yaml)."""
    path = Path(input_path).expanduser()
    return path if path.is_absolute() else project.root / path


def predict_file(
    project: Project, input_path: Path, output_path: Path | None = None
) -> PredictionReport:
    """Score a CSV/Parquet file with the champion and write the predictions (no Prefect). The
    input is checked against the signature and the data contract before the model is loaded."""
    if output_path is not None:
        check_suffix(output_path, "output")
    frame = read_input(input_path)
    ref = resolve_champion(project)
    checked = validate_input(frame, ref.columns, str(input_path), ref.label)
    checked = check_contract(project, checked, str(input_path), ref.label)
    serving = load_champion(project, ref)
    return finish(project, serving, frame, checked, input_path, output_path)


def finish(
    project: Project,
    serving: ServingModel,
    frame: pd.DataFrame,
    checked: CheckedInput,
    input_path: Path,
    output_path: Path | None,
) -> PredictionReport:
    """Score a checked input, write it and report (shared by the CLI and the flow)."""
    scored = score(serving, checked)
    target = output_path or default_output(project, input_path, serving.version)
    write_output(assemble(frame, checked, scored), target)
    notes = list(serving.uncertainty.notes)
    if checked.filled:
        notes.append(f"optional column(s) absent, scored as missing: {', '.join(checked.filled)}")
    return PredictionReport(
        input=str(input_path),
        output=str(target),
        rows=len(scored),
        model=serving.ref.name,
        version=serving.version,
        ignored=checked.ignored,
        summary=summarize(scored, serving.task),
        warnings=tuple(notes),
        contract=tuple(checked.contract.lines()) if checked.contract is not None else (),
        flagged=checked.contract.flagged_rows if checked.contract is not None else 0,
    )


# --- the scoring server ------------------------------------------------------------------


def serve_command(bin_dir: Path, host: str, port: int) -> list[str]:
    """argv of the scoring server (ctloop/ops/scoring_app.py: MLflow's scoring app around a version
    ctloop loads itself) under this environment's uvicorn, one worker."""
    return [
        str(bin_dir / "uvicorn"),
        *("ctloop.ops.scoring_app:app", "--host", host, "--port", str(port), "--workers", "1"),
    ]


def serve_env(
    base: dict[str, str], tracking_uri: str, bin_dir: Path, name: str, version: str
) -> dict[str, str]:
    """The server's environment: the project's store, the version to serve, and the venv first
    on PATH. No MLFLOW_ALLOW_PICKLE_DESERIALIZATION: skops versions load without it, legacy
    pickled ones turn it on for their one load (model_io.load_model_dir); one inherited from
    `base` is dropped."""
    path = os.pathsep.join([str(bin_dir), base.get("PATH", "")]).rstrip(os.pathsep)
    env = {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one bar line per file in the log
        **base,
        "MLFLOW_TRACKING_URI": tracking_uri,
        model_io.SERVE_MODEL_ENV: name,
        model_io.SERVE_VERSION_ENV: version,
        "PATH": path,
    }
    env.pop(model_io.PICKLE_SWITCH, None)
    return env


def serve_url(host: str, port: int) -> str:
    """Where clients reach the server (a wildcard bind address is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class ServedInfo:
    """What the scoring server answers per row, and a request it accepts (None: no example)."""

    answers: str
    example: dict[str, Any] | None


def served_info(name: str, version: str, task: str, rows: int = 2) -> ServedInfo:
    """From the version's MLmodel: the pyfunc predict function (versions logged before
    probabilities were served answer labels) and the first rows of the logged request example
    (`dataframe_split`). MLflow must point at the project's store."""
    import mlflow
    from mlflow.models import get_model_info

    uri = f"models:/{name}/{version}"
    info = get_model_info(uri)
    predict_fn = info.flavors.get("python_function", {}).get("predict_fn")
    if task == "regression":
        answers = "one predicted value per row"
    elif predict_fn == "predict_proba":
        answers = "one [p(class 0), p(class 1)] pair per row"
    else:
        answers = (
            "one class label per row (this version was logged before probabilities were served)"
        )
    saved = info.saved_input_example_info or {}
    if "serving_input_path" not in saved:
        return ServedInfo(answers, None)
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{saved['serving_input_path']}")
    split = json.loads(Path(path).read_text(encoding="utf-8")).get("dataframe_split")
    if not isinstance(split, dict) or "data" not in split:
        return ServedInfo(answers, None)
    data_rows = [[_json_value(v) for v in row] for row in split["data"][:rows]]
    return ServedInfo(
        answers, {"dataframe_split": {"columns": split["columns"], "data": data_rows}}
    )


def _json_value(value: Any) -> Any:
    """NaN is not JSON: a missing value is sent as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def curl_command(url: str, body: dict[str, Any]) -> str:
    """A ready-to-copy request to the scoring server."""
    text = json.dumps(body, separators=(",", ":"))
    return f"curl -s {url}/invocations -H 'Content-Type: application/json' -d '{text}'"
