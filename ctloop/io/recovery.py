"""Recovery after a crash (SIGKILL, OOM kill, power loss) of a ctloop process.

Every ctloop MLflow run records the process that owns it when it starts (`ctloop.pid`,
`ctloop.host`, and the boot id where the OS has one). A killed process leaves its run RUNNING;
at the start of the next training (`reconcile_runs`), each RUNNING run of kind training, trial or
monitoring that belongs to this host and whose process is gone (no such pid, a zombie, a process
that is not Python, or a different boot) is tagged `ctloop.failure=interrupted (process <pid>
gone)` and marked FAILED. Runs of other hosts are left alone (their processes cannot be seen from
here), and so are runs without the tags (recorded before they existed). The model versions such a
training run registered are tagged `ctloop.interrupted_run`; the gate never looks at them again
(it only decides on the version its own run creates).

A batch write that was killed between its temporary file and the rename leaves
`.<batch>.parquet.<random>.tmp-<pid>` (the temporary name of every atomic write,
`ctloop.io.files.temp_path`): never a batch (only `*.parquet` are), but DVC would version it with
the folder. `clean_stale_temp_files` removes those whose writer is gone.

No Prefect here. MLflow is imported inside functions.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.io.processes import boot_id, process_identity

if TYPE_CHECKING:
    from mlflow import MlflowClient

PID_TAG = "ctloop.pid"
HOST_TAG = "ctloop.host"
BOOT_TAG = "ctloop.boot"
KIND_TAG = "ctloop.kind"
FAILURE_TAG = "ctloop.failure"
VERSION_TAG = "ctloop.interrupted_run"
KINDS = ("training", "trial", "monitoring")
TEMP_FILE = re.compile(r"\.tmp-(\d+)$")
STALE_TEMP_AGE_S = 60.0  # a writer on another host sharing the folder is not visible from here


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run (recorded when the run starts)."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    boot = boot_id()
    return {**tags, BOOT_TAG: boot} if boot else tags


def python_process_running(pid: int) -> bool:
    """A live, non-zombie process with this pid whose command line runs Python."""
    if pid == os.getpid():
        return True
    identity = process_identity(pid)
    return identity is not None and "python" in identity.lower()


def orphan_reason(
    status: str,
    tags: Mapping[str, str],
    host: str,
    boot: str,
    running: Callable[[int], bool],
) -> str | None:
    """Why a run is orphaned (its process is gone), or None when it is not or cannot be known.

    Pure: `running(pid)` tells whether the owning process still runs on this host."""
    if status != "RUNNING" or tags.get(KIND_TAG) not in KINDS:
        return None
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) != host or not pid.isdigit():
        return None
    recorded_boot = tags.get(BOOT_TAG, "")
    if recorded_boot and boot and recorded_boot != boot:
        return f"interrupted (process {pid} gone: host rebooted)"
    if running(int(pid)):
        return None
    return f"interrupted (process {pid} gone)"


@dataclass(frozen=True)
class Interrupted:
    run_id: str
    run_name: str
    kind: str
    reason: str
    versions: tuple[str, ...] = ()


def reconcile_runs(
    experiment_id: str,
    model_name: str | None = None,
    running: Callable[[int], bool] = python_process_running,
) -> list[Interrupted]:
    """Mark this host's orphaned RUNNING runs FAILED and tag the versions they registered. Tags
    first, status last: a crash in between leaves the run RUNNING for the next start."""
    from mlflow import MlflowClient

    client = MlflowClient()
    host, boot = socket.gethostname(), boot_id()
    found: list[Interrupted] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], "attributes.status = 'RUNNING'", max_results=500, page_token=token
        )
        for run in page:
            tags = run.data.tags
            reason = orphan_reason(run.info.status, tags, host, boot, running)
            if reason is None:
                continue
            client.set_tag(run.info.run_id, FAILURE_TAG, reason)
            versions: tuple[str, ...] = ()
            if model_name and tags.get(KIND_TAG) == "training":
                versions = _tag_versions(client, model_name, run.info.run_id, reason)
            client.set_terminated(run.info.run_id, "FAILED")
            found.append(
                Interrupted(
                    run.info.run_id, run.info.run_name or "", tags[KIND_TAG], reason, versions
                )
            )
        token = page.token
        if not token:
            return found


def _tag_versions(
    client: MlflowClient, model_name: str, run_id: str, reason: str
) -> tuple[str, ...]:
    """Tag the versions an interrupted training run registered (never gated or never finished)."""
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    for version in versions:
        client.set_model_version_tag(
            model_name, version.version, VERSION_TAG, f"{run_id}: {reason}"
        )
    return tuple(sorted(str(v.version) for v in versions))


def stale_temp_files(
    folder: Path,
    running: Callable[[int], bool],
    now: float,
    min_age_s: float = STALE_TEMP_AGE_S,
) -> list[Path]:
    """`*.tmp-<pid>` files in `folder` whose writer is gone, at least `min_age_s` old."""
    if not folder.is_dir():
        return []
    stale = []
    for path in sorted(folder.iterdir()):
        match = TEMP_FILE.search(path.name)
        if match is None or not path.is_file() or running(int(match[1])):
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # its writer renamed it just now
            continue
        if age >= min_age_s:
            stale.append(path)
    return stale


def clean_stale_temp_files(folder: Path) -> list[Path]:
    """Remove leftovers of killed writes (see stale_temp_files); returns what was removed."""
    removed = []
    for path in stale_temp_files(folder, python_process_running, time.time()):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
