"""Deployments: every entrypoint imports, and prefect.yaml declares what deployments/serve.py
serves (schedule from params.yaml, the same triggers and parameters)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctloop.core.config import ConfigError, Project, override
from deployments import serve
from tests.conftest import ROOT


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.mark.parametrize("entry", [d["entrypoint"] for d in _prefect_yaml()["deployments"]])
def test_every_entrypoint_imports_a_flow(entry: str) -> None:
    from prefect import Flow

    file, name = entry.split(":")
    module = importlib.import_module(Path(file).with_suffix("").as_posix().replace("/", "."))
    assert isinstance(getattr(module, name), Flow)


def test_prefect_yaml_matches_the_served_deployments(repo_project: Project) -> None:
    served = {(d.flow_name, d.name): d for d in serve.build(repo_project)}
    declared = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    assert {name for _, name in served} == set(declared)
    for (flow_name, name), dep in served.items():
        spec = declared[name]
        assert spec["entrypoint"].endswith(f":{flow_name.replace('-', '_')}")
        assert spec["concurrency_limit"] == 1 == dep.concurrency_limit
        crons = [s.schedule.cron for s in dep.schedules]
        assert [s["cron"] for s in spec.get("schedules", [])] == crons
        for trig, yaml_trig in zip(dep.triggers, spec.get("triggers", []), strict=True):
            assert set(yaml_trig["expect"]) == set(trig.expect)
            assert yaml_trig["match"] == trig.match.model_dump()
            assert yaml_trig["parameters"] == trig.parameters
        expected = {k: v for k, v in dep.parameters.items() if k != "params_path"}
        assert {k: v for k, v in spec["parameters"].items() if k != "params_path"} == expected


def test_schedule_comes_from_params(repo_project: Project) -> None:
    [train] = [d for d in serve.build(repo_project) if d.name == "train"]
    assert [s.schedule.cron for s in train.schedules] == [repo_project.params.continuous.schedule]


def test_predict_is_deployed_unscheduled_by_default(repo_project: Project) -> None:
    [predict] = [d for d in serve.build(repo_project) if d.name == "predict"]
    assert predict.flow_name == "predict-batch"
    assert not predict.schedules
    assert "input_path" not in predict.parameters


def test_predict_schedule_and_input_come_from_params(repo_project: Project) -> None:
    project = override(
        repo_project, {"serving.schedule": "30 6 * * *", "serving.input": "data/today.parquet"}
    )
    [predict] = [d for d in serve.build(project) if d.name == "predict"]
    assert [s.schedule.cron for s in predict.schedules] == ["30 6 * * *"]
    assert predict.parameters["input_path"] == "data/today.parquet"


def test_a_predict_schedule_needs_an_input(repo_project: Project) -> None:
    with pytest.raises(ConfigError, match=r"serving: .*schedule is set but input is not"):
        override(repo_project, {"serving.schedule": "30 6 * * *"})
