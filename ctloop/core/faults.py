"""Deterministic kill points for crash tests.

`crash_point(name)` SIGKILLs the current process when the environment variable `CTLOOP_CRASH_AT`
equals `name`; otherwise it does nothing (one dictionary lookup). The points are placed where a
real crash would hurt most:

- `ingest`: after the first batch of an ingestion is written, before the others;
- `tuning`: after the first Optuna trial;
- `registration`: after the model version is created, before its challenger tags and alias;
- `promotion`: after the audit event is recorded, before `champion` moves.

Standard library only: imported by hot paths.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "CTLOOP_CRASH_AT"
POINTS = ("ingest", "tuning", "registration", "promotion")


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL (no cleanup, no finally) when CTLOOP_CRASH_AT == name."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
