"""Run names that say what a run is (ctloop/core/names.py): Prefect flow-run names in full,
MLflow run names told apart in their first 20 characters."""

from __future__ import annotations

import pytest

from ctloop.core import events, names


@pytest.mark.parametrize(
    ("trigger", "word"),
    [
        (None, "manual"),
        ("", "manual"),
        ("manual", "manual"),
        ("schedule", "schedule"),
        (events.DRIFT_DETECTED, "drift"),
        (events.PERFORMANCE_DEGRADED, "decay"),
        (events.ESTIMATED_DEGRADED, "estimated decay"),
        (events.RETRAIN_DUE, "new data"),
        ("ctloop.something.brand_new", "brand new"),
    ],
)
def test_trigger_words(trigger: str | None, word: str) -> None:
    assert names.trigger_word(trigger) == word


def test_prefect_flow_run_names_name_window_batch_and_trigger() -> None:
    assert names.train_flow_run("2013-01", "2013-06", "manual") == "train 2013-01..2013-06 (manual)"
    assert names.train_flow_run(None, None, None) == "train configured window (manual)"
    assert (
        names.retrain_flow_run("2013-07", events.PERFORMANCE_DEGRADED) == "retrain 2013-07 (decay)"
    )
    assert names.retrain_flow_run(None, "schedule") == "retrain newest window (schedule)"
    assert names.monitor_flow_run("/x/landing/delivery-2013-07.parquet") == "monitor 2013-07"
    assert names.monitor_flow_run("delivery-2013-08-features.parquet") == (
        "monitor 2013-08 (no labels)"
    )
    assert names.monitor_flow_run("sub/flights jul.csv") == "monitor flights jul.csv"
    assert names.predict_flow_run("data/in/new.parquet") == "predict new.parquet"


def test_short_window_keeps_the_shared_year_once() -> None:
    assert names.short_window("2013-01", "2013-06") == "2013-01..06"
    assert names.short_window("2012-11", "2013-02") == "2012-11..2013-02"
    assert names.short_window("part-00001", "part-00004") == "part-00001..00004"
    assert names.short_window("2013-07", "2013-07") == "2013-07"
    assert names.short_window("a", "b") == "a..b"


def test_mlflow_run_names_differ_in_their_first_20_characters() -> None:
    """The MLflow runs table cuts names at about 20 characters: version, window and trigger of
    trainings, batch and version of monitoring runs, are all inside them."""
    runs = [
        names.training_run("1", "2013-01", "2013-06", "manual"),
        names.training_run("2", "2013-01", "2013-07", events.PERFORMANCE_DEGRADED),
        names.training_run("3", "2013-01", "2013-08", events.DRIFT_DETECTED),
        names.training_run("4", "2013-02", "2013-08", "schedule"),
        names.monitoring_run("2013-07", "1"),
        names.monitoring_run("2013-08", "2"),
        names.monitoring_run("2013-08", "3"),
    ]
    assert runs[0] == "v1 train 2013-01..06 manual"
    assert runs[4] == "monitor 2013-07 v1"
    assert len({r[:20] for r in runs}) == len(runs)
    assert names.training_run(None, "2013-01", "2013-06", None) == "train 2013-01..06 manual"


def test_notes_say_what_window_and_decision() -> None:
    note = names.training_note("2013-01", "2013-06", events.DRIFT_DETECTED, "drift on 2013-07")
    assert "2013-01..2013-06" in note and "holdout 2013-06" in note
    assert "drift (drift on 2013-07)" in note and "Registered" not in note
    done = names.training_note("2013-01", "2013-06", "manual", "", "3", "promoted: +0.01")
    assert "**v3**: promoted: +0.01" in done
    monitor = names.monitoring_note("2013-07", "3", "roc_auc", 0.71234, True, ("decay 0.03",))
    assert "batch 2013-07 with champion v3: roc_auc 0.7123" in monitor
    assert "**RETRAIN** (decay 0.03)" in monitor
    assert "no labels" in names.monitoring_note("2013-07", "3", "roc_auc", None)
