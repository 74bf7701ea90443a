"""Your own data, first try (issue 14): `ctloop init` with defaults, `ctloop run`, delivery of
later rows with `ctloop ingest`, `ctloop retrain`, with no hand edit, on three public datasets
that ship inside installed packages, of different shapes:

- gapminder (plotly): regression of life expectancy, a date column (one date a year), many
  country values and five continents (categorical-heavy);
- breast cancer (scikit-learn): binary classification, numeric columns only, names with spaces,
  no time column (batches by arrival);
- tips (plotly): regression of the tip, text columns (sex, smoker, day, time), no time column.

The CLI runs in subprocesses against the session's Prefect test server, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from ctloop.core.config import load_project
from ctloop.io import data, registry, tracking

# end to end: drives the installed `ctloop` (or `dvc repro`) as separate processes, as a user
# does; `make test-e2e` runs it, `make test` does not
pytestmark = pytest.mark.e2e

CTLOOP = Path(sys.executable).parent / "ctloop"


@dataclass(frozen=True)
class Dataset:
    """A CSV of the initial rows, a file of later rows, the target and what init must find."""

    name: str
    target: str
    frame: Callable[[], pd.DataFrame]
    time_column: str | None
    task: str


def _gapminder() -> pd.DataFrame:
    import plotly.data

    frame = plotly.data.gapminder()
    dates = frame["year"].astype(str) + "-07-01"
    return frame.drop(columns=["year", "iso_alpha"]).assign(date=dates)


def _breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})


def _tips() -> pd.DataFrame:
    import plotly.data

    return plotly.data.tips()


DATASETS = [
    Dataset("gapminder", "lifeExp", _gapminder, "date", "regression"),
    Dataset("breast-cancer", "benign", _breast_cancer, None, "classification"),
    Dataset("tips", "tip", _tips, None, "regression"),
]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run(
        [str(CTLOOP), *args], capture_output=True, text=True, env=env, timeout=900, cwd=cwd
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.mark.parametrize("case", DATASETS, ids=[d.name for d in DATASETS])
def test_init_run_ingest_retrain_with_no_hand_edit(case: Dataset, tmp_path: Path) -> None:
    frame = case.frame()
    source = tmp_path / f"{case.name}.csv"
    frame.to_csv(source, index=False)
    root = tmp_path / "project"

    printed = _ok(
        _cli("init", str(source), "--target", case.target, "--dir", str(root), cwd=tmp_path)
    )
    assert f"chose data.task = {case.task}" in printed
    assert f"chose data.time_column = {case.time_column or 'null'}" in printed
    project = load_project(root / "params.yaml")
    cfg = project.params
    assert cfg.data.task == case.task and cfg.data.time_column == case.time_column
    assert cfg.promotion.model_name == case.name
    ingested = data.list_batches(project.path("batches"))
    assert ingested[-1] == cfg.data.ingest_until
    assert (root / "expectations").is_dir()

    _ok(_cli("check", cwd=root))
    _ok(_cli("run", cwd=root))
    tracking.use_store(project.tracking_uri)
    champion = registry.get_alias(case.name, registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    card = (project.path("reports") / "model_card.md").read_text()
    assert "**Not written yet** (params.yaml `model_card.intended_use`)" in card

    later = _held_back(frame, project)
    delivery = tmp_path / f"{case.name}-later.csv"
    later.to_csv(delivery, index=False)
    _ok(_cli("ingest", str(delivery), "--here", cwd=root))
    after = data.list_batches(project.path("batches"))
    assert len(after) > len(ingested) and after[: len(ingested)] == ingested

    retrained = _ok(_cli("retrain", "--reason", "new rows", cwd=root))
    assert "skipped" not in retrained.splitlines()[-1]
    versions = MlflowClient().search_model_versions(f"name='{case.name}'")
    assert len(versions) == 2  # the challenger of the new window, registered once


def _held_back(frame: pd.DataFrame, project: object) -> pd.DataFrame:
    """The rows of the source after the initial ingestion: the next period, or the next block."""
    cfg = project.params.data  # type: ignore[attr-defined]
    if cfg.time_column:
        dates = pd.to_datetime(frame[cfg.time_column])
        periods = data.period_labels(dates, cfg.batch_frequency)
        following = sorted(p for p in periods.unique() if p > cfg.ingest_until)[0]
        return frame[periods == following]
    done = int(cfg.ingest_until.removeprefix("part-")) * cfg.rows_per_batch
    return frame.iloc[done : done + cfg.rows_per_batch]


def test_init_refuses_to_overwrite_and_says_what_it_would_write(tmp_path: Path) -> None:
    source = tmp_path / "tips.csv"
    _tips().to_csv(source, index=False)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    refused = _cli("init", str(source), "--target", "tip", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"ctloop: error: {tmp_path / 'params.yaml'} exists: pass --force to replace it"
    )
    assert (tmp_path / "params.yaml").read_text() == "seed: 1\n"
    dry = _ok(_cli("init", str(source), "--target", "tip", "--dry-run", cwd=tmp_path))
    assert yaml.safe_load(dry)["data"]["target"] == "tip"
    assert (tmp_path / "params.yaml").read_text() == "seed: 1\n"


def test_init_refuses_multiclass_clearly(tmp_path: Path) -> None:
    import plotly.data

    source = tmp_path / "iris.csv"
    plotly.data.iris().to_csv(source, index=False)
    done = _cli("init", str(source), "--target", "species", "--dir", "p", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "column 'species': 3 text labels" in done.stderr
    assert "multiclass classification is not supported yet" in done.stderr
    assert not (tmp_path / "p" / "params.yaml").exists()
