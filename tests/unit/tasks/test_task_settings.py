"""Operational settings of the task wrappers: which failures are retried."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from ctloop.core.config import ConfigError
from ctloop.io.data import DataError
from tasks.training import retry_transient


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionError("tracking server reset the connection"), True),
        (TimeoutError("Prefect API timed out"), True),
        (OSError("remote storage unavailable"), True),
        (FileNotFoundError("data/batches/2013-01.parquet"), False),
        (PermissionError("read-only"), False),
        (DataError("x.parquet: column 'a': rule 'ranges'"), False),
        (ConfigError("params.yaml: 1 problem(s)"), False),
        (KeyError("missing"), False),
    ],
)
def test_only_transient_io_errors_are_retried(error: Exception, retried: bool) -> None:
    assert retry_transient(None, None, Failed(data=error)) is retried  # type: ignore[arg-type]


def test_a_completed_state_is_not_retried() -> None:
    assert retry_transient(None, None, Completed(data=1)) is False  # type: ignore[arg-type]
