"""Evidently drift report of a new batch against the reference (training) data.

Pure layer: no Prefect. Evidently is imported inside the functions (it is heavy to import).
Evidently 0.7 has no dataset-drift boolean: the per-column verdicts come from the snapshot
(the ValueDrift test of each column) and the dataset verdict is ours: n_drifted / n >= drift_share.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ctloop.ml.preconditions import usable_count

if TYPE_CHECKING:
    from evidently import DataDefinition
    from evidently.presets import DataDriftPreset

    from ctloop.core.config import DriftConfig
    from ctloop.core.schema import Schema

log = logging.getLogger(__name__)
# publishes text at a path unless a file is there (False then): ctloop.io.files.write_once
WriteOnce = Callable[[Path, str], bool]

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"
_DRIFT_TEST_ID = "drift"
# Evidently stattests whose score is a distance (drift when score >= threshold); every other
# registered tabular stattest returns a p-value (drift when score < threshold). Only a fallback:
# the verdict normally comes from Evidently's own per-column test (boundaries differ, e.g. ks <=).
_DISTANCE_METHODS = frozenset({"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"})


class DriftError(ValueError):
    """The drift of a batch cannot be computed (a column missing, no feature with values on
    both sides, or Evidently failed); the message names the batches, the columns and what to do."""


EMPTY_SIDES = ("reference", "current", "both")  # EmptyColumn.side


@dataclass(frozen=True)
class EmptyColumn:
    """A feature with no usable value (all null, or only ±inf) on one side or both: reported as
    such and left out of the comparison (Evidently cannot test an empty column)."""

    column: str
    side: str  # one of EMPTY_SIDES

    def describe(self) -> str:
        where = "on either side" if self.side == "both" else f"in the {self.side} data"
        return f"'{self.column}' (no value {where})"


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column: Evidently stattest, raw score, threshold and verdict."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "method": self.method,
            "score": float(self.score),
            "threshold": float(self.threshold),
            "drifted": bool(self.drifted),
        }


@dataclass(frozen=True)
class DriftSummary:
    """Dataset-level drift verdict plus one ColumnDrift per compared feature."""

    dataset_drift: bool
    drift_share: float
    drifted_share: float
    n_drifted: int
    n_columns: int
    columns: tuple[ColumnDrift, ...]
    reference_rows: int
    current_rows: int
    empty_columns: tuple[EmptyColumn, ...] = ()  # features left out: no value on a side

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe types only (bool, int, float, str, list, dict)."""
        return {
            "dataset_drift": bool(self.dataset_drift),
            "drift_share": float(self.drift_share),
            "drifted_share": float(self.drifted_share),
            "n_drifted": int(self.n_drifted),
            "n_columns": int(self.n_columns),
            "drifted_columns": self.drifted_columns,
            "reference_rows": int(self.reference_rows),
            "current_rows": int(self.current_rows),
            "columns": [c.to_dict() for c in self.columns],
            "empty_columns": {e.column: e.side for e in self.empty_columns},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DriftSummary:
        """Inverse of to_dict (e.g. to read back a saved <name>.json)."""
        return cls(
            dataset_drift=bool(raw["dataset_drift"]),
            drift_share=float(raw["drift_share"]),
            drifted_share=float(raw["drifted_share"]),
            n_drifted=int(raw["n_drifted"]),
            n_columns=int(raw["n_columns"]),
            columns=tuple(ColumnDrift(**c) for c in raw["columns"]),
            reference_rows=int(raw["reference_rows"]),
            current_rows=int(raw["current_rows"]),
            empty_columns=tuple(
                EmptyColumn(c, side) for c, side in raw.get("empty_columns", {}).items()
            ),
        )


# --- computing -------------------------------------------------------------------------


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: Schema,
    cfg: DriftConfig,
    seed: int,
    what: str = "current data against the reference",
) -> tuple[Any, DriftSummary]:
    """Run Evidently's DataDriftPreset on the schema's features; returns (snapshot, summary).

    A feature without any usable value on a side (after sampling) is not compared: the summary
    lists it in `empty_columns`. `what` names the comparison in errors (e.g. "batch 2013-06
    against 2013-01, 2013-02"). Raises DriftError when a feature column is missing, when no
    feature has values on both sides, or when Evidently fails (its message after ours)."""
    from evidently import Dataset, Report

    if not schema.features:
        raise DriftError("drift: the schema has no feature columns to compare")
    ref = _features_frame(reference, schema.features, "reference", cfg.sample_rows, seed)
    cur = _features_frame(current, schema.features, "current", cfg.sample_rows, seed)
    empty = tuple(
        EmptyColumn(c, side)
        for c in schema.features
        if (side := _empty_side(usable_count(ref[c]) == 0, usable_count(cur[c]) == 0))
    )
    skipped = {e.column for e in empty}
    features = [c for c in schema.features if c not in skipped]
    if not features:
        raise DriftError(
            f"drift: {what}: no feature has values on both sides "
            f"({', '.join(e.describe() for e in empty)}); check the batches' columns"
        )
    ref, cur = ref[features], cur[features]
    definition = _data_definition(schema, features)
    report = Report([_preset(features, cfg)], include_tests=True)
    try:
        snapshot = report.run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
        raw = json.loads(snapshot.json())
    except Exception as err:
        raise DriftError(
            f"drift: {what}: Evidently failed on columns {', '.join(features)} "
            f"({type(err).__name__}: {err}); check those columns in the batches (or leave a "
            "column out with data.drop_columns), or set drift.method to another stattest"
        ) from err
    summary = summarize_snapshot(raw, features, cfg.drift_share, len(ref), len(cur))
    return snapshot, replace(summary, empty_columns=empty)


def _empty_side(reference_empty: bool, current_empty: bool) -> str | None:
    """EMPTY_SIDES entry for a column's emptiness, None when it has values on both sides."""
    if reference_empty and current_empty:
        return "both"
    if reference_empty:
        return "reference"
    return "current" if current_empty else None


def _features_frame(
    df: pd.DataFrame, features: list[str], side: str, sample_rows: int | None, seed: int
) -> pd.DataFrame:
    """A copy holding only the features, sampled (seeded) down to sample_rows when larger."""
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise DriftError(f"drift: {side} data lacks feature column(s) {missing}")
    if df.empty:
        raise DriftError(f"drift: {side} data has no rows")
    out = df.loc[:, features].copy()
    if sample_rows is not None and len(out) > sample_rows:
        out = out.sample(n=sample_rows, random_state=seed)
    return out.reset_index(drop=True)


def _data_definition(schema: Schema, columns: list[str]) -> DataDefinition:
    """Declare the types of the compared `columns` so Evidently does not guess them."""
    from evidently import DataDefinition

    return DataDefinition(
        numerical_columns=[c for c in schema.numeric if c in columns],
        categorical_columns=[c for c in schema.categorical if c in columns],
    )


def _preset(features: list[str], cfg: DriftConfig) -> DataDriftPreset:
    """DataDriftPreset limited to the features; method/threshold only when configured."""
    from evidently.presets import DataDriftPreset

    return DataDriftPreset(
        columns=list(features),
        drift_share=cfg.drift_share,
        method=cfg.method,
        threshold=cfg.threshold,
    )


# --- reading the snapshot --------------------------------------------------------------


def summarize_snapshot(
    snapshot_dict: dict[str, Any],
    features: list[str],
    drift_share: float,
    reference_rows: int,
    current_rows: int,
) -> DriftSummary:
    """Build the summary from `json.loads(snapshot.json())` (metrics and tests, plain types)."""
    statuses = _drift_test_statuses(snapshot_dict.get("tests", []))
    by_column: dict[str, ColumnDrift] = {}
    evidently_count: float | None = None
    for metric in snapshot_dict.get("metrics", []):
        kind = metric.get("config", {}).get("type")
        if kind == _VALUE_DRIFT:
            col = _column_drift(metric, statuses.get(metric["id"]))
            by_column[col.column] = col
        elif kind == _DRIFTED_COUNT:
            evidently_count = float(metric["value"]["count"])
    missing = [f for f in features if f not in by_column]
    if missing:
        raise RuntimeError(f"drift: Evidently returned no ValueDrift result for {missing}")
    columns = tuple(by_column[f] for f in features)
    n_drifted = sum(c.drifted for c in columns)
    if evidently_count is not None and int(evidently_count) != n_drifted:
        log.warning(
            "drift: DriftedColumnsCount says %s drifted column(s), per-column results say %s",
            int(evidently_count),
            n_drifted,
        )
    share = n_drifted / len(columns)
    return DriftSummary(
        dataset_drift=share >= drift_share,
        drift_share=float(drift_share),
        drifted_share=share,
        n_drifted=n_drifted,
        n_columns=len(columns),
        columns=columns,
        reference_rows=int(reference_rows),
        current_rows=int(current_rows),
    )


def _drift_test_statuses(tests: list[dict[str, Any]]) -> dict[str, bool]:
    """metric id -> drift detected, from each ValueDrift's own test (FAIL means drift)."""
    out: dict[str, bool] = {}
    for test in tests:
        metric_id = test.get("metric_config", {}).get("metric_id")
        if test.get("id") == _DRIFT_TEST_ID and metric_id is not None:
            out[metric_id] = test.get("status") == "FAIL"
    return out


def _column_drift(metric: dict[str, Any], detected: bool | None) -> ColumnDrift:
    """One ValueDrift result: method and threshold as Evidently resolved them, raw score."""
    config = metric["config"]
    method = stattest_name(str(config["method"]))
    score = float(metric["value"])
    threshold = float(config["threshold"])
    drifted = detected if detected is not None else is_drift(method, score, threshold)
    return ColumnDrift(config["column"], method, score, threshold, bool(drifted))


def is_drift(method: str, score: float, threshold: float) -> bool:
    """Fallback rule: distance methods drift when score >= threshold, p-values when below."""
    if math.isnan(score):
        return False
    if method in _DISTANCE_METHODS:
        return score >= threshold
    return score < threshold


def stattest_name(method: str) -> str:
    """Evidently's stattest id ('wasserstein') for a resolved display name, else unchanged.

    When the method is auto-selected, ValueDrift's config holds the display name
    ('Wasserstein distance (normed)'); when configured it holds the id ('ks').
    """
    return _stattest_ids().get(method, method)


def _stattest_ids() -> dict[str, str]:
    """Display name -> id of the stattests Evidently registers (the ones the preset resolves)."""
    from evidently.legacy.calculations import stattests

    out: dict[str, str] = {}
    for attr in stattests.__all__:
        obj = getattr(stattests, attr)
        if isinstance(obj, stattests.StatTest):
            out[obj.display_name] = obj.name
    return out


# --- outputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftOutputs:
    """A drift computation as plain data (picklable, so a cache can keep it): our summary,
    Evidently's self-contained HTML and its snapshot JSON."""

    summary: DriftSummary
    html: str = field(repr=False)
    snapshot_json: str = field(repr=False)
    # Evidently's full snapshot model (`Snapshot.dumps()`: widgets included), which the
    # monitoring dashboard reuses (ctloop/steps/dashboard.py); "" when not kept
    model_json: str = field(default="", repr=False)


def render_outputs(snapshot: Any, summary: DriftSummary, title: str | None = None) -> DriftOutputs:
    """The HTML and JSON of an Evidently snapshot, with our summary (DriftError when Evidently
    cannot render them). `title` (e.g. "Data drift of batch 2013-07 against 2013-01..2013-06")
    names the snapshot, heads the HTML page and is its <title>."""
    try:
        if title:
            snapshot.set_name(title)
        html = titled_html(snapshot, title) if title else snapshot.get_html_str(as_iframe=False)
        return DriftOutputs(summary, html, snapshot.json(), snapshot.dumps())
    except Exception as err:
        raise DriftError(
            f"drift: Evidently could not render the report ({type(err).__name__}: {err}); "
            f"the summary was computed ({summary.n_drifted} of {summary.n_columns} columns "
            "drifted); check the compared columns or set drift.method to another stattest"
        ) from err


def titled_html(snapshot: Any, title: str) -> str:
    """Evidently's self-contained HTML of `snapshot` with `title` as the page's <title> and as a
    header above the report (Evidently 0.7 renders neither a name nor the snapshot's metadata)."""
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget, header_text

    widgets = [
        header_text(label=title),
        group_widget(title="", widgets=list(snapshot._widgets)),
        *snapshot._tests_widgets,
    ]
    html = render_widgets(widgets, as_iframe=False)
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return html.replace("<head>", f"<head>\n<title>{escaped}</title>", 1)


def html_from_model(model_json: str, title: str) -> str:
    """Evidently's self-contained HTML, headed and titled `title`, rendered again from a stored
    snapshot model (`Snapshot.dumps()`, the report's .model.json): the same widgets without
    computing the drift again (e.g. a report's page naming the model version it was read for).
    DriftError when Evidently cannot read or render it."""
    from evidently.core.report import Snapshot

    try:
        return titled_html(Snapshot.loads(model_json), title)
    except Exception as err:
        raise DriftError(
            f"drift: Evidently could not render the stored report again "
            f"({type(err).__name__}: {err}); was its .model.json written by another Evidently "
            "version?"
        ) from err


def save_drift(
    snapshot: Any, summary: DriftSummary, out_dir: Path, name: str, write_once: WriteOnce
) -> dict[str, Path]:
    """Write <name>.html (self-contained Evidently), <name>.json (ours), <name>.evidently.json
    (once each: see write_outputs)."""
    return write_outputs(render_outputs(snapshot, summary), out_dir, name, write_once)


class DriftReportConflict(RuntimeError):
    """A report file of this name exists with another verdict: a name must stand for one report."""


def report_paths(out_dir: Path, name: str) -> dict[str, Path]:
    """The three files of report `name`: html, summary (ours) and snapshot (Evidently's JSON)."""
    return {
        "html": out_dir / f"{name}.html",
        "summary": out_dir / f"{name}.json",
        "snapshot": out_dir / f"{name}.evidently.json",
    }


def write_outputs(
    outputs: DriftOutputs, out_dir: Path, name: str, write_once: WriteOnce
) -> dict[str, Path]:
    """Write the three report files of `outputs` once each (atomically, never replacing a file);
    returns their paths. `write_once(path, text)` publishes a file unless one of that name
    exists (False then): `ctloop.io.files.write_once`, passed in (ml does not import io).

    A name stands for one report (callers key it by the inputs): a file that exists is kept as
    it is. Evidently draws new widget ids into the HTML on every render, so only our summary is
    compared: an existing <name>.json with another verdict raises DriftReportConflict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = report_paths(out_dir, name)
    summary_json = json.dumps(outputs.summary.to_dict(), indent=2) + "\n"
    if not write_once(paths["summary"], summary_json):
        existing = paths["summary"].read_text(encoding="utf-8")
        if existing != summary_json:
            raise DriftReportConflict(
                f"drift: report {paths['summary']} already exists with another verdict; "
                "a report is never replaced (its name is keyed by its inputs: same inputs must "
                "give the same verdict)"
            )
    write_once(paths["html"], outputs.html)
    write_once(paths["snapshot"], outputs.snapshot_json + "\n")
    if outputs.model_json:
        write_once(model_path(out_dir, name), outputs.model_json + "\n")
    return paths


def model_path(out_dir: Path, name: str) -> Path:
    """Evidently's full snapshot model of report `name` (kept for the monitoring dashboard;
    absent for reports written before it was kept)."""
    return out_dir / f"{name}.model.json"


def drift_markdown(summary: DriftSummary, title: str) -> str:
    """Markdown: a verdict line and a column|method|score|threshold|drifted table, drifted first."""
    verdict = "yes" if summary.dataset_drift else "no"
    lines = [
        f"## {title}",
        "",
        f"Dataset drift: {verdict} — {summary.n_drifted} of {summary.n_columns} columns "
        f"drifted (share {summary.drifted_share:.2f}, threshold {summary.drift_share:.2f})",
        "",
        f"Reference rows: {summary.reference_rows:,}; current rows: {summary.current_rows:,}.",
        "",
        "| column | method | score | threshold | drifted |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    ordered = sorted(summary.columns, key=lambda c: not c.drifted)
    for c in ordered:
        flag = "**yes**" if c.drifted else "no"
        lines.append(f"| {c.column} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | {flag} |")
    if summary.empty_columns:
        lines += ["", f"Not compared: {', '.join(e.describe() for e in summary.empty_columns)}."]
    return "\n".join(lines) + "\n"
