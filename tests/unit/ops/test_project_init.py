"""`ctloop init`'s choices from the data (ctloop/ops/project_init.py): task, time column, batches,
window, folds, slices, identifiers; the written params validate and read back the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core.config import ValidationConfig, parse_params
from ctloop.io.data import BlockRule, block_sizes
from ctloop.ops.project_init import InitError, plan_project, render_params


def frame(rows: int = 600, seed: int = 0, **columns: object) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = pd.DataFrame(
        {
            "size m2": rng.uniform(30, 200, rows),
            "rooms": rng.integers(1, 7, rows),
            "region": rng.choice(["north", "south", "east"], rows),
            "price": rng.normal(300_000, 50_000, rows),
        }
    )
    return base.assign(**columns)


def chosen(plan: object, key: str) -> object:
    [value] = [c.value for c in plan.choices if c.key == key]  # type: ignore[attr-defined]
    return value


def test_regression_without_a_time_column_cuts_blocks_and_holds_some_back() -> None:
    plan = plan_project(frame(), "houses.csv", "price")
    data = plan.params["data"]
    assert (data["task"], data["time_column"], data["rows_per_batch"]) == ("regression", None, 60)
    assert plan.periods == tuple(f"part-{i:05d}" for i in range(1, 11))
    assert data["ingest_until"] == "part-00008"
    assert (plan.params["replay"]["start"], plan.params["replay"]["end"]) == (
        "part-00009",
        "part-00010",
    )
    assert plan.params["promotion"]["model_name"] == "houses"
    assert plan.params["slices"]["columns"] == ["region"]


@pytest.mark.parametrize(
    ("labels", "task"),
    [
        (["yes", "no"], "classification"),
        ([True, False], "classification"),
        ([0, 1], "classification"),
    ],
)
def test_two_labels_are_a_binary_classification(labels: list[object], task: str) -> None:
    y = np.resize(labels, 600)
    plan = plan_project(frame(sold=y), "houses.csv", "sold")
    assert plan.params["data"]["task"] == task


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["a", "b", "c"], "3 text labels"),
        ([1, 2, 3], "3 whole numbers (1, 2, 3) look like classes"),
        (["M", "B"], "two labels ('b', 'm') that are not one of the encodings"),
        ([7, 7], "1 distinct value(s): nothing to predict"),
    ],
)
def test_unsupported_targets_are_refused_naming_the_column(
    values: list[object], message: str
) -> None:
    with pytest.raises(InitError, match="column 'kind'") as refused:
        plan_project(frame(kind=np.resize(values, 600)), "houses.csv", "kind")
    assert message in str(refused.value)


def test_whole_numbers_are_a_regression_when_asked() -> None:
    plan = plan_project(frame(kind=np.resize([1, 2, 3], 600)), "h.csv", "kind", task="regression")
    assert plan.params["data"]["task"] == "regression"


def test_a_date_column_gives_periods_big_enough_for_validation() -> None:
    days = pd.date_range("2020-01-01", periods=365, freq="D")
    rows = np.repeat(days, 60)  # 60 rows a day: a week has 420, a month about 1,800
    data = frame(len(rows), sale_date=rows.strftime("%Y-%m-%d"), listed=rows.strftime("%Y-%m-%d"))
    plan = plan_project(data, "houses.csv", "price")
    assert plan.params["data"]["time_column"] == "sale_date"
    assert plan.params["data"]["batch_frequency"] == "month"
    assert plan.params["data"]["drop_columns"] == ["listed"]  # another date column
    assert plan.params["data"]["ingest_until"] == "2020-09"
    assert plan.params["replay"] == {**plan.params["replay"], "start": "2020-10", "end": "2020-12"}


def test_too_few_periods_is_refused_with_the_way_out() -> None:
    dates = np.resize(["2020-01-01", "2020-01-02"], 600)
    with pytest.raises(InitError, match="--no-time-column"):
        plan_project(frame(day=dates), "h.csv", "price")
    plan = plan_project(frame(day=dates), "h.csv", "price", no_time_column=True)
    assert plan.params["data"]["time_column"] is None


def test_identifiers_are_dropped() -> None:
    ids = [f"house-{i}" for i in range(600)]
    plan = plan_project(frame(ref=ids, house_id=np.arange(600)), "h.csv", "price")
    assert plan.params["data"]["drop_columns"] == ["ref", "house_id"]


def test_a_rare_class_lowers_the_folds_and_says_so() -> None:
    sold = np.zeros(600, dtype=int)
    sold[::100] = 1  # 6 positives: 4 or 5 in the training blocks
    plan = plan_project(frame(sold=sold), "h.csv", "sold")
    folds = plan.params["split"]["folds"]
    assert 2 <= folds < 5 and chosen(plan, "split.folds") == folds


def test_too_few_rows_are_refused() -> None:
    with pytest.raises(InitError, match="40 labelled row"):
        plan_project(frame(40), "h.csv", "price")


def test_a_missing_target_is_named_with_the_columns() -> None:
    with pytest.raises(InitError, match=r"--target: column 'Price' is not in h.csv \(its columns"):
        plan_project(frame(), "h.csv", "Price")


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(100, 200_000))
def test_blocks_leave_a_window_and_a_replay_whatever_the_size(rows: int) -> None:
    """Any row count from 100 up: at least 5 blocks, 2+ training, 1 holdout, 1+ replayed."""
    data = pd.DataFrame({"x": np.arange(rows) % 7, "y": np.arange(rows) * 0.5})
    plan = plan_project(data, "f.csv", "y")
    size = plan.params["data"]["rows_per_batch"]
    # as ingestion cuts them: blocks of `size`, a remainder under 20% of a block joined
    rule = BlockRule.sized(size, ValidationConfig())
    assert list(plan.periods) == list(block_sizes(rows, rule)) and len(plan.periods) >= 5
    initial = plan.periods.index(plan.params["data"]["ingest_until"]) + 1
    assert initial >= 3 and len(plan.periods) - initial >= 1


def test_the_rendered_file_reads_back_as_the_plan() -> None:
    plan = plan_project(frame(), "houses.csv", "price")
    text = render_params(plan, "ctloop init houses.csv --target price")
    assert text.startswith("# ctloop configuration written by `ctloop init houses.csv")
    assert "# init: data.task = regression:" in text
    assert yaml.safe_load(text) == plan.params
    assert parse_params(yaml.safe_load(text)).data.target == "price"


def test_rows_sorted_by_the_target_are_refused_with_the_remedy() -> None:
    """Package datasets often come sorted by class: in file order the newest blocks hold one
    class, so no holdout can measure ROC AUC; init says why and what to do."""
    sold = np.sort(np.resize([0, 1], 600))
    with pytest.raises(InitError) as refused:
        plan_project(frame(sold=sold), "h.csv", "sold")
    message = str(refused.value)
    assert "(part-00006, part-00007, part-00008) hold class 1 only" in message
    assert "shuffle the rows" in message
    shuffled = np.random.default_rng(0).permutation(sold)
    assert plan_project(frame(sold=shuffled), "h.csv", "sold").params["data"]["task"] == (
        "classification"
    )
