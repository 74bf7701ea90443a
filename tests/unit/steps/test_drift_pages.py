"""A drift report's page per model version (drift_report.version_page) and its http URL on the
MLflow run: written once from the stored snapshot, titled with the batch, the reference and
the version; the report itself untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import DriftConfig, load_project
from ctloop.io import files
from ctloop.io.data import Schema
from ctloop.ml import drift
from ctloop.steps import drift_report

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = Schema(target="y", task="classification", numeric=("a",), categorical=(), time_column=None)


def _frame(seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(shift, 1, 300), "y": rng.integers(0, 2, 300)})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A keyed report (html, summary, snapshot, model.json) of 2013-07 against 2013-01..06."""
    snapshot, summary = drift.compute_drift(
        _frame(1, 0.0), _frame(2, 2.0), SCHEMA, DriftConfig(), seed=0
    )
    title = drift_report.drift_title(("2013-01", "2013-06"), "2013-07")
    outputs = drift.render_outputs(snapshot, summary, title)
    folder = tmp_path_factory.mktemp("drift") / "2013-07"
    return drift.write_outputs(
        outputs, folder, "ref-2013-01..2013-06-0123456789ab", files.write_once
    )


def test_title_names_batch_reference_and_model_version() -> None:
    title = drift_report.drift_title(("2013-01", "2013-06"), "2013-07", "flights v3")
    assert title == (
        "Data drift of batch 2013-07 against the reference 2013-01..2013-06, model flights v3"
    )


def test_a_versions_page_is_named_after_the_report_and_leads_back_to_it() -> None:
    html = Path("reports/drift/2013-07/ref-2013-01..2013-06-0123456789ab.html")
    page = drift_report.page_path(html, "12")
    assert page.name == "ref-2013-01..2013-06-0123456789ab.v12.html"
    assert drift_report.report_stem(page) == drift_report.report_stem(html) == html.stem


def test_version_page_is_written_once_titled_with_the_version(report: dict[str, Path]) -> None:
    project = load_project(ROOT / "params.yaml")
    name = project.params.promotion.model_name
    reference = ("2013-01", "2013-02", "2013-06")
    before = {k: p.read_bytes() for k, p in report.items()}

    paths = drift_report.version_page(project, reference, "2013-07", report, "3")

    page = paths["html"]
    assert page == drift_report.page_path(report["html"], "3") and paths["report"] == report["html"]
    assert paths["summary"] == report["summary"]
    text = page.read_text(encoding="utf-8")
    assert (
        f"<title>Data drift of batch 2013-07 against the reference 2013-01..2013-06, "
        f"model {name} v3</title>"
    ) in text
    written = page.read_bytes()
    again = drift_report.version_page(project, reference, "2013-07", report, "3")
    assert again == paths and page.read_bytes() == written  # not rendered again
    other = drift_report.version_page(project, reference, "2013-07", report, "4")
    assert other["html"].name.endswith(".v4.html") and f"{name} v4" in other["html"].read_text()
    assert {k: p.read_bytes() for k, p in report.items()} == before  # the report untouched
    assert drift_report.version_page(project, reference, "2013-07", report, None) == report


def test_a_report_without_its_snapshot_model_keeps_its_own_page(tmp_path: Path) -> None:
    project = load_project(ROOT / "params.yaml")
    html = tmp_path / "ref-a..b-0123456789ab.html"
    html.write_text("<html></html>")
    paths = {"html": html, "summary": html.with_suffix(".json")}
    assert drift_report.version_page(project, ("a", "b"), "c", paths, "3") == paths
    assert sorted(p.name for p in tmp_path.iterdir()) == [html.name]
