"""The data contract at the scoring door (ctloop/ml/suite_rules.py) on a real suite built by
ctloop/ml/validation.py: the same rules, tolerances, severities and words as batch validation,
per column, with the rows that broke them flagged."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import ValidationConfig
from ctloop.ml import suite_rules
from ctloop.ml import validation as v
from ctloop.steps import serving
from tests.unit.ml.test_validation import ROWS, build, frame

COLUMNS = ["x", "n", "c"]  # the model's inputs (the suite also knows the date and the target)


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> suite_rules.Contract:
    root = tmp_path_factory.mktemp("suite")
    name = build(root)
    return suite_rules.load_contract(v.suite_file(root, name), COLUMNS)


def features(rows: int = ROWS, seed: int = 1) -> pd.DataFrame:
    """Rows as the signature check hands them over: numbers as doubles, text as objects."""
    df = pd.concat([frame(seed=s) for s in range(seed, seed + rows // ROWS + 1)])
    df = df.head(rows).reset_index(drop=True)
    return df[COLUMNS].astype({"x": "float64", "n": "float64", "c": object})


def test_the_contract_holds_the_suites_scoring_rules(rules: suite_rules.Contract) -> None:
    kinds = {(r.column, r.rule, r.kind, r.severity) for r in rules.rules}
    assert kinds == {
        ("x", "ranges", suite_rules.BETWEEN, "critical"),
        ("n", "ranges", suite_rules.BETWEEN, "critical"),
        ("c", "categories", suite_rules.IN_SET, "warning"),
    }  # nulls allowed up to a share are not judged on a scored file; no type, target, date
    assert len([r for r in rules.rules if r.column == "x"]) == 2  # finiteness, widened range
    assert rules.replaced == {"min_share": 0.5, "severity": "critical"}


def test_a_clean_file_breaks_nothing(rules: suite_rules.Contract) -> None:
    found = suite_rules.check(rules, features())
    assert found.results == () and not found.critical_failures
    assert found.flagged_rows == 0 and set(found.flags) == {""}


def test_infinite_values_refuse_the_file_naming_column_and_rule(
    rules: suite_rules.Contract,
) -> None:
    df = features()
    df.loc[3, "x"], df.loc[8, "n"] = np.inf, -np.inf
    found = suite_rules.check(rules, df)
    lines = found.lines()
    assert "column 'x': rule 'ranges' (critical): 1 infinite values (none allowed), e.g. inf" in (
        lines
    )
    assert "column 'n': rule 'ranges' (critical): 1 infinite values (none allowed), e.g. -inf" in (
        lines
    )
    failed = {(r.column, r.rule) for r in found.critical_failures}
    assert failed == {("x", "ranges"), ("n", "ranges")}
    assert found.flags[3] == "x:ranges" and found.flags[8] == "n:ranges"  # once per column
    err = suite_rules.ContractViolation("in.parquet", "model 'm' v2", found)
    text = str(err)
    assert text.startswith("in.parquet: breaks the data contract of model 'm' v2 (")
    assert "nothing was scored" in text
    assert "  - column 'x': rule 'ranges' (critical): 1 infinite values" in text
    assert isinstance(err, serving.data.DataError)  # the CLI's `ctloop: error:` path
    assert str(pickle.loads(pickle.dumps(err))) == text


def test_words_and_verdicts_are_those_of_batch_validation(tmp_path: Path) -> None:
    """The same rows through validate_batch (GX) and the contract: same observed text."""
    name = build(tmp_path)
    batch = frame(seed=2)
    batch.loc[[5, 9, 11], "x"] = [250.0, -300.0, 99.5]
    batch.loc[[1, 2], "c"] = "zz"
    report = v.validate_batch(batch, "b", "b.parquet", tmp_path, name)
    rules = suite_rules.load_contract(v.suite_file(tmp_path, name), COLUMNS)
    found = suite_rules.check(rules, batch[COLUMNS].astype({"n": "float64"}))
    ours = {(r.column, r.rule, r.severity, r.success, r.observed) for r in found.results}
    theirs = {
        (r.column, r.rule, r.severity, r.success, r.observed)
        for r in report.results
        if r.column in COLUMNS
        and r.details.get("result", {}).get("unexpected_count")
        and (r.rule != "categories_replaced" or not r.success)  # predict: only when it fails
    }
    assert ours == theirs
    assert {(c, rule) for c, rule, *_ in ours} == {("x", "ranges"), ("c", "categories")}
    replaced = batch.assign(c="renamed")
    report = v.validate_batch(replaced, "b", "b.parquet", tmp_path, name)
    found = suite_rules.check(rules, replaced[COLUMNS].astype({"n": "float64"}))
    [theirs_replaced] = [r for r in report.critical_failures if r.column == "c"]
    assert found.critical_failures[-1] == theirs_replaced


def test_unseen_categories_are_counted_scored_and_flagged(rules: suite_rules.Contract) -> None:
    df = features()
    df.loc[[4, 7, 9, 30, 31], "c"] = ["ZZ", "ZZ", "QQ", "ZZ", "ZZ"]
    found = suite_rules.check(rules, df)
    assert not found.critical_failures  # categories: warning; 5 of 400 is no replacement
    by_rule = {r.rule: r for r in found.results}
    assert by_rule["categories"].severity == "warning" and not by_rule["categories"].success
    assert by_rule["categories"].observed.startswith("5 values outside the known categories")
    assert "e.g. 'ZZ', 'QQ'" in by_rule["categories"].observed
    assert "column 'c': rule 'categories' (warning): 5 values" in found.lines()[0]
    assert "categories_replaced" not in by_rule  # within its share: one line for the column
    assert found.flagged_rows == 5 and set(found.flags[found.flags != ""]) == {"c:categories"}
    assert found.flags[[4, 7, 9, 30, 31]].tolist() == ["c:categories"] * 5


def test_replaced_categories_refuse_the_file_from_30_values(rules: suite_rules.Contract) -> None:
    renamed = features().assign(c=lambda d: d["c"].str.upper())
    found = suite_rules.check(rules, renamed)
    [failure] = found.critical_failures
    assert (failure.column, failure.rule) == ("c", "categories_replaced")
    assert failure.observed.startswith("400 of 400 values (100.0%) are not among the 3 known")
    few = suite_rules.check(rules, renamed.head(29))  # too few values to call it a replacement
    assert not few.critical_failures
    assert [r.rule for r in few.results] == ["categories"] and few.flagged_rows == 29


def test_out_of_range_values_within_tolerance_are_scored_and_flagged(
    rules: suite_rules.Contract,
) -> None:
    df = features(rows=2000)
    df.loc[17, "x"] = 1e6  # 1 in 2,000 = 0.05%: out_of_range_tolerance is 0.1%
    found = suite_rules.check(rules, df)
    [result] = found.results
    assert (result.column, result.rule, result.success) == ("x", "ranges", True)
    assert "1 values (0.05%) outside [" in result.observed and "e.g. 1000000.0" in result.observed
    assert found.lines()[0].startswith(
        "column 'x': rule 'ranges' (critical, within tolerance: scored): 1 values"
    )
    assert found.flags[17] == "x:ranges" and found.flagged_rows == 1
    df.loc[18, "x"], df.loc[19, "x"] = -1e6, 1e7  # 3 in 2,000: beyond the tolerance
    [failure] = suite_rules.check(rules, df).critical_failures
    assert (failure.column, failure.rule) == ("x", "ranges") and "3 values (0.15%)" in (
        failure.observed
    )


def test_nulls_are_judged_only_where_the_suite_forbids_them(tmp_path: Path) -> None:
    df = features()
    df.loc[2, "x"] = np.nan
    name = build(tmp_path)
    allowed = suite_rules.load_contract(v.suite_file(tmp_path, name), COLUMNS)
    assert suite_rules.check(allowed, df).results == ()
    strict = tmp_path / "strict"
    name = build(strict, ValidationConfig(null_tolerance=0.0))
    forbidding = suite_rules.load_contract(v.suite_file(strict, name), COLUMNS)
    found = suite_rules.check(forbidding, df)
    [failure] = found.critical_failures
    assert (failure.column, failure.rule) == ("x", "nulls")
    assert failure.observed == "0.25% nulls (allowed up to 0.0%)"
    assert found.flags[2] == "x:nulls" and found.flagged_rows == 1
    suite = json.loads(v.suite_file(tmp_path, "ctloop_batch").read_text())
    for e in suite["expectations"]:
        if e["type"] == suite_rules.NOT_NULL:
            e["kwargs"].pop("mostly", None)  # GX's default: no null allowed
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(suite))
    no_mostly = suite_rules.load_contract(edited, COLUMNS)
    assert [(r.column, r.rule) for r in suite_rules.check(no_mostly, df).critical_failures] == [
        ("x", "nulls")
    ]


def test_a_missing_or_broken_suite_is_named(tmp_path: Path) -> None:
    with pytest.raises(serving.data.DataError, match=r"nope\.json: rule 'suite': no expectation"):
        suite_rules.load_contract(tmp_path / "nope.json", COLUMNS)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(serving.data.DataError, match=r"broken\.json: rule 'suite': not a read"):
        suite_rules.load_contract(broken, COLUMNS)


def test_flags_go_to_the_output_only_when_a_row_broke_a_rule(rules: suite_rules.Contract) -> None:
    df = features(rows=4).assign(c=["a", "ZZ", "b", "c"], ctloop_flags="input's own")
    cols = [serving.InputColumn("x", "double"), serving.InputColumn("n", "double")]
    cols.append(serving.InputColumn("c", "string"))
    checked = serving.validate_input(df, cols, "in.csv")
    scored = pd.DataFrame({"prediction": [0, 1, 0, 1], "score": [0.1, 0.9, 0.2, 0.8]})
    clean = serving.assemble(df, checked, scored)  # no contract checked: no flags column
    assert list(clean.columns) == ["row", "input_ctloop_flags", "prediction", "score"]
    with_contract = dataclasses.replace(
        checked, contract=suite_rules.check(rules, checked.features)
    )
    out = serving.assemble(df, with_contract, scored)
    assert list(out.columns) == ["row", "input_ctloop_flags", "prediction", "score", "ctloop_flags"]
    assert out["ctloop_flags"].tolist() == ["", "c:categories", "", ""]
    ok = dataclasses.replace(checked, contract=suite_rules.check(rules, checked.features.head(0)))
    assert "ctloop_flags" not in serving.assemble(df.head(0), ok, scored.head(0)).columns
