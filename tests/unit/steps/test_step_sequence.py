"""ctloop/steps/sequence.py: one ordered list of steps, matched by dvc.yaml and the scaffold."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctloop.ops.project_init import project_stages
from ctloop.steps import sequence
from tests.conftest import ROOT


def _stages(text: str) -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load(text)["stages"]


def test_steps_are_in_stage_order_and_named_once() -> None:
    order = [sequence.STAGES.index(step.stage) for step in sequence.TRAINING]
    assert order == sorted(order)  # a stage's steps all come after the previous stage's
    assert len(sequence.BY_NAME) == len(sequence.TRAINING)
    assert {s.stage for s in sequence.TRAINING} == set(sequence.STAGES)


def test_dvc_yaml_runs_the_sequence_stages_with_their_code_deps() -> None:
    stages = _stages((ROOT / "dvc.yaml").read_text())
    assert tuple(stages) == sequence.STAGES
    for name, stage in stages.items():
        code = [d for d in stage["deps"] if d.startswith("ctloop/")]
        assert code == list(sequence.code_deps(name)), name
        assert all((ROOT / d).exists() for d in code), name


def test_a_project_without_the_source_gets_no_code_deps(tmp_path: Path) -> None:
    text = (ROOT / "dvc.yaml").read_text()
    outside = _stages(project_stages(text, tmp_path))
    assert tuple(outside) == sequence.STAGES
    for name, stage in outside.items():
        deps = stage.get("deps") or []
        assert not [d for d in deps if d.startswith("ctloop/")], name
        kept = [d for d in _stages(text)[name]["deps"] if not d.startswith("ctloop/")]
        assert deps == kept, name  # the data deps stay
    assert "deps" not in outside["ingest"]  # code was its only dep: no empty list left
    (tmp_path / "ctloop").mkdir()
    assert project_stages(text, tmp_path) == text  # a checkout keeps them


def test_a_step_records_its_call_and_returns_the_functions_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv(sequence.TRACE_ENV, str(trace))
    double = sequence.Step("double", "train", lambda x: 2 * x)
    with sequence.recording() as called:
        assert double(21) == 42
        assert sequence.main_line(["tune-and-fit", "learning-curve"]) == ["tune-and-fit"]
    double(1)  # after the block: only the file hears it
    assert called == ["double"]
    assert sequence.read_trace(trace) == ["double", "double"]


def test_a_step_that_raises_is_still_recorded() -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    with sequence.recording() as called, pytest.raises(RuntimeError, match="boom"):
        sequence.Step("fail", "evaluate", fail)()
    assert called == ["fail"]
