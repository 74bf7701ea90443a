"""Fail fast, naming the URL, when a configured server does not answer (instead of a long
retry loop deep inside a flow)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request


class UnreachableError(RuntimeError):
    """A configured server (Prefect API, MLflow tracking server) does not answer."""


def check_http(name: str, health_url: str, hint: str, timeout: float = 5.0) -> None:
    """GET a health endpoint; raise UnreachableError naming the URL and what to do."""
    try:
        with urllib.request.urlopen(health_url, timeout=timeout) as response:
            if response.status < 400:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise UnreachableError(f"{name} at {health_url} is unreachable ({reason}); {hint}")


def check_servers(tracking_uri: str) -> None:
    """Check PREFECT_API_URL (when set) and an HTTP MLflow tracking URI (when used)."""
    prefect_api = os.environ.get("PREFECT_API_URL")
    if prefect_api:
        check_http(
            "Prefect API",
            f"{prefect_api.rstrip('/')}/health",
            "start it (`ctloop up`, prefect server start) or unset PREFECT_API_URL to use the "
            "project's own",
        )
    if tracking_uri.startswith(("http://", "https://")):
        check_http(
            "MLflow tracking server",
            f"{tracking_uri.rstrip('/')}/health",
            "start it or unset MLFLOW_TRACKING_URI to use the embedded SQLite store",
        )
