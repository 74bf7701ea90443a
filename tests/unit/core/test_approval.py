"""What an approval answer (or its absence) does to the gate's decision."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ctloop.core import approval
from ctloop.core.promotion import decide
from ctloop.io.registry import PromotionDecision


def _decision(promote: bool = True) -> PromotionDecision:
    gate = decide("roc_auc", "3", 0.75, "2", 0.74, True, 0.002, 0.65)
    return gate if promote else replace(gate, promote=False, reason="gain < margin")


def test_approval_is_asked_only_when_required_and_the_gate_promotes() -> None:
    assert approval.needed(True, _decision(True))
    assert not approval.needed(True, _decision(False))
    assert not approval.needed(False, _decision(True))


def test_approved_promotes_and_the_reason_names_the_reviewer() -> None:
    answer = approval.from_answer(True, "Ana", "slices look fine")
    final = approval.resolve(_decision(), answer)
    assert final.promote
    assert final.reason.endswith("; approved by Ana: slices look fine")
    assert final.reason.startswith(_decision().reason)


def test_rejected_does_not_promote_and_keeps_the_gate_reason() -> None:
    final = approval.resolve(_decision(), approval.from_answer(False, "Bo", "wait for July"))
    assert not final.promote
    assert final.reason.startswith("approval rejected by Bo: wait for July (gate: ")
    assert final.challenger_score == 0.75  # the figures are untouched


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (approval.timed_out(3600), "approval timed out: no answer within 3600 s"),
        (approval.unavailable("no UI"), "approval could not be asked: no UI"),
    ],
)
def test_timeout_and_unavailable_reject(answer: approval.Approval, expected: str) -> None:
    final = approval.resolve(_decision(), answer)
    assert not final.promote and final.reason.startswith(expected)


def test_an_approval_never_promotes_what_the_gate_refused() -> None:
    refused = _decision(False)
    assert approval.resolve(refused, approval.from_answer(True, "Ana", "")) == refused


def test_not_required_leaves_the_decision_as_is() -> None:
    assert approval.resolve(_decision(), approval.not_required()) == _decision()


def test_tags_record_outcome_reviewer_comment_and_time() -> None:
    tags = approval.from_answer(False, "  Bo ", " too risky ").tags()
    assert tags["ctloop.approval"] == "rejected"
    assert (tags["ctloop.approval_by"], tags["ctloop.approval_comment"]) == ("Bo", "too risky")
    assert tags["ctloop.approval_time"].endswith("+00:00")
    assert approval.not_required().tags()["ctloop.approval"] == "not-required"
    assert approval.timed_out(5).tags()["ctloop.approval"] == "timeout"


def test_an_unnamed_reviewer_is_said_so() -> None:
    assert approval.from_answer(True, " ", "").describe() == "approved by an unnamed reviewer"
