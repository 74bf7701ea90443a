"""The flow and `dvc repro` run the steps of ctloop/steps/sequence.py in the same order, to the
same model: each route records the steps it calls (CTLOOP_STEP_TRACE, across its processes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctloop.core.config import Project, load_project
from ctloop.ops.project_init import scaffold
from ctloop.steps import sequence
from tests.conftest import ROOT, _merge
from tests.integration.conftest import SMALL

# end to end: drives the installed `ctloop` (or `dvc repro`) as separate processes, as a user
# does; `make test-e2e` runs it, `make test` does not
pytestmark = pytest.mark.e2e


def _dvc(root: Path, *args: str, trace: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if trace is not None:
        env[sequence.TRACE_ENV] = str(trace)
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _small(slice_file: Path) -> dict[str, Any]:
    return {**SMALL, "data": {**SMALL["data"], "source": str(slice_file)}}


def test_flow_and_dvc_run_the_same_steps_in_the_same_order(
    make_project: Callable[..., Project],
    slice_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.train_model import train_model

    changes = _small(slice_file)
    by_flow, by_dvc = make_project(changes, "flow"), make_project(changes, "dvc")
    flow_trace, dvc_trace = tmp_path / "flow.trace", tmp_path / "dvc.trace"

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    monkeypatch.setenv(sequence.TRACE_ENV, str(flow_trace))  # the worker process inherits it
    # an empty result store: a cached step (tune-and-fit, compute-drift) from an earlier test of
    # the same data and params would be read back, not called, and so not recorded
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        summary = train_model(params_path=str(by_flow.root / "params.yaml"))
    monkeypatch.delenv(sequence.TRACE_ENV)
    result = _dvc(by_dvc.root, "repro", trace=dvc_trace)
    assert result.returncode == 0, result.stdout + result.stderr

    flow_steps, dvc_steps = sequence.read_trace(flow_trace), sequence.read_trace(dvc_trace)
    expected = [s.name for s in sequence.TRAINING]  # a fresh project: the suite is built
    assert sequence.main_line(flow_steps) == sequence.main_line(expected)
    assert sequence.main_line(dvc_steps) == sequence.main_line(expected)
    assert dvc_steps == expected  # the stages run beside steps in their place too
    assert sorted(flow_steps) == sorted(expected)  # each step once, the beside one included

    # the same steps on the same data and params: the same model and figures
    metrics = json.loads((by_dvc.path("reports") / "metrics.json").read_text())
    trained = json.loads((by_dvc.path("models") / "train.json").read_text())
    assert trained["best_params"] == summary.best_params
    assert trained["cv_mean"] == pytest.approx(summary.cv_mean, abs=1e-12)
    assert metrics["holdout"]["roc_auc"] == pytest.approx(summary.holdout_score, abs=1e-12)


def test_a_code_change_reruns_the_stages_that_run_that_code(
    slice_file: Path, tmp_path: Path
) -> None:
    """A project holding the ctloop source (as the checkout does): dvc.yaml keeps the code deps;
    editing a module of ctloop/ml re-runs the stages whose packages include it, and only them."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "ctloop", root / "ctloop", ignore=shutil.ignore_patterns("__pycache__"))
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), _small(slice_file))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    scaffold(root)
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    p = load_project(root / "params.yaml")
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name in sequence.STAGES:
        assert set(sequence.code_deps(name)) <= set(stages[name]["deps"]), name

    first = _dvc(root, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Data and pipelines are up to date" in _dvc(root, "status").stdout  # no-op

    module = root / "ctloop" / "ml" / "training.py"
    module.write_text(module.read_text() + "\n# a change to the training code\n")
    status = json.loads(_dvc(root, "status", "--json").stdout)
    runs_ml = {s for s in sequence.STAGES if "ctloop/ml" in sequence.STAGE_CODE[s]}
    assert set(status) == runs_ml and "ingest" not in status and "train" in status

    again = _dvc(root, "repro")
    assert again.returncode == 0, again.stdout + again.stderr
    ran = {s for s in sequence.STAGES if f"Running stage '{s}'" in again.stdout}
    assert ran >= {"validate", "train", "evaluate", "drift"} and "ingest" not in ran, again.stdout
    assert json.loads((p.path("models") / "train.json").read_text())["run_id"]
    assert "Data and pipelines are up to date" in _dvc(root, "status").stdout
