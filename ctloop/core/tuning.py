"""The outcome of a hyperparameter search, shared by training (ctloop/ml/training.py), its
tracking in MLflow (ctloop/io/tracking.py), the summary and the model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


ParamValue = str | int | float | bool | None


TIME_BUDGET = "time_budget"  # TuningResult.stopped_by: tune.timeout_s ended the search early


@dataclass(frozen=True)
class TrialRecord:
    """One tuning trial: its parameters, per-fold scores and fate (complete or pruned)."""

    number: int
    params: dict[str, ParamValue]
    fold_scores: tuple[float, ...]
    state: str
    seconds: float
    best_iterations: tuple[int, ...] = ()
    train_scores: tuple[float, ...] = ()

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores)) if self.fold_scores else float("nan")


@dataclass(frozen=True)
class TuningResult:
    """The search's outcome. The best trial's fold models and out-of-fold scores are kept: they
    give per-prediction uncertainty (fold spread) and conformal intervals at no extra fit."""

    best_params: dict[str, ParamValue]
    cv_mean: float
    cv_std: float
    fold_scores: tuple[float, ...]
    trials: tuple[TrialRecord, ...] = field(default_factory=tuple)
    fold_models: tuple[Pipeline, ...] = field(default=(), repr=False)
    oof_scores: np.ndarray | None = field(default=None, repr=False)
    study_name: str | None = None  # the Optuna study in tune.storage (None: in memory)
    trials_planned: int = 0  # tune.n_trials of the search
    stopped_by: str | None = None  # TIME_BUDGET: tune.timeout_s stopped it before trials_planned

    @property
    def n_pruned(self) -> int:
        return sum(t.state == "PRUNED" for t in self.trials)

    @property
    def trials_run(self) -> int:
        return len(self.trials)

    @property
    def budget_note(self) -> str | None:
        """'stopped by the time budget after k of n trials', or None: every planned trial ran."""
        return budget_note(self.trials_run, self.trials_planned, self.stopped_by)


def budget_note(trials_run: int, trials_planned: int | None, stopped_by: str | None) -> str | None:
    """The one wording (summary, MLflow, model card) of a search the time budget cut short;
    None when it was not (`stopped_by` is not TIME_BUDGET)."""
    if stopped_by != TIME_BUDGET:
        return None
    return f"stopped by the time budget after {trials_run} of {trials_planned} trials"
