"""CBPE and DLE (ctloop/ml/estimation.py) on synthetic data where the truth is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from ctloop.ml import estimation as est

IDENTITY = est.Calibrator("isotonic", 2, 0.0, 0.0, x=(0.0, 1.0), y=(0.0, 1.0))


def _calibrated(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly calibrated scores p and labels drawn as Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    return p, (rng.random(n) < p).astype(int)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.booleans()),  # few distinct scores: many ties
        min_size=2,
        max_size=60,
    )
)
def test_weighted_auc_with_0_1_weights_is_roc_auc(rows: list[tuple[int, bool]]) -> None:
    scores = np.array([s / 20 for s, _ in rows])
    labels = np.array([int(y) for _, y in rows])
    got = est.weighted_auc(scores, labels.astype(float))
    if labels.min() == labels.max():
        assert math.isnan(got)
    else:
        assert got == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0.01, 0.99)), min_size=2, max_size=8))
def test_weighted_auc_is_the_expected_ratio_over_pairs(rows: list[tuple[float, float]]) -> None:
    """Against the O(n^2) definition: sum over distinct pairs of p_i (1 - p_j) concordance."""
    s = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    num = den = 0.0
    for i in range(len(s)):
        for j in range(len(s)):
            if i != j:
                pair = p[i] * (1 - p[j])
                den += pair
                num += pair * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    assert est.weighted_auc(s, p) == pytest.approx(num / den, rel=1e-9, abs=1e-12)


def test_weighted_auc_refuses_mismatched_shapes() -> None:
    with pytest.raises(est.EstimationError, match="differ"):
        est.weighted_auc(np.zeros(3), np.zeros(4))


def test_cbpe_matches_the_realized_auc_of_calibrated_scores_within_its_interval() -> None:
    inside, errors = 0, []
    seeds = range(12)
    for seed in seeds:
        p, y = _calibrated(seed, 2000)
        estimate = est.estimate_cbpe(p, IDENTITY, bootstrap=100, seed=seed)
        realized = roc_auc_score(y, p)
        inside += estimate.lower <= realized <= estimate.upper
        errors.append(estimate.value - realized)
        assert estimate.lower < estimate.value < estimate.upper
    assert inside >= 0.75 * len(seeds)  # a 95% interval: nearly every seed
    assert abs(float(np.mean(errors))) < 0.01  # unbiased
    assert float(np.mean(np.abs(errors))) < 0.025


def test_cbpe_expected_accuracy_matches_the_realized_one() -> None:
    p, y = _calibrated(7, 5000)
    estimate = est.estimate_cbpe(p, IDENTITY, bootstrap=10, seed=1)
    realized = float(np.mean((p >= 0.5).astype(int) == y))
    assert estimate.extras["accuracy"] == pytest.approx(realized, abs=0.02)


def test_expected_confusion_counts_rows_by_their_probability() -> None:
    c = est.expected_confusion(np.array([0.9, 0.6, 0.2]), np.array([0.8, 0.5, 0.1]))
    assert (c.tp, c.fp, c.fn, c.tn) == pytest.approx((1.3, 0.7, 0.1, 0.9))
    assert c.metrics()["accuracy"] == pytest.approx(2.2 / 3)
    assert c.metrics()["f1"] == pytest.approx(2.6 / (2.6 + 0.8))


@pytest.mark.parametrize("rows,method", [(3000, "isotonic"), (400, "platt")])
def test_calibration_fixes_a_miscalibrated_score(rows: int, method: str) -> None:
    """The model's score is p**3 (too low); calibrated on a holdout, CBPE's accuracy and AUC
    are right again, the raw score's would not be."""
    p_hold, y_hold = _calibrated(1, rows)
    calibrator = est.fit_calibrator(p_hold**3, y_hold)
    assert calibrator.method == method
    assert calibrator.brier < calibrator.brier_raw
    p, y = _calibrated(2, 4000)
    calibrated = calibrator.apply(p**3)
    assert float(np.mean(np.abs(calibrated - p))) < 0.05
    assert float(np.mean(np.abs(p**3 - p))) > 0.1
    estimate = est.estimate_cbpe(p**3, calibrator, bootstrap=50, seed=3)
    raw = est.estimate_cbpe(p**3, IDENTITY, bootstrap=50, seed=3)
    realized = roc_auc_score(y, p)
    assert abs(estimate.value - realized) < 0.03
    assert abs(raw.value - realized) > abs(estimate.value - realized)


def test_calibrator_round_trips_through_plain_json() -> None:
    import json

    for rows in (3000, 300):
        p, y = _calibrated(4, rows)
        c = est.fit_calibrator(p, y)
        back = est.Calibrator.from_dict(json.loads(json.dumps(c.to_dict())))
        np.testing.assert_allclose(back.apply(p), c.apply(p))
    with pytest.raises(est.EstimationError, match="unknown method"):
        est.Calibrator.from_dict({"method": "beta", "rows": 1, "brier_raw": 0, "brier": 0})


def test_calibration_refuses_one_class() -> None:
    with pytest.raises(est.EstimationError, match="one class"):
        est.fit_calibrator(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))


def test_cbpe_is_seeded() -> None:
    p, _ = _calibrated(5, 500)
    a = est.estimate_cbpe(p, IDENTITY, bootstrap=30, seed=9)
    b = est.estimate_cbpe(p, IDENTITY, bootstrap=30, seed=9)
    assert a == b


def _regression(seed: int, n: int, shift: float) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 2 x + noise whose spread grows with |x| and in one region; `shift` moves x there."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    region = rng.choice(["a", "b"], n)
    noise = rng.normal(0, 0.2 + 0.5 * np.abs(x) + (region == "b") * 0.5, n)
    return pd.DataFrame({"x": x, "region": region}), 2 * x + noise


def test_dle_estimates_the_realized_error_where_it_grows() -> None:
    X_hold, y_hold = _regression(0, 4000, shift=0.0)
    predictions = 2 * X_hold["x"].to_numpy()  # the monitored model: the noise-free line
    models = est.fit_dle(X_hold, predictions, y_hold, seed=42)
    X_near, y_near = _regression(1, 3000, shift=0.0)
    X_far, y_far = _regression(2, 3000, shift=1.5)
    near = est.estimate_dle(models, X_near, 2 * X_near["x"].to_numpy(), bootstrap=50, seed=1)
    far = est.estimate_dle(models, X_far, 2 * X_far["x"].to_numpy(), bootstrap=50, seed=1)
    real = {
        "near": (
            float(np.sqrt(np.mean((y_near - 2 * X_near["x"]) ** 2))),
            float(np.mean(np.abs(y_near - 2 * X_near["x"]))),
        ),
        "far": (
            float(np.sqrt(np.mean((y_far - 2 * X_far["x"]) ** 2))),
            float(np.mean(np.abs(y_far - 2 * X_far["x"]))),
        ),
    }
    assert real["far"][0] > 1.3 * real["near"][0]  # the shift made the error grow
    for name, e in (("near", near), ("far", far)):
        rmse, mae = real[name]
        assert e.value == pytest.approx(rmse, rel=0.12), name
        assert e.extras["mae"] == pytest.approx(mae, rel=0.12), name
        assert e.lower <= e.value <= e.upper
    assert far.value > 1.3 * near.value


def test_dle_needs_rows_and_both_models() -> None:
    X, y = _regression(0, 5, 0.0)
    with pytest.raises(est.EstimationError, match="at least 10"):
        est.fit_dle(X, y, y, seed=0)
    with pytest.raises(est.EstimationError, match="models for"):
        est.estimate_dle({"absolute": None}, X, y)


def test_percentile_interval_ignores_nan() -> None:
    assert est.percentile_interval(np.array([np.nan, np.nan])) == (
        pytest.approx(math.nan, nan_ok=True),
        pytest.approx(math.nan, nan_ok=True),
    )
    lo, hi = est.percentile_interval(np.arange(1001, dtype=float))
    assert (lo, hi) == pytest.approx((25.0, 975.0))


def test_dle_models_save_and_load_with_checked_skops_types(tmp_path: Path) -> None:
    """What ctloop/steps/estimate.py keeps with the training run loads back, trusted types only,
    and predicts the same (a text column with an unseen value at estimation time)."""
    import skops.io

    from ctloop.io import model_io

    X, y = _regression(0, 500, 0.0)
    models = est.fit_dle(X, 2 * X["x"].to_numpy(), y, seed=3)
    model_io.trusted_types(models)
    path = tmp_path / "dle.skops"
    skops.io.dump(models, path)
    loaded = model_io.load_skops(path, "test")
    batch = X.head(50).assign(region=["c"] * 50)
    a = est.estimate_dle(models, batch, 2 * batch["x"].to_numpy(), bootstrap=10, seed=0)
    b = est.estimate_dle(loaded, batch, 2 * batch["x"].to_numpy(), bootstrap=10, seed=0)
    assert a == b


# --- the calibrator's own error in CBPE's interval ----------------------------------------------


def _world(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """True probabilities p ~ Beta(2, 5), the model's score p**3 (a monotone distortion: the
    ranking is right, the probabilities are not), labels ~ Bernoulli(p)."""
    p = rng.beta(2, 5, n)
    return p**3, (rng.random(n) < p).astype(int)


def test_refitting_the_calibrator_brings_the_interval_near_its_95_percent() -> None:
    """A 1,500-row holdout (isotonic) and 4,000-row batches drawn from the same world, 40 times:
    the interval that treats the calibrator as exact misses the realized AUC a quarter of the
    time or more (29 of 40 covered here); refitting it per replicate covers it far more often and
    nearer 95% (35 of 40; what is left is isotonic's small-holdout optimism, which a percentile
    interval does not remove)."""
    sims, m, n = 40, 1500, 4000
    old = new = 0
    widths: dict[str, list[float]] = {"old": [], "new": []}
    for seed in range(sims):
        rng = np.random.default_rng([7, seed])
        hold_s, hold_y = _world(rng, m)
        batch_s, batch_y = _world(rng, n)
        calibrator = est.fit_calibrator(hold_s, hold_y)
        assert calibrator.method == "isotonic"
        realized = roc_auc_score(batch_y, batch_s)
        exact = est.estimate_cbpe(batch_s, calibrator, bootstrap=100, seed=seed)
        refit = est.estimate_cbpe(
            batch_s, calibrator, bootstrap=100, seed=seed, calibration=(hold_s, hold_y)
        )
        old += exact.lower <= realized <= exact.upper
        new += refit.lower <= realized <= refit.upper
        widths["old"].append(exact.upper - exact.lower)
        widths["new"].append(refit.upper - refit.lower)
        assert (exact.interval, refit.interval) == ("rows+labels", "rows+labels+calibration")
    assert new / sims >= old / sims + 0.1, (old, new)
    assert new / sims >= 0.75, (old, new)
    # wider, as it must be, but not a trivially wide interval that covers everything
    assert 1.2 < np.mean(widths["new"]) / np.mean(widths["old"]) < 3.0


@pytest.mark.parametrize("rows", [3000, 400])  # isotonic, platt
def test_calibration_rows_change_the_interval_not_the_estimate(rows: int) -> None:
    rng = np.random.default_rng(11)
    hold_s, hold_y = _world(rng, rows)
    batch_s, _ = _world(rng, 2000)
    calibrator = est.fit_calibrator(hold_s, hold_y)
    exact = est.estimate_cbpe(batch_s, calibrator, bootstrap=40, seed=3)
    refit = est.estimate_cbpe(
        batch_s, calibrator, bootstrap=40, seed=3, calibration=(hold_s, hold_y)
    )
    assert refit.value == exact.value and refit.extras == exact.extras
    assert refit.method == exact.method == f"cbpe-{calibrator.method}"
    assert (refit.lower, refit.upper) != (exact.lower, exact.upper)
    assert refit.to_dict()["interval"] == "rows+labels+calibration"
    assert exact.to_dict()["interval"] == "rows+labels"
    assert refit.calibration_fallbacks == 0


def test_cbpe_with_calibration_rows_is_seeded() -> None:
    rng = np.random.default_rng(12)
    hold_s, hold_y = _world(rng, 1200)
    batch_s, _ = _world(rng, 800)
    calibrator = est.fit_calibrator(hold_s, hold_y)
    runs = [
        est.estimate_cbpe(batch_s, calibrator, 30, seed, calibration=(hold_s, hold_y))
        for seed in (5, 5, 6)
    ]
    assert runs[0] == runs[1]
    assert (runs[0].lower, runs[0].upper) != (runs[2].lower, runs[2].upper)


def test_the_isotonic_refit_is_scikit_learns_isotonic_regression() -> None:
    """The fast refit (counts per distinct holdout score) gives the calibrator that
    IsotonicRegression fitted on the resampled rows would give."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(13)
    hold_s, hold_y = _world(rng, 1500)
    hold_s = np.round(hold_s, 3)  # ties between holdout rows, as real scores have
    batch_s, _ = _world(rng, 500)
    refit = est._Refit(hold_s, hold_y, "isotonic")
    for seed in range(3):
        got = refit.draw(np.random.default_rng(seed), batch_s)
        pick = np.random.default_rng(seed).integers(0, len(hold_s), len(hold_s))
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        want = iso.fit(hold_s[pick], hold_y[pick]).predict(batch_s)
        assert got is not None
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_a_resample_that_cannot_refit_keeps_the_given_calibrator_and_is_counted() -> None:
    """Two holdout rows, one per class: about half the resamples hold one class only."""
    calibrator = est.fit_calibrator(np.array([0.2, 0.8]), np.array([0, 1]), method="isotonic")
    batch_s, _ = _world(np.random.default_rng(14), 300)
    found = est.estimate_cbpe(
        batch_s, calibrator, 60, 1, calibration=(np.array([0.2, 0.8]), np.array([0, 1]))
    )
    assert 10 < found.calibration_fallbacks < 50
    assert found.to_dict()["calibration_fallbacks"] == found.calibration_fallbacks


@pytest.mark.parametrize(
    "scores,labels,match",
    [
        (np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]), "one class"),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 1]), "differ"),
        (np.array([[0.1, 0.2]]), np.array([[0, 1]]), "differ"),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]), "0 or 1"),
        (np.array([0.1, np.nan, 0.3]), np.array([0, 1, 0]), "finite"),
    ],
)
def test_cbpe_refuses_unusable_calibration_rows(
    scores: np.ndarray, labels: np.ndarray, match: str
) -> None:
    p, _ = _calibrated(15, 100)
    with pytest.raises(est.EstimationError, match=match):
        est.estimate_cbpe(p, IDENTITY, 5, 0, calibration=(scores, labels))


def test_the_calibration_method_can_be_forced() -> None:
    p, y = _calibrated(16, 400)
    assert est.fit_calibrator(p, y).method == "platt"  # the rule: fewer than 1,000 rows
    assert est.fit_calibrator(p, y, method="isotonic").method == "isotonic"
    assert est.fit_calibrator(*_calibrated(17, 1500), method="platt").method == "platt"
    with pytest.raises(est.EstimationError, match="unknown method"):
        est.fit_calibrator(p, y, method="beta")  # type: ignore[arg-type]
