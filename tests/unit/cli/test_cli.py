"""The console script: fast help, no heavy imports at module import, clear non-zero errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CTLOOP = str(Path(sys.executable).parent / "ctloop")
HEAVY = ("mlflow", "great_expectations", "evidently", "xgboost", "sklearn", "dvc", "optuna")


def _imports(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_help_answers() -> None:
    result = subprocess.run([CTLOOP, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("run", "setup", "stage", "expectations"):
        assert command in result.stdout


def test_no_heavy_library_is_imported_by_cli_flows_or_tasks_modules() -> None:
    for module in ("ctloop.cli", "flows.train_model", "tasks.training", "ctloop.steps.fit"):
        loaded = _imports(module) & set(HEAVY)
        assert not loaded, f"{module} imports {loaded} at import time"


def test_invalid_params_exit_non_zero_listing_every_problem(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["folds"] = 1
    params["tune"]["timeout_s"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [CTLOOP, "run", "--params", str(tmp_path / "params.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "split.folds" in result.stderr and "tune.timeout_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_stage_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [CTLOOP, "stage", "deploy", "--params", str(ROOT / "params.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "unknown stage 'deploy'" in result.stderr


def test_the_next_step_names_a_ctloop_the_user_can_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctloop.cli import ctloop_command

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    exe = venv_bin / "ctloop"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv not activated
    assert ctloop_command(str(exe)) == str(exe.resolve())
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")  # activated: the bare name works
    assert ctloop_command(str(exe)) == "ctloop"
    assert ctloop_command("/x/python -m ctloop.cli") == "ctloop"  # not the console script
