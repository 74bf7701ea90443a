"""Relative thresholds mean the same for every metric: one helper decides decay, the promotion
margin and the slice gate, for scores (greater is better) and errors (lower is better) alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from ctloop.core import policy, promotion
from ctloop.core.config import ContinuousConfig
from ctloop.core.thresholds import (
    CONSTANT_BASELINE,
    MIN_SCORE,
    Change,
    Floor,
    first_model_floor,
    pct,
    worse_word,
)
from ctloop.io import registry
from ctloop.ml import training

# normal floats of moderate size: scaling them by 2**k (|k| <= 20) is exact in binary floating
# point, so a decision that depends only on ratios cannot change at all
FIGURE = st.one_of(
    st.just(0.0),
    st.floats(1e-6, 1e6, allow_subnormal=False),
    st.floats(-1e6, -1e-6, allow_subnormal=False),
)
SHARE = st.floats(0.0, 2.0, allow_subnormal=False)
POWER_OF_TWO = st.integers(-20, 20).map(lambda k: 2.0**k)
DIRECTION = st.booleans()


# --- the helper ------------------------------------------------------------------------


@given(FIGURE, FIGURE, SHARE)
def test_an_error_metric_reads_like_the_score_that_is_its_negation(
    score: float, reference: float, threshold: float
) -> None:
    error = Change(score, reference, greater_is_better=False)
    negated = Change(-score, -reference, greater_is_better=True)
    assert error.worsening == negated.worsening
    assert error.relative == negated.relative
    assert error.worse_beyond(threshold) is negated.worse_beyond(threshold)
    assert error.better_by(threshold) is negated.better_by(threshold)
    # the same two figures read in the other direction: worse becomes better by as much
    assert Change(score, reference, True).worsening == -error.worsening


@given(FIGURE, FIGURE, SHARE, POWER_OF_TWO, DIRECTION)
def test_rescaling_both_figures_changes_no_decision(
    score: float, reference: float, threshold: float, c: float, greater_is_better: bool
) -> None:
    plain = Change(score, reference, greater_is_better)
    scaled = Change(score * c, reference * c, greater_is_better)
    assert scaled.worse_beyond(threshold) is plain.worse_beyond(threshold)
    assert scaled.better_by(threshold) is plain.better_by(threshold)
    assert scaled.relative == plain.relative


@given(st.floats(1e-3, 1e6), st.floats(1e-3, 1e6), SHARE, st.floats(1e-3, 1e3), DIRECTION)
def test_any_positive_unit_keeps_decisions_away_from_the_boundary(
    score: float, reference: float, threshold: float, c: float, greater_is_better: bool
) -> None:
    plain = Change(score, reference, greater_is_better)
    # exactly on the boundary, rounding of an arbitrary factor may tip the comparison
    assume(abs(plain.relative - threshold) > 1e-9 and abs(plain.relative + threshold) > 1e-9)
    scaled = Change(score * c, reference * c, greater_is_better)
    assert scaled.worse_beyond(threshold) is plain.worse_beyond(threshold)
    assert scaled.better_by(threshold) is plain.better_by(threshold)


@given(FIGURE, FIGURE, DIRECTION)
def test_zero_threshold_means_any_worsening_and_zero_margin_means_not_worse(
    score: float, reference: float, greater_is_better: bool
) -> None:
    change = Change(score, reference, greater_is_better)
    worse = score < reference if greater_is_better else score > reference
    assert change.worse_beyond(0.0) is worse
    assert change.better_by(0.0) is (not worse)


@given(FIGURE, SHARE, DIRECTION)
def test_equal_figures_never_decay_and_pass_only_a_zero_margin(
    figure: float, threshold: float, greater_is_better: bool
) -> None:
    change = Change(figure, figure, greater_is_better)
    assert change.worsening == 0 and change.relative == 0
    assert not change.worse_beyond(threshold)
    assert change.better_by(threshold) is (threshold == 0 or figure == 0)


@given(FIGURE, st.floats(1e-6, 1e6), DIRECTION)
def test_relative_is_the_worsening_over_the_reference_size(
    score: float, reference: float, greater_is_better: bool
) -> None:
    for ref in (reference, -reference):
        change = Change(score, ref, greater_is_better)
        assert change.relative * abs(ref) == pytest.approx(change.worsening, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("greater_is_better", [True, False])
def test_a_zero_reference_makes_any_worsening_infinite(greater_is_better: bool) -> None:
    worse = Change(-1.0 if greater_is_better else 1.0, 0.0, greater_is_better)
    better = Change(1.0 if greater_is_better else -1.0, 0.0, greater_is_better)
    assert worse.relative == math.inf and worse.worse_beyond(10.0)
    assert better.relative == -math.inf and better.better_by(10.0)
    assert math.isnan(Change(math.nan, 0.0, greater_is_better).relative)


def test_nan_is_never_beyond_a_threshold_nor_better() -> None:
    for change in (Change(math.nan, 0.8, True), Change(0.8, math.nan, False)):
        assert not change.worse_beyond(0.0) and not change.better_by(0.0)


def test_words_and_figures_of_both_families() -> None:
    assert worse_word(True) == "drop" and worse_word(False) == "rise"
    rmse = Change(46.96, 21.73, greater_is_better=False)
    assert rmse.describe_worse() == "rise 25.2300 = 116%"
    auc = Change(0.7195, 0.7510, greater_is_better=True)
    assert auc.describe_worse() == "drop 0.0315 = 4.19%"
    assert Change(0.7493, 0.7195, True).describe_gain() == "+0.0298 = +4.14%"
    assert Change(9.0, 10.0, False).describe_gain() == "+1.0000 = +10%"


@pytest.mark.parametrize(
    ("share", "text"),
    [(0.025, "2.5%"), (0.0025, "0.25%"), (0.02, "2%"), (1.1612, "116%"), (12.5, "1250%")],
)
def test_pct(share: float, text: str) -> None:
    assert pct(share) == text


# --- floor -----------------------------------------------------------------------------


def test_floor_comes_from_min_score_when_set_else_the_constant_baseline() -> None:
    assert first_model_floor(None, 0.5) == Floor(0.5, CONSTANT_BASELINE)
    assert first_model_floor(80.0, 25.0) == Floor(80.0, MIN_SCORE)
    assert first_model_floor(0.0, 0.5) == Floor(0.0, MIN_SCORE)  # 0 is a floor, not "unset"


def test_floor_is_at_least_for_scores_and_at_most_for_errors() -> None:
    floor = Floor(20.0, CONSTANT_BASELINE)
    assert floor.met_by(20.0, False) and floor.met_by(19.0, False) and not floor.met_by(21.0, False)
    assert floor.met_by(20.0, True) and floor.met_by(21.0, True) and not floor.met_by(19.0, True)
    assert not floor.met_by(math.nan, True) and not floor.met_by(math.nan, False)
    assert floor.describe(False) == "<= 20, constant baseline"


@given(
    st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=50),
    st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=50),
)
def test_regression_baseline_is_the_rmse_of_the_training_mean(
    y_train: list[float], y_holdout: list[float]
) -> None:
    baseline = training.constant_baseline("regression", y_train, y_holdout)
    holdout = np.asarray(y_holdout)
    expected = math.sqrt(float(np.mean((holdout - np.mean(y_train)) ** 2)))
    assert baseline == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # no constant beats the holdout's own mean: the baseline is at least the holdout's spread
    assert baseline >= float(np.std(holdout)) * (1 - 1e-9) - 1e-9


def test_classification_baseline_is_roc_auc_one_half_and_empty_sides_raise() -> None:
    assert training.constant_baseline("classification", [0, 1], [1, 0]) == 0.5
    with pytest.raises(ValueError, match="0 training and 2 holdout"):
        training.constant_baseline("regression", [], [1.0, 2.0])


# --- the three rules use it ------------------------------------------------------------


def _verdict(batch: float, holdout: float, threshold: float, gib: bool) -> policy.Verdict:
    signals = policy.Signals("2014-03", "3", False, (), 0.0, "rmse", batch, holdout, 0)
    return policy.assess(signals, ContinuousConfig(decay_threshold=threshold), gib)


@given(st.floats(1e-3, 1e3), st.floats(-0.9, 2.0), SHARE, POWER_OF_TWO)
@example(holdout=2.0, change=0.5, threshold=0.4, c=0.25)  # an absolute rule would flip here
def test_decay_of_an_error_metric_does_not_depend_on_its_unit(
    holdout: float, change: float, threshold: float, c: float
) -> None:
    batch = holdout * (1 + change)
    plain = _verdict(batch, holdout, threshold, gib=False)
    scaled = _verdict(batch * c, holdout * c, threshold, gib=False)
    assert plain.decay is scaled.decay
    assert plain.decay_relative == scaled.decay_relative


@given(
    st.floats(1e-3, 1e6),
    st.floats(1e-3, 1e6),
    st.floats(1e-3, 1e6),
    st.floats(1e-3, 1e6),
    SHARE,
    SHARE,
    POWER_OF_TWO,
)
def test_promotion_of_an_error_metric_does_not_depend_on_its_unit(
    challenger: float,
    champion: float,
    slice_challenger: float,
    slice_champion: float,
    margin: float,
    tolerance: float,
    c: float,
) -> None:
    def gate(k: float) -> registry.PromotionDecision:
        piece = promotion.SliceScore(
            "shop", "A", 900, slice_challenger * k, slice_champion * k, True
        )
        return promotion.decide(
            "rmse",
            "2",
            challenger * k,
            "1",
            champion * k,
            False,
            margin,
            50.0 * k,
            (piece,),
            tolerance,
        )

    plain, scaled = gate(1.0), gate(c)
    assert plain.promote is scaled.promote
    assert len(plain.slice_regressions) == len(scaled.slice_regressions)


def test_the_default_thresholds_are_the_old_absolute_ones_on_the_default_data() -> None:
    """At ROC AUC about 0.78 (flights), the relative defaults are about the absolute ones they
    replace: margin 0.002, slice tolerance and decay 0.02."""
    from ctloop.core.config import PromotionConfig, SlicesConfig

    auc = 0.78
    assert PromotionConfig().margin * auc == pytest.approx(0.002, abs=0.0002)
    assert SlicesConfig().tolerance * auc == pytest.approx(0.02, abs=0.002)
    assert ContinuousConfig().decay_threshold * auc == pytest.approx(0.02, abs=0.002)
    assert PromotionConfig().min_score is None  # the constant baseline, whatever the metric
