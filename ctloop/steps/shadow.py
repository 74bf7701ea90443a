"""Challengers in shadow: a challenger the gate refused (`promotion.shadow_batches` k > 0) takes
the alias `shadow` at registration (`enter_shadow`); the monitor scores each new batch with it
beside the champion (`compare_shadow`: predictions under their own file names, serving
unchanged), compares the two on a labelled batch with the gate's paired test on that batch's
rows, counts consecutive wins on the shadow version's tags, and after k wins promotes it through
the audited move (`promote_shadow`). A shadow that cannot be loaded or cannot score a batch never
stops the champion's monitoring: `shadow_failed` records the failure (outcome `failed`, its count
reset) and the run goes on. The rules are pure in ctloop/core/shadow.py. No Prefect
here (the tasks are in tasks/monitoring.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.core import promotion, shadow
from ctloop.core.config import Project
from ctloop.io import files, registry, tracking
from ctloop.ml import comparison, training
from ctloop.steps import validate
from ctloop.steps.monitoring import Champion, score_frame


@dataclass(frozen=True)
class ShadowModel:
    """The challenger in shadow: its version and its recorded count of wins."""

    name: str
    version: str
    state: shadow.ShadowState


@dataclass(frozen=True)
class ShadowResult:
    """The shadow against the champion on one batch: where its scores were written, its and the
    champion's metric on the labelled rows (None: unlabelled), the paired bootstrap interval of
    the gain (metric units, positive: the shadow is better), the outcome, the count after it,
    and the decision to apply when it is due for promotion (None otherwise)."""

    batch: str
    metric: str
    shadow_version: str
    champion_version: str
    predictions: Path
    outcome: shadow.Outcome
    state: shadow.ShadowState
    required: int  # promotion.shadow_batches
    shadow_score: float | None = None
    champion_score: float | None = None
    interval: promotion.GainInterval | None = None
    reason: str = ""  # the gate's reason on this batch ("" when unlabelled)
    promotion: promotion.PromotionDecision | None = None
    error: str = ""  # why the shadow could not score the batch (outcome `failed`)

    def line(self) -> str:
        """One line for the log: `shadow v2 vs champion v1 on 2013-04: win (1/2 ...)`."""
        head = (
            f"shadow v{self.shadow_version} vs champion v{self.champion_version} on "
            f"{self.batch}: {self.outcome}"
        )
        count = f"{self.state.wins}/{self.required} consecutive wins"
        if self.outcome == shadow.FAILED:
            return (
                f"{head}: it could not score the batch ({self.error}); count reset ({count}); "
                "the champion's monitoring goes on"
            )
        if self.interval is None:
            return f"{head} ({count}; no labels: count unchanged)"
        return (
            f"{head} ({self.metric} {self.shadow_score:.4f} vs {self.champion_score:.4f}, gain "
            f"{self.interval.describe()}; {count})"
            + (" -> PROMOTED" if self.promotion is not None else "")
        )

    def markdown(self) -> str:
        """The Prefect artifact `shadow-<batch>`."""
        verdict = (
            f"PROMOTED to champion: {self.promotion.reason}"
            if self.promotion is not None
            else f"stays in shadow ({self.state.wins}/{self.required} consecutive wins)"
        )
        if self.outcome == shadow.FAILED:
            verdict = f"FAILED to score the batch, count reset (0/{self.required})"
        rows = [
            "| | value |",
            "| --- | --- |",
            f"| outcome | {self.outcome} |",
            f"| consecutive wins | {self.state.wins} of {self.required} "
            f"({', '.join(self.state.streak) or '-'}) |",
        ]
        if self.interval is not None:
            rows += [
                f"| shadow {self.metric} | {self.shadow_score:.4f} |",
                f"| champion {self.metric} | {self.champion_score:.4f} |",
                f"| gain (paired bootstrap) | {self.interval.gain:+.4f} "
                f"{self.interval.describe()} |",
            ]
        if self.error:
            rows.append(f"| error | `{self.error}` |")
        else:
            rows.append(f"| shadow predictions | `{self.predictions}` |")
        why = f"\n\nGate on this batch: {self.reason}" if self.reason else ""
        return (
            f"### Shadow v{self.shadow_version} vs champion v{self.champion_version} on "
            f"{self.batch}: {verdict}\n\n" + "\n".join(rows) + why + "\n"
        )


def enter_shadow(
    project: Project,
    run_id: str,
    gate: promotion.PromotionDecision,
    final: promotion.PromotionDecision,
) -> bool:
    """At registration: give the challenger the alias `shadow` when `shadow.enters_shadow` says
    so (`promotion.shadow_batches` > 0, refused by the gate, or with `promotion.shadow: all`
    kept back by the approval), replacing any older shadow (recorded on both versions:
    `ctloop.shadow.replaced_by` / `ctloop.shadow.replaces`). Tags the training run
    `ctloop.shadow`. Returns whether it entered shadow."""
    cfg = project.params.promotion
    if not shadow.enters_shadow(
        cfg.shadow, cfg.shadow_batches, gate.promote, final.promote, final.champion_version
    ):
        return False
    name, version = cfg.model_name, final.challenger_version
    replaced = registry.put_in_shadow(name, version, final.reason)
    tracking.set_tags(run_id, {"ctloop.shadow": f"v{version}"})
    print(
        f"v{version} goes to shadow: scored beside champion v{final.champion_version} on each "
        f"new batch, promoted after {cfg.shadow_batches} consecutive wins on labelled batches"
        + ("" if replaced is None else f" (replaces the shadow v{replaced})")
    )
    return True


def current_shadow(project: Project, champion: Champion) -> ShadowModel | None:
    """The version in shadow to monitor beside `champion`; None when shadows are off
    (`promotion.shadow_batches` 0) or there is none. A shadow that is the champion itself (a
    rollback or a hand-moved alias) leaves the shadow (state `promoted`) and is not monitored."""
    cfg = project.params.promotion
    if cfg.shadow_batches <= 0:
        return None
    tracking.use_experiment(project)
    found = registry.get_shadow(cfg.model_name)
    if found is None:
        return None
    version = str(found.version)
    if version == champion.version:
        registry.leave_shadow(cfg.model_name, version, shadow.PROMOTED)
        return None
    state = shadow.ShadowState.from_tags(version, dict(found.tags or {}))
    return ShadowModel(cfg.model_name, version, state)


def shadow_predictions_path(project: Project, batch: str, version: str) -> Path:
    """`<predictions>/<batch>.shadow-v<N>.parquet`: never the champion's `<batch>.v<N>`."""
    return project.path("predictions") / f"{batch}.shadow-v{version}.parquet"


def compare_shadow(
    project: Project,
    batch: str,
    champion: Champion,
    model: ShadowModel,
    run_id: str,
    champion_predictions: Path,
) -> ShadowResult:
    """Score `batch` with the shadow (written to `shadow_predictions_path`) and, on its labelled
    rows (at least two, both classes for ROC AUC), compare it with the champion's scores
    (`champion_predictions`, written by monitoring.score_batch) with the gate's test: the
    paired bootstrap of the gain (ctloop/ml/comparison.py; `promotion.bootstrap_rounds`,
    `confidence`, `seed`) and `promotion.decide` with `promotion.margin` and `promotion.test`
    (no slices: the whole batch). The new count is written on the shadow version's tags; the
    figures on the monitoring run `run_id` (metrics `shadow_<metric>`, `shadow_gain`,
    `shadow_gain_lower`, `shadow_gain_upper`, `shadow_wins`; tags `ctloop.shadow_version`,
    `ctloop.shadow_outcome`). When the shadow is due, `promotion` holds the decision for
    `promote_shadow`. Raises what loading the model or the batch raises."""
    cfg = project.params
    tracking.use_experiment(project)
    estimator = registry.load_version(model.name, model.version)
    frame = validate.load_batches(project, [batch])
    task, target, metric = cfg.data.task, cfg.data.target, cfg.metric
    scored = score_frame(estimator, frame, task, model.version)
    path = shadow_predictions_path(project, batch, model.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, lambda tmp: scored.to_parquet(tmp, index=False))
    known = frame[target].notna().to_numpy()
    labelled = bool(known.sum() >= 2) and (
        task != "classification" or frame.loc[known, target].nunique() == 2
    )
    decision, interval = None, None
    if labelled:
        truth = frame.loc[known, target]
        y = (truth.astype(int) if task == "classification" else truth).to_numpy()
        mine = scored["score"].to_numpy()[known]
        theirs = pd.read_parquet(champion_predictions)["score"].to_numpy()[known]
        interval = _interval(project, y, mine, theirs)
        decision = _decide(project, y, mine, theirs, interval, model.version, champion.version)
    outcome = shadow.classify(labelled, decision is not None and decision.promote, interval)
    state = shadow.advance(model.state, champion.version, batch, outcome)
    tracking.set_version_tags(model.name, model.version, state.tags())
    k = cfg.promotion.shadow_batches
    promote = None
    if decision is not None and shadow.due(state, k):
        promote = replace(decision, reason=shadow.promotion_reason(state, k, decision.reason))
    result = ShadowResult(
        batch,
        metric,
        model.version,
        champion.version,
        path,
        outcome,
        state,
        k,
        shadow_score=None if decision is None else decision.challenger_score,
        champion_score=None if decision is None else decision.champion_score,
        interval=interval,
        reason="" if decision is None else decision.reason,
        promotion=promote,
    )
    _record(run_id, result)
    return result


ERROR_CHARS = 1000  # of an error message kept in the run's `ctloop.shadow_error` tag


def failure_text(error: BaseException) -> str:
    """`<type>: <message>` of what stopped the shadow, cut to ERROR_CHARS."""
    return f"{type(error).__name__}: {error}"[:ERROR_CHARS]


def shadow_failed(
    project: Project,
    batch: str,
    champion: Champion,
    model: ShadowModel,
    run_id: str,
    error: str,
) -> ShadowResult:
    """Record that the shadow could not be loaded or could not score `batch` (`error`, from
    `failure_text`): outcome `failed`, its count reset to 0 on its version's tags (a model that
    cannot score every batch is not promoted on the ones it could), tags
    `ctloop.shadow_outcome=failed` and `ctloop.shadow_error` on the monitoring run `run_id`.
    The shadow keeps its alias: the next batch is tried again. Raises what writing to the
    registry raises."""
    tracking.use_experiment(project)
    state = shadow.advance(model.state, champion.version, batch, shadow.FAILED)
    tracking.set_version_tags(model.name, model.version, state.tags())
    result = ShadowResult(
        batch,
        project.params.metric,
        model.version,
        champion.version,
        shadow_predictions_path(project, batch, model.version),
        shadow.FAILED,
        state,
        project.params.promotion.shadow_batches,
        error=error,
    )
    _record(run_id, result)
    return result


def _decide(
    project: Project,
    y: np.ndarray,
    mine: np.ndarray,
    theirs: np.ndarray,
    interval: promotion.GainInterval,
    shadow_version: str,
    champion_version: str,
) -> promotion.PromotionDecision:
    """The gate's decision on the batch's labelled rows, the shadow as the challenger."""
    cfg = project.params
    task = cfg.data.task
    return promotion.decide(
        cfg.metric,
        shadow_version,
        training.evaluate(task, y, mine)[cfg.metric],
        champion_version,
        training.evaluate(task, y, theirs)[cfg.metric],
        cfg.greater_is_better,
        cfg.promotion.margin,
        math.nan,  # no floor: there is a champion
        test=cfg.promotion.test,
        interval=interval,
    )


def _interval(
    project: Project, y: np.ndarray, mine: np.ndarray, theirs: np.ndarray
) -> promotion.GainInterval:
    """The paired bootstrap interval of the shadow's gain over the champion on these rows."""
    cfg = project.params
    return comparison.paired_bootstrap(
        y,
        mine,
        theirs,
        cfg.metric,
        cfg.greater_is_better,
        cfg.promotion.bootstrap_rounds,
        cfg.promotion.confidence,
        cfg.seed,
    ).interval


def _record(run_id: str, r: ShadowResult) -> None:
    """The comparison on the monitoring run (metrics and tags)."""
    metrics: dict[str, float] = {"shadow_wins": float(r.state.wins)}
    if r.interval is not None and r.shadow_score is not None:
        metrics |= {
            f"shadow_{r.metric}": r.shadow_score,
            "shadow_gain": r.interval.gain,
            "shadow_gain_lower": r.interval.lower,
            "shadow_gain_upper": r.interval.upper,
        }
    tracking.log_metrics(run_id, metrics, prefix="")
    tags = {"ctloop.shadow_version": r.shadow_version, "ctloop.shadow_outcome": r.outcome}
    if r.error:
        tags["ctloop.shadow_error"] = r.error
    if r.promotion is not None:
        tags["ctloop.shadow_promoted"] = r.promotion.reason[:5000]
    tracking.set_tags(run_id, tags)


def promote_shadow(project: Project, decision: promotion.PromotionDecision) -> None:
    """Promote the shadow through the audited move (`registry.apply_decision`: the decision's
    `promotion.*` tags on the version, the audit event with reason `shadow: ...`, then the
    `champion` alias), then remove its alias `shadow` (state `promoted`). Raises
    registry.RegistryError when the version is not READY."""
    tracking.use_experiment(project)
    name = project.params.promotion.model_name
    registry.apply_decision(name, decision)
    registry.leave_shadow(name, decision.challenger_version, shadow.PROMOTED)
    print(f"v{decision.challenger_version} PROMOTED to champion out of shadow: {decision.reason}")
