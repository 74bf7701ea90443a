"""Importance over versions, read from real MLflow runs and registered versions (SQLite in
tmp_path): each version's permutation importance, in version order, plotted and logged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from ctloop.core.config import Project, parse_params
from ctloop.io import tracking
from ctloop.steps import evaluate

NAME = "history-model"


def _project(root: Path) -> Project:
    params = parse_params(
        {
            "data": {"target": "y", "task": "classification"},
            "model": {
                "search_space": {"xgboost": {"max_depth": {"type": "int", "low": 2, "high": 3}}}
            },
            "promotion": {"model_name": NAME},
            "insights": {"top_features": 2},
        }
    )
    return Project(root=root, params=params)


def _version(
    client: MlflowClient, exp: str, root: Path, end: str, imp: dict[str, float] | None
) -> str:
    """A training run (with an importance table unless None) and its registered version."""
    run_id = tracking.start_parent_run(exp, f"train-{end}", {})
    if imp is not None:
        path = root / "permutation_importance.csv"
        pd.DataFrame(
            {"feature": list(imp), "importance_mean": list(imp.values()), "importance_std": 0.0}
        ).to_csv(path, index=False)
        tracking.log_artifact(run_id, path, evaluate.INSIGHTS_DIR)
    version = client.create_model_version(NAME, f"runs:/{run_id}/model", run_id=run_id)
    client.set_model_version_tag(NAME, version.version, "ctloop.holdout_batches", f"x,{end}")
    return run_id


def test_importance_over_versions_reads_every_version_in_order(tmp_path: Path) -> None:
    project = _project(tmp_path)
    exp = tracking.use_experiment(project)
    client = MlflowClient()
    client.create_registered_model(NAME)
    _version(client, exp, tmp_path, "2013-06", {"hour": 0.10, "pressure": 0.02, "carrier": 0.01})
    _version(client, exp, tmp_path, "2013-07", None)  # trained before importance was recorded
    newest = _version(
        client, exp, tmp_path, "2013-08", {"hour": 0.05, "pressure": 0.08, "carrier": 0.0}
    )

    history = evaluate.importance_over_versions(project, newest)

    assert list(dict.fromkeys(history["point"])) == ["v1 2013-06", "v3 2013-08"]
    wide = history.pivot(index="point", columns="feature", values="importance")
    assert wide.loc["v3 2013-08", "pressure"] == 0.08 and wide.loc["v1 2013-06", "hour"] == 0.10
    written = pd.read_csv(tmp_path / "reports" / "plots" / "importance_over_versions.csv")
    assert len(written) == 6
    logged = {a.path for a in client.list_artifacts(newest, "insights")}
    assert "insights/importance_over_versions.csv" in logged
    assert "plots/importance_over_versions.png" in {
        a.path for a in client.list_artifacts(newest, "plots")
    }
    assert tracking.read_csv_artifact(newest, "insights/nothing.csv") is None
