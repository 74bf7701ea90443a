"""Estimated performance (CBPE, DLE: ctloop/ml/estimation.py) of a version, without labels.

At training time `fit_estimator` fits the estimator on the holdout and keeps it with the
version's training run: `estimation/estimator.json` (the kind, the calibrator as plain JSON:
isotonic thresholds or Platt's two numbers, with the holdout Brier scores); for classification
`estimation/calibration.parquet` (the holdout rows the calibrator was fitted on: columns `score`,
`label`), so that CBPE's interval can refit the calibrator per bootstrap replicate and include its
fitting error; for regression `estimation/dle.skops` (the loss models, saved and loaded with
ctloop/io/model_io.py's checked skops types; DLE's interval stays over rows: refitting two
boosted loss models per replicate costs too much). The monitor calls `estimate_batch` for every
batch, labelled or not; a version trained before estimators were kept has none: the estimate is
skipped with a line saying so; one trained before the calibration rows were kept gets the interval
without the calibrator's error, and the printed line says so.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctloop.core.config import Project
from ctloop.io import model_io, tracking
from ctloop.ml import estimation, training
from ctloop.steps import validate

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from ctloop.steps.fit import TrainingData
    from ctloop.steps.monitoring import Champion

ESTIMATION_DIR = "estimation"
ESTIMATOR_JSON = f"{ESTIMATION_DIR}/estimator.json"
CALIBRATION_ROWS = f"{ESTIMATION_DIR}/calibration.parquet"
INTERVAL_TAG = "ctloop.estimation_interval"
DLE_FILE = "dle.skops"


def fit_estimator(
    project: Project, run_id: str, model: Pipeline, holdout: TrainingData
) -> dict[str, Any] | None:
    """Fit the version's performance estimator on the holdout and log it to the training run
    `run_id` (`estimation/`; for classification also the holdout's scores and labels,
    `estimation/calibration.parquet`, and metrics `calibration_brier_raw`, `calibration_brier`).
    Returns the JSON record, or None when `continuous.estimate` is off or the
    holdout cannot carry an estimator (one class, too few rows: a line says why). Raises
    ModelSafetyError if the DLE models hold an untrusted type (never expected)."""
    cfg = project.params
    if not cfg.continuous.estimate:
        return None
    task = holdout.schema.task
    scores = training.predict_scores(model, holdout.X, task)
    tracking.use_experiment(project)
    try:
        if task == "classification":
            labels = holdout.y.to_numpy().astype(int)
            calibrator = estimation.fit_calibrator(scores, labels)
            record: dict[str, Any] = {"kind": "cbpe", "calibrator": calibrator.to_dict()}
            rows = pd.DataFrame({"score": scores.astype(float), "label": labels.astype("int8")})
            tracking.log_parquet(run_id, rows, CALIBRATION_ROWS)
            brier = {"brier_raw": calibrator.brier_raw, "brier": calibrator.brier}
            tracking.log_metrics(run_id, brier, prefix="calibration_")
            print(
                f"estimator: CBPE, {calibrator.method} calibration on {calibrator.rows} holdout "
                f"rows (Brier {calibrator.brier_raw:.4f} raw, {calibrator.brier:.4f} calibrated)"
            )
        else:
            models = estimation.fit_dle(holdout.X, scores, holdout.y.to_numpy(), cfg.seed)
            record = {"kind": "dle", "features": list(holdout.X.columns), "rows": len(scores)}
            _log_skops(run_id, models)
            print(f"estimator: DLE fitted on {len(scores)} holdout rows")
    except estimation.EstimationError as err:
        print(f"estimator: none for this version ({err}); its batches will not be estimated")
        return None
    tracking.log_json(run_id, record, ESTIMATOR_JSON)
    return record


def _log_skops(run_id: str, models: dict[str, Any]) -> None:
    import skops.io
    from mlflow import MlflowClient

    model_io.trusted_types(models, f"the DLE models of run {run_id}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DLE_FILE
        skops.io.dump(models, path)
        MlflowClient().log_artifact(run_id, str(path), ESTIMATION_DIR)


def _load_skops(run_id: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        local = MlflowClient().download_artifacts(run_id, f"{ESTIMATION_DIR}/{DLE_FILE}", tmp)
        loaded = model_io.load_skops(Path(local), f"{ESTIMATION_DIR}/{DLE_FILE} of run {run_id}")
    if not isinstance(loaded, dict):
        raise estimation.EstimationError(f"run {run_id}: {DLE_FILE} holds no loss models")
    return loaded


def _calibration_rows(
    run_id: str, calibrator: estimation.Calibrator
) -> tuple[np.ndarray, np.ndarray] | None:
    """The holdout rows `calibrator` was fitted on (`estimation/calibration.parquet` of the
    training run), as (scores, labels); None when the run has none (trained before they were
    kept) or they do not match the calibrator (a line says so)."""
    frame = tracking.read_parquet_artifact(run_id, CALIBRATION_ROWS)
    if frame is None:
        return None
    if {"score", "label"} - set(frame.columns) or len(frame) != calibrator.rows:
        print(
            f"{CALIBRATION_ROWS} of run {run_id}: {len(frame)} rows, columns "
            f"{sorted(frame.columns)}, not the calibrator's {calibrator.rows} (score, label); "
            "the interval leaves out the calibrator's error"
        )
        return None
    return frame["score"].to_numpy(dtype=float), frame["label"].to_numpy()


def estimate_batch(
    project: Project,
    batch: str,
    champion: Champion,
    run_id: str,
    predictions: Path,
    batch_score: float | None,
) -> estimation.Estimate | None:
    """The champion's estimated metric on `batch` from its saved scores (`predictions`, the
    monitor's Parquet file; DLE also reads the batch's features), logged on the monitoring run
    `run_id`: `estimated_<metric>`, `_lower`, `_upper`, the extras (`estimated_accuracy`, ...),
    with a measured `batch_score` `estimation_error` = estimate - realized, and the tags
    `ctloop.estimation_method` and `ctloop.estimation_interval` (what the interval covers:
    `rows+labels+calibration` when the version kept its calibration rows, `rows+labels` for CBPE
    without them, `rows` for DLE). None (and a printed line) when `continuous.estimate` is off, the
    version has no estimator (trained before they were kept) or the batch has too few rows."""
    cfg = project.params
    if not cfg.continuous.estimate:
        return None
    tracking.use_experiment(project)
    record = (
        tracking.read_json_artifact(champion.run_id, ESTIMATOR_JSON) if champion.run_id else None
    )
    if record is None:
        print(
            f"estimate skipped: {champion.name} v{champion.version} has no performance "
            "estimator (trained before estimators were kept); retrain to get one"
        )
        return None
    scores = pd.read_parquet(predictions, columns=["score"])["score"].to_numpy(dtype=float)
    bootstrap, seed = cfg.continuous.estimate_bootstrap, cfg.seed
    try:
        if record["kind"] == "cbpe":
            calibrator = estimation.Calibrator.from_dict(record["calibrator"])
            rows = _calibration_rows(str(champion.run_id), calibrator)
            found = estimation.estimate_cbpe(scores, calibrator, bootstrap, seed, calibration=rows)
        else:
            models = _load_skops(str(champion.run_id))
            frame = validate.load_batches(project, [batch])
            found = estimation.estimate_dle(
                models, frame[record["features"]], scores, bootstrap, seed
            )
    except estimation.EstimationError as err:
        print(f"estimate skipped on {batch}: {err}")
        return None
    metric = found.metric
    metrics = {
        f"estimated_{metric}": found.value,
        f"estimated_{metric}_lower": found.lower,
        f"estimated_{metric}_upper": found.upper,
        **{f"estimated_{k}": v for k, v in found.extras.items()},
    }
    if batch_score is not None:
        metrics["estimation_error"] = found.value - batch_score
    tracking.log_metrics(run_id, {k: v for k, v in metrics.items() if math.isfinite(v)}, "")
    tracking.set_tags(
        run_id, {"ctloop.estimation_method": found.method, INTERVAL_TAG: found.interval}
    )
    realized = "" if batch_score is None else f"; realized {batch_score:.4f}"
    print(
        f"estimated {metric} on {batch} ({found.method}, {found.rows} rows): {found.value:.4f} "
        f"(95% interval {found.lower:.4f}..{found.upper:.4f}{_covers(found)}){realized}"
    )
    return found


def _covers(found: estimation.Estimate) -> str:
    """What the printed interval covers, when it is not only the batch's rows (DLE)."""
    if found.interval == estimation.INTERVAL_CALIBRATION:
        refits = found.bootstrap - found.calibration_fallbacks
        kept = f", {refits} of {found.bootstrap} replicates refitted it"
        return " incl. the calibrator's error" + (kept if found.calibration_fallbacks else "")
    if found.interval == estimation.INTERVAL_LABELS:
        return (
            "; leaves out the calibrator's error: the version was trained before its "
            "calibration rows were kept, retrain to include it"
        )
    return ""
