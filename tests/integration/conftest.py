"""One real Prefect test server for the whole integration session; small real projects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ctloop.core.config import Project, load_project
from tests.conftest import sample_months

MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04"]


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):  # slow to start on a busy machine
        yield


@pytest.fixture(scope="session")
def slice_file(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """1,500 real rows per month (Jan-Apr 2013) of the prepared default data, as Parquet."""
    path = tmp_path_factory.mktemp("source") / "flights-slice.parquet"
    sample_months(default_batches, MONTHS, 1500).to_parquet(path, index=False)
    return path


SMALL = {
    "data": {"derive_target": None, "drop_columns": [], "ingest_until": None},
    "split": {"window_start": "2013-01", "window_end": "2013-03", "folds": 3},
    "model": {"fixed": {"xgboost": {"n_estimators": 60, "tree_method": "hist", "n_jobs": 1}}},
    "tune": {"n_trials": 3, "timeout_s": None, "show_progress_bar": False},
    "promotion": {"min_score": 0.55, "model_name": "ctloop-test"},
    # every report still produced, on fewer rows and repeats: seconds less per flow run
    "insights": {
        "permutation_repeats": 2,
        "sample_rows": 1500,
        "shap_rows": 50,
        "learning_curve": [0.5, 1.0],
    },
}


@pytest.fixture
def small_project(make_project: Callable[..., Project], slice_file: Path) -> Project:
    """A project training on Jan-Feb, holding out Mar and monitoring Apr, on the real slice."""
    changes: dict[str, Any] = {**SMALL, "data": {**SMALL["data"], "source": str(slice_file)}}
    return make_project(changes)


def latest_artifact(key: str) -> Any:
    """The latest Prefect artifact with this key (from the session's test server), or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return found[0] if found else None


def copy_project(trained: Project, dest: Path) -> Project:
    """An independent copy at `dest` of a project a fixture trained once (cheaper than training
    again): the tree (batches, DVC cache and remote, suite, reports, MLflow artifacts) and its
    SQLite store, with every absolute path into `trained.root` pointed at `dest`, so runs,
    versions and models of the copy read and write only under `dest`."""
    import shutil
    import sqlite3

    old, new = str(trained.root), str(dest)
    # .dvc/tmp holds DVC's locks and state, rebuilt on use
    shutil.copytree(trained.root, dest, ignore=shutil.ignore_patterns("tmp"))
    store = dest / trained.params.paths.mlflow_db
    for path in dest.rglob("*"):
        if path.is_file() and path != store:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary: Parquet, models, DVC cache
            if old in text:
                path.write_text(text.replace(old, new), encoding="utf-8")
    with sqlite3.connect(store) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in con.execute(f"PRAGMA table_info('{table}')").fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    con.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE instr("{column[1]}", ?) > 0',
                        (old, new, old),
                    )
    con.close()
    left = [
        p for p in dest.rglob("*") if p.is_file() and p != store and old.encode() in p.read_bytes()
    ]
    assert not left, f"paths into {old} left in the copy: {left}"
    return load_project(dest / "params.yaml")
