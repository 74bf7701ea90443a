"""Model files that run no code when loaded: skops with types checked against ctloop's allowlist.

Every new version is saved with MLflow's sklearn flavor in the skops format. skops rebuilds an
object only from types it is told to trust; ctloop computes that list from the fitted pipeline at
save time (`trusted_types`) and, at load time, from the file itself (`load_skops`), and accepts
only classes from the modules in TRUSTED_MODULES. The list recorded in the MLmodel file is never
used for loading: a crafted model could list any type there. MLflow's own loader is not used
for skops files either, since it needs MLFLOW_ALLOW_PICKLE_DESERIALIZATION for every format.

Versions saved before (cloudpickle, `model.pkl`) still load through MLflow, with pickle allowed
for that one call only (`allow_pickle`) and a LegacyModelWarning naming the version; ctloop
loads only from the project's own registry (ctloop/io/registry.py).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

#: Top-level packages whose classes a model file may contain: scikit-learn, XGBoost (its sklearn
#: wrapper and Booster, which skops stores through the Booster's own raw model bytes), numpy and
#: scipy (arrays, dtypes, sparse matrices) and ctloop's own packages.
TRUSTED_MODULES: tuple[str, ...] = ("sklearn", "xgboost", "numpy", "scipy", "tasks", "ctloop")

SKOPS = "skops"  # mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS, without importing MLflow here
LEGACY_FORMATS = ("cloudpickle", "pickle")
PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
SERVE_MODEL_ENV = (
    "CTLOOP_SERVE_MODEL"  # the scoring server's model name (ctloop/ops/scoring_app.py)
)
SERVE_VERSION_ENV = "CTLOOP_SERVE_VERSION"  # and its version


class ModelSafetyError(RuntimeError):
    """A model references a type ctloop does not trust, or is stored in a format it will not
    load (raised before anything is deserialised)."""


class LegacyModelWarning(UserWarning):
    """A version stored with (cloud)pickle was loaded, from the project's own registry."""


def _root(name: str) -> str:
    return name.split(".", 1)[0]


def outside_allowlist(names: Iterable[str], modules: Iterable[str] = TRUSTED_MODULES) -> list[str]:
    """The fully qualified type names (as skops reports them, `pkg.module.Class`) whose top-level
    package is not one of `modules`, sorted. `sklearn` covers `sklearn.tree._tree.Tree`, not
    `sklearnx.Evil`."""
    allowed = set(modules)
    return sorted({n for n in names if _root(n) not in allowed})


def _not_a_class(name: str) -> bool:
    """True when `name` (in an allowed package, so importing its module is safe) is not a class:
    functions and other objects are refused, since a trusted estimator could call them."""
    module_name, _, attr = name.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError:
        return True
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return not isinstance(obj, type)


def check_types(names: Iterable[str], where: str) -> list[str]:
    """The names, sorted, once every one is a class from TRUSTED_MODULES.

    Raises ModelSafetyError naming every other type (`where` says which model)."""
    names = sorted(set(names))
    outside = outside_allowlist(names)
    if outside:
        raise ModelSafetyError(
            f"{where} references {len(outside)} type(s) outside the trusted modules "
            f"({', '.join(TRUSTED_MODULES)}): {', '.join(outside)}; ctloop neither saves nor "
            "loads such a model (a type there could run code when loaded)"
        )
    not_classes = [n for n in names if _not_a_class(n)]
    if not_classes:
        raise ModelSafetyError(
            f"{where} references {len(not_classes)} name(s) that are not classes of the trusted "
            f"modules: {', '.join(not_classes)}; ctloop neither saves nor loads such a model"
        )
    return names


def trusted_types(model: Any, where: str = "the model") -> list[str]:
    """The types skops does not trust by default in `model`, all checked (check_types): the
    `skops_trusted_types` to save it with. Raises ModelSafetyError."""
    import skops.io

    return check_types(skops.io.get_untrusted_types(data=skops.io.dumps(model)), where)


def load_skops(path: Path, where: str) -> Any:
    """Load a skops file, trusting exactly the checked types the file itself contains (never a
    list recorded beside it). Raises ModelSafetyError before anything is built."""
    import skops.io

    names = check_types(skops.io.get_untrusted_types(file=path), where)
    return skops.io.load(path, trusted=names)


def flavor(model_dir: Path) -> dict[str, Any]:
    """The sklearn flavor of a downloaded MLflow model folder (its MLmodel file); {} if none."""
    meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8")) or {}
    found = (meta.get("flavors") or {}).get("sklearn")
    return found if isinstance(found, dict) else {}


def serialization_format(model_dir: Path) -> str:
    """`skops`, `cloudpickle` or `pickle`: how the model folder stores its estimator (MLflow's
    own default, pickle, when the MLmodel file does not say)."""
    return str(flavor(model_dir).get("serialization_format", "pickle"))


@contextlib.contextmanager
def allow_pickle() -> Iterator[None]:
    """MLflow's pickle switch on for the duration of the block, then as it was."""
    before = os.environ.get(PICKLE_SWITCH)
    os.environ[PICKLE_SWITCH] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PICKLE_SWITCH, None)
        else:
            os.environ[PICKLE_SWITCH] = before


def legacy_message(name: str, version: str, fmt: str) -> str:
    """What a LegacyModelWarning says: which version, why it still loads, how to replace it."""
    return (
        f"model '{name}' v{version} is stored with {fmt}, which can run code when loaded; "
        "ctloop loads it only because it comes from this project's registry. To replace it "
        "with a skops version, train again (`ctloop run` or `ctloop retrain`) and promote the "
        "new version"
    )


def load_model_dir(model_dir: Path, name: str, version: str) -> Any:
    """The fitted estimator of a downloaded model folder of version `version` of `name`.

    skops: loaded by `load_skops`, no pickle. cloudpickle/pickle (versions from before skops):
    loaded by MLflow with pickle allowed for this call only, after a LegacyModelWarning.
    Raises ModelSafetyError for an untrusted type or an unknown format."""
    where = f"model '{name}' v{version}"
    fmt = serialization_format(model_dir)
    conf = flavor(model_dir)
    if fmt == SKOPS:
        path = (model_dir / str(conf.get("pickled_model", "model.skops"))).resolve()
        if not path.is_relative_to(model_dir.resolve()):
            raise ModelSafetyError(f"{where}: its MLmodel names a file outside the model: {path}")
        return load_skops(path, where)
    if fmt not in LEGACY_FORMATS:
        raise ModelSafetyError(f"{where}: unknown serialization format '{fmt}'")
    import mlflow

    warnings.warn(legacy_message(name, version, fmt), LegacyModelWarning, stacklevel=3)
    with allow_pickle():
        return mlflow.sklearn.load_model(str(model_dir))


def load_registered(name: str, version: str) -> Any:
    """Download `models:/<name>/<version>` from the configured registry and load it
    (load_model_dir). MLflow must point at the project's store."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="ctloop-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=tmp
        )
        return load_model_dir(Path(local), name, version)


def load_pyfunc(name: str, version: str) -> Any:
    """Version `version` of `name` as an MLflow PyFuncModel (what MLflow's scoring server
    serves), its estimator loaded by load_model_dir instead of MLflow's loader. It predicts with
    the version's pyfunc predict function (`predict_proba` for classifiers logged by ctloop)."""
    import mlflow
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel
    from mlflow.sklearn import _SklearnModelWrapper

    with tempfile.TemporaryDirectory(prefix="ctloop-model-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
        )
        meta = Model.load(str(local / "MLmodel"))
        estimator = load_model_dir(local, name, version)
    conf = meta.flavors.get("python_function", {})
    return PyFuncModel(
        model_meta=meta,
        model_impl=_SklearnModelWrapper(estimator),
        predict_fn=str(conf.get("predict_fn", "predict")),
        model_id=meta.model_id,
    )
