"""Human approval of a promotion: the answer (or its absence) turned into the final decision.

Pure: no Prefect, no MLflow. The flow asks in the Prefect UI (flows/approval.py) only when
`promotion.require_approval` is on and the gate would promote; an approval can only veto, never
promote a challenger the gate refused. The outcome is recorded on the model version as tags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from ctloop.core.promotion import PromotionDecision

Outcome = Literal["approved", "rejected", "timeout", "not-required", "unavailable"]
TAG = "ctloop.approval"


@dataclass(frozen=True)
class Approval:
    """Who or what decided, and when (UTC, ISO 8601). `detail` says why for timeout/unavailable."""

    outcome: Outcome
    reviewer: str = ""
    comment: str = ""
    time: str = ""
    detail: str = ""

    @property
    def vetoes(self) -> bool:
        """True when the promotion must not happen (anything but approved / not required)."""
        return self.outcome not in ("approved", "not-required")

    def who(self) -> str:
        return self.reviewer.strip() or "an unnamed reviewer"

    def describe(self) -> str:
        """One line for reasons, logs and the model card."""
        said = f": {self.comment.strip()}" if self.comment.strip() else ""
        return {
            "approved": f"approved by {self.who()}{said}",
            "rejected": f"rejected by {self.who()}{said}",
            "timeout": f"timed out: {self.detail}",
            "not-required": "not required (promotion.require_approval is off)",
            "unavailable": f"could not be asked: {self.detail}",
        }[self.outcome]

    def tags(self) -> dict[str, str]:
        """Registry tags on the model version."""
        return {
            TAG: self.outcome,
            f"{TAG}_by": self.reviewer.strip(),
            f"{TAG}_comment": self.comment.strip(),
            f"{TAG}_time": self.time,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def needed(require_approval: bool, decision: PromotionDecision) -> bool:
    """Ask a person only when approval is required and the gate would promote."""
    return require_approval and decision.promote


def not_required() -> Approval:
    return Approval("not-required", time=_now())


def from_answer(approve: bool, reviewer: str, comment: str) -> Approval:
    """The answer given in the Prefect UI's Resume form."""
    return Approval("approved" if approve else "rejected", reviewer, comment, _now())


def timed_out(timeout_s: float) -> Approval:
    return Approval("timeout", time=_now(), detail=f"no answer within {timeout_s:g} s")


def unavailable(why: str) -> Approval:
    """Approval required but nobody can be asked (no Prefect UI, a DVC stage)."""
    return Approval("unavailable", time=_now(), detail=why)


def resolve(decision: PromotionDecision, approval: Approval) -> PromotionDecision:
    """The final decision: the gate's, unless the approval vetoes it (reason says who or why).
    A decision the gate refused stays refused whatever the answer."""
    if not decision.promote:
        return decision
    if approval.vetoes:
        return replace(
            decision,
            promote=False,
            reason=f"approval {approval.describe()} (gate: {decision.reason})",
        )
    if approval.outcome == "approved":
        return replace(decision, reason=f"{decision.reason}; {approval.describe()}")
    return decision
