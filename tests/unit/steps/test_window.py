from __future__ import annotations

import pytest

from ctloop.core.config import SplitConfig
from ctloop.steps.windows import WindowError, plan_window

MONTHS = [f"2013-{m:02d}" for m in range(1, 8)]


def test_window_holdout_is_latest_labelled_period_and_newest_batch_is_monitored() -> None:
    w = plan_window(SplitConfig(window_start="2013-01", window_end="2013-06"), MONTHS)
    assert w.train == tuple(MONTHS[:5]) and w.holdout == ("2013-06",) and w.current == "2013-07"
    assert w.used == MONTHS


def test_open_window_runs_to_the_newest_batch() -> None:
    w = plan_window(SplitConfig(window_start="2013-03", holdout_periods=2), MONTHS)
    assert w.train == ("2013-03", "2013-04", "2013-05") and w.holdout == ("2013-06", "2013-07")
    assert w.used == MONTHS[2:]


def test_too_small_window_is_a_clear_error() -> None:
    with pytest.raises(WindowError, match="holds 1 batch"):
        plan_window(SplitConfig(window_start="2013-07"), MONTHS)


def test_periods_without_labels_yet_are_left_out_of_the_window() -> None:
    labelled = MONTHS[:5]  # June's and July's labels have not arrived
    w = plan_window(SplitConfig(window_start="2013-01", window_end="2013-06"), MONTHS, labelled)
    assert w.holdout == ("2013-05",) and w.train == tuple(MONTHS[:4])
    assert w.current == "2013-07"  # still monitored for drift
