"""Production simulated on the source data: one period delivered at a time into the landing folder,
optionally with labels arriving `label_delay` periods after the features. Without a time column
the "periods" are the source's blocks (`part-00005`, ...): each delivery is one block, which the
ingestion numbers after the newest batch. Pure planning and cutting here; `ctloop replay` writes
the files and announces them. After each delivery it prints what the month did (`read_month` from
MLflow, `month_row`/`markdown_table` pure): the champion, its score, the verdict, the retrain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.core import names
from ctloop.core.config import DataConfig, Project
from ctloop.io import data, files, registry, tracking


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


# --- what each delivered month did: the table `ctloop replay` prints --------------------------


@dataclass(frozen=True)
class MonthFacts:
    """What the monitor recorded for one delivered period (its newest monitoring run)."""

    period: str
    champion: str | None = None  # the version that scored it; None: not monitored (yet)
    champion_holdout: float | None = None
    score: float | None = None  # the champion's metric on the period; None: no labels
    retrain: bool | None = None  # the policy's verdict
    reasons: tuple[str, ...] = ()
    decay: float | None = None
    # the champion's estimated metric on the period (CBPE/DLE) and its 95% interval; None: none
    estimate: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class RetrainFacts:
    """A version registered after the period was monitored, with the period as its holdout."""

    version: str
    first: str  # first training batch
    holdout: str
    score: float | None  # the challenger's metric on the holdout (the period)
    champion_score: float | None
    promoted: bool


COLUMNS = (
    "month",
    "champion",
    "its {metric} on the month",
    "estimated (95% interval)",
    "verdict",
    "retrain (gate on the month)",
)
ALIGN = ("---", "---", "---:", "---", "---", "---")


def _figure(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def estimate_text(estimate: tuple[float, float, float] | None) -> str:
    """`0.7407 [0.7317..0.7502]` (README "Estimated performance"); `—` without an estimate."""
    if estimate is None:
        return "—"
    value, lower, upper = estimate
    return f"{value:.4f} [{lower:.4f}..{upper:.4f}]"


def verdict_text(facts: MonthFacts) -> str:
    """`keep`, `decay 0.032`, `drift, decay 0.041`; `not monitored yet` before the run."""
    if facts.retrain is None:
        return "not monitored yet"
    if not facts.retrain:
        return "keep"
    words = []
    for reason in facts.reasons:
        word = reason.split(":", 1)[0].strip()
        if word == "decay" and facts.decay is not None:
            word = f"decay {facts.decay:.3f}"
        if word not in words:
            words.append(word)
    return ", ".join(words) or "retrain"


def retrain_text(facts: MonthFacts, retrains: list[RetrainFacts]) -> str:
    """`v2 on 2013-01..07: 0.7493 vs 0.7195, promoted`; `—` when none was asked for."""
    if not retrains:
        return "asked, none trained (yet)" if facts.retrain else "—"
    parts = []
    for r in retrains:
        window = names.short_window(r.first, r.holdout)
        versus = "" if r.champion_score is None else f" vs {_figure(r.champion_score)}"
        outcome = "promoted" if r.promoted else "kept the champion"
        parts.append(f"v{r.version} on {window}: {_figure(r.score)}{versus}, {outcome}")
    return "; ".join(parts)


def month_row(
    facts: MonthFacts, retrains: list[RetrainFacts], previous_champion: str | None
) -> tuple[str, ...]:
    """One line of the table: the champion (with its holdout figure when it changed since the
    previous line), its score on the month, its estimated score (labels or not), the verdict,
    the retrain's outcome."""
    if facts.champion is None:
        champion = "—"
    elif facts.champion != previous_champion:
        champion = f"v{facts.champion} (holdout {_figure(facts.champion_holdout)})"
    else:
        champion = f"v{facts.champion}"
    score = "no labels" if facts.score is None else _figure(facts.score)
    if facts.champion is None:
        score = "—"
    return (
        facts.period,
        champion,
        score,
        estimate_text(facts.estimate),
        verdict_text(facts),
        retrain_text(facts, retrains),
    )


def markdown_table(metric: str, rows: list[tuple[str, ...]]) -> str:
    """The rows as the Markdown table README shows under "Continuous training"."""
    head = [c.format(metric=metric) for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(ALIGN) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _estimate(metrics: dict[str, float], key: str) -> tuple[float, float, float] | None:
    """(value, lower, upper) of the monitoring run's estimate (ctloop/steps/estimate.py logs
    `<key>`, `<key>_lower`, `<key>_upper`); None when any is missing."""
    try:
        return metrics[key], metrics[f"{key}_lower"], metrics[f"{key}_upper"]
    except KeyError:
        return None


def read_month(
    project: Project, period: str, since_ms: int
) -> tuple[MonthFacts, list[RetrainFacts]]:
    """The newest monitoring run of `period` started at or after `since_ms` (epoch ms) and the
    versions registered since then with `period` as their holdout, from MLflow."""
    from mlflow import MlflowClient

    cfg = project.params
    exp = tracking.use_monitoring_experiment(project)
    client = MlflowClient()
    runs = client.search_runs(
        [exp],
        f"tags.`ctloop.kind` = 'monitoring' and tags.`ctloop.batch` = '{period}' "
        f"and attributes.start_time >= {since_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    facts = MonthFacts(period)
    if runs:
        tags, metrics = runs[0].data.tags, runs[0].data.metrics
        version = tags.get("ctloop.model_version")
        holdout = None
        if version:
            found = client.get_model_version(cfg.promotion.model_name, version)
            raw = (found.tags or {}).get(f"ctloop.holdout_{cfg.metric}")
            holdout = float(raw) if raw else None
        done = "ctloop.retrain" in tags
        facts = MonthFacts(
            period,
            version,
            holdout,
            metrics.get(f"batch_{cfg.metric}"),
            (tags["ctloop.retrain"] == "True") if done else None,
            tuple(r for r in tags.get("ctloop.reasons", "").split("; ") if r and r != "none"),
            metrics.get("decay"),
            _estimate(metrics, f"estimated_{cfg.metric}"),
        )
    retrains = []
    for v in registry.versions(cfg.promotion.model_name):
        vtags = v.tags or {}
        holdout_batches = vtags.get("ctloop.holdout_batches", "").split(",")
        if v.creation_timestamp < since_ms or holdout_batches[-1] != period:
            continue
        if "promotion.promote" not in vtags:
            continue  # not gated (yet)
        first = vtags.get(tracking.SUITE_REFERENCE_TAG, "").split(",")[0] or period

        def num(key: str, tags: dict[str, str] = vtags) -> float | None:
            raw = tags.get(key, "")
            return float(raw) if raw not in {"", "None"} else None

        retrains.append(
            RetrainFacts(
                str(v.version),
                first,
                period,
                num("promotion.challenger_score"),
                num("promotion.champion_score"),
                vtags["promotion.promote"] == "True",
            )
        )
    return facts, retrains
