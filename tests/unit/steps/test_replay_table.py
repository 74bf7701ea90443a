"""The month-by-month table `ctloop replay` prints (ctloop/steps/replay.py): the champion, its
score on the month, the verdict and the retrain's outcome, as README shows them."""

from __future__ import annotations

from ctloop.steps import replay
from ctloop.steps.replay import MonthFacts, RetrainFacts

JULY = MonthFacts(
    "2013-07",
    "1",
    0.7510,
    0.71951,
    True,
    ("decay: roc_auc 0.7195 on 2013-07 vs holdout 0.7510", "drift: 8 of 16 columns"),
    0.0315,
    (0.7348, 0.7253, 0.7439),
)
V2 = RetrainFacts("2", "2013-01", "2013-07", 0.7493, 0.7195, True)


def test_a_retrained_month_names_champion_score_verdict_and_gate() -> None:
    row = replay.month_row(JULY, [V2], None)
    assert row == (
        "2013-07",
        "v1 (holdout 0.7510)",
        "0.7195",
        "0.7348 [0.7253..0.7439]",
        "decay 0.032, drift",
        "v2 on 2013-01..07: 0.7493 vs 0.7195, promoted",
    )


def test_a_kept_month_and_the_same_champion_again() -> None:
    sept = MonthFacts("2013-09", "3", 0.7118, 0.7017, False)
    assert replay.month_row(sept, [], "3") == ("2013-09", "v3", "0.7017", "—", "keep", "—")
    assert replay.month_row(sept, [], "2")[1] == "v3 (holdout 0.7118)"


def test_months_without_labels_a_run_or_a_retrain() -> None:
    features = MonthFacts("2013-08", "2", 0.75, None, False)
    assert replay.month_row(features, [], "2")[2] == "no labels"
    pending = MonthFacts("2013-10")
    assert replay.month_row(pending, [], "2")[1:] == ("—", "—", "—", "not monitored yet", "—")
    asked = MonthFacts("2013-10", "3", 0.71, 0.66, True, ("drift: carrier",))
    assert replay.month_row(asked, [], "3")[4:] == ("drift", "asked, none trained (yet)")
    kept = RetrainFacts("4", "2013-01", "2013-10", 0.6601, 0.6647, False)
    assert (
        replay.retrain_text(asked, [kept])
        == "v4 on 2013-01..10: 0.6601 vs 0.6647, kept the champion"
    )


def test_the_markdown_table_has_a_line_per_month_under_readme_s_header() -> None:
    rows = [replay.month_row(JULY, [V2], None), replay.month_row(MonthFacts("2013-08"), [], "1")]
    text = replay.markdown_table("roc_auc", rows).splitlines()
    assert text[0] == (
        "| month | champion | its roc_auc on the month | estimated (95% interval) | verdict | "
        "retrain (gate on the month) |"
    )
    assert text[1].startswith("| --- |") and len(text) == 4
    assert text[2].startswith(
        "| 2013-07 | v1 (holdout 0.7510) | 0.7195 | 0.7348 [0.7253..0.7439] |"
    )


def test_an_unlabelled_month_shows_its_estimate_without_a_measured_score() -> None:
    blind = MonthFacts("2013-08", "2", 0.75, None, False, estimate=(0.7459, 0.7376, 0.7561))
    assert replay.month_row(blind, [], "2")[2:4] == ("no labels", "0.7459 [0.7376..0.7561]")
