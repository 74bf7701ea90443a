"""The field cases of the data contract, rebuilt from real rows (the shapes of the shared cases
`nullable-dtypes`, `tz-offsets-across-dst`, `text-labels`) on real projects: a nullable
delivery is accepted and scored and its float64 twin is the same content; dates whose offsets
change across the DST switch are parsed, a broken file is quarantined and its corrected version
under the same name accepted; an unexpected fault while validating quarantines the file and its
batch; text labels train, three text values are refused by the `target` rule."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import Project
from ctloop.io import data
from ctloop.steps import ingest, monitoring, validate
from flows.monitor_batch import monitor_batch
from flows.train_model import train_model
from tests.conftest import new_project, sample_months
from tests.integration.conftest import SMALL

MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04"]


@pytest.fixture(scope="module")
def rows(default_batches: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """1,200 real rows per month, Jan-May and November 2013 (prepared columns, target is_late)."""
    return sample_months(default_batches, [*MONTHS, "2013-05", "2013-11"], 1200)


@pytest.fixture(scope="module")
def project(rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Trained once on Jan-Mar (holdout Mar), April in the batches; dates cut in New York."""
    root = tmp_path_factory.mktemp("edge")
    source = root / "initial.parquet"
    rows[rows["date"] < "2013-05-01"].to_parquet(source, index=False)
    changes: dict[str, Any] = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(source), "timezone": "America/New_York"},
        "promotion": {**SMALL["promotion"], "model_name": "ctloop-edge"},
    }
    p = new_project(root / "proj", changes)
    assert train_model(params_path=str(p.root / "params.yaml")).promoted
    return p


def _month(rows: pd.DataFrame, month: str) -> pd.DataFrame:
    return rows[rows["date"].dt.strftime("%Y-%m") == month].reset_index(drop=True)


def _land(p: Project, frame: pd.DataFrame, name: str) -> Path:
    folder = p.path("landing")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _params(p: Project) -> str:
    return str(p.root / "params.yaml")


def test_nullable_delivery_is_scored_and_its_float64_twin_is_the_same_batch(
    project: Project, rows: pd.DataFrame
) -> None:
    """`temp` as pandas Float64 with pd.NA (the nullable-dtypes case): normalised at the edge,
    validated, versioned and scored by the champion; the same values as plain float64 under
    another name are recognised as the batch already ingested."""
    may = _month(rows, "2013-05")
    nullable = may.assign(temp=pd.array(may["temp"], dtype="Float64"))
    nullable.loc[[0, 5, 9], "temp"] = pd.NA
    _land(project, nullable, "delivery-float64-nullable.parquet")
    [result] = monitor_batch(path="delivery-float64-nullable.parquet", params_path=_params(project))
    assert result.status == "monitored" and result.model_version == "1"
    stored = pd.read_parquet(data.batch_path(project.path("batches"), "2013-05"))
    assert stored["temp"].dtype == np.dtype("float64") and stored["temp"].isna().sum() >= 3
    predictions = pd.read_parquet(monitoring.predictions_path(project, "2013-05", "1"))
    assert len(predictions) == len(may) and predictions["score"].between(0, 1).all()

    twin = nullable.assign(temp=nullable["temp"].to_numpy(dtype="float64", na_value=np.nan))
    twin = twin.assign(distance=twin["distance"].astype("float32"))  # another dtype, same values
    _land(project, twin, "delivery-float64.parquet")
    [again] = monitor_batch(path="delivery-float64.parquet", params_path=_params(project))
    assert again.status == "duplicate" and again.batch == "2013-05"


def _offsets(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as ISO text with New York's UTC offset: -04:00 before 3 Nov 2013, -05:00 after."""
    local = frame["date"].dt.tz_localize("America/New_York")
    text = local.map(lambda t: t.isoformat())
    return frame.assign(date=text)


def test_offsets_across_dst_are_parsed_after_a_broken_file_was_quarantined(
    project: Project, rows: pd.DataFrame
) -> None:
    """The tz-offsets-across-dst case: a file mixing dates with and without an offset is
    quarantined naming the column and rule, the landing folder is left clean, and the corrected
    file (offsets changing across the DST switch) under the same name is accepted."""
    november = _month(rows, "2013-11")
    delivery = _offsets(november)
    assert {"-04:00", "-05:00"} <= {d[-6:] for d in delivery["date"]}
    broken = delivery.copy()
    broken.loc[0, "date"] = str(november.loc[0, "date"].date())  # no offset: ambiguous
    source = project.root / "outbox" / "delivery-offsets.csv"
    source.parent.mkdir(exist_ok=True)
    broken.to_csv(source, index=False)
    landed = monitoring.receive_file(project, source)
    with pytest.raises(data.DataError) as err:
        monitor_batch(path=landed.name, params_path=_params(project))
    assert "column 'date': rule 'time_column'" in str(err.value)
    folder = project.path("quarantine") / "delivery-offsets"
    reason = json.loads((folder / "reason.json").read_text())
    assert (reason["file"], reason["column"], reason["rule"]) == (
        "delivery-offsets.csv",
        "date",
        "time_column",
    )
    assert "What to do" in (folder / "reason.txt").read_text()
    assert not (project.path("landing") / "delivery-offsets.csv").exists()  # not left behind
    assert "1 value(s) have no UTC offset while 1199 have one" in str(err.value)
    assert "2013-11" not in data.list_batches(project.path("batches"))

    delivery.to_csv(source, index=False)  # the corrected file, same name
    landed = monitoring.receive_file(project, source)
    [result] = monitor_batch(path=landed.name, params_path=_params(project))
    assert result.batch == "2013-11" and result.status == "monitored"
    stored = pd.read_parquet(data.batch_path(project.path("batches"), "2013-11"))
    # local wall-clock dates of New York, the same values as the source rows
    assert sorted(stored["date"]) == sorted(november["date"])


def test_an_unexpected_fault_while_validating_quarantines_file_and_batch(
    project: Project, rows: pd.DataFrame
) -> None:
    """A damaged suite makes GX fail (not a data error): the delivery and the batch it wrote go
    to quarantine with rule 'internal' and the original error; nothing unvalidated stays."""
    suite = validate.suite_file(project)
    saved = suite.read_text()
    before = data.list_batches(project.path("batches"))
    june = _month(rows, "2013-04").assign(date=lambda f: f["date"] + pd.DateOffset(months=2))
    _land(project, june, "june.parquet")
    suite.write_text("{ not json")
    try:
        with pytest.raises(data.DataError) as err:
            monitor_batch(path="june.parquet", params_path=_params(project))
    finally:
        suite.write_text(saved)
    message = str(err.value)
    assert "june.parquet: rule 'internal': validating the file failed unexpectedly" in message
    assert data.list_batches(project.path("batches")) == before
    assert not (project.path("landing") / "june.parquet").exists()
    quarantine = project.path("quarantine")
    record = json.loads((quarantine / "june" / "reason.json").read_text())
    assert record["rule"] == "internal" and "validating" in record["reason"]
    assert (quarantine / "2013-06" / "2013-06.parquet").is_file()
    # once the cause is gone, the same file is accepted
    _land(project, june, "june.parquet")
    [result] = monitor_batch(path="june.parquet", params_path=_params(project))
    assert result.status == "monitored"


# --- text labels: own project ------------------------------------------------------------


def _text_labels(rows: pd.DataFrame) -> pd.DataFrame:
    """The text-labels case: the target as "True"/"False" text, missing when not known."""
    label = rows["is_late"].map({1.0: "True", 0.0: "False"})
    return rows.assign(is_late=label.astype(object))


def test_text_labels_train_in_an_own_project(
    make_project: Callable[..., Project], rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "flights-text-labels.parquet"
    frame = _text_labels(rows[rows["date"] < "2013-05-01"])
    frame.to_parquet(source, index=False)
    assert set(pd.read_parquet(source)["is_late"].dropna()) == {"True", "False"}
    p = make_project({**SMALL, "data": {**SMALL["data"], "source": str(source)}})
    summary = train_model(params_path=_params(p))
    assert summary.model_version == "1" and 0.5 < summary.holdout_score <= 1.0
    stored = pd.read_parquet(data.batch_path(p.path("batches"), "2013-01"))
    assert set(stored["is_late"].dropna()) == {0.0, 1.0}


def test_three_text_labels_are_refused_before_any_batch(
    make_project: Callable[..., Project], rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "flights-three-labels.parquet"
    frame = _text_labels(rows[rows["date"] < "2013-05-01"])
    frame.loc[frame.index[7], "is_late"] = "Maybe"
    frame.to_parquet(source, index=False)
    p = make_project({**SMALL, "data": {**SMALL["data"], "source": str(source)}})
    with pytest.raises(data.DataError) as err:
        ingest.run_ingest(p)
    assert str(err.value).startswith(f"{source}: column 'is_late': rule 'target':")
    assert "'maybe'" in str(err.value)
    assert data.list_batches(p.path("batches")) == []
