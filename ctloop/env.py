"""Process environment every ctloop entry point sets before heavy imports: telemetry off."""

from __future__ import annotations

import os

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def telemetry_off() -> None:
    """Set the opt-outs unless the user set them explicitly."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
