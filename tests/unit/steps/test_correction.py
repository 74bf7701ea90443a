"""Pure logic of `ctloop batch replace` (ctloop/steps/correction.py): the ledger, the refusals that
come
before any validation or DVC work, the atomic overwrite, and the `immutable_batch` messages that
point at the command. The whole path (DVC, MLflow, training) is in
tests/integration/test_replace_batch.py."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import Project
from ctloop.io import data
from ctloop.steps import correction, ingest, monitoring
from ctloop.steps.correction import CorrectionError, Replacement

LABEL = "is_late"
HINT = "use `ctloop batch replace FILE --reason TEXT` to correct an accepted batch"


def _entry(batch: str, old: str, new: str, at: datetime, reason: str = "fix") -> Replacement:
    return Replacement(
        id=at.isoformat(timespec="milliseconds"),
        batch=batch,
        reason=reason,
        file=f"/tmp/{batch}.csv",
        file_sha256="0" * 64,
        old_digest=old,
        new_digest=new,
        old_md5="a" * 32,
        new_md5="b" * 32,
        old_rows=10,
        new_rows=9,
        old_data_version="x.dir",
    )


def _month(month: str, rows: int = 6) -> pd.DataFrame:
    days = pd.date_range(f"{month}-01", periods=rows, freq="D")
    return pd.DataFrame(
        {
            "date": days,
            "carrier": ["AA", "UA"] * (rows // 2),
            "distance": np.arange(rows, dtype="float64") * 100,
            LABEL: [1.0, 0.0] * (rows // 2),
        }
    )


T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- ledger ------------------------------------------------------------------------------


def test_ledger_round_trip_keeps_order(tmp_path: Path) -> None:
    entries = [_entry("2013-02", "o1", "n1", T0), _entry("2013-03", "o2", "n2", T0)]
    path = correction.write_ledger(tmp_path, entries)
    assert path == tmp_path / "replacements.json"
    assert correction.read_ledger(tmp_path) == entries
    assert [p.name for p in tmp_path.iterdir()] == ["replacements.json"]  # no temporary file


def test_no_ledger_means_no_replacement(tmp_path: Path) -> None:
    assert correction.read_ledger(tmp_path) == []
    assert correction.replaced_batches(tmp_path) == {}


def test_garbled_ledger_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "replacements.json").write_text('{"replacements": [{"batch": 1}]}')
    with pytest.raises(CorrectionError, match=r"replacements\.json: rule 'ledger'"):
        correction.read_ledger(tmp_path)


def test_latest_replacement_of_each_batch_wins() -> None:
    first = _entry("2013-02", "o", "n1", T0)
    second = _entry("2013-02", "n1", "n2", T0 + timedelta(hours=1))
    other = _entry("2013-03", "p", "q", T0)
    assert correction.latest_by_batch([first, other, second]) == {
        "2013-02": second,
        "2013-03": other,
    }


def test_a_retried_correction_is_recorded_once_and_history_kept() -> None:
    applied = _entry("2013-02", "o", "n1", T0)
    attempt = _entry("2013-02", "n1", "n2", T0 + timedelta(minutes=1))
    retry = _entry("2013-02", "n1", "n2", T0 + timedelta(minutes=2))
    ledger = correction.with_entry([applied, attempt], retry)
    assert ledger == [applied, retry]
    back_again = _entry("2013-02", "n2", "n1", T0 + timedelta(minutes=3))  # a real new change
    assert correction.with_entry(ledger, back_again) == [applied, retry, back_again]


def test_replaced_since_filters_by_window_and_time() -> None:
    early = _entry("2013-02", "o", "n", T0)
    late = _entry("2013-03", "o", "n", T0 + timedelta(hours=2))
    outside = _entry("2013-05", "o", "n", T0 + timedelta(hours=2))
    entries = [early, late, outside]
    window = ("2013-01", "2013-02", "2013-03")
    assert correction.replaced_since(entries, window, None) == [early, late]
    assert correction.replaced_since(entries, window, T0 + timedelta(hours=1)) == [late]
    assert correction.replaced_since(entries, window, T0 + timedelta(hours=3)) == []


# --- the atomic overwrite ------------------------------------------------------------------


def test_supersede_batch_overwrites_atomically(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-02", _month("2013-02"))
    corrected = _month("2013-02", rows=4)
    path = data.supersede_batch(tmp_path, "2013-02", data.parquet_bytes(corrected))
    pd.testing.assert_frame_equal(pd.read_parquet(path), corrected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2013-02.parquet"]


def test_supersede_batch_refuses_a_missing_batch(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="rule 'batch_exists'"):
        data.supersede_batch(tmp_path, "2013-09", data.parquet_bytes(_month("2013-09")))
    assert list(tmp_path.iterdir()) == []


# --- the immutable_batch messages name the command -----------------------------------------


def test_write_batch_conflict_names_the_replace_command(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-02", _month("2013-02"))
    with pytest.raises(data.BatchConflictError) as err:
        data.write_batch(tmp_path, "2013-02", _month("2013-02", rows=4))
    assert "rule 'immutable_batch'" in str(err.value) and HINT in str(err.value)


def test_overlapping_delivery_names_the_replace_command(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-02", _month("2013-02"))
    with pytest.raises(data.BatchConflictError) as err:
        monitoring.check_overlaps(
            tmp_path, {"2013-02": _month("2013-02", rows=4)}, LABEL, Path("feb.csv")
        )
    assert "feb.csv: rule 'immutable_batch'" in str(err.value) and HINT in str(err.value)


# --- refusals before validation --------------------------------------------------------------


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    """A project with prepared columns and Jan-Feb batches (no suite, no DVC commit yet)."""
    p = make_project(
        {"data": {"derive_target": None, "drop_columns": [], "source": "x", "target": LABEL}}
    )
    for month in ("2013-01", "2013-02"):
        data.write_batch(p.path("batches"), month, _month(month))
    return p


def _bytes_of(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("frame", "rule"),
    [
        (pd.concat([_month("2013-01"), _month("2013-02")], ignore_index=True), "one_period"),
        (_month("2013-05"), "batch_exists"),
    ],
    ids=["two-periods", "unknown-period"],
)
def test_a_file_not_holding_one_existing_period_is_refused(
    project: Project, tmp_path: Path, frame: pd.DataFrame, rule: str
) -> None:
    before = _bytes_of(project.path("batches"))
    file = tmp_path / "corrected.csv"
    frame.to_csv(file, index=False)
    with pytest.raises(CorrectionError) as err:
        correction.replace_batch(project, file, "wrong rows")
    message = str(err.value)
    assert str(file) in message and f"rule '{rule}'" in message and "column 'date'" in message
    assert _bytes_of(project.path("batches")) == before
    assert not (project.root / "dvc.lock").exists()


def test_a_replacement_needs_a_reason(project: Project, tmp_path: Path) -> None:
    file = tmp_path / "feb.csv"
    _month("2013-02", rows=4).to_csv(file, index=False)
    with pytest.raises(CorrectionError, match=r"feb\.csv: rule 'reason'"):
        correction.replace_batch(project, file, "   ")


def test_an_unreadable_file_is_refused_like_a_delivery(project: Project, tmp_path: Path) -> None:
    file = tmp_path / "feb.csv"
    file.write_bytes(b"date,carrier\n2013-02-01,\xff\xfe\n")
    with pytest.raises(data.DataError, match=r"feb\.csv: rule 'encoding'"):
        correction.replace_batch(project, file, "wrong rows")


def test_no_suite_refuses_before_anything_is_written(project: Project, tmp_path: Path) -> None:
    before = _bytes_of(project.path("batches"))
    file = tmp_path / "feb.csv"
    _month("2013-02", rows=4).to_csv(file, index=False)
    with pytest.raises(CorrectionError, match="rule 'suite'"):
        correction.replace_batch(project, file, "wrong rows")
    assert _bytes_of(project.path("batches")) == before


# --- ingestion keeps a corrected batch --------------------------------------------------------


def test_ingestion_keeps_the_corrected_batch_over_the_source(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    source = tmp_path / "source.parquet"
    pd.concat([_month("2013-01"), _month("2013-02")], ignore_index=True).to_parquet(source)
    p = make_project(
        {
            "data": {
                "derive_target": None,
                "drop_columns": [],
                "source": str(source),
                "target": LABEL,
                "ingest_until": None,
            }
        }
    )
    assert ingest.run_ingest(p).written == ("2013-01", "2013-02")
    folder = p.path("batches")
    corrected = _month("2013-02", rows=4).assign(**{LABEL: [0.0, 1.0, np.nan, 1.0]})
    data.supersede_batch(folder, "2013-02", data.parquet_bytes(corrected))
    digest = data.content_hash(corrected)
    with pytest.raises(data.BatchConflictError, match="immutable_batch"):  # no ledger: refused
        ingest.run_ingest(p)
    correction.write_ledger(folder, [_entry("2013-02", "old", digest, T0)])
    result = ingest.run_ingest(p)
    assert result.written == () and result.unchanged == ("2013-01", "2013-02")
    assert result.source_rows == 6 + 4 and result.unlabelled_rows == 1
    assert data.content_hash(pd.read_parquet(data.batch_path(folder, "2013-02"))) == digest
