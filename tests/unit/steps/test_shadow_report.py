"""What the log line and the `shadow-<batch>` artifact say about one comparison."""

from __future__ import annotations

from pathlib import Path

from ctloop.core import promotion, shadow
from ctloop.steps.shadow import ShadowResult


def _result(**kw: object) -> ShadowResult:
    base: dict[str, object] = dict(
        batch="2013-04",
        metric="roc_auc",
        shadow_version="2",
        champion_version="1",
        predictions=Path("data/predictions/2013-04.shadow-v2.parquet"),
        outcome=shadow.WIN,
        state=shadow.ShadowState("2", "1", 1, ("2013-04",), "2013-04"),
        required=2,
        shadow_score=0.71,
        champion_score=0.62,
        interval=promotion.GainInterval(0.09, 0.06, 0.12, 0.95, 1000),
        reason="challenger v2 ... exceeds the margin",
    )
    return ShadowResult(**(base | kw))  # type: ignore[arg-type]


def test_a_win_short_of_k_stays_in_shadow_with_its_figures() -> None:
    r = _result()
    assert "win (roc_auc 0.7100 vs 0.6200, gain [95% +0.0600, +0.1200]" in r.line()
    assert "1/2 consecutive wins" in r.line() and "PROMOTED" not in r.line()
    md = r.markdown()
    assert md.startswith("### Shadow v2 vs champion v1 on 2013-04: stays in shadow (1/2")
    assert "| consecutive wins | 1 of 2 (2013-04) |" in md and "+0.0900" in md
    assert "2013-04.shadow-v2.parquet" in md and "Gate on this batch" in md


def test_unlabelled_says_the_count_is_unchanged_and_promotion_gives_the_reason() -> None:
    quiet = _result(
        outcome=shadow.UNLABELLED, shadow_score=None, champion_score=None, interval=None, reason=""
    )
    assert quiet.line().endswith("(1/2 consecutive wins; no labels: count unchanged)")
    assert "gain" not in quiet.markdown()
    decision = promotion.decide(
        "roc_auc",
        "2",
        0.71,
        "1",
        0.62,
        True,
        0.0025,
        0.5,
        test="bootstrap",
        interval=promotion.GainInterval(0.09, 0.06, 0.12, 0.95, 1000),
    )
    done = _result(promotion=decision)
    assert done.line().endswith("-> PROMOTED")
    assert "PROMOTED to champion: challenger v2" in done.markdown()


def test_a_failure_to_score_names_the_error_and_says_the_count_was_reset() -> None:
    failed = _result(
        outcome=shadow.FAILED,
        state=shadow.ShadowState("2", "1", 0, (), "2013-04"),
        shadow_score=None,
        champion_score=None,
        interval=None,
        reason="",
        error="BadZipFile: File is not a zip file",
    )
    line = failed.line()
    assert "could not score the batch (BadZipFile: File is not a zip file)" in line
    assert "count reset (0/2" in line and "champion's monitoring goes on" in line
    md = failed.markdown()
    assert md.startswith("### Shadow v2 vs champion v1 on 2013-04: FAILED to score the batch")
    assert "| error | `BadZipFile: File is not a zip file` |" in md
    assert "shadow-v2.parquet" not in md  # nothing was written for it


def test_failure_text_is_type_and_message_cut_to_the_tag_limit() -> None:
    from ctloop.steps.shadow import ERROR_CHARS, failure_text

    assert failure_text(KeyError("dep_hour")) == "KeyError: 'dep_hour'"
    assert len(failure_text(ValueError("x" * 5000))) == ERROR_CHARS
