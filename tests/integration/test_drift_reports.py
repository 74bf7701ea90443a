"""Drift reports are kept per batch and inputs: a second report of the same batch (another
reference, as after a retrain) never replaces the first, and every link and record keeps opening
the report it was made with. Real Prefect (test server), MLflow (SQLite) and Evidently."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import flow, get_client

from ctloop.core.config import Project
from ctloop.io import tracking
from ctloop.steps import ingest
from tasks import training as t

BATCH = "2013-04"
FIRST_REF = ("2013-01", "2013-02")  # the champion's training batches at monitoring time
SECOND_REF = ("2013-01", "2013-02", "2013-03")  # after a retrain on a longer window


@flow(name="drift-twice")
def _report(
    project: Project, reference: tuple[str, ...], run_id: str, version: str
) -> dict[str, Path]:
    _, paths = t.report_drift(project, reference, BATCH, run_id, version)
    return paths


def _link_artifacts(flow_run_ids: list[Any]) -> dict[Any, str]:
    """flow run id -> the link of its `drift-report` artifact (stored as `[text](link)`)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-report"])),
            limit=50,
        )
    links = {a.flow_run_id: re.fullmatch(r"\[.*\]\((.+)\)", str(a.data)) for a in found}
    return {k: m.group(1) for k, m in links.items() if k in flow_run_ids and m}


def _bytes(paths: dict[str, Path]) -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in paths.items()}


def test_two_reports_of_one_batch_both_stay_and_each_record_opens_its_own(
    small_project: Project,
) -> None:
    p = small_project
    ingest.run_ingest(p)
    exp = tracking.use_experiment(p)
    runs = [tracking.start_parent_run(exp, f"monitor-{BATCH}-v{v}", {}) for v in (1, 2)]

    state_one = _report(p, FIRST_REF, runs[0], "1", return_state=True)
    first = state_one.result()
    kept = _bytes(first)
    state_two = _report(p, SECOND_REF, runs[1], "2", return_state=True)
    second = state_two.result()

    folder = p.path("reports") / "drift" / BATCH
    assert first["html"].parent == second["html"].parent == folder
    assert first["html"].name.startswith("ref-2013-01..2013-02-")
    assert second["html"].name.startswith("ref-2013-01..2013-03-")
    # what the records name is the model version's page of the report, beside the report
    assert first["html"].name == first["report"].stem + ".v1.html"
    assert second["html"].name == second["report"].stem + ".v2.html"
    assert _bytes(first) == kept  # the second report did not touch the first
    assert first["summary"].read_bytes() != second["summary"].read_bytes()  # own content
    rows = [json.loads(x["summary"].read_text())["reference_rows"] for x in (first, second)]
    assert rows[0] < rows[1]  # February vs February and March behind each

    # the Prefect link artifacts, the MLflow tags and artifacts each name their own report
    flow_runs = [s.state_details.flow_run_id for s in (state_one, state_two)]
    links = _link_artifacts(flow_runs)
    experiment = tracking.use_experiment(p)
    for flow_run, run_id, paths in zip(flow_runs, runs, (first, second), strict=True):
        link = urlparse(links[flow_run])  # the MLflow UI's page of the run's own artifact
        assert link.scheme == "http" and link.netloc == f"127.0.0.1:{p.params.stack.mlflow_port}"
        page = f"/experiments/{experiment}/runs/{run_id}/artifacts/drift/{paths['html'].name}"
        assert unquote(link.fragment) == f"{page}?workflowType=machine_learning"
    # the report names its data: HTML title and header give the batch and the reference, the
    # version's page the model version too
    title = f"Data drift of batch {BATCH} against the reference 2013-01..2013-02"
    html = first["report"].read_text(encoding="utf-8")
    assert f"<title>{title}</title>" in html and html.count(title) >= 2
    page = first["html"].read_text(encoding="utf-8")
    titled = f"{title}, model {p.params.promotion.model_name} v1"
    assert f"<title>{titled}</title>" in page and page.count(titled) >= 2
    for run_id, paths in zip(runs, (first, second), strict=True):
        tag = tracking.run_tags(run_id)[tracking.DRIFT_REPORT_TAG]
        assert (p.root / tag).resolve() == paths["html"].resolve()
        logged = tracking.read_json_artifact(run_id, f"drift/{paths['summary'].name}")
        assert logged == json.loads(paths["summary"].read_text())
    # the convenience copy is the latest report; no record points to it
    latest = p.path("reports") / "drift" / f"drift-{BATCH}.json"
    assert latest.read_bytes() == second["summary"].read_bytes()

    # an unchanged re-run reuses the stored report: nothing recomputed, no byte changed
    before = {x.name: x.read_bytes() for x in folder.iterdir()}
    assert _report(p, FIRST_REF, runs[0], "1") == first
    assert {x.name: x.read_bytes() for x in folder.iterdir()} == before
    stems = {x["report"].stem for x in (first, second)}
    names = [x.name for x in folder.iterdir()]  # no temporary files left behind
    assert all(any(n.startswith(f"{stem}.") for stem in stems) for n in names), names
    assert len(before) == 12  # html, json, evidently.json, model.json, inputs, v<N>.html each
    # another version compared against the same reference: its own page, nothing else written
    third = _report(p, FIRST_REF, runs[1], "3")
    assert third["report"] == first["report"] and third["html"].name.endswith(".v3.html")
    after = {x.name: x.read_bytes() for x in folder.iterdir()}
    assert after.keys() - before.keys() == {third["html"].name}
    assert all(after[name] == data for name, data in before.items())
