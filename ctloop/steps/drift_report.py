"""Drift step: Evidently's report of a batch against the reference window, keyed by content and kept
under its own name (a link keeps opening the report it was made with), recorded on the run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ctloop.core import fingerprint, names
from ctloop.core.config import Project
from ctloop.io import data, files, registry, tracking
from ctloop.ml import drift
from ctloop.steps.validate import load_batches
from ctloop.steps.windows import Window

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctloop.ml.drift import DriftOutputs, DriftSummary


def drift_reference(project: Project, window: Window) -> tuple[str, ...]:
    """Training batches of the current champion (this window's when there is none yet)."""
    tracking.use_experiment(project)
    champion = registry.get_alias(project.params.promotion.model_name, registry.CHAMPION)
    tagged = champion.tags.get(tracking.SUITE_REFERENCE_TAG, "") if champion else ""
    available = set(data.list_batches(project.path("batches")))
    names = tuple(n for n in tagged.split(",") if n in available)
    return names or window.train


def run_drift(
    project: Project,
    reference: tuple[str, ...],
    current: str,
    run_id: str | None = None,
    compute: Callable[[Project, tuple[str, ...], str], DriftOutputs] | None = None,
    version: str | None = None,
) -> tuple[DriftSummary, dict[str, Path]]:
    """Drift of one batch against reference batches: HTML + JSON reports (the stored report of
    the same inputs when there is one: not computed again), logged to MLflow when `run_id` is
    given. `compute` replaces compute_drift (the flows pass their cached Prefect task).
    `version`: the registered model version the batch was compared for (the monitored
    champion, the trained version); paths["html"] is then that version's page of the report
    (version_page: titled with the model version), paths["report"] the report's own HTML."""
    stored = read_drift(project, reference, current)
    if stored is None:
        outputs = (compute or compute_drift)(project, reference, current)
        return outputs.summary, write_drift(project, outputs, reference, current, run_id, version)
    summary, paths = stored
    paths = version_page(project, reference, current, paths, version)
    write_latest(project, current, paths)
    if run_id is not None:
        record_drift(project, run_id, summary, paths)
    return summary, paths


def compute_drift(project: Project, reference: tuple[str, ...], current: str) -> DriftOutputs:
    """Evidently's drift of `current` against the reference batches (reads them; writes
    nothing): the same batches and settings always give the same outputs."""
    ref, cur = load_batches(project, reference), load_batches(project, [current])
    schema = data.infer_schema(ref, project.params.data)
    snapshot, summary = drift.compute_drift(
        ref,
        cur,
        schema,
        project.params.drift,
        project.params.seed,
        what=f"batch {current} against {', '.join(reference)}",
    )
    return drift.render_outputs(snapshot, summary, drift_title(reference, current))


def drift_title(reference: tuple[str, ...], current: str, model: str | None = None) -> str:
    """What a drift report compares, in words: its HTML title and header, its snapshot name;
    `model` (e.g. "ctloop-flights v3"): the model version it was compared for."""
    title = f"Data drift of batch {current} against the reference {period(reference)}"
    return f"{title}, model {model}" if model else title


PAGE_VERSION = re.compile(r"\.v(\d+)$")  # <report stem>.v<version>: a version's page


def page_path(html: Path, version: str) -> Path:
    """A model version's page of the report `html`: <report stem>.v<version>.html beside it."""
    return html.with_name(f"{html.stem}.v{version}.html")


def report_stem(html: Path) -> str:
    """The report's stem of its HTML or of a version's page of it (page_path)."""
    return PAGE_VERSION.sub("", html.stem)


def version_page(
    project: Project,
    reference: tuple[str, ...],
    current: str,
    paths: dict[str, Path],
    version: str | None,
) -> dict[str, Path]:
    """`paths` with "html" the page of the report titled with the model version as well
    (page_path; rendered once from the stored Evidently snapshot, never replaced: the report
    itself stays version-free, shared by every version compared against the same reference) and
    "report" the report's own HTML. `paths` unchanged when `version` is None or the report keeps
    no snapshot model (written before it was kept)."""
    html = paths["html"]
    model = drift.model_path(html.parent, report_stem(html))
    if version is None or not model.is_file():
        return paths
    page = page_path(html, version)
    if not page.is_file():
        name = project.params.promotion.model_name
        title = drift_title(reference, current, f"{name} v{version}")
        files.write_once(page, drift.html_from_model(model.read_text(encoding="utf-8"), title))
    return {**paths, "html": page, "report": html}


def period(batches: tuple[str, ...]) -> str:
    """`first..last` of a run of batches (the single name for one, "none" for none)."""
    return names.window_text(batches[0], batches[-1]) if batches else "none"


def drift_files(project: Project, reference: tuple[str, ...], current: str) -> list[Path]:
    """The batch files a drift computation reads: the reference ones, then the current one."""
    folder = project.path("batches")
    return [data.batch_path(folder, n) for n in (*reference, current)]


def drift_key(project: Project, reference: tuple[str, ...], current: str) -> str:
    """Fingerprint of a drift computation's inputs (both sides' bytes, settings, code)."""
    files = drift_files(project, reference, current)
    return fingerprint.drift_key(project.params, files[:-1], files[-1], current)


DRIFT_KEY_CHARS = 12  # of the inputs' fingerprint in a report's name


def drift_name(reference: tuple[str, ...], key: str) -> str:
    """A report's file stem: `ref-<first>..<last>-<key>` (key: drift_key's first 12 hex digits).

    The reference batches are readable in the name; the key makes it unambiguous (the same
    window with other batch bytes, drift settings or code is another report)."""
    ref = f"{reference[0]}..{reference[-1]}" if reference else "none"
    return f"ref-{ref}-{key[:DRIFT_KEY_CHARS]}"


def drift_location(
    project: Project, reference: tuple[str, ...], current: str, key: str | None = None
) -> tuple[Path, str]:
    """(folder, stem) of the report of `current` against `reference`:
    reports/drift/<current>/ref-<first>..<last>-<key>.{html,json,evidently.json,inputs}."""
    key = key or drift_key(project, reference, current)
    return project.path("reports") / "drift" / current, drift_name(reference, key)


def _drift_marker(folder: Path, stem: str) -> Path:
    """Written last, with the full key: the report of this name is complete."""
    return folder / f"{stem}.inputs"


def drift_reported(project: Project, reference: tuple[str, ...], current: str) -> bool:
    """Whether reports/drift/ already holds the complete report of exactly these inputs."""
    return read_drift(project, reference, current) is not None


def read_drift(
    project: Project, reference: tuple[str, ...], current: str
) -> tuple[DriftSummary, dict[str, Path]] | None:
    """The stored report of exactly these inputs (summary, paths), None when there is none yet:
    an unchanged re-run reuses it instead of computing it again."""
    key = drift_key(project, reference, current)
    folder, stem = drift_location(project, reference, current, key)
    try:
        recorded = _drift_marker(folder, stem).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    paths = drift.report_paths(folder, stem)
    if recorded != key or not all(p.is_file() for p in paths.values()):
        return None
    raw = json.loads(paths["summary"].read_text(encoding="utf-8"))
    return drift.DriftSummary.from_dict(raw), paths


def write_drift(
    project: Project,
    outputs: DriftOutputs,
    reference: tuple[str, ...],
    current: str,
    run_id: str | None = None,
    version: str | None = None,
) -> dict[str, Path]:
    """The report of these inputs under reports/drift/<current>/ (written once, never replaced:
    see drift_location), the convenience copies reports/drift/drift-<current>.{html,json} (the
    latest report of the batch, replaced each time: nothing links to them), and, when `run_id`
    is given, on the MLflow run with the tag `ctloop.drift_report` naming the report's file.
    `version`: see run_drift (paths["html"] is that version's page)."""
    for empty in outputs.summary.empty_columns:
        print(f"ctloop: warning: drift of {current}: feature {empty.describe()}: not compared")
    key = drift_key(project, reference, current)
    folder, stem = drift_location(project, reference, current, key)
    paths = drift.write_outputs(outputs, folder, stem, files.write_once)
    marker = _drift_marker(folder, stem)
    if not marker.exists():
        files.write_text_report(marker, key)
    paths = version_page(project, reference, current, paths, version)
    write_latest(project, current, paths)
    if run_id is not None:
        record_drift(project, run_id, outputs.summary, paths)
    return paths


def write_latest(project: Project, current: str, paths: dict[str, Path]) -> None:
    """reports/drift/drift-<current>.{html,json}: copies of the batch's latest report, replaced
    each time (a convenience to open by name; no link or record points to them)."""
    latest = project.path("reports") / "drift"
    latest.mkdir(parents=True, exist_ok=True)
    files.copy_atomic(paths["html"], latest / f"drift-{current}.html")
    files.copy_atomic(paths["summary"], latest / f"drift-{current}.json")


def record_drift(
    project: Project, run_id: str, summary: DriftSummary, paths: dict[str, Path]
) -> None:
    """The report on the MLflow run: its HTML and summary as artifacts under drift/, its file as
    the tag `ctloop.drift_report` (relative to the project), the drifted share as metrics."""
    tracking.use_experiment(project)
    tracking.log_artifact(run_id, paths["html"], "drift")
    tracking.log_artifact(run_id, paths["summary"], "drift")
    tracking.set_tags(run_id, {tracking.DRIFT_REPORT_TAG: project_relative(project, paths["html"])})
    tracking.log_metrics(
        run_id,
        {"drifted_share": summary.drifted_share, "dataset_drift": float(summary.dataset_drift)},
        "drift_",
    )


def project_relative(project: Project, path: Path) -> str:
    """`path` relative to the project root when inside it (portable in records), else absolute."""
    resolved, root = path.resolve(), project.root.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)


def mlflow_ui_url(project: Project) -> str:
    """Base URL of the MLflow UI: MLFLOW_TRACKING_URI when it is a server (http/https), else the
    configured stack's (`ctloop up`), running or not."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    cfg = project.params.stack
    return cfg.url(cfg.mlflow_port)


# MLflow 3.17's UI shows experiments in its GenAI view (traces, usage) unless the page asks for
# the model-training one: its sidebar toggle is per browser and starts on GenAI, and the
# experiment's `mlflow.experimentKind` tag does not choose it. Every MLflow link ctloop gives
# carries this query.
MLFLOW_TRAINING_VIEW = "workflowType=machine_learning"


def artifact_url(base: str, experiment_id: str, run_id: str, artifact: str) -> str:
    """The MLflow UI's page of one artifact of one run (it shows an HTML report inline, in an
    iframe): <base>/#/experiments/<exp>/runs/<run>/artifacts/<artifact path>?workflowType=
    machine_learning (MLFLOW_TRAINING_VIEW)."""
    path = quote(artifact, safe="/")
    page = f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
    return f"{page}?{MLFLOW_TRAINING_VIEW}"


def runs_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's runs table of an experiment (a run's page when `run_id` is given), in the
    model-training view (MLFLOW_TRAINING_VIEW): <base>/#/experiments/<exp>/runs[/<run>]?..."""
    tail = "" if run_id is None else f"/{run_id}"
    return f"{base}/#/experiments/{experiment_id}/runs{tail}?{MLFLOW_TRAINING_VIEW}"


def run_url(project: Project, run_id: str) -> str:
    """http URL of an MLflow run's page in the MLflow UI (runs_url; the run's own experiment)."""
    tracking.use_experiment(project)
    return runs_url(mlflow_ui_url(project), tracking.run_experiment(run_id), run_id)


def report_url(project: Project, run_id: str, html: Path) -> str:
    """http URL of the drift report `html` as logged on the MLflow run `run_id` (record_drift:
    drift/<file name>): the exact report of that run, never a "latest" copy. The run's own
    experiment (training or monitoring) is in the URL."""
    tracking.use_experiment(project)
    experiment = tracking.run_experiment(run_id)
    return artifact_url(mlflow_ui_url(project), experiment, run_id, f"drift/{html.name}")
