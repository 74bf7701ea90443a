"""The data contract at the edge (ctloop/core/contract.py): every dtype a source may hold comes out
in
one internal form, the same values hash alike whatever their dtype, time offsets become one
zone's wall-clock time, two-valued labels become 1.0/0.0, and what cannot be normalised is
refused naming the file, the column and the rule. Inputs vary with Hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ctloop.core import contract
from ctloop.core.config import DataConfig
from ctloop.io import data

SETTINGS = settings(max_examples=60, deadline=None)

# values exactly representable in float32 too, so every float dtype holds the same numbers
floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
maybe_float = st.one_of(st.none(), floats32)
maybe_int = st.one_of(st.none(), st.integers(-100, 100))
maybe_bool = st.one_of(st.none(), st.booleans())
maybe_text = st.one_of(st.none(), st.text(alphabet="abcXYZ -", min_size=1, max_size=5))


def _as_float(values: list[float | None], dtype: str) -> pd.Series:
    if dtype in {"float64", "float32"}:
        return pd.Series([np.nan if v is None else v for v in values], dtype=dtype, name="x")
    return pd.Series(pd.array(values, dtype=dtype), name="x")


@SETTINGS
@given(
    values=st.lists(maybe_float, min_size=1, max_size=30),
    dtype=st.sampled_from(["float32", "Float32", "Float64", "double[pyarrow]", "float[pyarrow]"]),
)
def test_float_dtypes_become_float64_with_nan(values: list[float | None], dtype: str) -> None:
    out = contract.normalise_column(_as_float(values, dtype))
    twin = _as_float(values, "float64")
    assert out.dtype == np.dtype("float64")
    assert out.isna().tolist() == [v is None for v in values]
    np.testing.assert_array_equal(out.to_numpy(), twin.to_numpy())
    assert data.content_hash(pd.DataFrame({"x": _as_float(values, dtype)})) == data.content_hash(
        pd.DataFrame({"x": twin})
    )


@SETTINGS
@given(
    values=st.lists(maybe_int, min_size=1, max_size=30),
    dtype=st.sampled_from(["int8", "int16", "int32", "Int64", "Int16", "int64[pyarrow]", "cat"]),
)
def test_integer_dtypes_become_int64_or_float64_when_missing(
    values: list[int | None], dtype: str
) -> None:
    missing = any(v is None for v in values)
    if dtype in {"int8", "int16", "int32"}:
        assume(not missing)  # a NumPy integer column cannot hold a missing value
        series = pd.Series(values, dtype=dtype)
    elif dtype == "cat":
        series = pd.Series(pd.array(values, dtype="Int64")).astype("category")
    else:
        series = pd.Series(pd.array(values, dtype=dtype))
    out = contract.normalise_column(series)
    assert out.dtype == np.dtype("float64" if missing else "int64")
    assert out.isna().tolist() == [v is None for v in values]
    assert [None if pd.isna(v) else int(v) for v in out] == values
    # the same numbers as plain float64 (how pandas reads a CSV with gaps) are the same content
    as_float = pd.Series([np.nan if v is None else float(v) for v in values])
    assert data.content_hash(pd.DataFrame({"n": series})) == data.content_hash(
        pd.DataFrame({"n": as_float})
    )


@SETTINGS
@given(
    values=st.lists(maybe_bool, min_size=1, max_size=30),
    dtype=st.sampled_from(["bool", "boolean", "object", "bool[pyarrow]"]),
)
def test_booleans_become_float_one_zero_nan(values: list[bool | None], dtype: str) -> None:
    assume(not (dtype == "bool" and None in values))
    # an object column of nothing but gaps holds no type to read: it stays as it is
    assume(not (dtype == "object" and all(v is None for v in values)))
    series = (
        pd.Series(values, dtype=object)
        if dtype == "object"
        else pd.Series(pd.array(values, dtype=dtype))
    )
    out = contract.normalise_column(series)
    assert out.dtype == np.dtype("float64")
    assert [None if np.isnan(v) else v for v in out] == [
        None if v is None else float(v) for v in values
    ]


@SETTINGS
@given(
    values=st.lists(maybe_text, min_size=1, max_size=30),
    dtype=st.sampled_from(["string", "string[pyarrow]", "category", "object"]),
)
def test_text_becomes_object_with_nan(values: list[str | None], dtype: str) -> None:
    assume(any(v is not None for v in values))  # a category of nothing has no type to keep
    series = pd.Series(values, dtype=dtype)
    out = contract.normalise_column(series)
    assert out.dtype == np.dtype(object)
    assert [None if (isinstance(v, float) and np.isnan(v)) else v for v in out] == values
    assert not any(v is pd.NA for v in out)
    plain = pd.DataFrame({"t": pd.Series(values, dtype=object)})
    assert data.content_hash(pd.DataFrame({"t": series})) == data.content_hash(plain)


@SETTINGS
@given(st.lists(st.one_of(maybe_float, maybe_bool, maybe_text), min_size=1, max_size=20))
def test_normalising_twice_changes_nothing(values: list[object]) -> None:
    once = contract.normalise_column(pd.Series(values, dtype=object))
    twice = contract.normalise_column(once)
    assert twice is once


def test_values_that_differ_still_hash_differently() -> None:
    base = pd.DataFrame({"a": [1, 2, 3]})
    assert data.content_hash(base) != data.content_hash(pd.DataFrame({"a": [1.0, 2.0, 3.5]}))
    assert data.content_hash(base) != data.content_hash(pd.DataFrame({"a": [1.0, 2.0, np.nan]}))
    big = pd.DataFrame({"a": [2**62 + 1]})  # beyond float64 precision: never taken as equal
    assert data.content_hash(big) != data.content_hash(pd.DataFrame({"a": [float(2**62)]}))


# --- times ------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))
offsets = st.integers(-12 * 4, 14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
zones = st.sampled_from(["UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata"])


@SETTINGS
@given(
    st.lists(st.tuples(instants, offsets), min_size=1, max_size=20),
    zones,
    st.booleans(),
)
def test_offsets_become_wall_time_in_the_configured_zone(
    stamps: list[tuple[datetime, timezone]], zone: str, with_gap: bool
) -> None:
    """ISO strings with any UTC offsets, one per value (as across a DST switch): the instant is
    kept and shown as naive wall-clock time in `zone`."""
    text = [t.astimezone(off).isoformat() for t, off in stamps] + ([None] if with_gap else [])
    out = contract.parse_times(pd.Series(text, name="date"), zone, "f.csv")
    expected = [pd.Timestamp(t).tz_convert(zone).tz_localize(None) for t, _ in stamps]
    assert out.dtype == np.dtype("datetime64[ns]")
    assert out.iloc[: len(stamps)].tolist() == expected
    assert out.isna().sum() == int(with_gap)


@SETTINGS
@given(st.lists(instants, min_size=1, max_size=20), zones)
def test_tz_aware_dtype_and_arrow_timestamps_follow_the_same_rule(
    stamps: list[datetime], zone: str
) -> None:
    aware = pd.Series(pd.DatetimeIndex(stamps)).dt.tz_convert("Asia/Tokyo")
    expected = [pd.Timestamp(t).tz_convert(zone).tz_localize(None) for t in stamps]
    assert contract.parse_times(aware.rename("d"), zone, "f").tolist() == expected
    arrow = aware.astype("timestamp[ns, tz=UTC][pyarrow]")
    assert contract.normalise_column(arrow, zone).tolist() == expected


def test_the_dst_case_is_cut_in_the_local_month() -> None:
    """The field case: New York dates at local midnight whose offset changes on 2013-11-03."""
    text = pd.Series(
        ["2013-11-01T00:00:00-04:00", "2013-11-04T00:00:00-05:00", "2013-11-30T23:00:00-05:00"],
        name="date",
    )
    local = contract.parse_times(text, "America/New_York", "delivery-offsets.csv")
    assert local.tolist() == [
        pd.Timestamp("2013-11-01"),
        pd.Timestamp("2013-11-04"),
        pd.Timestamp("2013-11-30 23:00"),
    ]
    assert set(data.period_labels(local, "month")) == {"2013-11"}
    utc = contract.parse_times(text, "UTC", "delivery-offsets.csv")
    assert data.period_labels(utc, "month").tolist()[-1] == "2013-12"  # why the zone matters


def test_values_with_and_without_an_offset_are_refused() -> None:
    text = pd.Series(
        ["2013-11-01T00:00:00-04:00", "2013-11-04T00:00:00-05:00", "2013-11-05"], name="date"
    )
    with pytest.raises(data.DataError) as err:
        contract.parse_times(text, "UTC", "delivery.csv")
    message = str(err.value)
    assert message.startswith("delivery.csv: column 'date': rule 'time_column':")
    assert "'2013-11-05'" in message


def test_text_that_is_no_date_is_refused_naming_it() -> None:
    with pytest.raises(data.DataError, match=r"column 'date': rule 'time_column': 1 value.*'soon'"):
        contract.parse_times(pd.Series(["2013-01-01", "soon"], name="date"), "UTC", "f.csv")


def test_unknown_zone_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        DataConfig(target="y", task="classification", timezone="Mars/Olympus")


# --- labels -----------------------------------------------------------------------------

ENCODINGS = [("True", "False"), ("yes", "no"), ("1", "0"), (True, False), (1, 0)]


@SETTINGS
@given(
    st.sampled_from(ENCODINGS),
    st.lists(st.one_of(st.none(), st.booleans()), min_size=1, max_size=40),
    st.sampled_from([str.upper, str.lower, str.title, lambda s: f" {s} "]),
    st.sampled_from(["object", "category", "string[pyarrow]"]),
)
def test_two_valued_labels_become_one_zero(
    pair: tuple[object, object], labels: list[bool | None], spell: object, dtype: str
) -> None:
    positive, negative = pair
    if isinstance(positive, str):
        positive, negative = spell(positive), spell(negative)  # type: ignore[operator]
    elif dtype == "string[pyarrow]":
        dtype = "object"
    raw = [None if v is None else (positive if v else negative) for v in labels]
    out = contract.encode_target(pd.Series(raw, dtype=dtype, name="is_late"), "classification", "f")
    assert out.dtype == np.dtype("float64")
    assert [None if np.isnan(v) else v for v in out] == [
        None if v is None else float(v) for v in labels
    ]


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        (["True", "False", "Maybe"], "'maybe'"),
        (["yes", "no", "true"], "'true'"),  # two encodings mixed
        (["late", "on time"], "'late'"),  # which one is positive? not guessed
    ],
)
def test_labels_that_are_not_one_encoding_are_refused(values: list[str], shown: str) -> None:
    with pytest.raises(data.DataError) as err:
        contract.encode_target(pd.Series(values, name="is_late"), "classification", "f.parquet")
    message = str(err.value)
    assert message.startswith("f.parquet: column 'is_late': rule 'target':")
    assert shown in message


def test_numeric_labels_other_than_zero_one_are_refused() -> None:
    with pytest.raises(data.DataError, match=r"column 'y': rule 'target'.*3 distinct.*0, 1, 2"):
        contract.encode_target(pd.Series([0, 1, 2], name="y"), "classification", "f")


def test_regression_target_text_numbers_are_read_and_words_refused() -> None:
    out = contract.encode_target(pd.Series(["1.5", " 2", None], name="y"), "regression", "f")
    assert out.tolist()[:2] == [1.5, 2.0] and np.isnan(out.iloc[2])
    with pytest.raises(data.DataError, match=r"column 'y': rule 'target': 1 value.*'late'"):
        contract.encode_target(pd.Series(["1.5", "late"], name="y"), "regression", "f")


# --- prepare: the edge every source passes ---------------------------------------------------


def test_prepare_brings_a_mixed_delivery_to_the_internal_form() -> None:
    cfg = DataConfig(
        target="is_late",
        task="classification",
        time_column="date",
        timezone="America/New_York",
        drop_columns=["flight"],
    )
    raw = pd.DataFrame(
        {
            "temp": pd.array([71.96, None, 60.1], dtype="Float64"),
            "distance": pd.Series([529, 184, 200], dtype="int16"),
            "carrier": pd.Series(["US", None, "B6"], dtype="string[pyarrow]"),
            "origin": pd.Series(["EWR", "LGA", "EWR"], dtype="category"),
            "wifi": pd.array([True, None, False], dtype="boolean"),
            "flight": pd.array([1, 2, None], dtype="Int64"),
            "date": [
                "2013-11-01T00:00:00-04:00",
                "2013-11-04T00:00:00-05:00",
                "2013-11-05T06:00:00-05:00",
            ],
            "is_late": ["True", "false", None],
        }
    )
    out = data.prepare(raw, cfg, "delivery.parquet")
    assert out.dtypes.astype(str).to_dict() == {
        "temp": "float64",
        "distance": "int64",
        "carrier": "object",
        "origin": "object",
        "wifi": "float64",
        "date": "datetime64[ns]",
        "is_late": "float64",
    }
    assert out["date"].tolist()[:2] == [pd.Timestamp("2013-11-01"), pd.Timestamp("2013-11-04")]
    assert out["is_late"].tolist()[:2] == [1.0, 0.0]
    assert not any(v is pd.NA for col in out for v in out[col])
    assert raw["temp"].dtype == "Float64"  # the input is not modified
