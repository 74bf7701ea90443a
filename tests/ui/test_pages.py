"""What a person sees in the Prefect and MLflow UIs after `ctloop up`, a training and one monitored
batch (the module's stack, tests/ui/conftest.py), checked in headless Chromium against what the
servers' APIs say."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.ui.conftest import MODEL, MONITORED, UiStack, prefect_client

CHAMPION = re.compile(r"@\s*champion")  # the MLflow UI writes "@&nbsp;champion"


def _monitor_run(ui: UiStack, batch: str = MONITORED[0]) -> Any:
    """The monitor-batch flow run of the module's stack that monitored `batch` (the delivered
    file's name holds it; from the Prefect API)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with prefect_client(ui.info) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["monitor-batch"]))
        )
    assert len(runs) == len(MONITORED), [(r.name, r.parameters) for r in runs]
    found = [r for r in runs if batch in Path(str(r.parameters.get("path", ""))).name]
    assert len(found) == 1, [(r.name, r.parameters) for r in runs]
    return found[0]


def _artifact(ui: UiStack, flow_run_id: Any, key: str) -> Any:
    """The artifact `key` of a flow run (from the Prefect API)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with prefect_client(ui.info) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=[key]),
            )
        )
    assert len(found) == 1, f"artifact {key} of flow run {flow_run_id}: {found}"
    return found[0]


def test_prefect_lists_the_monitor_run_and_shows_its_artifacts(ui: UiStack) -> None:
    run = _monitor_run(ui)
    prefect = ui.info.prefect_ui_url
    ui.open(f"{prefect}/runs", run.name, "monitor-batch", shot="prefect-runs")

    page = ui.open(f"{prefect}/runs/flow-run/{run.id}", run.name, shot="prefect-flow-run")
    page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    ui.wait_for(page, "drift-report", "Evidently data drift", shot="prefect-flow-run-artifacts")

    drift = _artifact(ui, run.id, "drift")
    ui.open(
        f"{prefect}/artifacts/artifact/{drift.id}",
        f"Drift of {MONITORED[0]} against",
        "Dataset drift:",
        shot="prefect-drift-artifact",
    )


def test_mlflow_model_page_shows_champion_on_the_registry_version(ui: UiStack) -> None:
    from mlflow import MlflowClient

    champion = MlflowClient(ui.info.mlflow_url).get_model_version_by_alias(MODEL, "champion")
    page = ui.open(
        f"{ui.info.mlflow_url}/#/models/{MODEL}",
        f"Version {champion.version}",
        shot="mlflow-registered-model",
    )
    rows = page.get_by_role("row")
    versions = {
        rows.nth(i).get_by_text(re.compile(r"^Version \d+$")).first.inner_text(): rows.nth(i)
        for i in range(rows.count())
        if rows.nth(i).get_by_text(re.compile(r"^Version \d+$")).count()
    }
    assert f"Version {champion.version}" in versions, list(versions)
    shows = [v for v, row in versions.items() if row.get_by_text(CHAMPION).count()]
    assert shows == [f"Version {champion.version}"], shows


def test_report_link_answers(ui: UiStack) -> None:
    """The drift-report link artifact opens in a browser: served over HTTP, answering 200 (issue
    17, item 2; a `file://` link does nothing when clicked in the Prefect UI)."""
    link_artifact = _artifact(ui, _monitor_run(ui).id, "drift-report")
    found = re.search(r"\]\((\S+)\)\s*$", str(link_artifact.data))
    assert found, f"no link in the drift-report artifact: {link_artifact.data!r}"
    link = found.group(1)
    assert urlsplit(link).scheme in {"http", "https"}, f"not an HTTP link: {link}"
    with urllib.request.urlopen(link, timeout=60) as response:
        assert response.status == 200, link
        assert response.read(), f"{link} answered an empty body"
    ui.open(link, shot="drift-report")
