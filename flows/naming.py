"""The flows' `flow_run_name` callables: each reads the run's parameters from Prefect's runtime
and names the run after its work (ctloop/core/names.py), so the Prefect UI lists
`train 2013-01..2013-06 (manual)`, `monitor 2013-07`, `retrain 2013-07 (decay)`,
`predict flights.csv` instead of random words."""

from __future__ import annotations

from typing import Any

from ctloop.core import names
from ctloop.core.config import load_project


def _parameters() -> dict[str, Any]:
    """The current flow run's parameters (those given; defaults may be absent)."""
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})


def train_run_name() -> str:
    """train-model: the window given (a retrain's) or the `split` window of params.yaml."""
    p = _parameters()
    first, last = p.get("window_start"), p.get("window_end")
    if first is None and last is None:
        split = load_project(p.get("params_path", "params.yaml")).params.split
        first, last = split.window_start, split.window_end
    return names.train_flow_run(first, last, p.get("trigger", "manual"))


def retrain_run_name() -> str:
    """retrain-model: the batch and the trigger the event (or the schedule, or a person) gave."""
    p = _parameters()
    return names.retrain_flow_run(p.get("batch"), p.get("trigger", "manual"))


def monitor_run_name() -> str:
    """monitor-batch: the delivered period, from the landed file's name."""
    return names.monitor_flow_run(str(_parameters().get("path", "")))


def predict_run_name() -> str:
    """predict-batch: the scored file."""
    return names.predict_flow_run(_parameters().get("input_path"))
