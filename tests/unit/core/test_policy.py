from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from ctloop.core.config import ContinuousConfig
from ctloop.core.policy import (
    NoWindowError,
    Signals,
    Verdict,
    assess,
    batches_after,
    ct_window,
    in_cooldown,
)

MONTHS = [f"2013-{m:02d}" for m in range(1, 9)]  # 8 labelled periods


def _signals(**kw: Any) -> Signals:
    """Quiet signals (no drift, no labels, nothing due) with the given fields changed."""
    base = Signals(
        batch="2013-07",
        model_version="3",
        dataset_drift=False,
        drifted_columns=(),
        drifted_share=0.0,
        metric="roc_auc",
        batch_score=None,
        reference_score=None,
        batches_since_training=0,
    )
    return replace(base, **kw)


def _cfg(**kw: Any) -> ContinuousConfig:
    return ContinuousConfig(**kw)


# --- assess: drift ---------------------------------------------------------------------


@pytest.mark.parametrize("retrain_on_drift", [True, False])
def test_dataset_drift_triggers_only_with_retrain_on_drift(retrain_on_drift: bool) -> None:
    s = _signals(dataset_drift=True, drifted_columns=("temp", "wind"), drifted_share=0.6)
    v = assess(s, _cfg(retrain_on_drift=retrain_on_drift), greater_is_better=True)
    assert v.drift is retrain_on_drift
    assert v.retrain is retrain_on_drift
    assert not v.decay and not v.due
    assert any(r.startswith("drift") for r in v.reasons) is retrain_on_drift


def test_key_column_drift_triggers_without_dataset_verdict() -> None:
    s = _signals(dataset_drift=False, drifted_columns=("temp", "carrier"), drifted_share=0.1)
    v = assess(s, _cfg(drift_key_columns=["carrier", "origin"]), greater_is_better=True)
    assert v.drift and v.retrain
    (reason,) = v.reasons
    assert "carrier" in reason and "origin" not in reason
    assert s.batch in reason


def test_key_column_drift_is_ignored_when_retrain_on_drift_is_off() -> None:
    s = _signals(drifted_columns=("carrier",), drifted_share=0.1)
    v = assess(s, _cfg(retrain_on_drift=False, drift_key_columns=["carrier"]), True)
    assert not v.drift and not v.retrain and v.reasons == ()


def test_non_key_drifted_columns_alone_do_not_trigger() -> None:
    s = _signals(dataset_drift=False, drifted_columns=("temp", "wind"), drifted_share=0.2)
    v = assess(s, _cfg(drift_key_columns=["carrier"]), greater_is_better=True)
    assert not v.drift and not v.retrain
    assert v.reasons == ()


def test_drift_reason_names_batch_column_count_and_share() -> None:
    s = _signals(
        batch="2013-09", dataset_drift=True, drifted_columns=("a", "b", "c"), drifted_share=0.375
    )
    (reason,) = assess(s, _cfg(), greater_is_better=True).reasons
    assert "2013-09" in reason
    assert "3 column" in reason
    assert f"{0.375:.2f}" in reason


# --- assess: decay ---------------------------------------------------------------------


def test_decay_above_threshold_triggers_with_its_amount() -> None:
    s = _signals(batch_score=0.70, reference_score=0.80)
    v = assess(s, _cfg(decay_threshold=0.05), greater_is_better=True)
    assert v.decay and v.retrain
    assert v.decay_amount == pytest.approx(0.80 - 0.70)
    assert v.decay_relative == pytest.approx((0.80 - 0.70) / 0.80)


def test_decay_threshold_is_a_share_of_the_holdout_score() -> None:
    # a drop of 0.03 is 6% of 0.5 but 3% of 1.0: threshold 0.05 (5%) separates them
    cfg = _cfg(decay_threshold=0.05)
    assert assess(_signals(batch_score=0.47, reference_score=0.5), cfg, True).decay
    assert not assess(_signals(batch_score=0.97, reference_score=1.0), cfg, True).decay


def test_decay_equal_to_threshold_does_not_trigger() -> None:
    # 0.5 - 0.25 == 0.5 x 0.5 exactly in binary floating point: the rule is strictly greater
    s = _signals(batch_score=0.25, reference_score=0.5)
    v = assess(s, _cfg(decay_threshold=0.5), greater_is_better=True)
    assert v.decay_amount == 0.25 and v.decay_relative == 0.5
    assert not v.decay and not v.retrain


def test_decay_below_threshold_and_improvement_do_not_trigger() -> None:
    cfg = _cfg(decay_threshold=0.05)
    small = assess(_signals(batch_score=0.78, reference_score=0.80), cfg, True)
    better = assess(_signals(batch_score=0.90, reference_score=0.80), cfg, True)
    assert not small.decay and not better.decay
    assert better.decay_amount is not None and better.decay_amount < 0


@pytest.mark.parametrize(
    ("batch_score", "reference_score"), [(None, 0.9), (0.1, None), (None, None)]
)
def test_missing_scores_never_decay(
    batch_score: float | None, reference_score: float | None
) -> None:
    s = _signals(batch_score=batch_score, reference_score=reference_score)
    v = assess(s, _cfg(decay_threshold=0.0), greater_is_better=True)
    assert not v.decay and v.decay_amount is None and not v.retrain


def test_decay_is_ignored_when_retrain_on_decay_is_off() -> None:
    s = _signals(batch_score=0.5, reference_score=0.9)
    v = assess(s, _cfg(retrain_on_decay=False, decay_threshold=0.01), greater_is_better=True)
    assert not v.decay and not v.retrain and v.reasons == ()


def test_regression_error_rising_is_decay_and_falling_is_not() -> None:
    cfg = _cfg(decay_threshold=0.1)  # 10% of the holdout RMSE: 1.0
    worse = _signals(metric="rmse", batch_score=12.0, reference_score=10.0)
    better = _signals(metric="rmse", batch_score=8.0, reference_score=10.0)
    v_worse = assess(worse, cfg, greater_is_better=False)
    v_better = assess(better, cfg, greater_is_better=False)
    assert v_worse.decay and v_worse.decay_amount == pytest.approx(2.0)
    assert v_worse.decay_relative == pytest.approx(0.2)
    assert not v_better.decay and v_better.decay_amount == pytest.approx(-2.0)
    assert not assess(worse, _cfg(decay_threshold=0.25), greater_is_better=False).decay
    # the same figures read as a greater-is-better metric mean the opposite
    assert not assess(worse, cfg, greater_is_better=True).decay
    assert assess(better, cfg, greater_is_better=True).decay


def test_decay_reason_names_batch_metric_scores_and_version() -> None:
    s = _signals(
        batch="2013-10", model_version="12", metric="roc_auc", batch_score=0.61, reference_score=0.7
    )
    (reason,) = assess(s, _cfg(decay_threshold=0.02), greater_is_better=True).reasons
    assert reason.startswith("decay")
    for part in ("2013-10", "roc_auc", f"{0.61:.4f}", f"{0.7:.4f}", "v12", f"{0.7 - 0.61:.4f}"):
        assert part in reason
    assert f"drop {0.7 - 0.61:.4f} = 12.9% > 2%" in reason


def test_decay_of_an_error_metric_is_a_rise_with_both_figures() -> None:
    """The issue's case: RMSE in currency units, twice the holdout's on a later month."""
    s = _signals(batch="2014-03", metric="rmse", batch_score=46.96, reference_score=21.73)
    (reason,) = assess(s, _cfg(decay_threshold=0.02), greater_is_better=False).reasons
    assert "rmse 46.9600 on 2014-03 vs holdout 21.7300" in reason
    assert "(rise 25.2300 = 116% > 2%)" in reason and "drop" not in reason
    small = _signals(metric="rmse", batch_score=22.0, reference_score=21.73)  # 1.2% worse
    assert not assess(small, _cfg(decay_threshold=0.02), greater_is_better=False).decay


# --- assess: every N batches ---------------------------------------------------------


@pytest.mark.parametrize(("since", "due"), [(2, False), (3, True), (7, True), (0, False)])
def test_retrain_every_n_batches_is_due_from_n(since: int, due: bool) -> None:
    v = assess(_signals(batches_since_training=since), _cfg(retrain_every_n_batches=3), True)
    assert v.due is due and v.retrain is due
    if due:
        (reason,) = v.reasons
        assert str(since) in reason and ">= 3" in reason


def test_nothing_is_due_without_retrain_every_n_batches() -> None:
    v = assess(_signals(batches_since_training=1000), _cfg(), greater_is_better=True)
    assert not v.due and not v.retrain


def test_all_three_signals_give_three_reasons() -> None:
    s = _signals(
        dataset_drift=True,
        drifted_columns=("x",),
        drifted_share=1.0,
        batch_score=0.5,
        reference_score=0.9,
        batches_since_training=5,
    )
    v = assess(s, _cfg(retrain_every_n_batches=5), greater_is_better=True)
    assert (v.drift, v.decay, v.due) == (True, True, True)
    assert [r.split(":")[0] for r in v.reasons] == ["drift", "decay", "due"]


# --- Verdict ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drift", "decay", "due"), list(itertools.product([False, True], repeat=3))
)
def test_verdict_retrain_is_the_or_and_to_dict_includes_it(
    drift: bool, decay: bool, due: bool
) -> None:
    v = Verdict(drift=drift, decay=decay, due=due, decay_amount=None, reasons=("r",))
    assert v.retrain is (drift or decay or due)
    d = v.to_dict()
    assert d["retrain"] is v.retrain
    assert (d["drift"], d["decay"], d["due"]) == (drift, decay, due)
    assert d["decay_amount"] is None and tuple(d["reasons"]) == ("r",)


# --- cooldown --------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, 0)


def test_no_previous_retrain_is_never_in_cooldown() -> None:
    assert not in_cooldown(None, NOW, 5.0)


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (timedelta(0), True),
        (timedelta(minutes=4, seconds=59), True),
        (timedelta(minutes=5), False),  # exactly at the limit: the cooldown is over
        (timedelta(minutes=5, microseconds=1), False),
        (timedelta(hours=2), False),
    ],
)
def test_cooldown_boundaries(ago: timedelta, expected: bool) -> None:
    assert in_cooldown(NOW - ago, NOW, 5.0) is expected


def test_zero_minute_cooldown_never_applies() -> None:
    assert not in_cooldown(NOW, NOW, 0)
    assert not in_cooldown(NOW - timedelta(seconds=1), NOW, 0)


# --- ct_window -------------------------------------------------------------------------


def test_sliding_window_keeps_last_periods_and_newest_is_holdout() -> None:
    train, holdout = ct_window(MONTHS, _cfg(window="sliding", window_periods=6))
    assert holdout == (MONTHS[-1],)
    assert train == tuple(MONTHS[-6:-1])
    assert len(train) + len(holdout) == 6


def test_sliding_window_with_fewer_periods_than_the_window_uses_them_all() -> None:
    train, holdout = ct_window(MONTHS[:3], _cfg(window="sliding", window_periods=6))
    assert train == tuple(MONTHS[:2]) and holdout == (MONTHS[2],)


def test_expanding_window_keeps_every_labelled_period() -> None:
    train, holdout = ct_window(MONTHS, _cfg(window="expanding", window_periods=2))
    assert train == tuple(MONTHS[:-1]) and holdout == (MONTHS[-1],)


@pytest.mark.parametrize("window", ["sliding", "expanding"])
def test_window_sorts_unsorted_input(window: str) -> None:
    shuffled = MONTHS.copy()
    random.Random(1).shuffle(shuffled)
    assert shuffled != MONTHS
    cfg = _cfg(window=window, window_periods=4)
    assert ct_window(shuffled, cfg) == ct_window(MONTHS, cfg)
    train, holdout = ct_window(shuffled, cfg)
    assert list(train) == sorted(train) and holdout == (max(MONTHS),)


def test_two_holdout_periods() -> None:
    train, holdout = ct_window(MONTHS, _cfg(window="sliding", window_periods=6), holdout_periods=2)
    assert holdout == tuple(MONTHS[-2:])
    assert train == tuple(MONTHS[-6:-2])


@pytest.mark.parametrize(
    ("labelled", "holdout_periods", "count"),
    [([], 1, 0), (["2013-01"], 1, 1), (["2013-02", "2013-01"], 2, 2)],
)
def test_too_few_batches_raise_naming_the_count(
    labelled: list[str], holdout_periods: int, count: int
) -> None:
    with pytest.raises(NoWindowError) as err:
        ct_window(labelled, _cfg(), holdout_periods=holdout_periods)
    message = str(err.value)
    assert f"{count} labelled batch" in message
    assert f"holdout_periods={holdout_periods}" in message
    for name in labelled:
        assert name in message


def test_no_window_error_is_a_value_error() -> None:
    assert issubclass(NoWindowError, ValueError)


# --- batches_after ---------------------------------------------------------------------


def test_batches_after_nothing_trained_is_everything_sorted() -> None:
    assert batches_after(["2013-03", "2013-01", "2013-02"], None) == [
        "2013-01",
        "2013-02",
        "2013-03",
    ]


def test_batches_after_is_strictly_newer_and_sorted() -> None:
    available = ["2013-05", "2013-02", "2013-04", "2013-03"]
    assert batches_after(available, "2013-03") == ["2013-04", "2013-05"]
    assert batches_after(available, "2013-05") == []
    assert batches_after([], "2013-05") == []


# --- assess: estimated decay (CBPE/DLE, no labels) ---------------------------------------


@pytest.mark.parametrize(
    ("on", "estimated", "batch_score", "fires"),
    [
        (True, 0.70, None, True),  # 0.08 = 10.3% below 0.78 on a batch without labels
        (True, 0.77, None, False),  # 1.3%: within the 2.5% threshold
        (False, 0.70, None, False),  # the trigger is off
        (True, 0.70, 0.77, False),  # labels decide when the batch has them
        (True, None, None, False),  # nothing estimated (a version without an estimator)
    ],
)
def test_estimated_decay_fires_only_when_on_unlabelled_and_beyond_threshold(
    on: bool, estimated: float | None, batch_score: float | None, fires: bool
) -> None:
    s = _signals(
        reference_score=0.78,
        batch_score=batch_score,
        estimated_score=estimated,
        estimated_lower=None if estimated is None else estimated - 0.02,
        estimated_upper=None if estimated is None else estimated + 0.02,
    )
    v = assess(s, _cfg(retrain_on_estimated_decay=on, retrain_on_decay=False), True)
    assert v.estimated_decay is fires and v.retrain is fires
    assert not v.decay
    assert any(r.startswith("estimated decay") for r in v.reasons) is fires
    if fires:
        (reason,) = v.reasons
        assert "0.7000" in reason and "0.6800..0.7200" in reason and "0.7800" in reason
        assert v.estimated_decay_relative == pytest.approx(0.08 / 0.78)
        assert v.to_dict()["retrain"] is True


def test_estimated_decay_of_an_error_metric_is_a_rise() -> None:
    s = _signals(metric="rmse", reference_score=10.0, estimated_score=12.0)
    v = assess(s, _cfg(retrain_on_estimated_decay=True, estimated_decay_threshold=0.1), False)
    assert v.estimated_decay and "rise 2.0000" in v.reasons[0]
    lower = _signals(metric="rmse", reference_score=10.0, estimated_score=8.0)
    v = assess(lower, _cfg(retrain_on_estimated_decay=True), False)
    assert not v.estimated_decay and v.estimated_decay_relative == pytest.approx(-0.2)
