"""The GX quality gate on small synthetic frames: real Great Expectations, no mocks."""

from __future__ import annotations

import itertools
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.core.config import Severity, ValidationConfig
from ctloop.io import files
from ctloop.io.data import Schema
from ctloop.ml import validation as v

SCHEMA = Schema(
    target="y", task="classification", numeric=("x", "n"), categorical=("c",), time_column="t"
)
ROWS = 400


def frame(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Reference-like data: float and int features, three categories, a float 0/1 target."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows).astype("float64")
    y[:4] = np.nan  # unlabelled rows are normal
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 10, rows),
            "n": rng.integers(1, 10, rows),
            "c": rng.choice(["a", "b", "c"], rows),
            "t": pd.date_range("2024-01-01", periods=rows, freq="h"),
            "y": y,
        }
    )


def build(root: Path, cfg: ValidationConfig | None = None, schema: Schema = SCHEMA) -> str:
    cfg = cfg or ValidationConfig()
    ref = frame()
    if schema.task == "regression":
        ref["y"] = ref["y"] * 3.5 + 1
    v.save_suite(root, v.build_suite(ref, schema, cfg, rows_per_batch=ROWS))
    return cfg.suite_name


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("gx")
    return root, build(root)


@pytest.fixture
def check(ctx: tuple[Path, str]) -> Callable[[pd.DataFrame], v.ValidationReport]:
    root, name = ctx
    return lambda df: v.validate_batch(df, "2024-02", "batches/2024-02.parquet", root, name)


def failed(report: v.ValidationReport) -> set[tuple[str, str | None]]:
    return {(r.rule, r.column) for r in [*report.critical_failures, *report.warnings]}


# --- suite -------------------------------------------------------------------------------


def test_suite_covers_every_family_with_severity_in_meta(ctx: tuple[Path, str]) -> None:
    root, name = ctx
    path = root / "gx" / "expectations" / f"{name}.json"
    stored = json.loads(path.read_text())
    metas = [e["meta"] for e in stored["expectations"]]
    assert {m["rule"] for m in metas} == set(v.FAMILIES)
    by_rule = {m["rule"]: m["severity"] for m in metas}
    assert by_rule["categories"] == "warning"
    assert {s for r, s in by_rule.items() if r != "categories"} == {"critical"}
    assert all(e["severity"] == e["meta"]["severity"] for e in stored["expectations"])
    assert v.suite_exists(root, name) and not v.suite_exists(root, "nope")


def test_suite_rules_follow_the_reference_and_config() -> None:
    cfg = ValidationConfig(null_tolerance=0.05, range_tolerance=0.1)
    ref = frame()
    suite = v.build_suite(ref, SCHEMA, cfg, rows_per_batch=1000)
    rules = {
        (e.meta["rule"], getattr(e, "column", None), e.expectation_type): e
        for e in suite.expectations
    }
    between = rules[("ranges", "x", "expect_column_values_to_be_between")]
    assert between.min_value < ref["x"].min() and between.max_value > ref["x"].max()
    target = rules[("target", "y", "expect_column_values_to_be_in_set")]
    assert target.value_set == [0.0, 1.0]
    null_x = rules[("nulls", "x", "expect_column_values_to_not_be_null")]
    assert null_x.mostly == pytest.approx(1 - 0.05, abs=1e-6)
    # labels may arrive after the features: no null rule on the target
    assert ("nulls", "y", "expect_column_values_to_not_be_null") not in rules
    rows = rules[("row_count", None, "expect_table_row_count_to_be_between")]
    assert (rows.min_value, rows.max_value) == (200, 5000)


def test_save_suite_replaces_a_suite_of_the_same_name(tmp_path: Path) -> None:
    build(tmp_path)
    path = v.save_suite(
        tmp_path, v.build_suite(frame(), SCHEMA, ValidationConfig(max_categories=2), ROWS)
    )
    stored = json.loads(path.read_text())
    assert not any(e["meta"]["rule"] == "categories" for e in stored["expectations"])
    assert [p.name for p in path.parent.glob("*.json")] == [path.name]


# --- validation ----------------------------------------------------------------------------


def test_clean_batch_passes(check: Callable[[pd.DataFrame], v.ValidationReport]) -> None:
    report = check(frame(seed=1))
    assert report.success and report.status == "passed"
    assert report.rows == ROWS and report.file == "batches/2024-02.parquet"
    assert not failed(report) and report.reason_text() == ""
    assert {r.rule for r in report.results} == set(v.FAMILIES)


def test_equivalent_dtypes_pass(check: Callable[[pd.DataFrame], v.ValidationReport]) -> None:
    df = frame(seed=2)
    df["n"] = df["n"].astype("float64")  # int in the reference, float once NaN appear
    df.loc[0, "n"] = np.nan
    df["x"] = df["x"].astype("Float64")
    df["c"] = df["c"].astype("category")
    report = check(df)
    assert report.success, report.reason_text()
    df["n"] = df["n"].astype("Int64")
    df["c"] = df["c"].astype("string")
    assert check(df).success


def test_warning_failures_do_not_fail_the_batch(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    df = frame(seed=3)
    df.loc[: ROWS // 5, "c"] = "new"  # a fifth new: below validation.unseen_category_critical_share
    report = check(df)
    assert report.success and report.status == "warnings"
    assert [(r.rule, r.column) for r in report.warnings] == [("categories", "c")]
    assert "'new'" in report.warnings[0].observed
    replaced = [r for r in report.results if r.rule == v.CATEGORIES_REPLACED]
    assert [(r.column, r.success, r.severity) for r in replaced] == [("c", True, "critical")]


@pytest.mark.parametrize("renamed", [1.0, 0.5], ids=["all", "half"])
def test_renamed_categories_are_critical_whatever_the_categories_severity(
    check: Callable[[pd.DataFrame], v.ValidationReport], renamed: float
) -> None:
    df = frame(seed=7)
    rows = df.index < int(ROWS * renamed)
    df.loc[rows, "c"] = df.loc[rows, "c"].map({"a": "A1", "b": "B1", "c": "C1"})
    report = check(df)
    assert not report.success and report.status == "failed"
    [failure] = report.critical_failures
    assert (failure.rule, failure.column) == ("categories_replaced", "c")
    assert failure.severity == "critical"
    count = int(rows.sum())
    assert failure.observed.startswith(
        f"{count} of {ROWS} values ({renamed * 100:.1f}%) are not among the 3 known categories"
    )
    assert "'A1'" in failure.observed and "replaced from 50.0%" in failure.observed
    assert [(r.rule, r.column) for r in report.warnings] == [("categories", "c")]
    line = report.reason_text().splitlines()[0]
    assert line.startswith("batches/2024-02.parquet: column 'c': rule 'categories_replaced' (crit")
    assert "categories_replaced" in str(v.ValidationFailed([report]))
    assert json.dumps(report.to_dict(), allow_nan=False)


def test_the_replaced_share_is_read_from_the_suite_meta(tmp_path: Path) -> None:
    name = build(tmp_path, ValidationConfig(unseen_category_critical_share=0.9))
    meta = json.loads(v.suite_file(tmp_path, name).read_text())["meta"]["ctloop"]
    assert meta[v.CATEGORIES_REPLACED] == {"min_share": 0.9, "severity": "critical"}
    df = frame(seed=8).assign(c="renamed")
    df.loc[:50, "c"] = "a"  # 87% unseen: below 0.9
    report = v.validate_batch(df, "b", "b.parquet", tmp_path, name)
    assert report.success and [r.rule for r in report.warnings] == ["categories"]
    assert not v.validate_batch(df.assign(c="renamed"), "b", "b.parquet", tmp_path, name).success


@pytest.mark.parametrize(
    ("mutate", "rule", "column"),
    [
        (lambda df: df.drop(columns=["x"]), "schema", "x"),
        (lambda df: df.assign(extra=1), "schema", "extra"),
        (lambda df: df.assign(n=df["n"].astype(str)), "types", "n"),
        (lambda df: df.assign(t=df["t"].astype(str)), "types", "t"),
        (lambda df: df.assign(x=df["x"].mask(df.index % 2 == 0)), "nulls", "x"),
        (lambda df: df.assign(x=df["x"] * 100), "ranges", "x"),
        (lambda df: df.assign(x=df["x"].where(df.index != 7, np.inf)), "ranges", "x"),
        (lambda df: df.assign(y=df["y"].where(df.index != 9, 2.0)), "target", "y"),
        (lambda df: df.head(10), "row_count", None),
    ],
    ids=["missing", "extra", "types", "time-type", "nulls", "range", "inf", "target", "rows"],
)
def test_broken_batches_fail_with_rule_and_column(
    check: Callable[[pd.DataFrame], v.ValidationReport],
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
    rule: str,
    column: str | None,
) -> None:
    report = check(mutate(frame(seed=4)))
    assert not report.success
    assert (rule, column) in {(r.rule, r.column) for r in report.critical_failures}
    assert json.dumps(report.to_dict(), allow_nan=False)  # JSON-safe even with inf values


def test_infinite_values_fail_even_below_the_range_tolerance(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    big = pd.concat([frame(seed=s) for s in range(5)], ignore_index=True)  # 1 inf in 2,000 rows
    big.loc[5, "x"] = -np.inf
    report = check(big)
    assert [r.observed for r in report.critical_failures] == [
        "1 infinite values (none allowed), e.g. -inf"
    ]


def test_missing_column_is_reported_not_raised(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    report = check(frame(seed=5).drop(columns=["x"]))
    on_x = [r for r in report.critical_failures if r.column == "x"]
    assert {r.rule for r in on_x} == {"schema", "types", "nulls", "ranges"}
    assert all(r.observed == "column is missing" for r in on_x)


def test_empty_frames_fail_row_count(check: Callable[[pd.DataFrame], v.ValidationReport]) -> None:
    empty = check(frame().iloc[0:0])
    assert empty.rows == 0 and ("row_count", None) in failed(empty)
    assert {r.rule for r in empty.critical_failures} == {"row_count"}
    nothing = check(pd.DataFrame())
    assert {"schema", "row_count"} <= {r.rule for r in nothing.critical_failures}


def test_reason_text_names_file_column_and_rule(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    report = check(frame(seed=6).assign(x=lambda d: d["x"] * 100))
    line = report.reason_text().splitlines()[0]
    assert line.startswith("batches/2024-02.parquet: column 'x': rule 'ranges' (critical): ")
    assert "outside [" in line
    err = v.ValidationFailed([report])
    assert "batches/2024-02.parquet: column 'x': rule 'ranges'" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.reports == [report]


def test_severity_is_read_from_the_suite_meta(tmp_path: Path) -> None:
    name = build(tmp_path, ValidationConfig(severity=Severity(nulls="warning")))
    path = tmp_path / "gx" / "expectations" / f"{name}.json"
    stored = json.loads(path.read_text())
    for e in stored["expectations"]:  # a human downgrades the target rule by hand
        if e["meta"]["rule"] == "target":
            e["meta"]["severity"] = "warning"
    path.write_text(json.dumps(stored))
    df = frame(seed=7)
    df.loc[: ROWS // 2, "x"] = np.nan
    df.loc[0, "y"] = 5.0
    report = v.validate_batch(df, "b", "b.csv", tmp_path, name)
    assert report.success
    assert {(r.rule, r.column) for r in report.warnings} == {("nulls", "x"), ("target", "y")}


def test_regression_target_must_be_numeric_and_finite(tmp_path: Path) -> None:
    schema = Schema(
        target="y", task="regression", numeric=("x", "n"), categorical=("c",), time_column="t"
    )
    name = build(tmp_path, schema=schema)
    ok = v.validate_batch(frame(seed=8), "b", "b.csv", tmp_path, name)
    assert ok.success, ok.reason_text()
    bad = frame(seed=8).assign(y=lambda d: d["y"].where(d.index != 3, -np.inf))
    report = v.validate_batch(bad, "b", "b.csv", tmp_path, name)
    assert ("target", "y") in {(r.rule, r.column) for r in report.critical_failures}


def test_validation_persists_nothing_per_batch(
    ctx: tuple[Path, str], check: Callable[[pd.DataFrame], v.ValidationReport]
) -> None:
    for seed in range(3):
        check(frame(seed=seed))
    gx_dir = ctx[0] / "gx"
    for folder in ("validation_definitions", "checkpoints", "uncommitted/validations"):
        assert not [p for p in (gx_dir / folder).rglob("*") if p.suffix == ".json"], folder


# --- quarantine and reports ------------------------------------------------------------


def test_quarantine_moves_the_file_and_explains_why(
    tmp_path: Path, check: Callable[[pd.DataFrame], v.ValidationReport]
) -> None:
    report = check(frame(seed=9).assign(x=lambda d: d["x"] * 100))
    src = tmp_path / "batches" / "2024-02.parquet"
    src.parent.mkdir()
    src.write_bytes(b"bad data")
    folder = v.quarantine_batch(src, report, tmp_path / "quarantine", files.write_text_atomic)
    assert folder == tmp_path / "quarantine" / "2024-02"
    assert not src.exists() and (folder / "2024-02.parquet").read_bytes() == b"bad data"
    reason = (folder / "reason.txt").read_text()
    assert "deliver it again" in reason and report.reason_text() in reason
    assert json.loads((folder / "validation.json").read_text())["success"] is False

    src.write_bytes(b"bad again")  # the same batch fails twice: nothing is overwritten
    second = v.quarantine_batch(src, report, tmp_path / "quarantine", files.write_text_atomic)
    assert second != folder and second.name.startswith("2024-02-")
    assert (folder / "2024-02.parquet").read_bytes() == b"bad data"


def test_summary_markdown_lists_failed_rules(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    good = check(frame(seed=10))
    bad = check(frame(seed=10).assign(x=lambda d: d["x"] * 100).drop(columns=["n"]))
    md = v.summary_markdown([good, bad])
    assert "| batch | rows | result | failed rules |" in md
    assert "| passed |" in md and "| failed |" in md
    assert "ranges (critical) on `x`" in md and "schema (critical) on `n`" in md


def test_save_results_writes_every_report(
    tmp_path: Path, check: Callable[[pd.DataFrame], v.ValidationReport]
) -> None:
    reports = [check(frame(seed=11)), check(frame(seed=11).head(5))]
    path = v.save_results(
        reports, tmp_path / "reports" / "validation.json", files.write_text_atomic
    )
    saved = json.loads(path.read_text())
    assert [r["success"] for r in saved["reports"]] == [True, False]
    assert saved["success"] is False and saved["failed"] == ["2024-02"]
    assert saved["reports"][1]["counts"]["critical_failures"] >= 1
    assert [p.name for p in path.parent.iterdir()] == ["validation.json"]


# --- many batches: one context, suite and plan -------------------------------------------

MUTATIONS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "clean": lambda df: df,
    "nulls": lambda df: df.assign(x=df["x"].mask(df.index % 2 == 0)),
    "few-nulls": lambda df: df.assign(x=df["x"].mask(df.index % 50 == 0)),
    "range": lambda df: df.assign(x=df["x"] * 100),
    "inf": lambda df: df.assign(x=df["x"].where(df.index != 7, np.inf)),
    "new-categories": lambda df: df.assign(c=df["c"].where(df.index > ROWS // 5, "new")),
    "renamed": lambda df: df.assign(c=df["c"] + "1"),
    "target": lambda df: df.assign(y=df["y"].where(df.index != 9, 2.0)),
    "one-class": lambda df: df.assign(y=1.0),
    "duplicates": lambda df: pd.concat([df, df.head(20)], ignore_index=True),
    "rows": lambda df: df.head(10),
    "empty": lambda df: df.head(0),
    "missing": lambda df: df.drop(columns=["x"]),
    "extra": lambda df: df.assign(extra=1),
    "types": lambda df: df.assign(n=df["n"].astype(str)),
    "mixed-types": lambda df: df.assign(c=df["c"].where(df.index != 3, 5)),
    "time-type": lambda df: df.assign(t=df["t"].astype(str)),
    "dtypes": lambda df: df.assign(c=df["c"].astype("category"), x=df["x"].astype("Float64")),
}


def one_by_one(batches: list[v.BatchFrame], root: Path, name: str) -> list[v.ValidationReport]:
    return [v.validate_batch(b.frame, b.batch, b.file, root, name) for b in batches]


def batch_frames(kinds: list[str], seed: int = 20) -> list[v.BatchFrame]:
    return [
        v.BatchFrame(f"b{i:03d}", f"batches/b{i:03d}.parquet", MUTATIONS[k](frame(seed=seed + i)))
        for i, k in enumerate(kinds)
    ]


def count_alone(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the batches validated in a GX run of their own (not shared)."""
    alone: list[str] = []
    original = v._validate_alone

    def spy(item: v.BatchFrame, *args: object) -> v.ValidationReport:
        alone.append(item.batch)
        return original(item, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(v, "_validate_alone", spy)
    return alone


def test_shared_validation_gives_each_batch_its_own_verdict_as_alone(
    ctx: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Good and broken batches interleaved: the same reports (rules, columns, severities,
    observed text, figures) as batch by batch, in order, and the batches of the usual columns
    and dtypes are validated together, not one by one."""
    root, name = ctx
    kinds = [k for k in MUTATIONS for _ in range(2)]
    batches = batch_frames(kinds)
    expected = one_by_one(batches, root, name)
    alone = count_alone(monkeypatch)
    reports = v.validate_batches(iter(batches), root, name)
    assert [r.batch for r in reports] == [b.batch for b in batches]
    for kind, got, want in zip(kinds, reports, expected, strict=True):
        assert got == want, kind
    assert {r.status for r in reports} == {"passed", "warnings", "failed"}
    # alone: only batches GX cannot evaluate in a shared run (a missing column, text compared
    # with numbers); the others, broken ones included, were validated together
    alone_kinds = {k for b, k in zip(batches, kinds, strict=True) if b.batch in alone}
    assert alone_kinds <= {"missing", "types"}, alone_kinds


@pytest.mark.parametrize("seed", range(4))
def test_random_mixes_of_batches_match_batch_by_batch(
    ctx: tuple[Path, str], seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random mixes of mutations and sizes (some runs cut by SHARED_RUN_ROWS): same reports."""
    root, name = ctx
    rng = np.random.default_rng(seed)
    kinds = list(rng.choice(list(MUTATIONS), size=10))
    batches = [
        v.BatchFrame(b.batch, b.file, b.frame.head(int(rng.integers(150, ROWS + 1))))
        for b in batch_frames(kinds, seed=100 * seed)
    ]
    monkeypatch.setattr(v, "SHARED_RUN_ROWS", int(rng.integers(ROWS, 5 * ROWS)))
    assert v.validate_batches(batches, root, name) == one_by_one(batches, root, name)


def test_a_suite_with_other_expectations_is_validated_batch_by_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expectation validate_batches cannot share out (a human added a mean rule): each
    batch has a GX run of its own, with the same reports."""
    import great_expectations.expectations as gxe

    name = build(tmp_path)
    suite = v._open_suite(tmp_path, name)[0]
    mean = gxe.ExpectColumnMeanToBeBetween(column="x", min_value=4, max_value=6)
    mean.meta = {"rule": "ranges", "severity": "critical"}
    suite.expectations.append(mean)
    v.save_suite(tmp_path, suite)
    batches = batch_frames(["clean", "range", "clean"])
    expected = one_by_one(batches, tmp_path, name)
    assert ("ranges", "x") in failed(expected[1])
    alone = count_alone(monkeypatch)
    assert v.validate_batches(batches, tmp_path, name) == expected
    assert alone == [b.batch for b in batches]


def test_validate_batches_needs_the_suite(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="suite 'nope' not found"):
        v.validate_batches(batch_frames(["clean"]), tmp_path, "nope")


@given(
    sizes=st.lists(st.integers(0, 50), max_size=30),
    max_rows=st.integers(0, 120),
)
@settings(max_examples=200, deadline=None)
def test_runs_keep_order_and_bound_their_rows(sizes: list[int], max_rows: int) -> None:
    items = [v.BatchFrame(str(i), "", pd.DataFrame({"a": range(n)})) for i, n in enumerate(sizes)]
    runs = list(v._runs(iter(items), max_rows))
    assert [b.batch for run in runs for b in run] == [b.batch for b in items]
    for run in runs:
        assert run and (len(run) == 1 or sum(len(b.frame) for b in run) <= max_rows)
    for before, after in itertools.pairwise(runs):  # a run is cut only when full (0: always)
        assert max_rows == 0 or sum(len(b.frame) for b in before) + len(after[0].frame) > max_rows
