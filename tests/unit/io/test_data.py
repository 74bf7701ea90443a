from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import DataConfig
from ctloop.io import data


def _cfg(**kw: object) -> DataConfig:
    base = dict(
        target="late",
        task="classification",
        time_column="when",
        derive_target={"column": "delay", "greater_than": 15},
        drop_columns=["delay"],
    )
    return DataConfig.model_validate({**base, **kw})


def _raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "when": ["2013-02-03", "2013-01-10", "2013-01-02", "2013-03-01"],
            "delay": [30.0, np.nan, 5.0, 16.0],
            "carrier": ["AA", "UA", "AA", "DL"],
            "distance": [100, 200, 300, 400],
        }
    )


def test_prepare_derives_target_keeps_missing_and_drops_columns() -> None:
    raw = _raw()
    out = data.prepare(raw, _cfg())
    assert list(out["late"].isna()) == [False, True, False, False]
    assert list(out["late"].dropna()) == [1.0, 0.0, 1.0]
    assert "delay" not in out.columns
    assert pd.api.types.is_datetime64_any_dtype(out["when"])
    assert "late" not in raw.columns  # input not mutated


def test_prepare_names_column_and_rule_for_bad_dates() -> None:
    raw = _raw().assign(when=["2013-01-01", "not a date", "2013-01-02", "2013-01-03"])
    with pytest.raises(data.DataError, match=r"column 'when': rule 'time_column'.*not a date"):
        data.prepare(raw, _cfg(), origin="x.csv")


def test_prepare_reports_missing_target_source() -> None:
    with pytest.raises(data.DataError, match=r"x.csv: column 'delay': rule 'derive_target'"):
        data.prepare(_raw().drop(columns="delay"), _cfg(), origin="x.csv")


def test_schema_detects_roles_and_accepts_overrides() -> None:
    df = data.prepare(_raw(), _cfg())
    schema = data.infer_schema(df, _cfg())
    assert schema.numeric == ("distance",) and schema.categorical == ("carrier",)
    forced = data.infer_schema(df, _cfg(categorical=["distance", "carrier"]))
    assert forced.categorical == ("distance", "carrier") and forced.numeric == ()


def test_batches_are_time_ordered_periods() -> None:
    df = data.prepare(_raw(), _cfg())
    batches = data.split_batches(df, _cfg())
    assert list(batches) == ["2013-01", "2013-02", "2013-03"]
    assert list(batches["2013-01"]["when"].dt.day) == [2, 10]
    weekly = data.split_batches(df, _cfg(batch_frequency="week"))
    assert next(iter(weekly)) == "2012-12-31"  # Monday starting the week of 2013-01-02


def test_period_labels_per_distinct_time_keep_missing_times() -> None:
    times = pd.Series(pd.to_datetime(["2013-01-31", None, "2013-02-01", "2013-01-31"]), name="t")
    labels = data.period_labels(times, "month")
    assert labels.tolist()[::2] == ["2013-01", "2013-02"] and labels.tolist()[3] == "2013-01"
    assert pd.isna(labels.iloc[1]) and labels.name == "t"
    assert data.period_labels(times, "week").iloc[0] == "2013-01-28"
    assert data.period_labels(times, "quarter").iloc[2] == "2013Q1"
    df = pd.DataFrame({"when": times, "late": [0.0, 1.0, 1.0, 0.0], "n": [1, 2, 3, 4]})
    batches = data.split_batches(df, _cfg(derive_target=None))
    assert {k: v["n"].tolist() for k, v in batches.items()} == {"2013-01": [1, 4], "2013-02": [3]}


def test_source_files_are_read_without_unused_columns(tmp_path: Path) -> None:
    raw = _raw().assign(tail=["a", "b", "c", "d"])
    raw.to_parquet(tmp_path / "s.parquet")
    raw.to_csv(tmp_path / "s.csv", index=False)
    cfg = _cfg(drop_columns=["delay", "tail"])
    skip = data.unused_columns(cfg)
    assert skip == {"tail"}  # the target's source column `delay` is still read
    for name in ("s.parquet", "s.csv"):
        loaded = data.load_source(name, tmp_path, skip=skip)
        assert list(loaded.columns) == ["when", "delay", "carrier", "distance"]
        pd.testing.assert_frame_equal(data.prepare(loaded, cfg), data.prepare(raw, cfg))


def test_batches_without_time_column_are_row_blocks() -> None:
    df = pd.DataFrame({"x": range(5), "late": [0, 1, 0, 1, 0]})
    batches = data.split_batches(df, _cfg(time_column=None, derive_target=None, rows_per_batch=2))
    assert list(batches) == ["part-00001", "part-00002", "part-00003"]
    assert [len(b) for b in batches.values()] == [2, 2, 1]


def test_select_periods_and_labelled() -> None:
    assert data.select_periods(["2013-03", "2013-01", "2013-02"], "2013-02", None) == [
        "2013-02",
        "2013-03",
    ]
    rows, dropped = data.labelled(data.prepare(_raw(), _cfg()), "late")
    assert (len(rows), dropped) == (3, 1)


def test_write_batch_is_idempotent_and_immutable(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    first = data.write_batch(tmp_path, "2013-01", df)
    again = data.write_batch(tmp_path, "2013-01", df.copy())
    assert first.written and not again.written and first.digest == again.digest
    before = first.path.read_bytes()
    with pytest.raises(data.BatchConflictError, match=r"2013-01.parquet: rule 'immutable_batch'"):
        data.write_batch(tmp_path, "2013-01", df.assign(a=[1, 3]))
    assert first.path.read_bytes() == before
    assert data.list_batches(tmp_path) == ["2013-01"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_read_table_errors_name_the_file_and_rule(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("city\nK\xf6ln\n".encode("latin-1"))
    with pytest.raises(data.DataError, match=r"latin.csv: rule 'encoding'"):
        data.read_table(latin)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(data.DataError, match=r"empty.csv: rule 'not_empty'"):
        data.read_table(empty)
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(data.DataError, match=r"rule 'file_type'"):
        data.read_table(other)


def test_load_source_reads_a_folder_of_csv_and_parquet(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "one.csv", index=False)
    pd.DataFrame({"a": [2]}).to_parquet(tmp_path / "two.parquet")
    assert sorted(data.load_source(str(tmp_path), Path("/")).a) == [1, 2]
    with pytest.raises(data.DataError, match="names no file or folder"):
        data.load_source("missing.csv", tmp_path)


def test_content_hash_depends_on_values_and_columns() -> None:
    df = pd.DataFrame({"a": [1, 2]})
    assert data.content_hash(df) == data.content_hash(df.copy())
    assert data.content_hash(df) != data.content_hash(df.rename(columns={"a": "b"}))
    assert data.content_hash(df) != data.content_hash(df.assign(a=[2, 1]))


def test_files_above_the_size_limit_are_refused(tmp_path: Path) -> None:
    pd.DataFrame({"a": range(50_000)}).to_csv(tmp_path / "big.csv", index=False)
    with pytest.raises(data.DataError, match=r"big.csv: rule 'max_file_mb'"):
        data.load_source("big.csv", tmp_path, max_file_mb=0.1)
    assert len(data.load_source("big.csv", tmp_path, max_file_mb=10)) == 50_000


def test_labelled_batches_skip_batches_without_any_label(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-01", pd.DataFrame({"y": [1.0, np.nan]}))
    data.write_batch(tmp_path, "2013-02", pd.DataFrame({"y": [np.nan, np.nan]}))
    assert data.labelled_batches(tmp_path, ["2013-01", "2013-02"], "y") == ["2013-01"]
