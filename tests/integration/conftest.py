"""One real Prefect test server for the whole integration session; small real projects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ctloop.core.config import Project
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
