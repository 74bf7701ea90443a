from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.core.config import Project
from ctloop.io import data
from ctloop.steps import monitoring
from ctloop.steps.monitoring import LandingError

LABEL = "is_late"


def _batch() -> pd.DataFrame:
    """A prepared batch whose last two labels have not arrived yet."""
    return pd.DataFrame(
        {
            "date": pd.to_datetime(["2013-07-01", "2013-07-02", "2013-07-03", "2013-07-04"]),
            "carrier": ["AA", "UA", "DL", "AA"],
            "distance": [100, 200, 300, 400],
            "temp": [20.5, 21.0, 19.5, 22.0],
            LABEL: [1.0, 0.0, np.nan, np.nan],
        }
    )


def _filled() -> pd.DataFrame:
    return _batch().assign(**{LABEL: [1.0, 0.0, 1.0, 0.0]})


# --- write_batch with label_column -----------------------------------------------------


def test_identical_rewrite_is_a_no_op(tmp_path: Path) -> None:
    first = data.write_batch(tmp_path, "2013-07", _batch(), label_column=LABEL)
    mtime = first.path.stat().st_mtime_ns
    again = data.write_batch(tmp_path, "2013-07", _batch(), label_column=LABEL)
    assert first.written and not again.written
    assert again.digest == first.digest and again.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no tmp file left


def test_redelivery_filling_labels_is_written(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-07", _batch(), label_column=LABEL)
    out = data.write_batch(tmp_path, "2013-07", _filled(), label_column=LABEL)
    assert out.written and out.digest == data.content_hash(_filled())
    back = pd.read_parquet(out.path)
    assert list(back[LABEL]) == [1.0, 0.0, 1.0, 0.0]
    pd.testing.assert_frame_equal(back, _filled(), check_dtype=False)


def test_partial_fill_is_written(tmp_path: Path) -> None:
    data.write_batch(tmp_path, "2013-07", _batch(), label_column=LABEL)
    partial = _batch()
    partial.loc[2, LABEL] = 1.0
    assert data.write_batch(tmp_path, "2013-07", partial, label_column=LABEL).written
    assert pd.read_parquet(data.batch_path(tmp_path, "2013-07"))[LABEL].notna().sum() == 3


def _changed_label() -> pd.DataFrame:
    df = _filled()
    df.loc[0, LABEL] = 0.0  # was known as 1.0
    return df


def _changed_feature() -> pd.DataFrame:
    df = _filled()
    df.loc[1, "temp"] = 99.0
    return df


def _dropped_row() -> pd.DataFrame:
    return _filled().drop(index=3).reset_index(drop=True)


def _lost_label() -> pd.DataFrame:
    df = _filled()
    df.loc[1, LABEL] = np.nan  # a known label disappears while two others arrive
    return df


@pytest.mark.parametrize(
    "redelivery", [_changed_label, _changed_feature, _dropped_row, _lost_label]
)
def test_conflicting_redelivery_is_refused(
    tmp_path: Path, redelivery: Callable[[], pd.DataFrame]
) -> None:
    stored = data.write_batch(tmp_path, "2013-07", _batch(), label_column=LABEL)
    with pytest.raises(data.BatchConflictError) as err:
        data.write_batch(tmp_path, "2013-07", redelivery(), label_column=LABEL)
    message = str(err.value)
    assert str(stored.path) in message and "immutable_batch" in message
    assert data.content_hash(pd.read_parquet(stored.path)) == stored.digest  # untouched


@pytest.mark.parametrize("redelivery", [_filled, _changed_feature])
def test_without_label_column_any_change_is_refused(
    tmp_path: Path, redelivery: Callable[[], pd.DataFrame]
) -> None:
    stored = data.write_batch(tmp_path, "2013-07", _batch())
    with pytest.raises(data.BatchConflictError, match="immutable_batch"):
        data.write_batch(tmp_path, "2013-07", redelivery())
    assert data.content_hash(pd.read_parquet(stored.path)) == stored.digest


def test_batch_conflict_is_a_data_error() -> None:
    assert issubclass(data.BatchConflictError, data.DataError)


# --- fills_labels ----------------------------------------------------------------------


def test_fills_labels_accepts_new_labels_only() -> None:
    assert data.fills_labels(_batch(), _filled(), LABEL)
    assert not data.fills_labels(_batch(), _batch(), LABEL)  # nothing new
    assert not data.fills_labels(_filled(), _batch(), LABEL)  # labels withdrawn


@pytest.mark.parametrize(
    "redelivery", [_changed_label, _changed_feature, _dropped_row, _lost_label]
)
def test_fills_labels_refuses_other_changes(redelivery: Callable[[], pd.DataFrame]) -> None:
    assert not data.fills_labels(_batch(), redelivery(), LABEL)


def test_fills_labels_needs_same_columns_in_same_order() -> None:
    filled = _filled()
    assert not data.fills_labels(_batch(), filled[list(reversed(filled.columns))], LABEL)
    assert not data.fills_labels(_batch(), filled.assign(extra=1), LABEL)
    assert not data.fills_labels(_batch(), filled, "no_such_label")


def test_fills_labels_compares_rows_by_position_whatever_the_index() -> None:
    stored = _batch().assign(**{LABEL: [1.0, 0.0, 1.0, np.nan]})
    # positionally the known labels 1, 0, 1 become 0, 1, 0: must be refused
    changed = stored.assign(**{LABEL: [0.0, 1.0, 0.0, 1.0]}).set_axis([3, 2, 1, 0])
    assert not data.fills_labels(stored, changed, LABEL)


def test_fills_labels_accepts_a_fill_with_another_index() -> None:
    filled = _filled().set_axis([10, 11, 12, 13])
    assert data.fills_labels(_batch(), filled, LABEL)


# --- resolve_landing -------------------------------------------------------------------


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    p = make_project()
    p.path("landing").mkdir(parents=True)
    return p


def test_plain_name_in_landing_resolves(project: Project) -> None:
    landed = project.path("landing") / "flights.csv"
    landed.write_text("a,b\n1,2\n")
    assert monitoring.resolve_landing(project, "flights.csv") == landed.resolve()
    assert monitoring.resolve_landing(project, str(landed)) == landed.resolve()


def test_uppercase_parquet_suffix_is_accepted(project: Project) -> None:
    landed = project.path("landing") / "B.PARQUET"
    _batch().to_parquet(landed)
    assert monitoring.resolve_landing(project, "B.PARQUET") == landed.resolve()


def test_path_escaping_landing_is_refused(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    (project.path("landing") / "link.csv").symlink_to(outside)
    depth = len(project.path("landing").relative_to(project.root).parts)
    for path in (
        "../params.yaml",
        "/".join([".."] * depth + ["params.yaml"]),  # the project's real params.yaml
        str(outside),
        "link.csv",
    ):
        with pytest.raises(LandingError, match="landing_path"):
            monitoring.resolve_landing(project, path)


def test_wrong_file_type_is_refused(project: Project) -> None:
    (project.path("landing") / "notes.txt").write_text("hello")
    with pytest.raises(LandingError, match="file_type"):
        monitoring.resolve_landing(project, "notes.txt")


def test_missing_file_is_refused(project: Project) -> None:
    with pytest.raises(LandingError, match="landing_file"):
        monitoring.resolve_landing(project, "never-arrived.parquet")


def test_landing_error_is_a_data_error() -> None:
    assert issubclass(LandingError, data.DataError)


# --- receive_file ----------------------------------------------------------------------


def test_receive_file_copies_once_and_refuses_other_content(
    project: Project, tmp_path: Path
) -> None:
    source = tmp_path / "in" / "flights.csv"
    source.parent.mkdir()
    source.write_text("a,b\n1,2\n")
    landed = monitoring.receive_file(project, source)
    assert landed == project.path("landing") / "flights.csv"
    assert landed.read_bytes() == source.read_bytes()
    mtime = landed.stat().st_mtime_ns

    assert monitoring.receive_file(project, source) == landed  # same content: no-op
    assert landed.stat().st_mtime_ns == mtime

    other = tmp_path / "other" / "flights.csv"
    other.parent.mkdir()
    other.write_text("a,b\n9,9\n")
    with pytest.raises(LandingError, match="immutable_landing"):
        monitoring.receive_file(project, other)
    assert landed.read_bytes() == source.read_bytes()
    assert [p.name for p in project.path("landing").iterdir()] == ["flights.csv"]


def test_the_same_values_in_other_dtypes_under_the_same_name_are_a_no_op(
    project: Project, tmp_path: Path
) -> None:
    """Field case nullable-dtypes: Float64 with pd.NA delivered, then the same values as plain
    float64 under the same name: the same content, not `immutable_landing`."""
    rows = {
        "date": pd.to_datetime(["2013-07-01", "2013-07-02", "2013-07-03"]),
        "arr_delay": [20.0, 3.0, 40.0],
        "carrier": ["UA", "B6", "AA"],
    }
    nullable = pd.DataFrame(rows).assign(temp=pd.array([55.1, None, 60.2], dtype="Float64"))
    plain = nullable.assign(temp=nullable["temp"].astype("float64"))
    first, second = tmp_path / "a" / "july.parquet", tmp_path / "b" / "july.parquet"
    for path, frame in ((first, nullable), (second, plain)):
        path.parent.mkdir()
        frame.to_parquet(path, index=False)
    assert first.read_bytes() != second.read_bytes()
    landed = monitoring.receive_file(project, first)
    assert monitoring.receive_file(project, second) == landed
    assert landed.read_bytes() == first.read_bytes()  # what landed first stays
    changed = tmp_path / "c" / "july.parquet"
    changed.parent.mkdir()
    plain.assign(temp=[55.1, 58.0, 60.2]).to_parquet(changed, index=False)
    with pytest.raises(LandingError, match="other values already landed; deliver the new file"):
        monitoring.receive_file(project, changed)


def test_receive_file_refuses_missing_and_wrong_type(project: Project, tmp_path: Path) -> None:
    with pytest.raises(LandingError, match="landing_file"):
        monitoring.receive_file(project, tmp_path / "nope.csv")
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    with pytest.raises(LandingError, match="file_type"):
        monitoring.receive_file(project, txt)
    assert list(project.path("landing").iterdir()) == []


# --- score_frame -----------------------------------------------------------------------


def _xy() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"distance": rng.normal(size=60), "temp": rng.normal(size=60)})
    y = pd.Series((x["distance"] + 0.5 * rng.normal(size=60) > 0).astype(int))
    return x, y


def _classifier() -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _xy()
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)


def test_score_frame_classification() -> None:
    model = _classifier()
    x, y = _xy()
    batch = x.assign(carrier="AA", **{LABEL: y})  # extra columns are ignored
    out = monitoring.score_frame(model, batch, "classification", "7")
    assert len(out) == len(batch)
    assert list(out["row"]) == list(range(len(batch)))
    assert (out["model_version"] == "7").all()
    assert out["score"].between(0, 1).all()
    np.testing.assert_allclose(out["score"], model.predict_proba(x)[:, 1])
    assert list(out["prediction"]) == list((out["score"] >= 0.5).astype(int))
    assert out["prediction"].nunique() == 2


def test_score_frame_ignores_column_order() -> None:
    model = _classifier()
    x, _ = _xy()
    batch = x.assign(carrier="AA")
    reordered = batch[["carrier", "temp", "distance"]]
    pd.testing.assert_frame_equal(
        monitoring.score_frame(model, reordered, "classification", "1"),
        monitoring.score_frame(model, batch, "classification", "1"),
    )


def test_score_frame_regression_has_no_prediction_column() -> None:
    from sklearn.linear_model import LinearRegression

    x, _ = _xy()
    model = LinearRegression().fit(x, 3 * x["distance"] - x["temp"])
    out = monitoring.score_frame(model, x[["temp", "distance"]], "regression", "2")
    assert "prediction" not in out.columns
    np.testing.assert_allclose(out["score"], model.predict(x))
