"""Prefect at run time for the `ctloop` commands (the library under ctloop/ has no Prefect import):
the terminal's log format, the logs and events drained before the API stops, the loop's flow runs
counted and listed (`ctloop replay` waits on them), and `ctloop.data.arrived` announced for a
landed file."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core import events

if TYPE_CHECKING:
    from ctloop.core.config import Project


class _NoTraceback(logging.Formatter):
    """The terminal's formatter of Prefect logs, without the traceback of ctloop's own errors:
    the command ends with their one `ctloop: error:` line. The Prefect API's log handler formats
    the record itself, so the UI keeps the whole traceback."""

    def __init__(self, inner: logging.Formatter | None, known: tuple[type[BaseException], ...]):
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.known = known

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.known):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def short_known_errors(known: tuple[type[BaseException], ...]) -> None:
    """Install `_NoTraceback` on Prefect's console handler (on the root logger, set up when
    Prefect is imported); unknown errors keep their traceback."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging)
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(
            handler.formatter, _NoTraceback
        ):
            handler.setFormatter(_NoTraceback(handler.formatter, known))


def drain_prefect() -> None:
    """Send the logs and events Prefect still holds before the API server stops."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def announce_file(project: Project, landed: Path) -> bool:
    """Emit `ctloop.data.arrived` for a landed file (path relative to the landing folder, which is
    where the monitor resolves it); False when it could not be sent."""
    from prefect.events import emit_event

    relative = landed.resolve().relative_to(project.path("landing").resolve()).as_posix()
    event = events.data_arrived(landed.name, relative)
    return emit_event(event=event.name, resource=event.resource, payload=event.payload) is not None


LOOP_DEPLOYMENTS = ("monitor", "retrain")


BUSY_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


def busy_runs(deployments: tuple[str, ...] = LOOP_DEPLOYMENTS) -> list[str]:
    """Names of the loop's flow runs that are due or running (future scheduled runs excluded)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=list(BUSY_STATES)))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=state),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(deployments))),
        )
    soon = datetime.now(UTC) + timedelta(seconds=30)
    return [
        r.name
        for r in runs
        if not (r.state_type and r.state_type.value == "SCHEDULED" and r.expected_start_time > soon)
    ]


def count_runs(deployment: str) -> int:
    """How many flow runs a deployment has had (any state)."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.count_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def send_events() -> None:
    """Send the events emitted so far before the command goes on (or ends)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
