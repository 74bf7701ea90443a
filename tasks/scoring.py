"""Thin Prefect wrappers for batch scoring (flows/predict_batch.py): names, retries on transient
I/O, prints and the `predictions` artifact. The work is in ctloop/steps/serving.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.core.config import Project
from ctloop.steps import serving
from tasks.training import IO

if TYPE_CHECKING:
    import pandas as pd


@task(name="read-input", **IO)
def read_input(path: Path) -> pd.DataFrame:
    frame = serving.read_input(path)
    print(f"{path}: {len(frame)} row(s), {len(frame.columns)} column(s)")
    return frame


@task(name="resolve-champion", **IO)
def resolve_champion(project: Project) -> serving.ChampionRef:
    ref = serving.resolve_champion(project)
    print(f"champion: {ref.label} ({len(ref.columns)} input column(s) in its signature)")
    return ref


@task(name="check-signature", cache_policy=NO_CACHE)
def check_signature(
    frame: pd.DataFrame, ref: serving.ChampionRef, source: Path
) -> serving.CheckedInput:
    """Fail before any model is loaded when the input does not match the signature."""
    checked = serving.validate_input(frame, ref.columns, str(source), ref.label)
    if checked.ignored:
        print(f"ignored by the model (kept in the output): {', '.join(checked.ignored)}")
    return checked


@task(name="check-contract", cache_policy=NO_CACHE)
def check_contract(
    project: Project, checked: serving.CheckedInput, ref: serving.ChampionRef, source: Path
) -> serving.CheckedInput:
    """Fail before any model is loaded when the input breaks a critical rule of the data
    contract (the suite ingestion validates with); report what else its rows broke."""
    checked = serving.check_contract(project, checked, str(source), ref.label)
    if checked.contract is not None:
        for line in checked.contract.lines():
            print(f"data contract: {line}")
    return checked


@task(name="load-champion", **IO)
def load_champion(project: Project, ref: serving.ChampionRef) -> serving.ServingModel:
    model = serving.load_champion(project, ref)
    for note in model.uncertainty.notes:
        print(f"warning: {note}")
    return model


@task(name="score-and-write", cache_policy=NO_CACHE)
def score_and_write(
    project: Project,
    model: serving.ServingModel,
    frame: pd.DataFrame,
    checked: serving.CheckedInput,
    source: Path,
    output: Path | None,
) -> serving.PredictionReport:
    report = serving.finish(project, model, frame, checked, source, output)
    print("\n".join(report.lines()))
    create_markdown_artifact(
        report_markdown(report), key="predictions", description="Batch scores of the champion"
    )
    return report


def report_markdown(report: serving.PredictionReport) -> str:
    """Rows, version and score summary as a Markdown table."""
    rows = [
        ("rows", str(report.rows)),
        ("model", f"{report.model} v{report.version}"),
        ("input", f"`{report.input}`"),
        ("output", f"`{report.output}`"),
        *((k, f"{v:.4f}") for k, v in report.summary.items()),
    ]
    lines = [f"### Predictions of {report.model} v{report.version}", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", *(f"- warning: {w}" for w in report.warnings)]
    if report.contract:
        lines += [
            "",
            f"#### Data contract: {report.flagged} row(s) flagged in `{serving.FLAGS}`",
            "",
            *(f"- {_md(line)}" for line in report.contract),
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
