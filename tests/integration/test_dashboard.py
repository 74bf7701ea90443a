"""The monitoring dashboard on a real Evidently workspace: a monitored batch adds its snapshot
(tagged with the batch, model version and trigger; ctloop's values as series the UI's storage
reads), the Prefect link artifact opens its page over HTTP, and adding it again is a no-op."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pandas as pd
from evidently.legacy.utils.sync import async_to_sync
from evidently.ui.service.base import SeriesFilter
from evidently.ui.service.storage.local.base import InMemoryDataStorage
from evidently.ui.workspace import Workspace

from ctloop.core import policy
from ctloop.core.config import Project
from ctloop.io import dashboard as store
from ctloop.ml.drift import DriftSummary
from ctloop.steps import dashboard, monitoring
from flows.monitor_batch import monitor_batch
from tests.integration.conftest import latest_artifact
from tests.integration.test_ct_flows import (  # noqa: F401 (fixtures)
    _deliver,
    ct_project,
    ct_source,
    ct_trained,
)


def test_monitored_batch_adds_one_tagged_snapshot_and_a_re_add_finds_it(
    ct_project: Project,  # noqa: F811
    ct_source: pd.DataFrame,  # noqa: F811
) -> None:
    p = ct_project
    landed = _deliver(p, ct_source, "2013-04")
    [result] = monitor_batch(path=landed.name, params_path=str(p.root / "params.yaml"))
    assert result.status == "monitored"

    folder = p.path("dashboard")
    ws = Workspace(str(folder))
    [project] = ws.list_projects()
    assert project.name == "ctloop-test" and project.id == dashboard.project_id("ctloop-test")
    [sid] = ws.list_runs(project.id)
    snap = ws.get_run(project.id, sid)
    assert snap is not None
    assert {"batch:2013-04", "model:v1", "labelled"} <= set(snap.tags)
    assert any(t.startswith("trigger:") for t in snap.tags)
    assert (
        snap.metadata["model_version"] == "1" and snap.metadata["reference"] == "2013-01..2013-02"
    )
    assert snap.name.startswith("monitor 2013-04 · ctloop-test v1")
    assert snap.timestamp.strftime("%Y-%m") == "2013-04"
    kinds = {r.metric_value_location.metric.params["type"] for r in snap.metric_results.values()}
    assert any(k.endswith(":ValueDrift") for k in kinds)  # Evidently's drift, reused
    assert any("RocAuc" in k for k in kinds)  # Evidently's quality (labels are there)

    # the UI's own storage reads ctloop's values as series (what the panels plot)
    storage = InMemoryDataStorage(str(folder))
    wanted = ["drifted_share", "rows", "realized_roc_auc", "estimated_roc_auc", "new_champion"]
    filters = [
        SeriesFilter(tags=[], metadata={}, metric=store.VALUE_METRIC, metric_labels={"name": n})
        for n in wanted
    ]
    series = async_to_sync(storage.get_data_series(project.id, filters, None, None))
    got = {s.params["name"]: s.values for s in series.series}
    assert set(got) == set(wanted), got
    assert got["rows"] == [1200.0] and got["new_champion"] == [0.0]  # the first champion: no marker
    assert 0.0 <= got["drifted_share"][0] <= 1.0
    assert len(ws.get_dashboard(project.id).panels) == len(dashboard.panels("roc_auc"))

    # the link artifact opens the snapshot's page in the Evidently UI (http, this snapshot)
    link = latest_artifact("dashboard-2013-04")
    url = str(link.data).split("(", 1)[1].rstrip(")")
    parsed = urlparse(url)
    assert parsed.scheme == "http" and parsed.netloc.endswith(f":{p.params.stack.evidently_port}")
    assert parsed.path == f"/projects/{project.id}/reports/{sid}"

    # the same batch, version and content again: found, not written a second time
    before = {f.name: f.read_bytes() for f in folder.rglob("*.json")}
    champion = monitoring.current_champion(p)
    assert champion is not None
    drift = DriftSummary.from_dict(
        json.loads((p.path("reports") / "drift" / "drift-2013-04.json").read_text())
    )
    signals = monitoring.signals(p, "2013-04", champion, drift, None)
    verdict = policy.assess(signals, p.params.continuous, p.params.greater_is_better)
    html = next((p.path("reports") / "drift" / "2013-04").glob("*.html"))
    again = dashboard.add_batch(p, "2013-04", champion, signals, verdict, drift, html)
    assert again is not None and not again.written and again.url == url
    assert len(ws.list_runs(project.id)) == 1
    assert {f.name: f.read_bytes() for f in folder.rglob("*.json")} == before
