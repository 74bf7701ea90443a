"""A challenger the gate refused goes to shadow, wins two labelled batches against a weak
champion in monitor-batch and is promoted through the audited move (real Prefect test server,
temporary MLflow SQLite store and DVC repository)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from ctloop.core import shadow
from ctloop.core.config import Project
from ctloop.io import audit, registry, tracking
from ctloop.steps import replay
from ctloop.steps.shadow import shadow_predictions_path
from flows.monitor_batch import monitor_batch
from flows.train_model import train_model
from tests.conftest import new_project, sample_months
from tests.integration.conftest import SMALL, copy_project, latest_artifact

MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]
NAME = "ctloop-test"


def _edit(project: Project, change: Callable[[dict[str, Any]], None]) -> None:
    """Change params.yaml in place."""
    path = project.root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _real_model_refused(params: dict[str, Any]) -> None:
    """A real model (SMALL's trees, depth 3-5) and a margin no challenger can meet."""
    params["model"]["fixed"]["xgboost"] = SMALL["model"]["fixed"]["xgboost"]
    params["model"]["search_space"]["xgboost"]["max_depth"] = {"type": "int", "low": 3, "high": 5}
    params["promotion"]["margin"] = 10.0


def _deliver(project: Project, frame: pd.DataFrame, period: str) -> str:
    rows = frame[frame["date"].dt.strftime("%Y-%m") == period].reset_index(drop=True)
    delivered = replay.delivery_frame(rows, project.params.data, True)
    landed = replay.write_delivery(
        delivered, project.path("landing"), replay.Delivery(period, True)
    )
    return landed.name


@pytest.fixture(scope="module")
def shadowed(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Project, pd.DataFrame]:
    """v1, a weak champion, and v2, a real model the gate refused, in shadow (k = 2); the
    margin then set back so that v2 can win. Trained once per module; returns the project and
    the rows of January-May (April and May not delivered yet)."""
    root = tmp_path_factory.mktemp("shadow")
    rows = sample_months(default_batches, MONTHS, 1200)
    source = root / "initial.parquet"
    rows[rows["date"] < "2013-04-01"].to_parquet(source, index=False)
    # v1, the champion: two stumps (weak on purpose); train Jan-Feb, holdout Mar
    p = new_project(
        root / "proj",
        {
            **SMALL,
            "data": {**SMALL["data"], "source": str(source)},
            "model": {
                "fixed": {"xgboost": {"n_estimators": 2, "tree_method": "hist", "n_jobs": 1}},
                "search_space": {"xgboost": {"max_depth": {"type": "int", "low": 1, "high": 1}}},
            },
            "tune": {**SMALL["tune"], "n_trials": 1},
            "promotion": {**SMALL["promotion"], "min_score": 0.5, "shadow_batches": 2},
        },
    )
    params = str(p.root / "params.yaml")
    assert train_model(params_path=params).promoted

    # v2: a real model, refused by an impossible margin -> shadow
    _edit(p, _real_model_refused)
    second = train_model(params_path=params)
    assert (second.model_version, second.promoted) == ("2", False)
    tracking.use_store(p.tracking_uri)
    held = registry.get_shadow(NAME)
    assert held is not None and str(held.version) == "2"
    assert held.tags[shadow.STATE_TAG] == "shadow" and held.tags[shadow.WINS_TAG] == "0"
    assert "margin" in held.tags[shadow.REASON_TAG]
    _edit(p, lambda params: params["promotion"].update(margin=0.0025))
    return p, rows


@pytest.fixture
def champion_and_shadow(
    shadowed: tuple[Project, pd.DataFrame], tmp_path: Path
) -> tuple[Project, str, pd.DataFrame]:
    """Each test its own copy of the `shadowed` project (tree and MLflow store), the store in
    use; returns the copy, its params path and the rows."""
    trained, rows = shadowed
    p = copy_project(trained, tmp_path / "proj")
    tracking.use_store(p.tracking_uri)
    return p, str(p.root / "params.yaml"), rows


def _monitoring_run(client: MlflowClient, batch: str) -> Any:
    [run] = client.search_runs(
        [client.get_experiment_by_name("ctloop-monitoring").experiment_id],
        f"tags.`ctloop.kind` = 'monitoring' and tags.`ctloop.batch` = '{batch}'",
    )
    return run


def test_refused_challenger_wins_in_shadow_and_is_promoted(
    champion_and_shadow: tuple[Project, str, pd.DataFrame],
) -> None:
    p, params, rows = champion_and_shadow
    client = MlflowClient()

    # April: the shadow wins once (1 of 2): scored beside the champion, not promoted yet
    [april] = monitor_batch(path=_deliver(p, rows, "2013-04"), params_path=params)
    assert (april.model_version, april.shadow_promoted) == ("1", None)
    assert shadow_predictions_path(p, "2013-04", "2").is_file()
    assert str(registry.get_alias(NAME, registry.CHAMPION).version) == "1"
    assert client.get_model_version(NAME, "2").tags[shadow.WINS_TAG] == "1"
    run = _monitoring_run(client, "2013-04")
    m = run.data.metrics
    assert m["shadow_gain_lower"] > 0.0025 * m["batch_roc_auc"] and m["shadow_wins"] == 1
    assert m["shadow_roc_auc"] == pytest.approx(m["batch_roc_auc"] + m["shadow_gain"])
    assert run.data.tags["ctloop.shadow_outcome"] == "win"
    artifact = latest_artifact("shadow-2013-04")
    assert artifact is not None and "1 of 2" in artifact.data

    # May: the second consecutive win promotes it through the audited move
    [may] = monitor_batch(path=_deliver(p, rows, "2013-05"), params_path=params)
    assert may.shadow_promoted == "2"
    assert str(registry.get_alias(NAME, registry.CHAMPION).version) == "2"
    assert registry.get_shadow(NAME) is None
    promoted = client.get_model_version(NAME, "2").tags
    assert promoted[shadow.STATE_TAG] == "promoted" and promoted["promotion.promote"] == "True"
    last = audit.history(NAME)[-1]
    assert (last.action, last.from_version, last.to_version, last.applied) == (
        "promote",
        "1",
        "2",
        True,
    )
    assert last.reason.startswith("shadow: won 2 consecutive labelled batches (2013-04, 2013-05)")
    assert last.gain_lower is not None and last.gain_lower > 0
    assert "shadow: won 2" in audit.format_history(audit.history(NAME))
    assert "PROMOTED" in latest_artifact("shadow-2013-05").data


def test_a_shadow_that_cannot_score_never_stops_the_champions_monitoring(
    champion_and_shadow: tuple[Project, str, pd.DataFrame],
) -> None:
    p, params, rows = champion_and_shadow
    client = MlflowClient()
    # the shadow's model files damaged in the artifact store (a disk fault, a bad copy)
    uri = client.get_model_version_download_uri(NAME, "2")
    folder = Path(uri.removeprefix("file://"))
    damaged = [f for f in folder.rglob("*") if f.is_file() and f.name != "MLmodel"]
    assert damaged
    for f in damaged:
        f.write_bytes(b"not a model")

    [april] = monitor_batch(path=_deliver(p, rows, "2013-04"), params_path=params)
    assert (april.status, april.model_version, april.shadow_promoted) == ("monitored", "1", None)
    run = _monitoring_run(client, "2013-04")
    assert run.info.status == "FINISHED" and "batch_roc_auc" in run.data.metrics
    assert run.data.tags["ctloop.shadow_outcome"] == "failed"
    assert run.data.tags["ctloop.shadow_error"]  # the loader's error, named
    tags = client.get_model_version(NAME, "2").tags
    assert (tags[shadow.WINS_TAG], tags[shadow.LAST_TAG]) == ("0", "2013-04")
    assert str(registry.get_shadow(NAME).version) == "2"  # kept: the next batch tries again
    assert str(registry.get_alias(NAME, registry.CHAMPION).version) == "1"
    artifact = latest_artifact("shadow-2013-04")
    assert artifact is not None and "FAILED to score the batch" in artifact.data
