"""Process environment every ctloop entry point sets before heavy imports: telemetry off, and a
temporary Prefect server given time to start on a small machine (its first start migrates), and
OpenMP threads that do not busy-wait."""

from __future__ import annotations

import os

ENV_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # OpenMP threads (XGBoost) sleep instead of spinning while they wait: on a busy or
    # oversubscribed machine spinning cost 2-4x the CPU and up to 14x the wall time of a fit
    # (benchmarks/scale.py); read when libgomp loads, so it must be set before xgboost is imported
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_env_defaults() -> None:
    """Set the defaults the user did not set (must run before prefect is imported)."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
