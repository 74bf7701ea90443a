"""The model card renders every section and ticks a checklist item only from what was checked."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import pytest

from ctloop.core import approval
from ctloop.core.promotion import SliceScore, decide
from ctloop.steps.model_card import (
    Check,
    DriftStatus,
    ModelCard,
    ValidationStatus,
    coverage_tolerance,
)

SLICES = (
    SliceScore("carrier", "UA", 900, 0.70, 0.74, True),
    SliceScore("carrier", "B6", 800, 0.73, 0.72, True),
    SliceScore("carrier", "OO", 12, 0.50, 0.61, False),
)


def _card(**changes: Any) -> ModelCard:
    """A complete card: every optional part given, gate promoting v3 over v2."""
    decision = decide("roc_auc", "3", 0.75, "2", 0.74, True, 0.002, 0.65, SLICES[1:], 0.02)
    base = ModelCard(
        model_name="flights",
        version="3",
        run_id="abc123",
        created="2013-07-01T00:00:00+00:00",
        task="classification",
        metric="roc_auc",
        greater_is_better=True,
        family="xgboost",
        data_version="43d27b09e362906103110495353f8952.dir",
        train_batches=("2013-01", "2013-02", "2013-03"),
        holdout_batches=("2013-04",),
        train_rows=90000,
        holdout_rows=28000,
        unlabelled_rows=700,
        cv_kind="stratified",
        folds=5,
        cv_mean=0.781,
        cv_std=0.0032,
        n_trials=10,
        n_pruned=7,
        best_params={"max_depth": 7, "learning_rate": 0.07315},
        holdout={"roc_auc": 0.75, "brier": 0.14},
        decision=decision,
        seed=42,
        git_commit="0123456789abcdef",
        intended_use="Rank flights for attention.",
        limitations=("NYC 2013 only.",),
        approval=approval.from_answer(True, "Ana", "ok"),
        validation=ValidationStatus(batches=4, rules=268, critical_failures=0, warnings=1),
        signature_logged=True,
        slice_columns=("carrier",),
        slice_min_size=500,
        slice_tolerance=0.02,
        importance=pd.DataFrame(
            {
                "feature": ["sched_dep_time", "carrier", "distance"],
                "importance_mean": [0.05, 0.02, 0.001],
                "importance_std": [0.004, 0.002, 0.0005],
            }
        ),
        shap=pd.DataFrame({"feature": ["num__sched_dep_time"], "mean_abs_shap": [0.31]}),
        brier=0.14,
        drift=DriftStatus("2013-05", ("2013-01", "2013-03"), False, 1, 16, ("temp",)),
    )
    return replace(base, **changes)


def _check(card: ModelCard, item_start: str) -> Check:
    [found] = [c for c in card.checklist() if c.item.startswith(item_start)]
    return found


def test_every_section_is_rendered_with_its_figures() -> None:
    text = _card().render()
    for heading in (
        "# Model card: flights v3",
        "## Decision",
        "## Intended use",
        "## Limitations",
        "## Data",
        "## Training and evaluation",
        "## Slices",
        "## Top features",
        "## Uncertainty",
        "## Drift at training time",
        "## ML Test Score checklist",
    ):
        assert heading in text, heading
    assert "`43d27b09e362906103110495353f8952.dir`" in text
    assert "2013-01..2013-03 (3 batches); 90000 labelled rows" in text
    assert "CV roc_auc: 0.7810 ± 0.0032 (5-fold stratified; 10 trials, 7 pruned)" in text
    assert "| roc_auc | 0.7500 |" in text
    assert "| sched_dep_time | 0.0500 | 0.0040 |" in text
    assert "| feature | mean \\|SHAP\\| |\n|---|---|\n| num__sched_dep_time | 0.3100 |" in text
    assert "Brier score on the holdout: 0.1400" in text
    assert "2013-05 vs 2013-01..2013-03: no dataset drift (1/16 columns drifted: temp)" in text
    assert "Rank flights for attention." in text and "- NYC 2013 only." in text
    assert "**promoted to champion**" in text and "approved by Ana: ok" in text


def test_slice_regressions_are_flagged_and_fail_the_slice_item() -> None:
    decision = decide("roc_auc", "3", 0.75, "2", 0.74, True, 0.002, 0.65, SLICES, 0.02)
    card = _card(decision=decision)
    text = card.render()
    assert "| carrier | UA | 900 | 0.7000 | 0.7400 | yes | **REGRESSION** |" in text
    assert "| carrier | OO | 12 | 0.5000 | 0.6100 | no |  |" in text  # small: reported only
    check = _check(card, "Model quality is sufficient on important data slices")
    assert check.status == "fail" and "carrier=UA (n=900)" in check.detail
    assert check.line().startswith("- [ ] Model quality") and "**failed**" in check.line()
    ok = _check(_card(), "Model quality is sufficient")
    assert ok.status == "pass" and ok.line().startswith("- [x]")


def test_checklist_ticks_follow_the_inputs() -> None:
    card = _card()
    ticked = {c.item.split(" (")[0] for c in card.checklist() if c.status == "pass"}
    assert {
        "Feature expectations are captured in a schema and the batches meet them",
        "All features are beneficial",
        "Hyperparameters are tuned by cross-validation",
        "Quality is measured on a holdout the search never saw",
        "The model beats the baseline floor",
        "Model quality is sufficient on important data slices",
        "Predicted probabilities are calibrated",
        "Training is reproducible",
        "Model quality is validated before serving",
        "Training and serving share an input schema",
        "A person signed off the promotion",
        "Serving models can be rolled back",
        "Training and newest data are not skewed",
        "Prediction quality has not regressed",
    } == ticked
    failed = _card(
        validation=ValidationStatus(4, 268, 2, 0),
        signature_logged=False,
        git_commit="0123-dirty",
        drift=replace(card.drift, dataset_drift=True),
        approval=approval.from_answer(False, "Bo", "no"),
    )
    for item in ("Feature expectations", "Training and serving share", "Training is reproducible"):
        assert _check(failed, item).status == "fail", item
    assert _check(failed, "Training and newest data").status == "fail"
    assert _check(failed, "A person signed off").detail == "rejected by Bo: no"


@pytest.mark.parametrize(
    ("changes", "item", "reason"),
    [
        ({"validation": None}, "Feature expectations", "no validation result"),
        ({"importance": None}, "All features are beneficial", "no permutation importance"),
        ({"brier": None}, "Predicted probabilities", "no calibration"),
        ({"signature_logged": None}, "Training and serving share", "not read back"),
        ({"drift": None, "drift_note": "measured later"}, "Training and newest", "measured later"),
        ({"approval": None}, "A person signed off", "waiting for an answer"),
        ({"approval": approval.not_required()}, "A person signed off", "require_approval is off"),
        ({"slice_columns": ()}, "Model quality is sufficient", None),
    ],
)
def test_an_unchecked_item_is_unticked_with_its_reason(
    changes: dict[str, Any], item: str, reason: str | None
) -> None:
    if "slice_columns" in changes:  # no slices configured: the gate compared none
        changes["decision"] = replace(_card().decision, slices=())
        reason = "no slice columns configured"
    check = _check(_card(**changes), item)
    assert check.status == "not-checked" and reason in check.detail
    assert check.line().startswith("- [ ] ") and "not checked: " in check.line()


def test_first_model_has_no_rollback_or_regression_check() -> None:
    first = decide("roc_auc", "1", 0.75, None, None, True, 0.002, 0.65)
    card = _card(decision=first)
    assert _check(card, "Serving models can be rolled back").status == "not-checked"
    assert _check(card, "Prediction quality has not regressed").status == "not-checked"
    assert "`ctloop rollback` returns to v2" in _check(_card(), "Serving models").detail


def test_useless_features_fail_the_beneficial_item() -> None:
    imp = _card().importance.assign(importance_mean=[0.05, 0.0, -0.001])
    check = _check(_card(importance=imp), "All features are beneficial")
    assert check.status == "fail" and "carrier, distance" in check.detail


def _regression_card(interval: dict[str, float], **changes: Any) -> ModelCard:
    """A first regression version (RMSE 10 under a floor of 20) with these intervals."""
    decision = decide("rmse", "1", 10.0, None, None, False, 0.1, 20.0)
    return _card(
        task="regression",
        metric="rmse",
        greater_is_better=False,
        decision=decision,
        holdout={"rmse": 10.0},
        brier=None,
        interval=interval,
        **changes,
    )


def test_regression_card_reports_interval_coverage() -> None:
    interval = {"coverage_target": 0.9, "half_width": 12.5, "coverage_holdout": 0.87}
    card = _regression_card(interval)
    assert "intervals: 90% target, 0.870 achieved on holdout 2013-04 (±12.5" in card.render()
    check = _check(card, "Prediction intervals reach their coverage")
    assert check.status == "fail"  # 0.87 < 0.90 - 0.0036 (28,000 holdout rows)
    assert "passes from 0.896" in check.detail
    floor = _check(card, "The model beats the baseline floor")
    assert floor.status == "pass"
    assert floor.detail == (
        "rmse 10.0000 <= 20 (promotion.min_score; the gate's test: no comparable champion)"
    )


def test_floor_item_names_its_origin_and_whether_it_gated() -> None:
    first = decide(
        "rmse", "1", 30.0, None, None, False, 0.0025, 25.5, floor_origin="constant baseline"
    )
    card = _card(task="regression", metric="rmse", greater_is_better=False, decision=first)
    check = _check(card, "The model beats the baseline floor")
    assert check.status == "fail"
    assert check.detail == (
        "not rmse 30.0000 <= 25.5 (constant baseline; the gate's test: no comparable champion)"
    )
    later = _check(_card(), "The model beats the baseline floor")  # v3 over champion v2
    assert later.status == "pass"
    assert later.detail.endswith("(promotion.min_score; not gating: compared with champion v2)")


def test_time_ordered_intervals_name_their_calibration_and_pass_within_sampling_error() -> None:
    """The card says what the intervals promise, what they achieved on which holdout, and from
    which residuals; a coverage a little under the target on few rows is sampling error, not a
    failure, while the same shortfall on many rows is one."""
    interval = {
        "coverage_target": 0.9,
        "half_width": 12.5,
        "coverage_holdout": 0.88,
        "calibration_rows": 310.0,
        "holdout_rows": 400.0,
    }
    card = _regression_card(interval, cv_kind="time", holdout_batches=("2014-06",))
    line = (
        "intervals: 90% target, 0.880 achieved on holdout 2014-06 (±12.5, conformal on the "
        "residuals of the newest 310 training rows, predicted by a fit on the rows before them)"
    )
    assert line in card.render()
    check = _check(card, "Prediction intervals reach their coverage")
    assert check.status == "pass" and "on 400 rows" in check.detail  # 0.88 >= 0.9 - 0.03
    many = replace(card, interval={**interval, "holdout_rows": 40_000.0})
    assert _check(many, "Prediction intervals reach their coverage").status == "fail"


def test_coverage_tolerance_shrinks_with_rows() -> None:
    assert coverage_tolerance(0.9, 100) == pytest.approx(0.06)
    assert coverage_tolerance(0.9, 10_000) == pytest.approx(0.006)
    assert coverage_tolerance(0.9, 0) == float("inf")


def test_registry_description_fits_the_limit() -> None:
    many = tuple(SliceScore("dest", f"A{i:03d}", 10, 0.6, 0.6, False) for i in range(200))
    card = _card(decision=replace(_card().decision, slices=SLICES + many))
    assert len(card.render()) > 5000
    short = card.for_registry()
    assert len(short) <= 5000 and "Only gated slices shown (2 of 203)" in short
    cut = card.for_registry(limit=1500)
    assert len(cut) <= 1500 and cut.endswith("`model_card.md` of run abc123)\n")
    assert _card().for_registry() == _card().render()


def test_validation_status_reads_the_saved_results() -> None:
    payload = {
        "reports": [
            {"counts": {"rules": 60, "passed": 59, "critical_failures": 0, "warnings": 1}},
            {"counts": {"rules": 60, "passed": 60, "critical_failures": 0, "warnings": 0}},
        ]
    }
    status = ValidationStatus.from_results(payload)
    assert (status.batches, status.rules, status.warnings, status.passed) == (2, 120, 1, True)


def test_placeholders_written_by_init_are_marked_as_not_written_yet() -> None:
    card = _card(
        intended_use="TODO: what the model is for, and who uses its scores",
        limitations=("TODO: where the model must not be used", "Only 2013."),
    )
    text = card.render()
    assert (
        "**Not written yet** (params.yaml `model_card.intended_use`): _what the model is for, "
        "and who uses its scores_" in text
    )
    assert "- **Not written yet** (params.yaml `model_card.limitations`)" in text
    assert "- Only 2013." in text
    assert "TODO:" not in text


def test_the_card_shows_the_bootstrap_interval_and_slices_refused_after_holm() -> None:
    from ctloop.core.promotion import BOOTSTRAP, GainInterval

    tested = (
        replace(SLICES[0], gain=GainInterval(-0.04, -0.07, -0.01, 0.95, 1000), p_regression=0.003),
        replace(SLICES[1], gain=GainInterval(0.01, -0.02, 0.04, 0.95, 1000), p_regression=1.0),
        SLICES[2],
    )
    decision = decide(
        "roc_auc",
        "3",
        0.75,
        "2",
        0.74,
        True,
        0.002,
        0.65,
        tested,
        0.02,
        test=BOOTSTRAP,
        interval=GainInterval(0.01, -0.002, 0.021, 0.95, 1000),
    )
    card = _card(decision=decision).render()
    assert (
        "- Gain over champion v2: gain +0.0100 [95% -0.0020, +0.0210] (paired bootstrap of the "
        "28000 holdout rows, 1000 rounds; Efron & Tibshirani 1993): the lower bound does not "
        "exceed the margin 0.2% of the champion's figure (0.0015)" in card
    )
    assert "significant after a Holm correction" in card
    assert (
        "| UA | 900 | 0.7000 | 0.7400 | yes | **REGRESSION** | "
        "-0.0400 [95% -0.0700, -0.0100] (p=0.003) |" in card
    )
    assert "(significant after Holm): carrier=UA (n=900)" in card
    # the point gate's card has neither the line nor the column
    assert "Gain over champion" not in _card().render()


def test_the_drift_report_is_linked_over_http_beside_its_file() -> None:
    url = "http://127.0.0.1:5000/#/experiments/1/runs/r/artifacts/drift/ref-x.v3.html"
    status = DriftStatus(
        "2013-05", ("2013-01",), False, 1, 16, ("temp",), "reports/drift/ref-x.v3.html", url
    )
    text = _card(drift=status).render()
    assert f"Report: <{url}> (in the project: `reports/drift/ref-x.v3.html`)" in text
    no_url = replace(status, url=None)
    assert "Report: `reports/drift/ref-x.v3.html`" in _card(drift=no_url).render()
