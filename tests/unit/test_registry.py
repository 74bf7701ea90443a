from __future__ import annotations

import json

import pytest

from tasks.registry import SliceScore, decide, slice_regressions

KW = dict(
    metric="roc_auc", challenger_version="2", greater_is_better=True, margin=0.01, min_score=0.6
)


def test_first_model_must_clear_the_floor() -> None:
    assert decide(challenger_score=0.7, champion_version=None, champion_score=None, **KW).promote
    low = decide(challenger_score=0.55, champion_version=None, champion_score=None, **KW)
    assert not low.promote and "misses the floor" in low.reason


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        (0.80, 0.78, True),  # gain 0.02 >= margin
        (0.785, 0.78, False),  # gain below margin
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


def test_lower_is_better_metrics_flip_the_direction() -> None:
    kw = {**KW, "metric": "rmse", "greater_is_better": False, "min_score": 50.0, "margin": 0.5}
    assert decide(challenger_score=9.0, champion_version="1", champion_score=10.0, **kw).promote
    assert not decide(challenger_score=9.8, champion_version="1", champion_score=10.0, **kw).promote
    assert not decide(
        challenger_score=60.0, champion_version=None, champion_score=None, **kw
    ).promote


def test_decision_tags_record_the_compared_figures() -> None:
    tags = decide(challenger_score=0.8, champion_version="1", champion_score=0.7, **KW).tags()
    assert tags["promotion.promote"] == "True"
    assert tags["promotion.champion_score"] == "0.7"
    assert tags["promotion.challenger_version"] == "2"


def _slice(value: str, challenger: float, champion: float | None, n: int = 800) -> SliceScore:
    return SliceScore("carrier", value, n, challenger, champion, gated=n >= 500)


def test_a_slice_regression_refuses_a_better_challenger_and_names_the_slice() -> None:
    slices = [_slice("UA", 0.70, 0.74), _slice("AA", 0.80, 0.78), _slice("9E", 0.60, 0.70, n=90)]
    kw = {**KW, "slice_tolerance": 0.02}
    decision = decide(
        challenger_score=0.80, champion_version="1", champion_score=0.78, slices=slices, **kw
    )
    assert not decision.promote
    assert "carrier=UA (roc_auc 0.7000 vs champion 0.7400, n=800)" in decision.reason
    assert "9E" not in decision.reason  # too small to gate: reported only
    assert decision.slice_regressions == ("carrier=UA (roc_auc 0.7000 vs champion 0.7400, n=800)",)
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
        "min_score": 50.0,
        "margin": 0.5,
        "slice_tolerance": 1.0,
    }
    worse = [_slice("UA", 14.0, 12.0)]  # RMSE up by 2 > tolerance 1
    better = [_slice("UA", 10.0, 12.0)]  # RMSE down: fine
    assert not decide(
        challenger_score=9.0, champion_version="1", champion_score=10.0, slices=worse, **kw
    ).promote
    assert decide(
        challenger_score=9.0, champion_version="1", champion_score=10.0, slices=better, **kw
    ).promote
    assert slice_regressions(worse, greater_is_better=False, tolerance=1.0) == tuple(worse)
    assert slice_regressions(worse, greater_is_better=False, tolerance=2.5) == ()
