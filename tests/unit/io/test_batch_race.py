"""A new batch is published only if no concurrent writer created it between the check and the
write (ctloop/io/data.py write_batch): the loser compares with the winner's file instead of
overwriting it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.io import data, files

DF = pd.DataFrame({"a": [1, 2], "y": [1.0, np.nan]})


def _racing_link(monkeypatch: pytest.MonkeyPatch, winner: pd.DataFrame) -> None:
    """os.link as if another writer published `winner` just before ours."""
    real_link = os.link

    def link(src: Path, dst: Path) -> None:
        winner.to_parquet(dst, index=False)
        real_link(src, dst)

    monkeypatch.setattr(files.os, "link", link)  # publish_once links


def test_losing_an_identical_race_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _racing_link(monkeypatch, DF)
    result = data.write_batch(tmp_path, "2013-01", DF.copy(), label_column="y")
    assert not result.written
    assert data.content_hash(pd.read_parquet(result.path)) == result.digest
    assert [p.name for p in tmp_path.iterdir()] == ["2013-01.parquet"]  # no temporary file left


def test_losing_a_race_to_other_content_is_refused_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = DF.assign(a=[1, 3])
    _racing_link(monkeypatch, other)
    with pytest.raises(data.BatchConflictError, match="rule 'immutable_batch'"):
        data.write_batch(tmp_path, "2013-01", DF.copy(), label_column="y")
    stored = pd.read_parquet(data.batch_path(tmp_path, "2013-01"))
    assert data.content_hash(stored) == data.content_hash(other)
    assert [p.name for p in tmp_path.iterdir()] == ["2013-01.parquet"]


def test_labels_filled_in_still_replace_the_stored_batch(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-01", DF, label_column="y")
    filled = data.write_batch(tmp_path, "2013-01", DF.assign(y=[1.0, 0.0]), label_column="y")
    assert filled.written
    assert pd.read_parquet(filled.path)["y"].tolist() == [1.0, 0.0]
