"""The monitor's decisions on a landed file (ctloop/steps/landed.py): which events a batch's fate
gives, and a refused file quarantined with its reason (no Prefect: the flow emits them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctloop.core import events, policy
from ctloop.core.config import Project
from ctloop.core.schema import DataError
from ctloop.ml.drift import DriftSummary
from ctloop.steps import landed
from ctloop.steps.monitoring import Champion

CHAMPION = Champion("ctloop-flights", "3", ("2013-01", "2013-02"), ("2013-03",), 0.75)
DRIFT = DriftSummary(True, 0.5, 0.5, 8, 16, (), 1000, 200)


def _signals(score: float | None) -> policy.Signals:
    return policy.Signals("2013-07", "3", True, ("dep_time",), 0.5, "roc_auc", score, 0.75, 4)


@given(drift=st.booleans(), decay=st.booleans(), due=st.booleans())
def test_each_fired_trigger_gives_its_event_after_monitored(
    drift: bool, decay: bool, due: bool
) -> None:
    verdict = policy.Verdict(drift, decay, due, 0.05 if decay else None, ("why",))
    out = landed.monitored_events(
        "2013-07", CHAMPION, _signals(0.7), verdict, DRIFT, Path("p.parquet"), Path("d.html")
    )
    expected = [events.BATCH_MONITORED]
    expected += [events.DRIFT_DETECTED] if drift else []
    expected += [events.PERFORMANCE_DEGRADED] if decay else []
    expected += [events.RETRAIN_DUE] if due else []
    assert [e.name for e in out] == expected
    assert all(e.payload["batch"] == "2013-07" and e.payload["model_version"] == "3" for e in out)
    assert out[0].payload["batch_score"] == 0.7 and out[0].payload["drift_report"] == "d.html"
    word = "retrain" if verdict.retrain else "keep"
    for e in out:  # the Event Feed's resource filter finds the batch's model, metric and verdict
        assert e.payload["verdict"] == word and e.payload["metric"] == _signals(0.7).metric
        ids = {r["prefect.resource.id"] for r in e.related}
        assert f"ctloop.verdict.{word}" in ids
        assert f"ctloop.metric.{_signals(0.7).metric}" in ids
        assert f"ctloop.model-version.{CHAMPION.name}.3" in ids


def test_validated_events_are_related_to_the_champion_only_when_there_is_one() -> None:
    warned = {"2013-07": ("w1",), "2013-08": ()}
    with_champion = landed.validated_events("f.csv", list(warned), "abc", warned, CHAMPION)
    without = landed.validated_events("f.csv", list(warned), "abc", warned, None)
    assert [e.payload["warnings"] for e in with_champion] == [["w1"], []]
    assert all(e.related for e in with_champion) and not any(e.related for e in without)


def test_a_refused_file_is_quarantined_and_announced_naming_rule_and_column(
    make_project: Callable[..., Project],
) -> None:
    project = make_project()
    folder = project.path("landing")
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "delivery.csv"
    file.write_text("a,b\n1,2\n")
    err = DataError(f"{file}: column 'dep_time': rule 'types': text where numbers are expected")
    refusal = landed.refuse_file(project, "delivery.csv", file, err)
    assert not file.exists()
    moved = next(project.path("quarantine").rglob("delivery.csv"))
    assert "rule 'types'" in (moved.parent / "reason.txt").read_text()
    assert isinstance(refusal.error, DataError) and str(moved.parent) in str(refusal.error)
    assert refusal.event is not None and refusal.event.name == events.BATCH_QUARANTINED
    assert (refusal.event.payload["rule"], refusal.event.payload["column"]) == ("types", "dep_time")


def test_an_unexpected_fault_becomes_ctloops_internal_rule_keeping_the_original() -> None:
    err = landed.internal_error(Path("landing/x.csv"), "reading", KeyError("boom"))
    assert isinstance(err, DataError)
    assert "rule 'internal'" in str(err) and "KeyError" in str(err) and "boom" in str(err)


@pytest.mark.parametrize("success", [True, False])
def test_only_failed_reports_give_quarantined_events(success: bool) -> None:
    from ctloop.ml.validation import RuleResult, ValidationReport

    rule = RuleResult("types", "expect_type", "dep_time", "critical", success, "text")
    report = ValidationReport(batch="2013-07", file="f.csv", rows=10, results=(rule,))
    out = landed.quarantined_events("f.csv", Path("landing/f.csv"), [report])
    assert len(out) == (0 if success else 1)


def test_estimated_decay_gives_its_event_and_every_event_carries_the_estimate() -> None:
    from dataclasses import replace

    signals = replace(
        _signals(None), estimated_score=0.66, estimated_lower=0.63, estimated_upper=0.69
    )
    verdict = policy.Verdict(
        False, False, False, None, ("estimated decay: ...",), None, True, -0.12
    )
    out = landed.monitored_events(
        "2013-07", CHAMPION, signals, verdict, DRIFT, Path("p.parquet"), Path("d.html")
    )
    assert [e.name for e in out] == [events.BATCH_MONITORED, events.ESTIMATED_DEGRADED]
    for e in out:
        p = e.payload
        assert (p["estimated_score"], p["estimated_lower"], p["estimated_upper"]) == (
            0.66,
            0.63,
            0.69,
        )
        assert p["estimated_decay_relative"] == -0.12 and p["batch_score"] is None
