"""The rules added for bad deliveries, on small frames: duplicate rows and a single-class target
(our own results next to GX's), the file checks of ingest_landed (cut-off CSV, label values,
rows without a time, a conflicting period refused before anything is written) and the file
quarantine."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import Project, ValidationConfig
from ctloop.io import data, files
from ctloop.io.data import Schema
from ctloop.ml import validation as v
from ctloop.steps import monitoring

SCHEMA = Schema(target="y", task="classification", numeric=("x",), categorical=(), time_column=None)


def frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.uniform(0, 10, rows), "y": rng.integers(0, 2, rows) * 1.0})


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Callable[[pd.DataFrame], v.ValidationReport]:
    root = tmp_path_factory.mktemp("gx")
    cfg = ValidationConfig(duplicate_tolerance=0.05)
    v.save_suite(root, v.build_suite(frame(), SCHEMA, cfg, rows_per_batch=200))
    return lambda df: v.validate_batch(df, "b1", "batches/b1.parquet", root, cfg.suite_name)


def rules(report: v.ValidationReport) -> dict[str, v.RuleResult]:
    own = ("ctloop_rows_are_not_duplicated", "ctloop_target_has_several_classes")
    return {r.rule: r for r in report.results if r.expectation in own}


def test_duplicates_are_a_warning_above_the_tolerance(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    clean = frame(seed=1)
    assert "duplicates" not in rules(check(clean))  # reported only when there are some
    few = pd.concat([clean, clean.head(5)], ignore_index=True)  # 2.4% <= 5%
    assert rules(check(few))["duplicates"].success
    many = pd.concat([clean, clean.head(40)], ignore_index=True)  # 16.7%
    report = check(many)
    assert report.success and report.status == "warnings"
    line = report.reason_text()
    assert line.startswith("batches/b1.parquet: table: rule 'duplicates' (warning): 40 rows")
    assert "(allowed up to 5.0%)" in line


def test_a_single_labelled_class_is_critical_but_no_labels_are_fine(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    one_class = frame(seed=2).assign(y=0.0)
    report = check(one_class)
    assert not report.success
    [failure] = [r for r in report.critical_failures if r.rule == "target"]
    assert failure.column == "y" and "single class 0.0" in failure.observed
    assert "target" not in rules(check(frame(seed=2).assign(y=np.nan)))  # labels come later
    few = frame(seed=2).assign(y=np.nan)
    few.loc[: v.MIN_LABELS_FOR_CLASSES - 2, "y"] = 1.0  # too few labels to judge
    assert check(few).success
    assert rules(check(frame(seed=3)))["target"].success


def test_duplicates_settings_live_in_the_suite_meta(tmp_path: Path) -> None:
    suite = v.build_suite(frame(), SCHEMA, ValidationConfig(duplicate_tolerance=0.2), 200)
    assert suite.meta["ctloop"]["duplicates"] == {"max_share": 0.2, "severity": "warning"}
    path = v.save_suite(tmp_path, suite)
    stored = json.loads(path.read_text())
    stored["meta"]["ctloop"]["duplicates"] = {"max_share": 0.0, "severity": "critical"}
    path.write_text(json.dumps(stored))
    df = pd.concat([frame(seed=4), frame(seed=4).head(1)], ignore_index=True)
    report = v.validate_batch(df, "b", "b.csv", tmp_path, suite.name)
    assert [r.rule for r in report.critical_failures] == ["duplicates"]


def test_the_committed_suite_configures_duplicates() -> None:
    root = Path(__file__).resolve().parents[3]
    stored = json.loads((root / "expectations/gx/expectations/ctloop_batch.json").read_text())
    assert stored["meta"]["ctloop"]["duplicates"]["severity"] == "warning"


def test_validation_failed_names_the_delivered_file(
    check: Callable[[pd.DataFrame], v.ValidationReport],
) -> None:
    err = v.ValidationFailed([check(frame(seed=5).assign(y=1.0))], source="delivery.parquet")
    assert str(err).startswith("delivery.parquet: 1 batch(es) failed validation")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.source == "delivery.parquet"


def test_quarantine_file_moves_it_with_reasons(tmp_path: Path) -> None:
    src = tmp_path / "landing" / "bad.csv"
    src.parent.mkdir()
    src.write_bytes(b"\xff\xfe")
    reason = f"{src}: rule 'encoding': file is not UTF-8 text"
    folder = v.quarantine_file(
        src, reason, tmp_path / "q", files.write_text_atomic, {"rule": "encoding"}
    )
    assert folder == tmp_path / "q" / "bad" and not src.exists()
    assert (folder / "bad.csv").read_bytes() == b"\xff\xfe"
    text = (folder / "reason.txt").read_text()
    assert text.startswith("File 'bad.csv' was quarantined") and reason in text
    assert "deliver it again" in text
    assert json.loads((folder / "reason.json").read_text())["rule"] == "encoding"


# --- checks of ingest_landed -----------------------------------------------------------


def test_cut_off_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("a,b,c\n1,2,3\n4,5")
    with pytest.raises(data.DataError, match=r"rule 'truncated'.*2 of 3 fields"):
        monitoring.check_complete_csv(path)
    path.write_text("a,b,c\n1,2,3\n4,5,6")  # no final line end, but complete
    monitoring.check_complete_csv(path)


def test_label_source_values_must_be_numbers(repo_project: Project) -> None:
    cfg = repo_project.params.data
    ok = pd.DataFrame({"arr_delay": [1.0, None, 30.0]})
    monitoring.check_label_values(ok, cfg, Path("f.parquet"))
    for bad in (["late", None, "3"], [1.0, np.inf, 2.0]):
        with pytest.raises(data.DataError, match="column 'arr_delay': rule 'target'"):
            monitoring.check_label_values(pd.DataFrame({"arr_delay": bad}), cfg, Path("f"))


def test_rows_without_a_time_are_refused(repo_project: Project) -> None:
    df = pd.DataFrame({"date": pd.to_datetime(["2013-01-01", None])})
    with pytest.raises(data.DataError, match="column 'date': rule 'time_column': 1 row"):
        monitoring.check_times(df, repo_project.params.data, Path("f"))


def test_a_conflicting_period_refuses_the_whole_file(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    """The new period sorts first, the conflicting one second: nothing may be written."""
    p = make_project({"data": {"derive_target": None, "drop_columns": []}})
    stored = pd.DataFrame({"date": pd.to_datetime(["2013-02-01"]), "x": [1.0], "is_late": [0.0]})
    data.write_batch(p.path("batches"), "2013-02", stored)
    delivery = pd.DataFrame(
        {
            "date": pd.to_datetime(["2013-01-05", "2013-02-01"]),
            "x": [3.0, 2.0],
            "is_late": [1.0, 0.0],
        }
    )
    landed = p.path("landing") / "late.parquet"
    landed.parent.mkdir(parents=True)
    delivery.to_parquet(landed, index=False)
    with pytest.raises(data.BatchConflictError, match=r"late\.parquet: rule 'immutable_batch'"):
        monitoring.ingest_landed(p, landed)
    assert data.list_batches(p.path("batches")) == ["2013-02"]
