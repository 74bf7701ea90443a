from __future__ import annotations

import pytest

from tasks.registry import decide

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
