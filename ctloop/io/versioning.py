"""DVC versioning of the batch folder (Python API: no analytics process is spawned)."""

from __future__ import annotations

from pathlib import Path

import yaml

INGEST_STAGE = "ingest"


class VersioningError(RuntimeError):
    """DVC could not record or push a data version."""


def ensure_remote(root: Path, remote_dir: Path, name: str = "local") -> None:
    """Make `remote_dir` the default remote in .dvc/config.local (machine-specific, not committed),
    unless the project already has a default remote configured (e.g. object storage)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        if repo.config["core"].get("remote"):
            return
        remote_dir.mkdir(parents=True, exist_ok=True)
        with repo.config.edit("local") as conf:
            conf["remote"][name] = {"url": str(remote_dir)}
            conf["core"]["remote"] = name


def commit_and_push(root: Path, stage: str = INGEST_STAGE) -> None:
    """Record the stage's current outputs in dvc.lock and the cache, then push to the remote."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    target = f"{root / 'dvc.yaml'}:{stage}"  # absolute: DVC resolves bare names from the cwd
    try:
        with Repo(str(root)) as repo:
            repo.commit(target, force=True)
            repo.push(targets=[target])
    except DvcException as err:
        raise VersioningError(f"{root / 'dvc.yaml'}: stage '{stage}': DVC failed: {err}") from err


def data_version(root: Path, batches: str, stage: str = INGEST_STAGE) -> str | None:
    """The DVC hash of the batch folder recorded in dvc.lock (None before the first commit)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    for out in stages.get(stage, {}).get("outs", []):
        if Path(out.get("path", "")) == Path(batches):
            return str(out.get("md5") or out.get("hash") or "") or None
    return None
