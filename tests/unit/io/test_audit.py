"""Audit trail of `champion` in the real MLflow registry (SQLite in tmp_path), and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ctloop.core import promotion
from ctloop.io import audit, registry, tracking

ROOT = Path(__file__).resolve().parents[3]
CTLOOP = str(Path(sys.executable).parent / "ctloop")
NAME = "audit-model"
DECIDE = dict(metric="roc_auc", greater_is_better=True, margin=0.01, floor=0.6)


def _register(n: int, root: Path, name: str = NAME) -> list[str]:
    """`n` tiny registered versions of `name` in the store at root/mlflow.db."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    tracking.use_store(f"sqlite:///{root}/mlflow.db")
    experiment = tracking.configure(f"sqlite:///{root}/mlflow.db", name, root / "art")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 2)), np.array([0, 1] * 10)
    versions = []
    for _ in range(n):
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sklearn.log_model(
                LogisticRegression().fit(X, y),
                name="model",
                registered_model_name=name,
                pip_requirements=["scikit-learn"],  # skips MLflow's slow environment inference
            )
        versions.append(str(info.registered_model_version))
    return versions


def _promote(version: str, score: float) -> None:
    """Decide against the current champion (with made-up scores) and apply."""
    champion = registry.get_alias(NAME, registry.CHAMPION)
    decision = promotion.decide(
        challenger_version=version,
        challenger_score=score,
        champion_version=None if champion is None else str(champion.version),
        champion_score=None if champion is None else score - 0.05,
        **DECIDE,
    )
    assert decision.promote
    registry.apply_decision(NAME, decision)


def _champion() -> str | None:
    found = registry.get_alias(NAME, registry.CHAMPION)
    return None if found is None else str(found.version)


def test_promotions_and_rollbacks_are_recorded_without_ping_pong(tmp_path: Path) -> None:
    v1, v2, v3 = _register(3, tmp_path)
    _promote(v1, 0.70)
    _promote(v2, 0.75)
    _promote(v3, 0.80)
    events = audit.history(NAME)
    assert [(e.action, e.from_version, e.to_version) for e in events] == [
        ("promote", None, v1),
        ("promote", v1, v2),
        ("promote", v2, v3),
    ]
    assert events[1].metric == "roc_auc" and events[1].challenger_score == 0.75
    assert events[1].champion_score == pytest.approx(0.70)
    assert all(e.applied for e in events) and "gain" in events[2].reason

    first = audit.rollback(NAME, "bad predictions on March")
    assert (first.from_version, first.to_version) == (v3, v2) and _champion() == v2
    assert first.challenger_score == 0.75 and first.champion_score == 0.80  # promotion.* tags
    second = audit.rollback(NAME, "still bad")  # back further, not to v3
    assert (second.from_version, second.to_version) == (v2, v1) and _champion() == v1
    with pytest.raises(audit.AuditError, match=f"'{NAME}'.*v{v1} has no recorded previous"):
        audit.rollback(NAME, "nothing left")
    assert _champion() == v1

    events = audit.history(NAME)
    assert [e.action for e in events] == ["promote"] * 3 + ["rollback"] * 2
    assert events[-1].reason == "still bad" and all(e.applied for e in events)
    table = audit.format_history(events)
    assert "rollback" in table and f"v{v2} -> v{v1}" in table and "still bad" in table


def test_no_champion_is_a_clear_error(tmp_path: Path) -> None:
    _register(1, tmp_path)
    with pytest.raises(audit.AuditError, match=f"'{NAME}' has no champion"):
        audit.rollback(NAME, "why not")
    with pytest.raises(audit.AuditError, match="not registered"):
        audit.history("no-such-model")


def test_event_without_alias_move_shows_as_not_applied(tmp_path: Path) -> None:
    v1, v2, v3 = _register(3, tmp_path)
    _promote(v1, 0.70)
    crashed = audit.new_event("promote", v1, v2, "crashed before the alias move")
    audit.record_event(NAME, crashed)  # the alias is not moved: a crash in between
    latest = audit.history(NAME)[-1]
    assert latest.to_version == v2 and not latest.applied
    assert "promote (not applied)" in audit.format_history([latest])

    _promote(v3, 0.80)  # a later promotion: the crashed event stays not applied
    events = audit.history(NAME)
    assert [e.applied for e in events] == [True, False, True]
    assert audit.rollback(NAME, "v3 bad").to_version == v1  # never to the unapplied v2


def test_garbled_tags_are_skipped_with_a_warning(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    v1 = _register(1, tmp_path)[0]
    _promote(v1, 0.70)
    client = MlflowClient()
    client.set_registered_model_tag(NAME, "ctloop.event.9999999999990", "{not json")
    client.set_registered_model_tag(NAME, "ctloop.event.9999999999991", '{"action": "oops"}')
    client.set_registered_model_tag(NAME, "ctloop.event.later", "{}")
    client.set_registered_model_tag(NAME, "owner", "team")  # not an event: silently ignored
    with pytest.warns(audit.AuditWarning) as caught:
        events = audit.history(NAME)
    assert len(caught) == 3
    assert [(e.action, e.to_version, e.applied) for e in events] == [("promote", v1, True)]


def test_cli_history_and_rollback(tmp_path: Path) -> None:
    v1, v2 = _register(2, tmp_path)
    _promote(v1, 0.70)
    _promote(v2, 0.75)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["promotion"]["model_name"] = NAME
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))  # mlflow.db: tmp_path's
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def ctloop(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [CTLOOP, *args, "--params", str(tmp_path / "params.yaml")]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)

    shown = ctloop("history")
    assert shown.returncode == 0, shown.stderr
    assert f"- -> v{v1}" in shown.stdout and f"v{v1} -> v{v2}" in shown.stdout
    moved = ctloop("rollback", "--reason", "bad")
    assert moved.returncode == 0, moved.stderr
    assert f"v{v2} -> v{v1}" in moved.stdout and "bad" in moved.stdout
    assert _champion() == v1
    refused = ctloop("rollback", "--reason", "again")
    assert refused.returncode == 1
    assert f"'{NAME}'" in refused.stderr and "no recorded previous champion" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_event_carries_the_bootstrap_interval_and_old_events_still_read() -> None:
    """The gate's interval is stored with a promotion and shown by `ctloop history`; an event
    recorded before the bootstrap gate (no interval keys) reads back without one."""
    event = audit.new_event(
        "promote",
        "1",
        "2",
        "gate",
        "roc_auc",
        0.75,
        0.72,
        gain_lower=0.012,
        gain_upper=0.041,
        confidence=0.95,
    )
    back = audit.parse_event(event.to_json())
    assert (back.gain_lower, back.gain_upper, back.confidence) == (0.012, 0.041, 0.95)
    assert "roc_auc 0.7500 (was 0.7200; gain [95% +0.0120, +0.0410])" in audit.format_history(
        [back]
    )
    old = '{"action":"promote","from":"1","to":"2","metric":"roc_auc","challenger_score":0.75,'
    old += '"champion_score":0.72,"reason":"gain","time":"2026-01-01T00:00:00.000+00:00"}'
    read = audit.parse_event(old)
    assert read.interval() is None and "(was 0.7200)" in audit.format_history([read])
    point = audit.new_event("promote", "1", "2", "gate", "roc_auc", 0.75, 0.72)
    assert "gain_lower" not in point.to_json()  # the point gate's events keep their old form
