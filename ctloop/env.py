"""Process environment every ctloop entry point sets before heavy imports: telemetry off, and a
temporary Prefect server given time to start on a small machine (its first start migrates), and
OpenMP threads that do not busy-wait; and a quick interpreter exit."""

from __future__ import annotations

import atexit
import gc
import os
import threading
import time

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


def freeze_at_exit() -> None:
    """At exit, freeze the objects still alive (`gc.freeze`) so that the interpreter's final
    garbage collections skip them. A process that imported the ML stack (Evidently, GX, MLflow,
    XGBoost) otherwise spends 1-1.5 s of its shutdown scanning them (benchmarks/RESULTS.md).
    Nothing is skipped: atexit handlers and finalizers run, memory is released by reference
    counting as before; only cycles among those objects are left to the operating system.
    Idempotent per process."""
    global _FREEZE_REGISTERED
    if not _FREEZE_REGISTERED:
        atexit.register(gc.freeze)
        _FREEZE_REGISTERED = True


_FREEZE_REGISTERED = False


BACKGROUND_NICENESS = 10  # CFS weight about 1/10 of a default-priority thread


def background_worker() -> None:
    """Initializer of a worker process that computes beside the flow's main line (the drift
    report, the learning curve): a lower CPU priority, so that its work fills the cores the main
    line leaves idle instead of slowing the search (XGBoost keeps about 1.7 of 2 cores busy), a
    quick exit, and no orphan when the flow's process is killed."""
    os.nice(BACKGROUND_NICENESS)
    freeze_at_exit()
    exit_with_parent()


def exit_with_parent(poll_s: float = 0.5) -> None:
    """Exit this worker process as soon as the process that started it is gone. A parent killed
    by SIGKILL or the OOM killer cannot stop its process pool: the worker would linger for ever
    (blocked on its task queue, still holding the parent's stdout) instead of dying with it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)  # orphaned: nobody is left to take a result

    threading.Thread(target=watch, name="ctloop-exit-with-parent", daemon=True).start()
