"""Production simulated on the source data: one period delivered at a time into the landing folder,
optionally with labels arriving `label_delay` periods after the features. Without a time column
the "periods" are the source's blocks (`part-00005`, ...): each delivery is one block, which the
ingestion numbers after the newest batch. Pure planning and cutting here; `ctloop replay` writes
the files and announces them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.core.config import DataConfig
from ctloop.io import data, files


@dataclass(frozen=True)
class Delivery:
    """One file of the replay: a period, with or without its labels."""

    period: str
    labelled: bool

    @property
    def file_name(self) -> str:
        return f"delivery-{self.period}{'' if self.labelled else '-features'}.parquet"


def plan(periods: list[str], label_delay: int) -> list[Delivery]:
    """Deliveries in arrival order: each period's features, and its labels `label_delay` periods
    later (right away when 0); labels still owed at the end come last."""
    if label_delay == 0:
        return [Delivery(p, labelled=True) for p in periods]
    out: list[Delivery] = []
    for i, period in enumerate(periods):
        out.append(Delivery(period, labelled=False))
        if i >= label_delay:
            out.append(Delivery(periods[i - label_delay], labelled=True))
    out.extend(Delivery(p, labelled=True) for p in periods[max(0, len(periods) - label_delay) :])
    return out


def label_source_column(cfg: DataConfig) -> str:
    """The raw column the target comes from (hidden until the labels arrive)."""
    return cfg.derive_target.column if cfg.derive_target else cfg.target


def periods_of(
    raw: pd.DataFrame, cfg: DataConfig, blocks: data.BlockRule | None = None
) -> pd.Series:
    """The batch each raw source row falls in, as the ingestion cuts the source: its period of
    the time column; without one, its block in file order (`part-00001`, ... by `blocks`, default
    `data.BlockRule.of(cfg)`), so `data.ingest_until` and `replay.start`/`end` name blocks."""
    if not cfg.time_column:
        bounds = data.block_bounds(len(raw), blocks or data.BlockRule.of(cfg))
        names = data.next_arrival_names([], len(bounds))
        labels = np.empty(len(raw), dtype=object)
        for name, (start, stop) in zip(names, bounds, strict=True):
            labels[start:stop] = name
        return pd.Series(labels, index=raw.index, dtype=object)
    times = pd.to_datetime(raw[cfg.time_column], errors="coerce")
    return data.period_labels(times, cfg.batch_frequency)


def select(periods: list[str], start: str, end: str) -> list[str]:
    """The periods to replay, [start, end] by their sortable names; DataError (rule 'replay')
    naming replay.start/end and the source's periods when none is inside (a leftover range of
    another dataset must not replay nothing and succeed)."""
    chosen = data.select_periods(periods, start, end)
    if not chosen:
        have = sorted(periods)
        span = f"{have[0]}..{have[-1]}" if have else "none"
        raise data.DataError(
            f"replay: rule 'replay': no batch of the source lies in {start}..{end} "
            f"(replay.start..replay.end or --start/--end); the source's batches: {span}"
        )
    return chosen


def delivery_frame(rows: pd.DataFrame, cfg: DataConfig, labelled: bool) -> pd.DataFrame:
    """The delivered file: the period's rows, the label column blanked when not yet known."""
    if labelled:
        return rows
    column = label_source_column(cfg)
    return rows.assign(**{column: np.nan})


def write_delivery(frame: pd.DataFrame, landing: Path, delivery: Delivery) -> Path:
    """Write a delivery into the landing folder atomically; returns its path."""
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / delivery.file_name
    return files.write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
