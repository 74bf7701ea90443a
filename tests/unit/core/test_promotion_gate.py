"""The bootstrap gate's pure decision (ctloop/core/promotion.py): Holm's correction, the lower
bound against the margin, slices refused only when significant, the interval in the tags, and
`test: none` exactly the point gate."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core.promotion import (
    BOOTSTRAP,
    POINT,
    GainInterval,
    PromotionDecision,
    SliceScore,
    decide,
    holm,
    slice_regressions,
)

KW = dict(metric="roc_auc", challenger_version="2", greater_is_better=True, floor=0.5)


def test_holm_rejects_step_down_on_known_p_values() -> None:
    # Holm (1979): alpha 0.05, m = 4; thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == (True, False, False, True)
    # 0.01 <= 0.0125, 0.015 <= 0.0167, 0.03 > 0.025: stop; 0.04 is not rejected after the stop
    assert holm([0.04, 0.015, 0.01, 0.03], 0.05) == (False, True, True, False)
    assert holm([0.001, 0.002, 0.003], 0.01) == (True, True, True)
    assert holm([0.2], 0.05) == (False,) and holm([], 0.05) == ()
    assert holm([float("nan"), 0.001], 0.05) == (False, True)


@settings(max_examples=200)
@given(st.lists(st.floats(0, 1), max_size=12), st.floats(0.001, 0.2))
def test_holm_is_between_bonferroni_and_uncorrected(p: list[float], alpha: float) -> None:
    flags = holm(p, alpha)
    m = len(p)
    for value, rejected in zip(p, flags, strict=True):
        if value <= alpha / m:
            assert rejected  # Bonferroni's rejections are Holm's
        if rejected:
            assert value <= alpha  # never more than uncorrected tests
    # monotone: every p-value smaller than a rejected one is rejected too
    rejected_p = [v for v, r in zip(p, flags, strict=True) if r]
    if rejected_p:
        assert all(r for v, r in zip(p, flags, strict=True) if v < max(rejected_p))


def _interval(lower: float, upper: float, gain: float | None = None) -> GainInterval:
    return GainInterval((lower + upper) / 2 if gain is None else gain, lower, upper, 0.95, 1000)


def test_the_lower_bound_must_exceed_the_margin_in_metric_units() -> None:
    # champion 0.72, margin 0.25%: 0.0018 needed; the point gain 0.004 would pass the point gate
    point = decide(
        challenger_score=0.724, champion_version="1", champion_score=0.72, margin=0.0025, **KW
    )
    assert point.promote and point.test == POINT and point.interval is None
    noisy = decide(
        challenger_score=0.724,
        champion_version="1",
        champion_score=0.72,
        margin=0.0025,
        test=BOOTSTRAP,
        interval=_interval(-0.0012, 0.0093, 0.004),
        **KW,
    )
    assert not noisy.promote
    assert (
        "gain +0.0040 = +0.556% [95% -0.0012, +0.0093] (paired bootstrap, 1000 rounds): lower "
        "bound does not exceed the margin 0.25% (0.0018)" in noisy.reason
    )
    sure = decide(
        challenger_score=0.724,
        champion_version="1",
        champion_score=0.72,
        margin=0.0025,
        test=BOOTSTRAP,
        interval=_interval(0.0019, 0.0061, 0.004),
        **KW,
    )
    assert sure.promote and "lower bound exceeds the margin" in sure.reason
    # a lower bound exactly at the margin does not exceed it
    exact = decide(
        challenger_score=0.724,
        champion_version="1",
        champion_score=0.72,
        margin=0.0025,
        test=BOOTSTRAP,
        interval=_interval(0.0025 * 0.72, 0.0061, 0.004),
        **KW,
    )
    assert not exact.promote


def test_an_error_metric_margin_is_a_share_of_the_champion_rmse() -> None:
    kw = dict(KW, metric="rmse", greater_is_better=False, floor=100.0)
    # champion RMSE 20, margin 2.5%: the gain (champion - challenger) must have a lower bound > 0.5
    ok = decide(
        challenger_score=19.0,
        champion_version="1",
        champion_score=20.0,
        margin=0.025,
        test=BOOTSTRAP,
        interval=_interval(0.6, 1.4, 1.0),
        **kw,
    )
    no = decide(
        challenger_score=19.0,
        champion_version="1",
        champion_score=20.0,
        margin=0.025,
        test=BOOTSTRAP,
        interval=_interval(0.4, 1.6, 1.0),
        **kw,
    )
    assert ok.promote and not no.promote


def test_the_first_model_is_judged_by_its_floor_whatever_the_test() -> None:
    first = decide(
        challenger_score=0.7,
        champion_version=None,
        champion_score=None,
        margin=0.0025,
        test=BOOTSTRAP,
        **KW,
    )
    assert first.promote and "meets the floor" in first.reason
    assert first.test == BOOTSTRAP and first.interval is None and first.rounds == 0


SLICES = (
    SliceScore("carrier", "UA", 900, 0.60, 0.70, True, p_regression=0.004),  # big and sure
    SliceScore(
        "carrier", "AA", 700, 0.66, 0.70, True, p_regression=0.03
    ),  # beyond tolerance, noisy
    SliceScore("carrier", "B6", 800, 0.71, 0.70, True, p_regression=1.0),
    SliceScore("carrier", "OO", 40, 0.40, 0.70, False),  # too small to gate
)


def test_a_slice_refuses_only_when_its_regression_is_significant_after_holm() -> None:
    # point test: UA and AA are both worse by more than 2.5% of the champion's figure
    assert [s.value for s in slice_regressions(SLICES, True, 0.025)] == ["UA", "AA"]
    # bootstrap: one-sided level 2.5%, m = 3 tested: UA 0.004 <= 0.0083; AA 0.03 > 0.0125
    assert [s.value for s in slice_regressions(SLICES, True, 0.025, 0.95)] == ["UA"]
    gate = decide(
        challenger_score=0.75,
        champion_version="1",
        champion_score=0.70,
        margin=0.0025,
        slices=SLICES,
        slice_tolerance=0.025,
        test=BOOTSTRAP,
        interval=_interval(0.03, 0.07),
        **KW,
    )
    assert not gate.promote
    assert (
        "refused: 1 slice(s) regress beyond tolerance 2.5% (significant after Holm" in gate.reason
    )
    assert gate.slice_regressions[0].startswith("carrier=UA (roc_auc 0.6000 vs champion 0.7000")
    assert "p=0.004" in gate.slice_regressions[0]
    cleared = decide(
        challenger_score=0.75,
        champion_version="1",
        champion_score=0.70,
        margin=0.0025,
        slices=SLICES[1:],
        slice_tolerance=0.025,
        test=BOOTSTRAP,
        interval=_interval(0.03, 0.07),
        **KW,
    )
    assert cleared.promote and cleared.slice_regressions == ()


@settings(max_examples=100)
@given(
    challenger=st.floats(0.4, 1.0),
    champion=st.floats(0.4, 1.0),
    margin=st.floats(0, 0.1),
    lower=st.floats(-0.1, 0.1),
)
def test_test_none_ignores_any_interval_and_is_the_point_gate(
    challenger: float, champion: float, margin: float, lower: float
) -> None:
    old = decide(
        challenger_score=challenger,
        champion_version="1",
        champion_score=champion,
        margin=margin,
        slices=SLICES,
        slice_tolerance=0.025,
        **KW,
    )
    none = decide(
        challenger_score=challenger,
        champion_version="1",
        champion_score=champion,
        margin=margin,
        slices=SLICES,
        slice_tolerance=0.025,
        test=POINT,
        interval=_interval(lower, lower + 0.01),
        **KW,
    )
    assert none == old


def test_the_interval_round_trips_through_tags_and_old_tags_still_read() -> None:
    gate = decide(
        challenger_score=0.75,
        champion_version="1",
        champion_score=0.70,
        margin=0.0025,
        test=BOOTSTRAP,
        interval=_interval(0.031, 0.069, 0.05),
        **KW,
    )
    tags = gate.tags()
    assert tags["promotion.test"] == "bootstrap" and tags["promotion.rounds"] == "1000"
    assert (tags["promotion.gain_lower"], tags["promotion.gain_upper"]) == ("0.031", "0.069")
    back = PromotionDecision.from_tags(tags)
    assert back == replace(gate, slices=())
    assert back is not None and back.interval == _interval(0.031, 0.069, 0.05)
    # a version tagged before the bootstrap gate: no test, no interval keys
    new = ("test", "gain", "gain_lower", "gain_upper", "confidence", "rounds")
    old = {k: v for k, v in tags.items() if k.removeprefix("promotion.") not in new}
    read = PromotionDecision.from_tags(old)
    assert read is not None and read.test == POINT and read.interval is None
    assert read.rounds == 0 and read.promote
