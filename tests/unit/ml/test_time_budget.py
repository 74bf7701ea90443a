"""Search results do not depend on the machine's load: without a time budget (the default) a
search gives the same trials and figures on a quiet and on a busy machine; with one
(tune.timeout_s) a search it cut short says so, whichever runner ran the trials."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from ctloop.core.config import Params, TuneConfig, parse_params
from ctloop.core.tuning import budget_note
from ctloop.ml import parallel, training
from ctloop.steps.summary import TrainingSummary
from tests.unit.ml.test_training import SCHEMA, _frame
from tests.unit.steps.test_model_card import _card

ROOT = Path(__file__).parents[3]
BURN_LIMIT_S = 180.0  # a burner stops by itself after this long, whatever happens to the test


def _params(n_trials: int, **tune: Any) -> Params:
    """The repository's params.yaml (XGBoost hist, 2 threads per fit, pruning, no time budget)
    on the synthetic frame: fewer trees, folds and trials to stay quick."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(target="y", derive_target=None, time_column=None)
    raw["model"]["fixed"]["xgboost"].update(n_estimators=40)
    raw["split"]["folds"] = 3
    raw["tune"].update(n_trials=n_trials, show_progress_bar=False, **tune)
    return parse_params(raw)


@contextmanager
def cpu_burners(limit_s: float = BURN_LIMIT_S) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy-looping child process per core (at most 8), each ending itself after `limit_s`
    and killed when the block ends, so none outlives the test."""
    loop = (
        f"import time\nend = time.monotonic() + {limit_s}\n"
        "while time.monotonic() < end:\n    pass\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(min(os.cpu_count() or 2, 8)):
            procs.append(subprocess.Popen([sys.executable, "-c", loop]))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=30)


def _figures(result: training.TuningResult) -> dict[str, Any]:
    """Everything a search computes, without the trials' durations."""
    return {
        "best_params": result.best_params,
        "cv": (result.cv_mean, result.cv_std),
        "folds": result.fold_scores,
        "trials": [
            (t.number, t.params, t.state, t.fold_scores, t.train_scores, t.best_iterations)
            for t in result.trials
        ],
        "budget": (result.trials_planned, result.trials_run, result.stopped_by),
    }


def test_the_default_search_has_no_time_budget() -> None:
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["tune"]["timeout_s"] is None
    assert TuneConfig().timeout_s is None


def test_search_gives_the_same_figures_on_a_quiet_and_on_a_busy_machine() -> None:
    X, y = _frame(2500)
    params = _params(6)
    assert params.tune.timeout_s is None and params.model.fixed["xgboost"]["n_jobs"] == 2
    quiet = training.tune(params, SCHEMA, X, y)
    with cpu_burners() as burners:
        busy = training.tune(params, SCHEMA, X, y)
        assert all(b.poll() is None for b in burners), "the load ended before the search did"
    assert _figures(busy) == _figures(quiet)
    assert quiet.oof_scores is not None and busy.oof_scores is not None
    assert np.array_equal(busy.oof_scores, quiet.oof_scores)
    assert quiet.trials_run == quiet.trials_planned == 6 and quiet.stopped_by is None
    assert quiet.budget_note is None
    assert any(t.state == "PRUNED" for t in quiet.trials)  # the pruner took part, identically


def test_a_budget_the_search_stays_within_changes_nothing() -> None:
    X, y = _frame(400)
    unbounded = training.tune(_params(3), SCHEMA, X, y)
    generous = training.tune(_params(3, timeout_s=3600), SCHEMA, X, y)
    assert _figures(generous) == _figures(unbounded)
    assert generous.stopped_by is None and generous.budget_note is None


def _summary(result: training.TuningResult) -> TrainingSummary:
    return TrainingSummary(
        data_version="abc.dir",
        batches="2013-01..2013-06",
        validation="passed",
        metric="roc_auc",
        best_params=result.best_params,
        cv_mean=result.cv_mean,
        cv_std=result.cv_std,
        n_trials=len(result.trials),
        n_pruned=result.n_pruned,
        holdout_score=0.75,
        holdout_batches="2013-06",
        model_version="1",
        promoted=True,
        promotion_reason="meets the floor",
        drift_batch="2013-06",
        dataset_drift=False,
        drifted_columns=(),
        drift_report=Path("reports/drift/drift-2013-06.html"),
        validation_report=Path("reports/validation.json"),
        tracking_uri="sqlite:///mlflow.db",
        mlflow_run_id="r1",
        budget_note=result.budget_note,
    )


def test_a_spent_time_budget_stops_the_search_and_every_report_says_so() -> None:
    X, y = _frame(400)
    result = training.tune(_params(4, timeout_s=0.001), SCHEMA, X, y)
    note = "stopped by the time budget after 1 of 4 trials"  # the first trial always runs
    assert (result.trials_run, result.trials_planned) == (1, 4)
    assert result.stopped_by == training.TIME_BUDGET and result.budget_note == note
    assert result.fold_scores == result.trials[0].fold_scores  # the best of what ran

    summary = _summary(result)
    [cv_line] = [line for line in summary.render().splitlines() if "CV roc_auc" in line]
    assert cv_line.endswith(f"(1 trials, 0 pruned; {note})")
    restored = TrainingSummary.from_dict(summary.to_dict())  # an unchanged re-run reports it
    assert note in restored.render()
    assert note not in replace(summary, budget_note=None).render()

    card = _card(n_trials=result.trials_run, n_pruned=result.n_pruned, budget_note=note)
    text = card.render()
    assert f"1 trials, 0 pruned; {note})" in text  # training section
    [check] = [c for c in card.checklist() if c.item.startswith("Hyperparameters are tuned")]
    assert check.status == "pass" and check.detail.endswith(note)
    assert note not in _card().render()


def test_threads_runner_reports_a_spent_time_budget(tmp_path: Path) -> None:
    X, y = _frame(400)
    result = training.tune(
        _params(4, timeout_s=0.001),
        SCHEMA,
        X,
        y,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        study_name="budget",
        runner=parallel.thread_runner(2),
        fit_threads=1,
    )
    assert 1 <= result.trials_run < result.trials_planned == 4
    assert result.stopped_by == training.TIME_BUDGET
    assert result.budget_note == (
        f"stopped by the time budget after {result.trials_run} of 4 trials"
    )


def _job(storage: str, index: int, deadline: float | None) -> training.TrialJob:
    X, y = _frame(300)
    return training.TrialJob(
        _params(2), SCHEMA, X, y, "jobs", storage, index, 1, deadline, n_trials=1
    )


def test_a_worker_past_the_deadline_starts_no_trial_but_the_searchs_first(
    tmp_path: Path,
) -> None:
    """What every runner (threads, Dask, Prefect tasks) calls: `run_trials` on one job."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(storage=storage, study_name="jobs", direction="maximize")
    passed = training.TimeBudget(1.0, now=0.0).deadline  # long gone
    late = training.run_trials(_job(storage, 1, passed))
    assert (late.records, late.skipped, late.best_number) == ((), 1, None)
    first = training.run_trials(_job(storage, 0, passed))
    assert len(first.records) == 1 and first.skipped == 0
    assert len(optuna.load_study(study_name="jobs", storage=storage).trials) == 1
    unbounded = training.run_trials(_job(storage, 1, None))
    assert len(unbounded.records) == 1 and unbounded.skipped == 0


def test_time_budget_deadline() -> None:
    budget = training.TimeBudget(10.0, now=100.0)
    assert budget.deadline == 110.0
    assert not budget.spent(now=109.9) and budget.spent(now=110.0)
    off = training.TimeBudget(None, now=100.0)
    assert off.deadline is None and not off.spent(now=1e12)


def test_budget_note_wording() -> None:
    assert budget_note(3, 10, training.TIME_BUDGET) == (
        "stopped by the time budget after 3 of 10 trials"
    )
    assert budget_note(10, 10, None) is None


def test_a_time_budget_is_part_of_the_search_cache_key_and_the_run_fingerprint() -> None:
    """A budget changes what the search computes: a cached or registered search without one
    is not reused for a run with one (and back)."""
    from ctloop.core import fingerprint
    from ctloop.core.config import load_project, override

    X, y = _frame(50)
    base = load_project(ROOT / "params.yaml")
    budgeted = override(base, {"tune.timeout_s": 60}).params
    assert fingerprint.tuning_key(budgeted, X, y) != fingerprint.tuning_key(base.params, X, y)
    assert fingerprint.run_params(budgeted) != fingerprint.run_params(base.params)
