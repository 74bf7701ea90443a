"""Challengers in shadow: who enters shadow, how consecutive wins are counted, when it is due."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core import shadow
from ctloop.core.promotion import GainInterval
from ctloop.core.shadow import FAILED, INCONCLUSIVE, LOSS, UNLABELLED, WIN, ShadowState

OUTCOMES = st.sampled_from([WIN, LOSS, INCONCLUSIVE, UNLABELLED, FAILED])
# (champion version, outcome) per batch; batches named b0, b1, ... in order
HISTORY = st.lists(st.tuples(st.sampled_from(["1", "3"]), OUTCOMES), max_size=30)


def _run(history: list[tuple[str, shadow.Outcome]]) -> ShadowState:
    state = ShadowState("2")
    for i, (champion, outcome) in enumerate(history):
        state = shadow.advance(state, champion, f"b{i}", outcome)
    return state


def _reference_wins(history: list[tuple[str, shadow.Outcome]]) -> int:
    """Trailing wins since the last champion change, skipping unlabelled batches (a batch the
    shadow failed to score ends the streak, labelled or not)."""
    if not history:
        return 0
    last_champion = history[-1][0]
    wins = 0
    for champion, outcome in reversed(history):
        if champion != last_champion:
            break
        if outcome == UNLABELLED:
            continue
        if outcome != WIN:
            break
        wins += 1
    return wins


@settings(max_examples=300)
@given(HISTORY)
def test_wins_are_the_trailing_streak_of_wins_against_the_current_champion(
    history: list[tuple[str, shadow.Outcome]],
) -> None:
    state = _run(history)
    assert state.wins == _reference_wins(history)
    assert len(state.streak) == state.wins
    won = [f"b{i}" for i, (_, o) in enumerate(history) if o == WIN]
    assert set(state.streak) <= set(won)
    if history:
        assert state.against == history[-1][0]


@settings(max_examples=200)
@given(HISTORY, st.integers(1, 5))
def test_due_exactly_after_k_consecutive_labelled_wins(
    history: list[tuple[str, shadow.Outcome]], k: int
) -> None:
    assert shadow.due(_run(history), k) == (_reference_wins(history) >= k)
    assert not shadow.due(_run(history), 0)  # 0: shadows off, never due


@settings(max_examples=200)
@given(HISTORY, OUTCOMES)
def test_a_batch_already_compared_is_not_counted_twice(
    history: list[tuple[str, shadow.Outcome]], outcome: shadow.Outcome
) -> None:
    state = _run([*history, ("1", WIN)])
    again = shadow.advance(state, "1", f"b{len(history)}", outcome)
    assert again == state


@settings(max_examples=200)
@given(HISTORY)
def test_unlabelled_leaves_the_count_and_a_loss_or_a_failure_to_score_resets_it(
    history: list[tuple[str, shadow.Outcome]],
) -> None:
    state = _run([*history, ("1", WIN)])
    assert shadow.advance(state, "1", "new", UNLABELLED) == state
    for outcome in (LOSS, INCONCLUSIVE, FAILED):
        reset = shadow.advance(state, "1", "new", outcome)
        assert reset.wins == 0 and reset.streak == () and reset.last_batch == "new"


def test_a_new_champion_restarts_the_count() -> None:
    state = _run([("1", WIN), ("1", WIN)])
    assert state.wins == 2
    moved = shadow.advance(state, "3", "b9", WIN)
    assert (moved.against, moved.wins, moved.streak) == ("3", 1, ("b9",))


@settings(max_examples=200)
@given(HISTORY)
def test_state_survives_the_registry_tags(history: list[tuple[str, shadow.Outcome]]) -> None:
    state = _run(history)
    assert ShadowState.from_tags("2", state.tags()) == state


def test_a_version_without_tags_starts_at_zero() -> None:
    assert ShadowState.from_tags("4", {}) == ShadowState("4")
    assert ShadowState.from_tags("4", {shadow.WINS_TAG: "garbled"}).wins == 0


@pytest.mark.parametrize(
    ("mode", "k", "gate", "final", "champion", "expected"),
    [
        ("refused", 2, False, False, "1", True),  # the gate refused
        ("refused", 0, False, False, "1", False),  # off
        ("refused", 2, True, False, "1", False),  # the approval vetoed: not with `refused`
        ("all", 2, True, False, "1", True),  # ... but with `all`
        ("all", 2, True, True, "1", False),  # promoted at once: never shadowed
        ("all", 2, False, False, None, False),  # the first model: nothing to compare with
    ],
)
def test_who_enters_shadow(
    mode: shadow.ShadowMode, k: int, gate: bool, final: bool, champion: str | None, expected: bool
) -> None:
    assert shadow.enters_shadow(mode, k, gate, final, champion) is expected


@pytest.mark.parametrize(
    ("labelled", "beats", "bounds", "expected"),
    [
        (False, False, None, UNLABELLED),
        (True, True, (0.01, 0.05), WIN),
        (True, False, (-0.05, -0.01), LOSS),
        (True, False, (-0.01, 0.02), INCONCLUSIVE),
        (True, False, (math.nan, math.nan), INCONCLUSIVE),
    ],
)
def test_outcome_of_one_batch(
    labelled: bool, beats: bool, bounds: tuple[float, float] | None, expected: str
) -> None:
    interval = None if bounds is None else GainInterval(0.0, *bounds, 0.95, 1000)
    assert shadow.classify(labelled, beats, interval) == expected


def test_promotion_reason_names_the_trigger_batches_and_champion() -> None:
    state = _run([("1", WIN), ("1", WIN)])
    reason = shadow.promotion_reason(state, 2, "gain ok")
    assert reason.startswith("shadow: won 2 consecutive labelled batches (b0, b1)")
    assert "champion v1" in reason and reason.endswith("last: gain ok")
    assert shadow.is_shadow_promotion(reason) and not shadow.is_shadow_promotion("gain ok")
