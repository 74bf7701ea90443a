"""Names that say what a run is: Prefect flow-run names and MLflow run names and descriptions,
built from the work (window, batch, trigger, model version). Pure; no Prefect, no MLflow.

Prefect shows a flow run's name in full (`train 2013-01..2013-06 (manual)`); the MLflow runs table
cuts names at about 20 characters, so MLflow names put what tells runs apart first
(`v3 train 01..06 manual`, `monitor 2013-07 v3`).
"""

from __future__ import annotations

from pathlib import PurePath

from ctloop.core import events

# how a run was started, in one or two words (the `trigger` parameter of the flows: a word, or
# the name of the event that started a retrain)
TRIGGER_WORDS = {
    "manual": "manual",
    "schedule": "schedule",
    events.DRIFT_DETECTED: "drift",
    events.PERFORMANCE_DEGRADED: "decay",
    events.ESTIMATED_DEGRADED: "estimated decay",
    events.RETRAIN_DUE: "new data",
    events.DATA_ARRIVED: "new data",
    events.SHADOW_PROMOTED: "shadow",
}

DELIVERY_PREFIX = "delivery-"  # ctloop replay's files: delivery-<period>[-features].parquet
FEATURES_SUFFIX = "-features"


def trigger_word(trigger: str | None) -> str:
    """`ctloop.performance.degraded` -> `decay`, `schedule` -> `schedule`; an unknown trigger
    keeps its last dotted part (`ctloop.foo.bar` -> `bar`); None or empty -> `manual`."""
    if not trigger:
        return "manual"
    return TRIGGER_WORDS.get(trigger, trigger.rsplit(".", 1)[-1].replace("_", " "))


def window_text(first: str | None, last: str | None) -> str:
    """`2013-01..2013-06`; one side only when the other is not given; `configured window` when
    neither is (the `split` of params.yaml)."""
    if first and last:
        return first if first == last else f"{first}..{last}"
    return first or last or "configured window"


def short_window(first: str, last: str) -> str:
    """`2013-01..06` when both periods share the part before the last dash, else the full
    window (`2012-11..2013-02`, `part-00001..part-00004` -> `part-00001..00004`)."""
    if first == last:
        return first
    head, sep, tail = last.rpartition("-")
    if sep and first.startswith(head + sep):
        return f"{first}..{tail}"
    return f"{first}..{last}"


def delivery_label(path: str) -> str:
    """What a landed file holds, from its name: `delivery-2013-07.parquet` -> `2013-07`,
    `delivery-2013-07-features.parquet` -> `2013-07 (no labels)`, any other file -> its name."""
    name = PurePath(path).name
    stem = PurePath(name).stem
    if not stem.startswith(DELIVERY_PREFIX):
        return name
    period = stem.removeprefix(DELIVERY_PREFIX)
    if period.endswith(FEATURES_SUFFIX):
        return f"{period.removesuffix(FEATURES_SUFFIX)} (no labels)"
    return period


# --- Prefect flow-run names ---------------------------------------------------------------


def train_flow_run(first: str | None, last: str | None, trigger: str | None) -> str:
    """`train 2013-01..2013-06 (manual)`."""
    return f"train {window_text(first, last)} ({trigger_word(trigger)})"


def retrain_flow_run(batch: str | None, trigger: str | None) -> str:
    """`retrain 2013-07 (decay)`; `retrain newest window (schedule)` when no batch started it."""
    return f"retrain {batch or 'newest window'} ({trigger_word(trigger)})"


def monitor_flow_run(path: str) -> str:
    """`monitor 2013-07`, `monitor 2013-07 (no labels)`, `monitor flights.csv`."""
    return f"monitor {delivery_label(path)}"


def predict_flow_run(input_path: str | None) -> str:
    """`predict <file name>`."""
    return f"predict {PurePath(input_path).name if input_path else '(no input)'}"


# --- MLflow run names and descriptions -----------------------------------------------------


def training_run(version: str | None, first: str, last: str, trigger: str | None) -> str:
    """`v3 train 2013-01..06 manual` (`train 2013-01..06 manual` before the version is known)."""
    body = f"train {short_window(first, last)} {trigger_word(trigger)}"
    return f"v{version} {body}" if version else body


def monitoring_run(batch: str, version: str) -> str:
    """`monitor 2013-07 v3`."""
    return f"monitor {batch} v{version}"


def training_note(
    first: str,
    holdout: str,
    trigger: str | None,
    reason: str = "",
    version: str | None = None,
    decision: str | None = None,
) -> str:
    """The training run's description (Markdown): what, window, trigger, and the gate's decision
    once known."""
    lines = [
        f"**Training** on {window_text(first, holdout)} (holdout {holdout}), "
        f"trigger: {trigger_word(trigger)}" + (f" ({reason})" if reason else "") + ".",
    ]
    if version is not None:
        lines.append(f"\nRegistered **v{version}**: {decision or 'no decision recorded'}.")
    return "\n".join(lines)


def monitoring_note(
    batch: str,
    version: str,
    metric: str,
    score: float | None,
    retrain: bool | None = None,
    reasons: tuple[str, ...] = (),
) -> str:
    """The monitoring run's description (Markdown): batch, champion, its score, the verdict."""
    measured = "no labels" if score is None else f"{score:.4f}"
    lines = [f"**Monitoring** batch {batch} with champion v{version}: {metric} {measured}."]
    if retrain is not None:
        verdict = "RETRAIN" if retrain else "keep"
        lines.append(f"\nVerdict: **{verdict}**" + (f" ({'; '.join(reasons)})" if reasons else ""))
    return "\n".join(lines)
