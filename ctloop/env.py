"""Process environment every ctloop entry point sets before heavy imports: telemetry off, and a
temporary Prefect server given time to start on a small machine (its first start migrates)."""

from __future__ import annotations

import os

ENV_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_env_defaults() -> None:
    """Set the defaults the user did not set (must run before prefect is imported)."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
