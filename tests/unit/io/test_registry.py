from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ctloop.core.promotion import SliceScore, decide, slice_regressions
from ctloop.io.registry import PromotionDecision

KW = dict(metric="roc_auc", challenger_version="2", greater_is_better=True, margin=0.01, floor=0.6)


def test_first_model_must_clear_the_floor() -> None:
    assert decide(challenger_score=0.7, champion_version=None, champion_score=None, **KW).promote
    low = decide(challenger_score=0.55, champion_version=None, champion_score=None, **KW)
    assert not low.promote and "misses the floor (>= 0.6, promotion.min_score)" in low.reason
    assert low.floor_applied


def test_the_floor_applies_only_to_the_first_model() -> None:
    """README: min_score is the first model's floor; a later challenger is judged against the
    champion alone, even below the floor."""
    later = decide(challenger_score=0.58, champion_version="1", champion_score=0.55, **KW)
    assert later.promote and "floor" not in later.reason and not later.floor_applied
    assert later.floor == 0.6  # recorded all the same


def test_constant_baseline_floor_is_named_in_reason_and_tags() -> None:
    kw = {**KW, "metric": "rmse", "greater_is_better": False, "floor": 25.3}
    first = decide(
        challenger_score=20.1,
        champion_version=None,
        champion_score=None,
        floor_origin="constant baseline",
        **kw,
    )
    assert first.promote
    assert first.reason == "no comparable champion: rmse 20.1000 meets the floor " + (
        "(<= 25.3, constant baseline)"
    )
    tags = first.tags()
    assert tags["promotion.floor"] == "25.3"
    assert tags["promotion.floor_origin"] == "constant baseline"
    assert tags["promotion.thresholds"] == "relative"
    worse = decide(
        challenger_score=30.0,
        champion_version=None,
        champion_score=None,
        floor_origin="constant baseline",
        **kw,
    )
    assert not worse.promote and "misses the floor (<= 25.3, constant baseline)" in worse.reason


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        (0.80, 0.78, True),  # gain 0.02 >= margin 1% of 0.78 (0.0078)
        (0.785, 0.78, False),  # gain 0.005 below it
        (0.75, 0.78, False),  # worse
    ],
)
def test_challenger_must_beat_champion_by_margin(
    challenger: float, champion: float, promote: bool
) -> None:
    decision = decide(
        challenger_score=challenger, champion_version="1", champion_score=champion, **KW
    )
    assert decision.promote is promote
    assert "v2" in decision.reason and "v1" in decision.reason
    assert f"margin 1% ({0.01 * champion:.4f})" in decision.reason


def test_margin_reason_shows_the_gain_both_ways() -> None:
    decision = decide(challenger_score=0.80, champion_version="1", champion_score=0.78, **KW)
    assert "gain +0.0200 = +2.56% >= margin 1% (0.0078)" in decision.reason


def test_lower_is_better_metrics_flip_the_direction() -> None:
    kw = {**KW, "metric": "rmse", "greater_is_better": False, "floor": 50.0, "margin": 0.05}
    assert decide(challenger_score=9.0, champion_version="1", champion_score=10.0, **kw).promote
    assert not decide(challenger_score=9.8, champion_version="1", champion_score=10.0, **kw).promote
    # the same gate in cents: the same decisions
    assert decide(challenger_score=900.0, champion_version="1", champion_score=1e3, **kw).promote
    assert not decide(
        challenger_score=980.0, champion_version="1", champion_score=1e3, **kw
    ).promote
    assert not decide(
        challenger_score=60.0, champion_version=None, champion_score=None, **kw
    ).promote


def test_decision_tags_record_the_compared_figures() -> None:
    tags = decide(challenger_score=0.8, champion_version="1", champion_score=0.7, **KW).tags()
    assert tags["promotion.promote"] == "True"
    assert tags["promotion.champion_score"] == "0.7"
    assert tags["promotion.challenger_version"] == "2"
    assert PromotionDecision.from_tags(tags) == replace(
        decide(challenger_score=0.8, champion_version="1", champion_score=0.7, **KW), slices=()
    )


def test_versions_registered_with_absolute_thresholds_still_read() -> None:
    """Tags written before thresholds were relative: min_score (the floor then), margin and
    slice tolerance in metric units, no thresholds tag."""
    old = {
        "promotion.promote": "True",
        "promotion.reason": "challenger v2 roc_auc 0.7493 vs champion v1 0.7195: gain +0.0298 "
        ">= margin 0.002",
        "promotion.metric": "roc_auc",
        "promotion.challenger_version": "2",
        "promotion.challenger_score": "0.7493",
        "promotion.champion_version": "1",
        "promotion.champion_score": "0.7195",
        "promotion.margin": "0.002",
        "promotion.min_score": "0.65",
        "promotion.slice_tolerance": "0.02",
        "promotion.slice_regressions": "",
    }
    decision = PromotionDecision.from_tags(old)
    assert decision is not None and decision.promote
    assert decision.thresholds == "absolute"
    assert (decision.margin, decision.slice_tolerance) == (0.002, 0.02)
    assert decision.floor == 0.65 and decision.floor_origin == "promotion.min_score"
    assert decision.champion_score == 0.7195 and decision.reason == old["promotion.reason"]
    assert PromotionDecision.from_tags({"promotion.reason": "x"}) is None


def _slice(value: str, challenger: float, champion: float | None, n: int = 800) -> SliceScore:
    return SliceScore("carrier", value, n, challenger, champion, gated=n >= 500)


def test_a_slice_regression_refuses_a_better_challenger_and_names_the_slice() -> None:
    slices = [_slice("UA", 0.70, 0.74), _slice("AA", 0.80, 0.78), _slice("9E", 0.60, 0.70, n=90)]
    kw = {**KW, "slice_tolerance": 0.02}
    decision = decide(
        challenger_score=0.80, champion_version="1", champion_score=0.78, slices=slices, **kw
    )
    assert not decision.promote
    described = "carrier=UA (roc_auc 0.7000 vs champion 0.7400, drop 0.0400 = 5.41%, n=800)"
    assert described in decision.reason
    assert "regress beyond tolerance 2%" in decision.reason
    assert "9E" not in decision.reason  # too small to gate: reported only
    assert decision.slice_regressions == (described,)
    assert len(decision.to_dict()["slices"]) == 3
    assert "promotion.slices" not in decision.tags()
    assert decision.tags()["promotion.slice_regressions"].startswith("carrier=UA")
    json.dumps(decision.to_dict(), allow_nan=False)


def test_slices_within_tolerance_or_without_champion_do_not_gate() -> None:
    within = [_slice("UA", 0.73, 0.74), _slice("AA", 0.80, 0.78)]
    kw = {**KW, "slice_tolerance": 0.02}
    assert decide(
        challenger_score=0.80, champion_version="1", champion_score=0.78, slices=within, **kw
    ).promote
    first = decide(
        challenger_score=0.7,
        champion_version=None,
        champion_score=None,
        slices=[_slice("UA", 0.50, None)],
        **kw,
    )
    assert first.promote and first.slice_regressions == ()


def test_slice_gate_follows_the_metric_direction_for_rmse() -> None:
    kw = {
        **KW,
        "metric": "rmse",
        "greater_is_better": False,
        "floor": 50.0,
        "margin": 0.05,
        "slice_tolerance": 0.1,
    }
    worse = [_slice("UA", 14.0, 12.0)]  # RMSE up by 2 > 10% of 12
    better = [_slice("UA", 10.0, 12.0)]  # RMSE down: fine
    refused = decide(
        challenger_score=9.0, champion_version="1", champion_score=10.0, slices=worse, **kw
    )
    assert not refused.promote
    assert "carrier=UA (rmse 14.0000 vs champion 12.0000, rise 2.0000 = 16.7%, n=800)" in (
        refused.reason
    )
    assert decide(
        challenger_score=9.0, champion_version="1", champion_score=10.0, slices=better, **kw
    ).promote
    assert slice_regressions(worse, greater_is_better=False, tolerance=0.1) == tuple(worse)
    assert slice_regressions(worse, greater_is_better=False, tolerance=0.2) == ()
