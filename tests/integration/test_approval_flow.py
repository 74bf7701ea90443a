"""Human approval on a real Prefect server: the train-model run pauses, a reviewer answers through
the Resume API (what the UI's Resume form posts), or nobody answers and the timeout rejects."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml
from mlflow import MlflowClient
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from ctloop.core.config import Project
from ctloop.io import audit, registry, tracking
from flows.train_model import train_model
from tests.integration.conftest import SMALL


def _paused_runs() -> list[Any]:
    paused = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(state=paused))


def _answer_when_paused(answer: dict[str, Any], seen: list[Any]) -> threading.Thread:
    """A reviewer in another thread: waits for the paused run, then resumes it with `answer`."""

    def review() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            runs = _paused_runs()
            if runs:
                seen.append(runs[0])
                resume_flow_run(runs[0].id, run_input=answer)
                return
            time.sleep(0.5)
        seen.append(TimeoutError("no paused run within 180 s"))

    thread = threading.Thread(target=contextvars.copy_context().run, args=(review,), daemon=True)
    thread.start()
    return thread


def test_approval_promotes_and_a_timeout_rejects_with_the_champion_unchanged(
    make_project: Callable[..., Project], small_project: Project
) -> None:
    p = small_project
    params_file = p.root / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["promotion"] |= {"require_approval": True, "approval_timeout_s": 120}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    seen: list[Any] = []
    reviewer = _answer_when_paused({"approve": True, "reviewer": "Ana", "comment": "ok"}, seen)
    first = train_model(params_path=str(params_file))
    reviewer.join(5)
    assert len(seen) == 1 and not isinstance(seen[0], Exception), seen
    assert seen[0].name and first.promoted and first.model_version == "1"
    assert first.promotion_reason.endswith("; approved by Ana: ok")

    tracking.use_store(p.tracking_uri)
    client = MlflowClient()
    tags = client.get_model_version(SMALL["promotion"]["model_name"], "1").tags
    assert (tags["ctloop.approval"], tags["ctloop.approval_by"]) == ("approved", "Ana")
    assert tags["ctloop.approval_comment"] == "ok" and tags["ctloop.approval_time"]
    [event] = audit.history("ctloop-test")
    assert event.to_version == "1" and "approved by Ana" in event.reason

    # an equal challenger passes a zero margin, so the gate would promote it: nobody answers
    # the point gate: an identical retrain reaches the approval step this test exercises
    raw["promotion"] |= {"margin": 0.0, "test": "none", "approval_timeout_s": 2}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    state = train_model(params_path=str(params_file), return_state=True)
    assert state.is_completed(), state  # a timeout rejects; the run itself completes
    second = state.result()
    assert second.model_version == "2" and not second.promoted
    assert second.promotion_reason.startswith("approval timed out: no answer within 2 s")
    assert str(registry.get_alias("ctloop-test", registry.CHAMPION).version) == "1"
    tags = client.get_model_version("ctloop-test", "2").tags
    assert tags["ctloop.approval"] == "timeout" and tags["promotion.promote"] == "False"
    assert len(audit.history("ctloop-test")) == 1  # no champion move, no event
    assert not _paused_runs()
