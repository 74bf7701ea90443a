"""Content fingerprints of what a step reads: the keys of the cached steps (tune-and-fit, batch
validation, drift) and of the "nothing changed" check of the training flow.

Pure: no Prefect. A key changes when, and only when, something the step reads changes: the data
(by content, not by path or time), the params the step uses (not unrelated ones such as the model
card text or the serving port), the code of the modules it runs, and the versions of the
libraries that compute it. Every key is the same in every process (no salted hashing, no pickles).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ctloop.core.config import Params

# code each cached step runs (module sources; a change to any of them is a cache miss)
TRAINING_CODE = (
    "ctloop.ml.training",
    "ctloop.io.data",
    "ctloop.ml.parallel",
    "ctloop.core.schema",
    "ctloop.core.tuning",
)
VALIDATION_CODE = ("ctloop.ml.validation", "ctloop.io.data", "ctloop.core.schema")
DRIFT_CODE = ("ctloop.ml.drift", "ctloop.io.data", "ctloop.core.schema")
PROJECT_PACKAGES = ("ctloop", "tasks", "flows")
# libraries whose version changes the numbers
TRAINING_LIBS = ("xgboost", "scikit-learn", "optuna", "numpy", "pandas")
VALIDATION_LIBS = ("great-expectations", "pandas")
DRIFT_LIBS = ("evidently", "scipy", "pandas")
# params groups that change nothing a training run computes or records
OPERATIONAL_GROUPS = ("stack", "serving", "replay", "continuous")


def digest(*parts: Any) -> str:
    """sha256 of JSON-serialised parts (sorted keys; paths and other objects as str)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def frame_digest(df: pd.DataFrame | pd.Series) -> str:
    """Digest of a table's values, index, column names and dtypes (pandas' own row hashing:
    fast, and stable across processes unlike pickles)."""
    frame = df.to_frame() if isinstance(df, pd.Series) else df
    h = hashlib.sha256(
        json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode("utf-8")
    )
    h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()


@cache
def code_digest(modules: tuple[str, ...]) -> str:
    """Digest of the source files of `modules` (found, not imported: nothing heavy loads)."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"fingerprint: no source for module '{name}'")
        h.update(name.encode())
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


@cache
def package_digest(packages: tuple[str, ...] = PROJECT_PACKAGES) -> str:
    """Digest of every .py file of the project's packages: 'the code' of a training run."""
    h = hashlib.sha256()
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"fingerprint: package '{name}' not found")
        folder = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(folder.glob("*.py")):
            h.update(f"{name}/{path.name}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@cache
def library_versions(names: tuple[str, ...]) -> tuple[str, ...]:
    """'name==version' of installed distributions ('name==?' when not installed)."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name}==?")
    return tuple(out)


# --- what each step reads --------------------------------------------------------------


def tuning_inputs(params: Params) -> dict[str, Any]:
    """The params tune-and-fit reads: seed, the data roles, CV, the model family's fixed
    parameters and search space, the search settings and how trials run."""
    family = params.model.family
    return {
        "seed": params.seed,
        "data": params.data.model_dump(
            mode="json", include={"target", "task", "categorical", "numeric", "time_column"}
        ),
        "cv": params.cv_kind,
        "folds": params.split.folds,
        "family": family,
        "fixed": params.model.fixed.get(family, {}),
        "space": {
            k: v.model_dump(mode="json") for k, v in params.model.search_space[family].items()
        },
        "tune": params.tune.model_dump(mode="json", exclude={"show_progress_bar"}),
        "parallel": params.parallel.model_dump(mode="json"),
    }


def tuning_key(params: Params, X: pd.DataFrame, y: pd.Series, plan: Any = None) -> str:
    """Cache key of tune-and-fit: what it reads, nothing else."""
    return digest(
        "tune-and-fit",
        tuning_inputs(params),
        repr(plan),
        frame_digest(X),
        frame_digest(y),
        code_digest(TRAINING_CODE),
        library_versions(TRAINING_LIBS),
    )


def validation_key(batch_file: Path, batch: str, suite_file: Path) -> str:
    """Cache key of one batch's validation: its bytes, name and path, the suite's bytes, code."""
    return digest(
        "validate-batch",
        batch,
        str(Path(batch_file).resolve()),
        file_digest(batch_file),
        file_digest(suite_file),
        code_digest(VALIDATION_CODE),
        library_versions(VALIDATION_LIBS),
    )


def drift_key(params: Params, reference_files: list[Path], current_file: Path, current: str) -> str:
    """Cache key of a drift computation: both sides' bytes, the drift settings, seed, roles."""
    return digest(
        "compute-drift",
        current,
        [file_digest(p) for p in reference_files],
        file_digest(current_file),
        params.drift.model_dump(mode="json"),
        params.seed,
        params.data.model_dump(mode="json"),
        code_digest(DRIFT_CODE),
        library_versions(DRIFT_LIBS),
    )


def run_params(params: Params) -> dict[str, Any]:
    """Every param that changes what a training run computes or records (all groups but the
    operational ones, and not the progress bar)."""
    raw = params.model_dump(mode="json", by_alias=True, exclude=set(OPERATIONAL_GROUPS))
    raw["tune"].pop("show_progress_bar", None)
    return raw


def training_fingerprint(
    params: Params,
    data_version: str,
    window: Any,
    train: tuple[pd.DataFrame, pd.Series],
    holdout: tuple[pd.DataFrame, pd.Series],
) -> str:
    """Identity of a training run's outcome: the data version, window, training and holdout
    rows, the run's params and the project's code. Equal fingerprints: the same model, figures
    and records; a version with this fingerprint need not be trained or registered again."""
    return digest(
        "train-model",
        data_version,
        [list(window.train), list(window.holdout), window.current],
        [frame_digest(train[0]), frame_digest(train[1])],
        [frame_digest(holdout[0]), frame_digest(holdout[1])],
        run_params(params),
        package_digest(),
        library_versions(TRAINING_LIBS + VALIDATION_LIBS + DRIFT_LIBS + ("mlflow",)),
    )
