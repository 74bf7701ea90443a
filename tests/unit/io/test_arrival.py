"""Batches by arrival (no time column): the numbering of deliveries (pure, Hypothesis), the cut
of a short remainder, and `ingest_landed` on a real project folder (redelivery, labels later,
conflicts, concurrent deliveries)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core.config import DataConfig, Project, ValidationConfig
from ctloop.io import arrival, data, files

# --- block_bounds ----------------------------------------------------------------------
from ctloop.steps import monitoring, replay


def test_a_short_remainder_joins_the_block_before_it() -> None:
    rule = data.BlockRule(size=100, min_rows=20, max_rows=500)
    assert data.block_bounds(159, rule) == [(0, 100), (100, 159)]  # 59 >= 20: a batch of its own
    assert data.block_bounds(105, rule) == [(0, 105)]  # 5 < 20: joins the block before it
    assert data.block_bounds(210, rule) == [(0, 100), (100, 210)]
    assert data.block_bounds(10, rule) == [(0, 10)]  # the whole delivery is short: one batch
    assert data.block_bounds(0, rule) == []
    # the joined block would break the upper bound: the remainder stays a batch of its own
    tight = data.BlockRule(size=100, min_rows=20, max_rows=100)
    assert data.block_bounds(105, tight) == [(0, 100), (100, 105)]


def test_the_rule_follows_the_row_count_bounds() -> None:
    cfg = DataConfig(target="y", task="classification", rows_per_batch=150)
    rule = data.BlockRule.of(cfg, ValidationConfig(row_count_min_factor=0.2))
    assert (rule.size, rule.min_rows, rule.max_rows) == (150, 30, 750)
    assert data.BlockRule.of(cfg) == data.BlockRule(150)


# --- numbering (pure) ------------------------------------------------------------------


def test_names_continue_after_the_newest_batch() -> None:
    rule = data.BlockRule(size=100, min_rows=20)
    existing = ["part-00001", "part-00002", "part-00006", "replacements"]
    got = data.arrival_batches(existing, [250, 40], rule)
    assert got == [
        ("part-00007", 0, 0, 100),
        ("part-00008", 0, 100, 200),
        ("part-00009", 0, 200, 250),
        ("part-00010", 1, 0, 40),
    ]
    assert data.next_arrival_names([], 2) == ["part-00001", "part-00002"]


def test_numbers_beyond_five_digits_are_refused() -> None:
    with pytest.raises(data.DataError, match=r"rule 'batch_numbers'.*rows_per_batch"):
        data.next_arrival_names(["part-99999"], 1)


@st.composite
def _rules(draw: st.DrawFn) -> data.BlockRule:
    size = draw(st.integers(1, 60))
    low = draw(st.integers(1, size))
    high = draw(st.one_of(st.none(), st.integers(size, 3 * size)))
    return data.BlockRule(size, low, high)


@settings(max_examples=200, deadline=None)
@given(
    existing=st.lists(st.integers(1, 500), max_size=6, unique=True),
    deliveries=st.lists(st.integers(0, 400), max_size=6),
    rule=_rules(),
)
def test_batches_are_unique_sortable_contiguous_and_give_back_the_deliveries(
    existing: list[int], deliveries: list[int], rule: data.BlockRule
) -> None:
    names = [data.arrival_name(n) for n in existing]
    got = data.arrival_batches(names, deliveries, rule)
    new = [name for name, *_ in got]
    assert len(set(new)) == len(new) and not set(new) & set(names)  # unique
    assert new == sorted(new) and all(n > max(names, default="") for n in new)  # sortable, newer
    numbers = [data.arrival_number(n) for n in new]
    first = max(existing, default=0) + 1
    assert numbers == list(range(first, first + len(new)))  # contiguous after the newest
    # concatenating the batches in name order gives every delivery back, in order
    rows = [np.arange(n) + 1000 * i for i, n in enumerate(deliveries)]
    batches = [rows[i][a:b] for _, i, a, b in sorted(got)]
    joined = np.concatenate(batches) if batches else np.array([], dtype=int)
    expected = np.concatenate(rows) if rows else np.array([], dtype=int)
    assert np.array_equal(joined, expected)
    for i in range(len(deliveries)):  # sizes: full blocks, one last block per delivery
        sizes = [b - a for _, j, a, b in got if j == i]
        assert all(s == rule.size for s in sizes[:-1]) and all(s > 0 for s in sizes)
        if len(sizes) > 1 and (rule.max_rows is None or rule.max_rows >= rule.size + rule.min_rows):
            assert sizes[-1] >= rule.min_rows  # a remainder never falls below the minimum
        if sizes:
            assert sizes[-1] <= max(rule.size, rule.max_rows or rule.size + rule.min_rows)


def test_replay_periods_are_the_source_blocks() -> None:
    cfg = DataConfig(target="y", task="classification", rows_per_batch=4)
    raw = pd.DataFrame({"x": range(9), "y": [0, 1] * 4 + [0]})
    periods = replay.periods_of(raw, cfg, data.BlockRule(4, min_rows=2))
    assert list(periods) == ["part-00001"] * 4 + ["part-00002"] * 5  # 1 row left: joined
    blocks = data.split_batches(raw, cfg, data.BlockRule(4, min_rows=2))
    for name, frame in blocks.items():  # the replay delivers exactly the batches ingestion cut
        assert frame["x"].tolist() == raw.loc[periods == name, "x"].tolist()
    assert replay.select(list(periods.unique()), "part-00002", "part-00009") == ["part-00002"]
    with pytest.raises(data.DataError, match=r"rule 'replay'.*part-00001\.\.part-00002"):
        replay.select(list(periods.unique()), "2013-07", "2013-12")


# --- ingest_landed on a project without a time column ------------------------------------


def _frame(start: int, rows: int, labelled: bool = True) -> pd.DataFrame:
    x = np.arange(start, start + rows, dtype=float)
    y = (x % 3 == 0).astype(float) if labelled else np.full(rows, np.nan)
    return pd.DataFrame({"x": x, "kind": np.where(x % 2 == 0, "a", "b"), "y": y})


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    return make_project(
        {
            "data": {
                "source": "source.csv",
                "target": "y",
                "derive_target": None,
                "time_column": None,
                "rows_per_batch": 100,
                "drop_columns": [],
                "ingest_until": None,
            },
            "validation": {"row_count_min_factor": 0.2},
        }
    )


def _deliver(p: Project, name: str, frame: pd.DataFrame) -> list[data.BatchWrite]:
    landed = p.path("landing") / name
    landed.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(landed, index=False)
    return monitoring.ingest_landed(p, landed)


def _stored(p: Project) -> pd.DataFrame:
    folder = p.path("batches")
    return data.read_batches(folder, data.list_batches(folder))


def test_each_delivery_becomes_the_next_batches(project: Project) -> None:
    first = _deliver(project, "a.csv", _frame(0, 250))
    assert [(w.name, w.rows, w.written) for w in first] == [
        ("part-00001", 100, True),
        ("part-00002", 100, True),
        ("part-00003", 50, True),
    ]
    second = _deliver(project, "b.csv", _frame(250, 159))  # only new rows: no conflict
    assert [(w.name, w.rows) for w in second] == [("part-00004", 100), ("part-00005", 59)]
    third = _deliver(project, "c.csv", _frame(409, 105))  # 5 rows left over: joined
    assert [(w.name, w.rows) for w in third] == [("part-00006", 105)]
    assert _stored(project)["x"].tolist() == list(range(514))  # the deliveries, in order


def test_the_same_rows_again_are_already_ingested(project: Project) -> None:
    _deliver(project, "a.csv", _frame(0, 250))
    again = _deliver(project, "a-resent.csv", _frame(0, 250))  # another name, the same rows
    assert [(w.name, w.written) for w in again] == [
        ("part-00001", False),
        ("part-00002", False),
        ("part-00003", False),
    ]
    assert data.list_batches(project.path("batches")) == ["part-00001", "part-00002", "part-00003"]
    # a cumulative file: its first blocks are the stored batches, the rest is new
    grown = _deliver(project, "a-grown.csv", pd.concat([_frame(0, 200), _frame(250, 100)]))
    assert [(w.name, w.written) for w in grown] == [
        ("part-00001", False),
        ("part-00002", False),
        ("part-00004", True),
    ]


def test_labels_delivered_later_fill_the_same_batch(project: Project) -> None:
    _deliver(project, "a.csv", _frame(0, 100))
    unlabelled = _frame(100, 115, labelled=False)  # one batch: its 15 remaining rows join
    features = _deliver(project, "b-features.csv", unlabelled)
    assert [(w.name, w.written) for w in features] == [("part-00002", True)]
    labels = _deliver(project, "b.csv", _frame(100, 115))
    assert [(w.name, w.written) for w in labels] == [("part-00002", True)]  # replaced, not new
    assert data.list_batches(project.path("batches")) == ["part-00001", "part-00002"]
    assert _stored(project)["y"].notna().all()


def test_other_labels_for_stored_rows_refuse_the_whole_file(project: Project) -> None:
    _deliver(project, "a.csv", _frame(0, 100))
    changed = _frame(0, 100).assign(y=lambda d: 1.0 - d["y"])
    with pytest.raises(data.BatchConflictError, match=r"column 'y': rule 'immutable_batch'"):
        _deliver(project, "b.csv", pd.concat([_frame(100, 100), changed]))
    assert data.list_batches(project.path("batches")) == ["part-00001"]  # nothing written


def test_concurrent_deliveries_never_share_a_number(project: Project) -> None:
    files = {f"d{i}.csv": _frame(1000 * i, 130) for i in range(4)}
    results: dict[str, list[data.BatchWrite]] = {}
    errors: list[BaseException] = []

    def deliver(name: str) -> None:
        try:
            results[name] = _deliver(project, name, files[name])
        except BaseException as err:  # reported below: a thread's error is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = [w.name for ws in results.values() for w in ws]
    assert sorted(names) == [data.arrival_name(i) for i in range(1, 9)]  # 4 x (100 + 30)
    for name, writes in results.items():  # each file's batches are consecutive
        numbers = [data.arrival_number(w.name) or 0 for w in writes]
        assert numbers[1] == numbers[0] + 1
        joined = data.read_batches(project.path("batches"), [w.name for w in writes])
        assert joined["x"].tolist() == files[name]["x"].tolist()


def test_the_digest_cache_notices_a_changed_batch(tmp_path: Path) -> None:
    folder, cache = tmp_path / "batches", tmp_path / "cache.json"
    data.write_batch(folder, "part-00001", _frame(0, 10))
    first = arrival.stored_digests(folder, "y", cache)
    assert first["part-00001"] == arrival.digests(_frame(0, 10), "y")
    data.batch_path(folder, "part-00001").unlink()
    data.write_batch(folder, "part-00001", _frame(5, 12))  # other size: re-hashed
    assert arrival.stored_digests(folder, "y", cache)["part-00001"].content == data.content_hash(
        _frame(5, 12)
    )


# --- the advice of a refusal -----------------------------------------------------------


def test_a_short_batch_is_told_what_to_change_not_to_fix_the_data() -> None:
    from ctloop.ml import validation

    short = "f.csv: table: rule 'row_count' (critical): 10 rows (expected 20 to 500)"
    by_arrival = validation.what_to_do(short, by_arrival=True)
    assert "data.rows_per_batch" in by_arrival and "row_count_min_factor" in by_arrival
    assert "fix the data" not in by_arrival
    by_period = validation.what_to_do(short, by_arrival=False)
    assert "partial delivery" in by_period and "fix the data" not in by_period
    broken = short + "\nf.csv: column 'x': rule 'ranges' (critical): 3 values outside [0, 1]"
    assert "fix the data" in validation.what_to_do(broken, by_arrival=True)
    assert validation.what_to_do("f.csv: rule 'ranges': ...", False).startswith("fix the data")


def test_a_quarantined_arrival_batch_explains_the_row_count(tmp_path: Path) -> None:
    from ctloop.ml import validation

    rule = validation.RuleResult(
        "row_count", "expect_table_row_count_to_be_between", None, "critical", False, "9 rows"
    )
    report = validation.ValidationReport("part-00004", "part-00004.parquet", 9, (rule,))
    src = tmp_path / "part-00004.parquet"
    src.write_bytes(b"x")
    folder = validation.quarantine_batch(src, report, tmp_path / "q", files.write_text_atomic)
    text = (folder / "reason.txt").read_text()
    assert "join it with the next rows and deliver it again" in text
    assert "fix the data" not in text and "rule 'row_count'" in text


# --- `ctloop batch replace --batch` --------------------------------------------------------


def test_a_correction_names_the_batch_it_replaces(project: Project, tmp_path: Path) -> None:
    from ctloop.steps import correction

    _deliver(project, "a.csv", _frame(0, 200))
    fixed = tmp_path / "fixed.csv"
    _frame(100, 130).to_csv(fixed, index=False)  # more rows than rows_per_batch: taken whole
    with pytest.raises(correction.CorrectionError, match=r"rule 'one_period'.*--batch"):
        correction.corrected_batch(project, fixed)
    with pytest.raises(correction.CorrectionError, match=r"rule 'batch_exists'.*part-00009"):
        correction.corrected_batch(project, fixed, "part-00009")
    name, frame = correction.corrected_batch(project, fixed, "part-00002")
    assert name == "part-00002" and frame["x"].tolist() == list(range(100, 230))


def test_the_config_check_and_init_see_the_blocks_ingestion_cuts() -> None:
    from ctloop.steps import config_check

    rule = data.BlockRule(size=100, min_rows=20, max_rows=500)
    assert config_check.block_names(105, 100, rule) == ["part-00001"]  # 5 rows joined
    assert config_check.block_names(105, 100) == ["part-00001", "part-00002"]  # plain blocks
    frame = pd.DataFrame({"x": range(1234)})
    cut = data.split_batches(frame, DataConfig(target="y", task="regression"), rule)
    assert data.block_sizes(1234, rule) == {name: len(b) for name, b in cut.items()}
