from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import DriftConfig, Project
from ctloop.io import data, files
from ctloop.io.data import Schema
from ctloop.ml import drift
from ctloop.ml.drift import (
    ColumnDrift,
    DriftOutputs,
    DriftReportConflict,
    DriftSummary,
    compute_drift,
    drift_markdown,
    is_drift,
    render_outputs,
    save_drift,
    write_outputs,
)

SCHEMA = Schema(
    target="y",
    task="classification",
    numeric=("a", "b", "c"),
    categorical=("k", "m"),
    time_column=None,
)
NUMERIC_ONLY = Schema(
    target="y", task="classification", numeric=("a", "b", "c"), categorical=(), time_column=None
)


def _frame(n: int, seed: int, shift: float = 0.0, skew_k: bool = False) -> pd.DataFrame:
    """Synthetic batch; `shift` moves a, b, c by that many SDs, `skew_k` reweights k."""
    rng = np.random.default_rng(seed)
    k_probs = [0.8, 0.1, 0.1] if skew_k else [1 / 3, 1 / 3, 1 / 3]
    return pd.DataFrame(
        {
            "a": rng.normal(0 + shift, 1, n),
            "b": rng.normal(10 + 2 * shift, 2, n),
            "c": rng.exponential(1, n) + shift,
            "k": rng.choice(["x", "y", "z"], n, p=k_probs),
            "m": rng.choice(["p", "q"], n),
            "y": rng.integers(0, 2, n),  # not a feature: ignored
        }
    )


@pytest.fixture(scope="module")
def stable() -> tuple[object, DriftSummary]:
    return compute_drift(_frame(2000, 1), _frame(2000, 2), SCHEMA, DriftConfig(), seed=0)


@pytest.fixture(scope="module")
def shifted() -> tuple[object, DriftSummary]:
    cur = _frame(2000, 2, shift=3.0, skew_k=True)
    return compute_drift(_frame(2000, 1), cur, SCHEMA, DriftConfig(), seed=0)


def test_identical_distributions_give_no_dataset_drift(
    stable: tuple[object, DriftSummary],
) -> None:
    _, summary = stable
    assert not summary.dataset_drift
    assert summary.n_drifted == 0 and summary.drifted_columns == []
    assert summary.n_columns == 5
    assert [c.column for c in summary.columns] == SCHEMA.features
    assert (summary.reference_rows, summary.current_rows) == (2000, 2000)
    methods = {c.column: c.method for c in summary.columns}
    assert methods == {  # Evidently's defaults above 1000 reference rows, as stattest ids
        "a": "wasserstein",
        "b": "wasserstein",
        "c": "wasserstein",
        "k": "jensenshannon",
        "m": "jensenshannon",
    }


def test_shifting_most_columns_gives_dataset_drift(
    shifted: tuple[object, DriftSummary],
) -> None:
    _, summary = shifted
    assert summary.dataset_drift
    assert summary.drifted_columns == ["a", "b", "c", "k"]
    assert summary.n_drifted == 4
    assert summary.drifted_share == pytest.approx(0.8)
    assert summary.drift_share == 0.5
    m = next(c for c in summary.columns if c.column == "m")
    assert not m.drifted


def test_drift_share_threshold_is_inclusive_and_configurable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ref, cur = _frame(2000, 1), _frame(2000, 2, shift=3.0)  # a, b, c drift: 3 of 5
    with caplog.at_level(logging.WARNING, logger="ctloop.ml.drift"):
        _, loose = compute_drift(ref, cur, SCHEMA, DriftConfig(drift_share=0.6), seed=0)
        _, strict = compute_drift(ref, cur, SCHEMA, DriftConfig(drift_share=0.7), seed=0)
    assert not caplog.records  # per-column verdicts agree with DriftedColumnsCount
    assert loose.n_drifted == strict.n_drifted == 3
    assert loose.dataset_drift and not strict.dataset_drift


@pytest.mark.parametrize(
    ("method", "is_p_value"), [("ks", True), ("wasserstein", False), ("psi", False)]
)
def test_drifted_flag_direction_per_method(method: str, is_p_value: bool) -> None:
    ref = _frame(1500, 1)
    cur = _frame(1500, 2).assign(a=lambda d: d["a"] + 2.0)  # only `a` moves
    cfg = DriftConfig(method=method)
    _, summary = compute_drift(ref, cur, NUMERIC_ONLY, cfg, seed=0)
    assert {c.method for c in summary.columns} == {method}
    assert summary.drifted_columns == ["a"]
    for col in summary.columns:
        expected = col.score < col.threshold if is_p_value else col.score >= col.threshold
        assert col.drifted == expected, col
    a = summary.columns[0]
    assert (a.score < a.threshold) if is_p_value else (a.score > a.threshold)


def test_configured_threshold_reaches_every_column() -> None:
    ref, cur = _frame(1500, 1), _frame(1500, 2)
    cfg = DriftConfig(method="ks", threshold=0.999)  # nearly any p-value now means drift
    _, summary = compute_drift(ref, cur, NUMERIC_ONLY, cfg, seed=0)
    assert {c.threshold for c in summary.columns} == {0.999}
    assert all(c.drifted == (c.score < 0.999) for c in summary.columns)


def test_fallback_rule_direction() -> None:
    assert is_drift("ks", 0.01, 0.05) and not is_drift("ks", 0.5, 0.05)
    assert is_drift("wasserstein", 0.2, 0.1) and not is_drift("wasserstein", 0.05, 0.1)
    assert is_drift("TVD", 0.01, 0.1)  # TVD reports a p-value despite its name


def test_sampling_is_deterministic_for_a_seed() -> None:
    ref, cur = _frame(3000, 1), _frame(2500, 2, shift=0.3)
    cfg = DriftConfig(sample_rows=400)
    _, first = compute_drift(ref, cur, SCHEMA, cfg, seed=7)
    _, again = compute_drift(ref, cur, SCHEMA, cfg, seed=7)
    assert first == again
    assert (first.reference_rows, first.current_rows) == (400, 400)
    _, small = compute_drift(ref.head(300), cur, SCHEMA, cfg, seed=7)
    assert small.reference_rows == 300  # smaller sides are kept whole


def test_inputs_are_not_mutated() -> None:
    ref = _frame(1200, 1).set_index(pd.RangeIndex(100, 1300))
    cur = _frame(1200, 2, shift=1.0)
    ref_before, cur_before = ref.copy(deep=True), cur.copy(deep=True)
    compute_drift(ref, cur, SCHEMA, DriftConfig(sample_rows=500), seed=3)
    pd.testing.assert_frame_equal(ref, ref_before)
    pd.testing.assert_frame_equal(cur, cur_before)


def test_missing_feature_column_is_named() -> None:
    with pytest.raises(ValueError, match=r"current data lacks feature column\(s\) \['m'\]"):
        compute_drift(_frame(50, 1), _frame(50, 2).drop(columns="m"), SCHEMA, DriftConfig(), 0)


def test_save_drift_writes_html_and_json_that_round_trip(
    shifted: tuple[object, DriftSummary], tmp_path: Path
) -> None:
    snapshot, summary = shifted
    paths = save_drift(
        snapshot, summary, tmp_path / "reports" / "drift", "2013-07", files.write_once
    )
    assert paths == {
        "html": tmp_path / "reports/drift/2013-07.html",
        "summary": tmp_path / "reports/drift/2013-07.json",
        "snapshot": tmp_path / "reports/drift/2013-07.evidently.json",
    }
    html = paths["html"].read_text(encoding="utf-8")
    assert "<html" in html.lower() and len(html) > 10_000
    raw = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert raw == summary.to_dict()
    assert raw["drifted_columns"] == ["a", "b", "c", "k"]
    assert DriftSummary.from_dict(raw) == summary
    evid = json.loads(paths["snapshot"].read_text(encoding="utf-8"))
    assert {"metrics", "tests"} <= evid.keys()
    assert sorted(p.name for p in paths["html"].parent.iterdir()) == [
        "2013-07.evidently.json",
        "2013-07.html",
        "2013-07.json",
        "2013-07.model.json",  # Evidently's full snapshot, for the monitoring dashboard
    ]  # no temporary files left behind
    before = {k: p.read_bytes() for k, p in paths.items()}
    again = save_drift(
        snapshot, summary, tmp_path / "reports" / "drift", "2013-07", files.write_once
    )
    assert again == paths and {k: p.read_bytes() for k, p in again.items()} == before


def test_a_report_is_written_once_and_never_replaced(
    shifted: tuple[object, DriftSummary], tmp_path: Path
) -> None:
    """Evidently draws new widget ids on every render: the first file of a name is kept; the
    same name with another verdict is refused, leaving the report as it was."""
    snapshot, summary = shifted
    first = render_outputs(snapshot, summary)
    paths = write_outputs(first, tmp_path, "ref-a..b-123", files.write_once)
    kept = {k: p.read_bytes() for k, p in paths.items()}
    rerendered = DriftOutputs(summary, first.html.replace("<html", "<html data-x='1'"), "{}")
    assert write_outputs(rerendered, tmp_path, "ref-a..b-123", files.write_once) == paths
    assert {k: p.read_bytes() for k, p in paths.items()} == kept
    other = replace(summary, dataset_drift=not summary.dataset_drift)
    with pytest.raises(DriftReportConflict, match="already exists with another verdict"):
        write_outputs(
            DriftOutputs(other, "<html>other</html>", "{}"),
            tmp_path,
            "ref-a..b-123",
            files.write_once,
        )
    assert {k: p.read_bytes() for k, p in paths.items()} == kept
    written = [*paths.values(), drift.model_path(tmp_path, "ref-a..b-123")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_to_dict_is_plain_json_types(shifted: tuple[object, DriftSummary]) -> None:
    _, summary = shifted
    out = summary.to_dict()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert all(type(c["score"]) is float and type(c["drifted"]) is bool for c in out["columns"])


def test_markdown_has_verdict_and_drifted_rows_first() -> None:
    cols = (
        ColumnDrift("x", "wasserstein", 0.01, 0.1, False),
        ColumnDrift("y", "ks", 0.001, 0.05, True),
    )
    summary = DriftSummary(True, 0.5, 0.5, 1, 2, cols, 100, 50)
    text = drift_markdown(summary, "Batch 2013-07")
    assert text.startswith("## Batch 2013-07")
    assert "Dataset drift: yes — 1 of 2 columns drifted (share 0.50, threshold 0.50)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| column | method | score | threshold | drifted |")
    assert rows[1].startswith("| y | ks |") and rows[2].startswith("| x | wasserstein |")


def test_real_data_july_against_first_half(
    default_batches: dict[str, pd.DataFrame], repo_project: Project
) -> None:
    params = repo_project.params
    train = data.select_periods(list(default_batches), "2013-01", "2013-06")
    reference = pd.concat([default_batches[m] for m in train], ignore_index=True)
    schema = data.infer_schema(reference, params.data)
    start = time.perf_counter()
    snapshot, summary = compute_drift(
        reference, default_batches["2013-07"], schema, params.drift, params.seed
    )
    elapsed = time.perf_counter() - start
    print(
        f"\ndrift 2013-07 vs 2013-01..06: {elapsed:.1f} s, {summary.reference_rows} vs "
        f"{summary.current_rows} rows, {summary.n_drifted}/{summary.n_columns} drifted "
        f"({', '.join(summary.drifted_columns)})"
    )
    assert snapshot is not None
    assert [c.column for c in summary.columns] == schema.features
    assert summary.n_columns == len(schema.features) > 0
    # the default drift.sample_rows samples the six-month reference; a monthly batch is whole
    assert params.drift.sample_rows is not None
    assert len(reference) > params.drift.sample_rows >= len(default_batches["2013-07"])
    assert summary.reference_rows == params.drift.sample_rows
    assert summary.current_rows == len(default_batches["2013-07"])
    assert all(np.isfinite(c.score) and c.method for c in summary.columns)


def test_a_stored_snapshot_model_renders_again_under_another_title(
    shifted: tuple[object, DriftSummary],
) -> None:
    """A report's page naming the model version is rendered from the kept .model.json: the
    same widgets under the new title, with no drift computed again."""
    snapshot, summary = shifted
    first = render_outputs(snapshot, summary, "Data drift of batch B against the reference A")
    html = drift.html_from_model(first.model_json, "Data drift of batch B, model m v3")
    assert "<title>Data drift of batch B, model m v3</title>" in html
    assert "Data drift of batch B against the reference A" not in html
    assert len(html) > 0.8 * len(first.html)  # the report's widgets, not an empty page
    with pytest.raises(drift.DriftError, match="could not render the stored report"):
        drift.html_from_model("{}", "t")
