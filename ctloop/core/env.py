"""Process environment every ctloop entry point sets before heavy imports: telemetry off, and a
temporary Prefect server given time to start on a small machine (its first start migrates), and
OpenMP threads that do not busy-wait; and a quick interpreter exit."""

from __future__ import annotations

import atexit
import gc
import os
import signal
import threading
import time

RUN_SERVER_ENV = "CTLOOP_RUN_SERVER"  # the run server's URL, for the processes of its tree

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


# CFS weight about half of a default-priority thread. Not lower: the main line waits for this
# worker's results (drift report, learning curve), and an unprivileged process cannot raise its
# priority again. At 10 (weight about 1/10) the worker starved on a busy machine (load 16: a
# 13 CPU-second drift report still unfinished after 30 min, the flow waiting on it); at 3 it runs
# at about half the speed of its peers there, and still yields most of a core to the search on a
# quiet one (benchmarks/RESULTS.md).
BACKGROUND_NICENESS = 3


def background_worker() -> None:
    """Initializer of a worker process that computes beside the flow's main line (the drift
    report, the learning curve): a somewhat lower CPU priority, so that its work mostly fills the
    cores the main line leaves idle instead of slowing the search (XGBoost keeps about 1.7 of 2
    cores busy) without starving on a busy machine, a quick exit, and no orphan when the flow's
    process is killed."""
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


def stop_worker_processes(timeout_s: float = 5.0) -> None:
    """Terminate this process's multiprocessing children (a flow's worker process). Called when
    a command ends by an error, Ctrl-C or SIGTERM: the interpreter's exit would otherwise wait
    for a worker's task (a drift report, a learning curve) that nobody will read."""
    # ctloop.cli imports this module: multiprocessing (about 5 ms) would slow `ctloop --help`
    import multiprocessing  # noqa: PLC0415 (keeps ctloop --help fast)

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout_s)
        if child.is_alive():
            child.kill()


def sigterm_as_exit() -> None:
    """Turn the first SIGTERM into SystemExit(143) in this process, so `finally` blocks run: the
    flow is reported as crashed, its MLflow run FAILED, the Prefect run server's lease dropped
    (the default action would end the process on the spot). The worker processes are terminated
    first: the flow's task runner would otherwise wait for their running task at its exit. A
    second SIGTERM ends the process at once, as the default action does."""

    def _exit(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        import multiprocessing  # noqa: PLC0415 (keeps ctloop --help fast, as above)

        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
