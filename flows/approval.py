"""Ask a person in the Prefect UI whether to promote: the flow run pauses with a Resume form.

Called from the flow body, never from a task: a pause belongs to the flow run. The pure part
(what the answer means for the decision) is ctloop/core/approval.py.
"""

from __future__ import annotations

import math
import os

from prefect import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from prefect.states import Running
from pydantic import Field

from ctloop.core import approval
from ctloop.core.config import Project
from ctloop.core.env import RUN_SERVER_ENV
from ctloop.io.registry import PromotionDecision

POLL_S = 3  # how often the paused run asks the API whether it was resumed


class ApprovalInput(RunInput):
    """The Resume form of a paused train-model run."""

    approve: bool = Field(
        default=False, description="Tick to promote this version to champion; untick to reject"
    )
    reviewer: str = Field(default="", description="Your name (recorded on the model version)")
    comment: str = Field(default="", description="Why (recorded on the model version)")


def ask_approval(
    project: Project, decision: PromotionDecision, card: str | None = None
) -> approval.Approval:
    """Pause until someone answers in the Prefect UI (or the timeout rejects); `not-required`
    when approval is off or the gate refuses anyway. `card` (Markdown) is shown on the form."""
    cfg = project.params.promotion
    if not approval.needed(cfg.require_approval, decision):
        return approval.not_required()
    if not PREFECT_API_URL.value() or PREFECT_API_URL.value() == os.environ.get(RUN_SERVER_ENV):
        answer = approval.unavailable(
            "no Prefect server with a UI (a command's run server has none): start one "
            "(`ctloop up`) or set PREFECT_API_URL"
        )
        print(
            f"approval required but {answer.detail}: "
            f"v{decision.challenger_version} stays challenger"
        )
        return answer
    timeout = max(1, math.ceil(cfg.approval_timeout_s))
    print(_waiting_message(decision, timeout))
    form = ApprovalInput.with_initial_data(description=_form_text(decision, card))
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=POLL_S)
    except FlowPauseTimeout:
        _run_again()
        print(f"no approval within {timeout} s: v{decision.challenger_version} is not promoted")
        return approval.timed_out(cfg.approval_timeout_s)
    result = approval.from_answer(answer.approve, answer.reviewer, answer.comment)
    print(f"approval for v{decision.challenger_version}: {result.describe()}")
    return result


def _waiting_message(decision: PromotionDecision, timeout: int) -> str:
    return (
        f"WAITING FOR APPROVAL: the gate would promote v{decision.challenger_version} "
        f"({decision.reason}).\n"
        f"  Approve or reject in the Prefect UI: {flow_run.ui_url} -> Resume "
        f"(within {timeout} s; no answer rejects)."
    )


def _form_text(decision: PromotionDecision, card: str | None) -> str:
    head = (
        f"### Promote v{decision.challenger_version} to champion?\n\n"
        f"Gate: {decision.reason}\n\n"
        "Tick **approve** to promote, leave it unticked to reject; name and comment are "
        "recorded on the model version.\n"
    )
    return head if card is None else f"{head}\n---\n\n{card}"


def _run_again() -> None:
    """After a pause timeout the server still shows the run PAUSED (and would refuse its next
    task runs): set it RUNNING again so the run goes on and completes, champion unchanged."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("approval: no flow run to continue after the pause timed out")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            context.flow_run.id, Running(message="approval timed out: rejected"), force=True
        )
