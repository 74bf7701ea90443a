"""The data contract at the edge: every source and every delivered file is brought to ONE
internal form before anything checks, cuts, hashes or keeps it.

`data.prepare` (which the initial ingestion, the landing folder and the DVC `ingest` stage all
go through) calls these functions; `data.content_hash` hashes the `canonical` view, so the same
values in another dtype are the same batch. Pure functions, no I/O. The forms (README, "Data
contract"):

- numbers: float16/32, nullable `Float32`/`Float64` and Arrow `double`/`float` become `float64`
  with NaN for a missing value; int8..int64, uint*, nullable `Int*`/`UInt*` and Arrow integers
  become `int64`, or `float64` when a value is missing (as pandas reads such a CSV column) or does
  not fit in int64;
- booleans (`bool`, nullable `boolean`, Arrow `bool`, an object column of True/False) become
  `float64` 1.0/0.0/NaN (a feature column then is numeric);
- text (`string[python]`, `string[pyarrow]`, Arrow strings) becomes `object` with NaN for a
  missing value; `category` becomes the dtype of its categories, then as above;
- datetimes: timezone-aware values (a tz dtype, or ISO strings with UTC offsets, also offsets that
  change across a DST switch) are converted to UTC, then to `data.timezone`, and kept as naive
  wall-clock time in that zone (`datetime64[ns]`); values without an offset are taken as already
  in that zone. The period cut (`data.batch_frequency`) is made on that wall-clock time;
- the classification target becomes `float64` 1.0/0.0/NaN from 0/1 numbers, booleans or ONE
  text encoding (true/false, yes/no, 1/0; any case, surrounding blanks ignored, empty = not
  labelled yet); the regression target becomes `float64`.

What cannot be brought to this form raises `DataError` naming the file, the column and the rule.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core.schema import DataError  # data.prepare (ctloop/io/data.py) calls this module

# Two-valued text encodings of a classification label: one per column (mixing is refused).
LABEL_ENCODINGS: tuple[dict[str, float], ...] = (
    {"true": 1.0, "false": 0.0},
    {"yes": 1.0, "no": 0.0},
    {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0},
)
_INT64_MAX = float(np.iinfo(np.int64).max)


# --- columns ---------------------------------------------------------------------------


def normalise_column(values: pd.Series, zone: str = "UTC") -> pd.Series:
    """One column in its internal form (see the module docstring); the same object back when it
    is already in that form (no copy). Idempotent. Raises nothing for any pandas dtype: what it
    does not know is left as it is (the suite's `types` rule judges it)."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(_plain(dtype.categories.dtype))  # missing stays missing
        dtype = values.dtype
    if isinstance(dtype, pd.ArrowDtype):
        values = _from_arrow(values)
        dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return _floats(values)
    if isinstance(dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert(zone).dt.tz_localize(None).astype("datetime64[ns]")
    if pd.api.types.is_datetime64_dtype(dtype):
        return values if dtype == np.dtype("datetime64[ns]") else values.astype("datetime64[ns]")
    if pd.api.types.is_integer_dtype(dtype):
        return _integers(values)
    if pd.api.types.is_float_dtype(dtype):
        return values if dtype == np.dtype("float64") else _floats(values)
    if isinstance(dtype, pd.StringDtype):
        return _objects(values.astype(object))
    if dtype == np.dtype(object):
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind == "boolean":  # Python/NumPy True/False with None (Parquet bool with nulls)
            return _floats(values.astype("boolean"))
        return _objects(values)
    return values


def _plain(categories: Any) -> Any:
    """The dtype a category column's values become: NumPy ints and bools cannot hold a gap."""
    if pd.api.types.is_bool_dtype(categories):
        return "boolean"
    if pd.api.types.is_integer_dtype(categories) and not isinstance(categories, pd.ArrowDtype):
        return "Int64"
    return categories


def _from_arrow(values: pd.Series) -> pd.Series:
    """An Arrow-backed column as the matching NumPy/pandas one (then normalised as such)."""
    import pyarrow as pa

    kind = values.dtype.pyarrow_dtype  # type: ignore[attr-defined]
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        aware = getattr(kind, "tz", None) is not None
        return pd.to_datetime(values.astype(object), errors="coerce", utc=aware)
    if pa.types.is_boolean(kind):
        return values.astype("boolean")
    if pa.types.is_integer(kind):
        return values.astype("Int64") if _fits_int64(values) else _floats(values)
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return _floats(values)
    return values.astype(object)  # strings, dictionaries and anything else: plain objects


def _fits_int64(values: pd.Series) -> bool:
    present = values.dropna()
    return present.empty or float(present.max()) <= _INT64_MAX


def _floats(values: pd.Series) -> pd.Series:
    """float64 with NaN for every missing value (pd.NA included)."""
    array = values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(array, index=values.index, name=values.name)


def _integers(values: pd.Series) -> pd.Series:
    if values.dtype == np.dtype("int64"):
        return values
    if values.isna().any() or not _fits_int64(values):
        return _floats(values)
    return pd.Series(values.to_numpy(dtype="int64"), index=values.index, name=values.name)


def _objects(values: pd.Series) -> pd.Series:
    """Text as object with NaN for a missing value (None and pd.NA alike)."""
    missing = values.isna()
    if not missing.any():
        return values
    if all(v is np.nan or (isinstance(v, float) and np.isnan(v)) for v in values[missing]):
        return values
    out = values.astype(object).copy()
    out[missing] = np.nan
    return out


# --- target ----------------------------------------------------------------------------


def encode_target(values: pd.Series, task: str, origin: str, zone: str = "UTC") -> pd.Series:
    """The target as float64: classification 1.0/0.0 (NaN: not labelled yet), regression numbers.

    Raises DataError (rule 'target', naming file and column) for labels that are not one
    two-valued encoding (numbers other than 0/1, three text values, two encodings mixed) or a
    regression target that holds text."""
    column = values.name
    normal = normalise_column(values, zone)
    if normal.dtype == np.dtype(object):
        text = normal.map(lambda v: str(v).strip().lower() if pd.notna(v) else np.nan)
        text = text.where(text != "", np.nan)
        if task == "classification":
            return _text_labels(text, origin, column)
        number = pd.to_numeric(text, errors="coerce")
        bad = number.isna() & text.notna()
        if bad.any():
            raise DataError(
                f"{origin}: column '{column}': rule 'target': {int(bad.sum())} value(s) are not "
                f"numbers, e.g. {values[bad].iloc[0]!r} (a regression target holds numbers; "
                "leave a value empty when it is not known yet)"
            )
        return _floats(number)
    if not pd.api.types.is_numeric_dtype(normal.dtype):
        raise DataError(
            f"{origin}: column '{column}': rule 'target': values of type {values.dtype} are not "
            f"{'labels' if task == 'classification' else 'numbers'}"
        )
    floats = _floats(normal)
    if task == "classification":
        seen = set(pd.unique(floats.dropna()))
        if not seen <= {0.0, 1.0}:
            shown = ", ".join(_show(v) for v in sorted(seen)[:5])
            raise DataError(
                f"{origin}: column '{column}': rule 'target': labels must be two classes coded "
                f"0/1 (or true/false, yes/no), found {len(seen)} distinct value(s): {shown}"
            )
    return floats


def _text_labels(text: pd.Series, origin: str, column: Any) -> pd.Series:
    present = [str(v) for v in pd.unique(text.dropna())]
    for encoding in LABEL_ENCODINGS:
        if set(present) <= set(encoding):
            return _floats(text.map(encoding))
    shown = ", ".join(repr(v) for v in sorted(present)[:5])
    raise DataError(
        f"{origin}: column '{column}': rule 'target': {len(present)} distinct label(s) ({shown}) "
        "are not one two-valued encoding; use one of true/false, yes/no or 1/0 (any case) for "
        "the positive/negative class, empty when not labelled yet"
    )


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


# --- time column -----------------------------------------------------------------------


def parse_times(values: pd.Series, zone: str, origin: str) -> pd.Series:
    """The time column as naive `datetime64[ns]` wall-clock time in `zone` (see the module
    docstring). Raises DataError (rule 'time_column') for values that are not dates, naming
    how many and one of them, and for a column mixing values with and without a UTC offset."""
    column = values.name
    normal = normalise_column(values, zone)
    if pd.api.types.is_datetime64_dtype(normal.dtype):
        parsed = normal
    else:
        parsed = _parse_text_times(normal, zone, origin)
    bad = parsed.isna() & values.notna()
    if bad.any():
        _refuse_mixed_offsets(values, origin)
        example = values[bad].iloc[0]
        alone = _quiet_to_datetime(values[bad].astype(object))
        hint = (
            "; they are dates on their own: the column mixes date formats, or values with and "
            "without a UTC offset (give every value the same form)"
            if alone.notna().any()
            else ""
        )
        raise DataError(
            f"{origin}: column '{column}': rule 'time_column': {int(bad.sum())} value(s) are not "
            f"dates, e.g. {example!r}{hint}"
        )
    return parsed


def _refuse_mixed_offsets(values: pd.Series, origin: str) -> None:
    """pandas parses a column in the form of its first value: when values with and without a
    UTC offset are mixed, say so (counting each kind) rather than call the others no dates."""
    present = values.dropna().astype(object)
    codes, uniques = pd.factorize(present)
    stamps = [_one_time(v, utc=False) for v in uniques]
    aware_unique = np.array([getattr(t, "tzinfo", None) is not None for t in stamps], dtype=bool)
    naive_unique = np.array(
        [t is not pd.NaT and not a for t, a in zip(stamps, aware_unique, strict=True)], dtype=bool
    )
    aware, naive = aware_unique[codes], naive_unique[codes]
    if aware.any() and naive.any():
        raise DataError(
            f"{origin}: column '{values.name}': rule 'time_column': {int(naive.sum())} "
            f"value(s) have no UTC offset while {int(aware.sum())} have one, e.g. "
            f"{present[naive].iloc[0]!r} and {present[aware].iloc[0]!r}: the time is "
            "ambiguous (give every value an offset, or none)"
        )


def _parse_text_times(values: pd.Series, zone: str, origin: str) -> pd.Series:
    parsed = _quiet_to_datetime(values)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # one offset or zone for every value
        return normalise_column(parsed, zone)
    if parsed.dtype == np.dtype(object):  # several offsets (a DST switch), maybe values without one
        aware = parsed.map(lambda v: getattr(v, "tzinfo", None) is not None)
        naive = parsed.notna() & ~aware
        if aware.any() and naive.any():
            raise DataError(
                f"{origin}: column '{values.name}': rule 'time_column': {int(naive.sum())} "
                f"value(s) have no UTC offset while {int(aware.sum())} have one, e.g. "
                f"{values[naive].iloc[0]!r} and {values[aware].iloc[0]!r}: the time is "
                "ambiguous (give every value an offset, or none)"
            )
        utc = _quiet_to_datetime(values, utc=True)
        return normalise_column(utc, zone)
    return parsed


def _quiet_to_datetime(values: pd.Series, utc: bool = False) -> pd.Series:
    """pd.to_datetime with unparseable values as NaT and pandas' format warnings silenced (the
    caller reports what did not parse)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, UserWarning))
        try:
            return pd.to_datetime(values, errors="coerce", utc=utc)
        except (TypeError, ValueError, OverflowError):  # mixed objects pandas refuses outright
            return pd.Series(
                [_one_time(v, utc) for v in values], index=values.index, name=values.name
            )


def _one_time(value: object, utc: bool) -> Any:
    try:
        return pd.to_datetime(value, utc=utc)
    except (TypeError, ValueError, OverflowError):
        return pd.NaT


# --- canonical view (content identity) -------------------------------------------------


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """The values of a frame independent of their dtype, for content hashes: every column
    normalised, and whole-number float columns without missing values as int64 (so an int64
    column and the same numbers stored as float64 hash alike). Not for storage."""
    out = {}
    for position in range(df.shape[1]):
        column = normalise_column(df.iloc[:, position])
        if column.dtype == np.dtype("float64"):
            array = column.to_numpy()
            if (
                len(array)
                and np.isfinite(array).all()
                and (np.abs(array) < 2**62).all()
                and (array == np.round(array)).all()
            ):
                column = pd.Series(array.astype("int64"), index=column.index)
        out[position] = column.reset_index(drop=True)
    frame = pd.DataFrame(out)
    frame.columns = df.columns
    return frame
