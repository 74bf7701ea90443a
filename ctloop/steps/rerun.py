"""Unchanged runs: the fingerprint of a training's inputs (data, window, params, code), the finished
training with the same fingerprint, and the end-of-run summary recorded on the run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ctloop.core.config import Project
from ctloop.core.fingerprint import training_fingerprint
from ctloop.io import registry, tracking
from ctloop.steps.drift_report import page_path
from ctloop.steps.fit import TrainingData
from ctloop.steps.summary import TrainingSummary
from ctloop.steps.windows import Window

if TYPE_CHECKING:
    from ctloop.ml.drift import DriftSummary

SUMMARY_ARTIFACT = "summary.json"


def run_fingerprint(
    project: Project, data_version: str, window: Window, train: TrainingData, holdout: TrainingData
) -> str:
    """What a training run's outcome depends on: data version, window, rows, params, code
    (ctloop/core/fingerprint.py)."""
    return training_fingerprint(
        project.params, data_version, window, (train.X, train.y), (holdout.X, holdout.y)
    )


@dataclass(frozen=True)
class PreviousTraining:
    """A finished training run with the same fingerprint, its gated version and summary."""

    run_id: str
    version: str
    summary: TrainingSummary


def find_unchanged(project: Project, fingerprint: str) -> PreviousTraining | None:
    """The newest FINISHED training run tagged with `fingerprint` whose version is READY, gated
    and not interrupted, with its summary; None when there is none (then train)."""
    exp = tracking.use_experiment(project)
    name = project.params.promotion.model_name
    for run_id in tracking.finished_runs_tagged(exp, tracking.FINGERPRINT_TAG, fingerprint):
        version = registry.gated_version_of_run(name, run_id)
        raw = tracking.read_json_artifact(run_id, SUMMARY_ARTIFACT) if version else None
        if version is not None and raw is not None:
            return PreviousTraining(run_id, str(version.version), TrainingSummary.from_dict(raw))
    return None


def record_summary(project: Project, run_id: str, summary: TrainingSummary) -> None:
    """Keep the run's summary on the run (an unchanged re-run reports it instead of training)."""
    tracking.use_experiment(project)
    tracking.log_json(run_id, summary.to_dict(), SUMMARY_ARTIFACT)


def unchanged_summary(
    project: Project,
    previous: PreviousTraining,
    drift: DriftSummary,
    drift_report: Path,
    prefect_api_url: str | None,
) -> TrainingSummary:
    """The summary of a re-run that found nothing changed: the previous run's figures, where its
    version stands now, and the drift of the newest batch against the current champion. The
    report named is the version's page of `drift_report` when that version has one (the same
    report the previous run linked), else the report itself; its URL is the previous run's only
    when both name the same file (a URL never points at another report)."""
    name, version = project.params.promotion.model_name, previous.version
    champion = registry.get_alias(name, registry.CHAMPION)
    where = (
        f"v{version} is @champion"
        if champion is not None and str(champion.version) == version
        else f"champion is {'v' + str(champion.version) if champion else 'none'}; "
        f"v{version}'s gate: {previous.summary.promotion_reason}"
    )
    page = page_path(drift_report, version)
    report = page if page.is_file() else drift_report
    url = previous.summary.drift_report_url if report == previous.summary.drift_report else None
    return replace(
        previous.summary,
        model_version=version,
        promoted=False,
        unchanged=True,
        promotion_reason=f"same data, params and code as v{version} "
        f"(run {previous.run_id}); {where}",
        dataset_drift=drift.dataset_drift,
        drifted_columns=tuple(drift.drifted_columns),
        drift_report=report,
        drift_report_url=url,
        prefect_api_url=prefect_api_url,
    )
