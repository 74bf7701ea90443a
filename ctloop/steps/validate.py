"""Validation step: the expectation suite built from the reference batches, each batch validated
(Great Expectations), failures quarantined, results written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ctloop.core.config import Project
from ctloop.io import data, files
from ctloop.ml import validation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ctloop.ml.validation import ValidationReport


def load_batches(project: Project, names: list[str] | tuple[str, ...]) -> pd.DataFrame:
    return data.read_batches(project.path("batches"), list(names))


def build_expectations(project: Project, reference: list[str] | tuple[str, ...]) -> Path:
    """Build the baseline suite from reference batches and save it in the file-backed context."""
    frame = load_batches(project, reference)
    schema = data.infer_schema(frame, project.params.data)
    suite = validation.build_suite(
        frame,
        schema,
        project.params.validation,
        rows_per_batch=reference_batch_rows(project, frame, reference),
    )
    return validation.save_suite(project.path("expectations"), suite)


def reference_batch_rows(
    project: Project, frame: pd.DataFrame, reference: list[str] | tuple[str, ...]
) -> float:
    """Rows per batch the row_count rule is sized on: the reference's mean with a time column
    (periods hold what they hold); without one `data.rows_per_batch`, the size every block is
    cut to (`data.BlockRule`), whatever the reference's own remainder."""
    cfg = project.params.data
    return float(cfg.rows_per_batch) if cfg.time_column is None else len(frame) / len(reference)


def run_validation(
    project: Project,
    names: list[str],
    results: str = "validation.json",
    validate: Callable[[Project, list[str]], list[ValidationReport]] | None = None,
) -> list[ValidationReport]:
    """Validate each batch; move critical failures to quarantine; save all results as JSON
    (`results`, under the reports folder). `validate` replaces validate_many (the flow passes
    its reader of cached reports)."""
    reports = (validate or validate_many)(project, names)
    record_validation(project, reports, results)
    return reports


def validate_many(project: Project, names: Sequence[str]) -> list[ValidationReport]:
    """The suite's verdict on each batch, in order (reads the batch files and the suite; writes
    nothing). One Great Expectations context, suite and plan for all of them
    (`validation.validate_batches`): 365 daily batches cost little more than 12 monthly ones."""
    folder = project.path("batches")

    def frames() -> Iterator[validation.BatchFrame]:
        for name in names:
            path = data.batch_path(folder, name)
            yield validation.BatchFrame(name, str(path), pd.read_parquet(path))

    return validation.validate_batches(
        frames(), project.path("expectations"), project.params.validation.suite_name
    )


def record_validation(
    project: Project, reports: list[ValidationReport], results: str = "validation.json"
) -> None:
    """Move the batches that failed a critical rule to quarantine; save every result as JSON."""
    for report in reports:
        if not report.success:
            path = data.batch_path(project.path("batches"), report.batch)
            validation.quarantine_batch(
                path, report, project.path("quarantine"), files.write_text_atomic
            )
    validation.save_results(reports, project.path("reports") / results, files.write_text_atomic)


def suite_file(project: Project) -> Path:
    """The expectation suite's JSON (what a validation reads besides the batch)."""
    return validation.suite_file(project.path("expectations"), project.params.validation.suite_name)


def suite_ready(project: Project) -> bool:
    return validation.suite_exists(
        project.path("expectations"), project.params.validation.suite_name
    )
