"""Deployments: one definition (deployments/definitions.py) gives both what deployments/serve.py
serves and the committed prefect.yaml; every entrypoint imports; schedules come from params.yaml
and the triggers of both agree."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctloop.core import events
from ctloop.core.config import ConfigError, Project, load_project, override
from deployments import definitions, serve
from tests.conftest import ROOT


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _params_copy(tmp_path: Path, changes: dict[str, dict[str, Any]]) -> Path:
    """A copy of the committed params.yaml with some sections' keys replaced."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in changes.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _served_crons(project: Project) -> dict[str, list[str]]:
    return {d.name: [s.schedule.cron for s in d.schedules] for d in serve.build(project)}


def _yaml_crons(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {d["name"]: [s["cron"] for s in d.get("schedules", [])] for d in doc["deployments"]}


@pytest.mark.parametrize("entry", [d["entrypoint"] for d in _prefect_yaml()["deployments"]])
def test_every_entrypoint_imports_a_flow(entry: str) -> None:
    from prefect import Flow

    module_name, name = entry.split(":")
    assert module_name.startswith("flows.")  # the installed package: any working directory
    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, name), Flow)


def test_committed_prefect_yaml_is_the_generated_one(repo_project: Project) -> None:
    """A hand edit of prefect.yaml, or a params.yaml change without regenerating, fails here."""
    committed = (ROOT / "prefect.yaml").read_text(encoding="utf-8")
    assert committed == definitions.render_prefect_yaml(repo_project)
    assert committed.startswith("# GENERATED from deployments/definitions.py")
    assert (
        definitions.main(
            ["--params", str(ROOT / "params.yaml"), "--check", str(ROOT / "prefect.yaml")]
        )
        == 0
    )


def test_check_fails_on_a_stale_prefect_yaml(tmp_path: Path) -> None:
    stale = tmp_path / "prefect.yaml"
    stale.write_text((ROOT / "prefect.yaml").read_text().replace("0 3 * * 1", "0 4 * * 1"))
    params = str(ROOT / "params.yaml")
    assert definitions.main(["--params", params, "--check", str(stale)]) == 1
    assert definitions.main(["--params", params, "--write", str(stale)]) == 0
    assert definitions.main(["--params", params, "--check", str(stale)]) == 0
    assert stale.read_text() == (ROOT / "prefect.yaml").read_text()


def test_prefect_yaml_matches_the_served_deployments(repo_project: Project) -> None:
    served = {(d.flow_name, d.name): d for d in serve.build(repo_project)}
    declared = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    assert {name for _, name in served} == set(declared)
    for (flow_name, name), dep in served.items():
        spec = declared[name]
        assert spec["entrypoint"].endswith(f":{flow_name.replace('-', '_')}")
        assert spec["concurrency_limit"] == 1 == dep.concurrency_limit
        assert spec["tags"] == dep.tags == ["ctloop"]
        assert spec["description"] == dep.description
        crons = [s.schedule.cron for s in dep.schedules]
        assert [s["cron"] for s in spec.get("schedules", [])] == crons
        for trig, yaml_trig in zip(dep.triggers, spec.get("triggers", []), strict=True):
            assert set(yaml_trig["expect"]) == set(trig.expect)
            assert yaml_trig["match"] == trig.match.model_dump()
            assert yaml_trig["parameters"] == trig.parameters
        expected = {k: v for k, v in dep.parameters.items() if k != "params_path"}
        assert {k: v for k, v in spec["parameters"].items() if k != "params_path"} == expected
        assert dep.parameters["params_path"] == str(repo_project.root / "params.yaml")
        assert spec["parameters"]["params_path"] == "params.yaml"


def test_a_changed_cron_changes_the_served_schedule_and_the_generated_yaml(
    tmp_path: Path,
) -> None:
    path = _params_copy(
        tmp_path,
        {
            "continuous": {"schedule": "15 4 * * 2"},
            "serving": {"schedule": "30 6 * * *", "input": "data/today.parquet"},
        },
    )
    project = load_project(path)
    out = tmp_path / "prefect.yaml"
    assert definitions.main(["--params", str(path), "--write", str(out)]) == 0
    generated = yaml.safe_load(out.read_text())
    expected = {"train": ["15 4 * * 2"], "monitor": [], "retrain": [], "predict": ["30 6 * * *"]}
    assert _served_crons(project) == expected
    assert _yaml_crons(generated) == expected
    [predict] = [d for d in generated["deployments"] if d["name"] == "predict"]
    assert predict["parameters"]["input_path"] == "data/today.parquet"
    # the committed file no longer matches these params: the check says so
    assert definitions.main(["--params", str(path), "--check", str(ROOT / "prefect.yaml")]) == 1


def test_no_cron_means_no_schedule_in_either(tmp_path: Path) -> None:
    project = load_project(_params_copy(tmp_path, {"continuous": {"schedule": None}}))
    [train] = [d for d in definitions.prefect_yaml(project)["deployments"] if d["name"] == "train"]
    assert "schedules" not in train
    assert _served_crons(project)["train"] == []


def test_the_triggers_of_both_agree_as_prefect_reads_them(repo_project: Project) -> None:
    """prefect.yaml's triggers, parsed the way `prefect deploy` parses them, equal the served
    ones; and they name the events and resources of ctloop.core.events."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    served = {d.name: d.triggers for d in serve.build(repo_project)}
    declared = {
        d["name"]: [adapter.validate_python(t) for t in d.get("triggers", [])]
        for d in definitions.prefect_yaml(repo_project)["deployments"]
    }
    assert served.keys() == declared.keys()
    for name in served:
        assert [t.model_dump() for t in declared[name]] == [t.model_dump() for t in served[name]]
    [monitor] = served["monitor"]
    [retrain] = served["retrain"]
    assert set(monitor.expect) == {events.DATA_ARRIVED}
    assert set(retrain.expect) == set(events.RETRAIN_TRIGGERS)
    assert monitor.match.root["prefect.resource.id"] == f"{events.LANDING_RESOURCE}.*"
    assert retrain.match.root["prefect.resource.id"] == f"{events.BATCH_RESOURCE}.*"
    assert served["train"] == served["predict"] == []
    # the Automations page names what each one does (its trigger card reads "A custom trigger")
    for trigger, deployment in (
        (monitor, "monitor-batch/monitor"),
        (retrain, "retrain-model/retrain"),
    ):
        assert deployment in trigger.name and deployment in trigger.description
        assert all(e in trigger.description for e in trigger.expect)
        assert trigger.match.root["prefect.resource.id"] in trigger.description
        assert "{{" not in trigger.description  # prefect deploy would template it


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
