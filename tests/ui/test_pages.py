"""What a person sees in the Prefect, MLflow and Evidently UIs after `ctloop up`, a training and
two monitored batches (`ctloop replay`; the module's stack, tests/ui/conftest.py), checked in
headless Chromium against what the servers' APIs say."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.ui.conftest import MODEL, MONITORED, UiStack, prefect_client

CHAMPION = re.compile(r"@\s*champion")  # the MLflow UI writes "@&nbsp;champion"
CHALLENGER = re.compile(r"@\s*challenger")


REPORT_FRAME = "iframe"  # the MLflow UI shows an HTML artifact in an iframe


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
    assert run.name == f"monitor {MONITORED[0]}"
    prefect = ui.info.prefect_ui_url
    ui.open(f"{prefect}/runs", f"monitor {MONITORED[0]}", "monitor-batch", shot="prefect-runs")

    page = ui.open(f"{prefect}/runs/flow-run/{run.id}", run.name, shot="prefect-flow-run")
    page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    ui.wait_for(
        page,
        "drift-report",
        "Evidently data drift",
        shot="prefect-flow-run-artifacts",
        doc="prefect-flow-run",
    )

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
        CHAMPION,
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
    # a promoted version holds @champion only: challenger was moved off it
    row = versions[f"Version {champion.version}"]
    assert not row.get_by_text(CHALLENGER).count(), row.inner_text()
    assert "challenger" not in champion.aliases, champion.aliases
    row.scroll_into_view_if_needed()  # the versions table, below the model's tags
    ui.wait_for(
        page, CHAMPION, shot="mlflow-registered-model-versions", doc="mlflow-registered-model"
    )


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
    # the page shows the report itself: its header names the batch, reference and version
    page = ui.open(link, shot="drift-report-page")
    title = re.compile(
        rf"Data drift of batch {MONITORED[0]} against the reference \S+, model {MODEL} v\d+"
    )
    ui.wait_for(page, title, "Dataset Drift", shot="drift-report", frame=REPORT_FRAME)


def test_mlflow_experiment_link_opens_on_its_training_runs(ui: UiStack) -> None:
    """The experiment's page as ctloop links it opens on the runs table (MLflow's model-training
    view, not its GenAI traces overview) and shows the training run by its name."""
    from mlflow import MlflowClient

    from ctloop.steps import drift_report

    client = MlflowClient(ui.info.mlflow_url)
    experiment = client.get_experiment_by_name(ui.project.params.tracking.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    named = [r for r in runs if re.match(r"v\d+ train ", r.info.run_name or "")]
    assert named, [r.info.run_name for r in runs]
    page = ui.open(
        drift_report.runs_url(ui.info.mlflow_url, experiment.experiment_id),
        named[0].info.run_name,
        "Run Name",
        shot="mlflow-experiment",
    )
    assert "/overview" not in page.url and "/traces" not in page.url, page.url
    assert not page.get_by_text("Detect Issues").count()  # the GenAI overview's button


def test_dashboard_plots_the_monitored_batches(ui: UiStack) -> None:
    """The dashboard's drift panel plots a point per monitored batch, at the batches' dates."""
    from ctloop.steps import dashboard

    url = dashboard.project_url(ui.project, MODEL)
    assert url.startswith(ui.info.evidently_url), (url, ui.info.evidently_url)
    dates = [f"{month}-01 00:00:00" for month in MONITORED]
    page = ui.open(url, "Dataset drift share", *dates, shot="evidently-dashboard")
    panel = page.locator(".MuiCard-root").filter(has_text="Dataset drift share")
    assert panel.count() == 1
    ticks = panel.locator(".MuiChartsAxis-directionX .MuiChartsAxis-tickLabel").all_text_contents()
    assert ticks == dates, ticks
    for legend in ("drifted share", "dataset drift from"):
        assert panel.get_by_text(legend, exact=True).count() == 1, legend
    marks = panel.locator("circle.MuiMarkElement-root")
    assert marks.count() == 2 * len(MONITORED), marks.count()  # two series, a point per batch
    ui.wait_for(page, "Champion's roc_auc", shot="evidently-dashboard", doc="evidently-dashboard")


def test_replay_prints_each_month_and_the_table(ui: UiStack) -> None:
    out = ui.replay
    for month in MONITORED:
        assert re.search(rf"^  {month} \| v\d+", out, re.MULTILINE), out
        assert re.search(rf"^\| {month} \| v\d+", out, re.MULTILINE), out
    assert "| month | champion |" in out, out
