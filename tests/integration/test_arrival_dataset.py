"""Data without a time column, end to end: batches by arrival on a public dataset of another
shape (sklearn's breast cancer table: 569 rows, 30 numeric columns with spaces in their names,
a binary target). Initial run on the first blocks, a later file with only new rows delivered
(`ctloop ingest`: the landing folder, then the monitor flow), decay on its changed labels, a
retrain on the grown window, and the same file delivered again as a no-op."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop.core.config import Project
from ctloop.io import data, registry, tracking
from ctloop.steps import ingest, monitoring, replay
from flows.monitor_batch import monitor_batch
from flows.retrain_model import retrain_model
from flows.train_model import train_model
from tests.integration.conftest import SMALL

ROWS_PER_BATCH = 100


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    """The 569 rows in the file's order, the 30 measurements and `diagnosis` (0 malignant)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    return bunch.frame.rename(columns={"target": "diagnosis"})


@pytest.fixture
def arrival_project(
    make_project: Callable[..., Project], cancer: pd.DataFrame, tmp_path: Path
) -> Project:
    """The whole table as the source, cut into blocks of 100 rows (part-00001..part-00006, the
    last 69 rows); the initial ingestion stops at part-00004, the rest arrives later."""
    source = tmp_path / "breast-cancer.csv"
    cancer.to_csv(source, index=False)
    return make_project(
        {
            **SMALL,
            "data": {
                "source": str(source),
                "target": "diagnosis",
                "task": "classification",
                "derive_target": None,
                "time_column": None,
                "rows_per_batch": ROWS_PER_BATCH,
                "drop_columns": [],
                "ingest_until": "part-00004",
            },
            "split": {"window_start": None, "window_end": None, "folds": 3},
            "slices": {"columns": []},
            "promotion": {"model_name": "cancer", "min_score": 0.6, "margin": 0.002},
            "continuous": {"retrain_on_drift": False, "cooldown_minutes": 0},
            "replay": {"start": "part-00005", "end": "part-00006"},
        }
    )


def test_deliveries_become_the_next_batches_and_the_loop_retrains(
    arrival_project: Project, cancer: pd.DataFrame, tmp_path: Path
) -> None:
    p = arrival_project
    params = str(p.root / "params.yaml")
    first = train_model(params_path=params)
    folder = p.path("batches")
    assert data.list_batches(folder) == ["part-00001", "part-00002", "part-00003", "part-00004"]
    assert first.promoted and first.holdout_batches == "part-00004"

    # the rows after the initial blocks, as `ctloop replay` cuts them from the source, in one
    # later file holding only new rows; their labels flipped: an abrupt concept change
    blocks = replay.periods_of(cancer, p.params.data, monitoring.block_rule(p))
    later = cancer[blocks.isin(["part-00005", "part-00006"]).to_numpy()]
    assert len(later) == 169
    changed = later.assign(diagnosis=1 - later["diagnosis"])
    delivered = tmp_path / "new-patients.csv"
    changed.to_csv(delivered, index=False)
    landed = monitoring.receive_file(p, delivered)  # what `ctloop ingest FILE` does first

    results = monitor_batch(path=landed.name, params_path=params)
    assert [(r.batch, r.status) for r in results] == [
        ("part-00005", "monitored"),
        ("part-00006", "monitored"),  # 69 rows: accepted by the row_count rule
    ]
    assert all(r.retrain and any(x.startswith("decay") for x in r.reasons) for r in results)
    stored = data.read_batches(folder, ["part-00005", "part-00006"])
    assert stored["diagnosis"].tolist() == changed["diagnosis"].astype(float).tolist()
    assert not any(p.path("quarantine").glob("*"))

    retrained = retrain_model(params_path=params, trigger="ctloop.performance.degraded")
    assert retrained.skipped is None and retrained.window == "part-00001..part-00006"
    assert retrained.model_version == "2"
    tracking.use_store(p.tracking_uri)
    version = MlflowClient().get_model_version("cancer", "2")
    assert version.tags[monitoring.HOLDOUT_TAG] == "part-00006"
    champion = registry.get_alias("cancer", registry.CHAMPION)
    assert str(champion.version) == ("2" if retrained.promoted else "1")

    # the same file again, under its name and under another one: already ingested
    again = monitor_batch(path=monitoring.receive_file(p, delivered).name, params_path=params)
    renamed = tmp_path / "resent.csv"
    renamed.write_bytes(delivered.read_bytes())
    resent = monitor_batch(path=monitoring.receive_file(p, renamed).name, params_path=params)
    for outcome in (again, resent):
        assert [(r.batch, r.status) for r in outcome] == [
            ("part-00005", "duplicate"),
            ("part-00006", "duplicate"),
        ]
    assert data.list_batches(folder)[-1] == "part-00006"

    # the next run re-reads the source up to data.ingest_until: no conflict with the deliveries
    ingested = ingest.run_ingest(p)
    assert ingested.written == () and ingested.batches[-1] == "part-00004"
