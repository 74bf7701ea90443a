from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import DataConfig, Project
from ctloop.io import data
from ctloop.steps.replay import (
    Delivery,
    delivery_frame,
    label_source_column,
    periods_of,
    plan,
    write_delivery,
)

PERIODS = ["2013-07", "2013-08", "2013-09", "2013-10"]


def _raw() -> pd.DataFrame:
    """Raw source rows as the replay cuts them (the label comes from arr_delay)."""
    return pd.DataFrame(
        {
            "date": ["2013-07-01", "2013-07-15", "2013-08-02", "2013-09-30"],
            "arr_delay": [30.0, 2.0, np.nan, 16.0],
            "carrier": ["AA", "UA", "DL", "AA"],
            "distance": [100, 200, 300, 400],
        }
    )


# --- plan ------------------------------------------------------------------------------


def test_plan_without_delay_delivers_each_period_once_with_labels() -> None:
    assert plan(PERIODS, 0) == [Delivery(p, labelled=True) for p in PERIODS]


def test_plan_with_one_period_delay_matches_the_documented_order() -> None:
    f = lambda p: Delivery(p, labelled=False)  # noqa: E731
    lab = lambda p: Delivery(p, labelled=True)  # noqa: E731
    a, b, c, d = PERIODS
    assert plan(PERIODS, 1) == [f(a), f(b), lab(a), f(c), lab(b), f(d), lab(c), lab(d)]


@pytest.mark.parametrize("delay", [1, 2, 3, 4, 6])
def test_plan_with_delay_delivers_features_then_labels_delay_periods_later(delay: int) -> None:
    out = plan(PERIODS, delay)
    counts = Counter((d.period, d.labelled) for d in out)
    assert counts == {(p, lab): 1 for p in PERIODS for lab in (False, True)}
    features = [d.period for d in out if not d.labelled]
    labels = [d.period for d in out if d.labelled]
    assert features == PERIODS and labels == PERIODS  # both streams in period order
    position = {(d.period, d.labelled): i for i, d in enumerate(out)}
    for i, period in enumerate(PERIODS):
        at = position[(period, True)]
        assert at > position[(period, False)]  # labels never before their features
        # the labels arrive once the features `delay` periods later have arrived (or at the end)
        features_before = sum(1 for d in out[:at] if not d.labelled)
        assert features_before == min(i + delay + 1, len(PERIODS))


def test_plan_of_no_periods_is_empty() -> None:
    assert plan([], 0) == [] and plan([], 2) == []


def test_file_names_differ_for_features_and_labels() -> None:
    features, labelled = Delivery("2013-07", False), Delivery("2013-07", True)
    assert features.file_name != labelled.file_name
    for d in (features, labelled):
        assert "2013-07" in d.file_name and d.file_name.endswith(".parquet")
    assert Delivery("2013-08", True).file_name != labelled.file_name


# --- delivery_frame --------------------------------------------------------------------


def test_label_source_is_the_derive_target_column(repo_project: Project) -> None:
    cfg = repo_project.params.data
    assert cfg.derive_target is not None
    assert label_source_column(cfg) == cfg.derive_target.column == "arr_delay"


def test_features_only_delivery_blanks_the_label_source_without_mutating(
    repo_project: Project,
) -> None:
    cfg = repo_project.params.data
    rows = _raw()
    before = rows.copy()
    out = delivery_frame(rows, cfg, labelled=False)
    assert out["arr_delay"].isna().all()
    pd.testing.assert_frame_equal(out.drop(columns="arr_delay"), rows.drop(columns="arr_delay"))
    pd.testing.assert_frame_equal(rows, before)  # input untouched


def test_labelled_delivery_returns_the_rows_unchanged(repo_project: Project) -> None:
    rows = _raw()
    pd.testing.assert_frame_equal(delivery_frame(rows, repo_project.params.data, True), _raw())


def test_features_only_delivery_prepares_to_an_unknown_target(repo_project: Project) -> None:
    cfg = repo_project.params.data
    hidden = data.prepare(delivery_frame(_raw(), cfg, labelled=False), cfg)
    shown = data.prepare(delivery_frame(_raw(), cfg, labelled=True), cfg)
    assert hidden[cfg.target].isna().all()
    assert shown[cfg.target].notna().sum() == _raw()["arr_delay"].notna().sum()
    # only the target differs: the re-delivery with labels may fill the batch in
    assert data.fills_labels(hidden, shown, cfg.target)


def test_without_derive_target_the_target_itself_is_blanked() -> None:
    cfg = DataConfig(target="price", task="regression", time_column="date")
    rows = pd.DataFrame({"date": ["2013-01-01", "2013-01-02"], "price": [1.0, 2.0], "x": [3, 4]})
    out = delivery_frame(rows, cfg, labelled=False)
    assert label_source_column(cfg) == "price"
    assert out["price"].isna().all() and list(out["x"]) == [3, 4]
    assert list(rows["price"]) == [1.0, 2.0]


# --- periods_of ------------------------------------------------------------------------


def test_periods_of_without_a_time_column_are_blocks_of_rows() -> None:
    cfg = DataConfig(target="y", task="classification", time_column=None, rows_per_batch=2)
    periods = periods_of(pd.DataFrame({"y": [1, 0, 1, 0, 1]}), cfg)
    assert list(periods) == ["part-00001"] * 2 + ["part-00002"] * 2 + ["part-00003"]


def test_periods_of_gives_each_row_its_month(repo_project: Project) -> None:
    periods = periods_of(_raw(), repo_project.params.data)
    assert list(periods) == [d[:7] for d in _raw()["date"]]


# --- write_delivery --------------------------------------------------------------------


def test_write_delivery_is_atomic_and_keeps_features_and_labels_apart(tmp_path: Path) -> None:
    landing = tmp_path / "data" / "landing"  # created on demand
    frame = _raw()
    features = write_delivery(frame.assign(arr_delay=np.nan), landing, Delivery("2013-07", False))
    labelled = write_delivery(frame, landing, Delivery("2013-07", True))
    assert features.parent == landing and labelled.parent == landing
    assert features != labelled
    assert features.name == Delivery("2013-07", False).file_name
    assert sorted(p.name for p in landing.iterdir()) == sorted([features.name, labelled.name])
    pd.testing.assert_frame_equal(pd.read_parquet(labelled), frame)
    assert pd.read_parquet(features)["arr_delay"].isna().all()
