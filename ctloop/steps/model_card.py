"""The model card of a registered version: what it is for, what it was trained and checked on, how
good it is (overall, per slice, how sure), what it relies on, and an "ML Test Score" checklist
(Breck et al., 2017: data, model, infrastructure and monitoring tests) ticked only from what the
pipeline checked in the run that trained it.

Pure: no Prefect, no MLflow; the run's results come in as typed values and the card renders to
Markdown (ctloop/steps/card.py publishes it to MLflow, the Prefect UI and
reports/model_card.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ctloop.core.approval import Approval
from ctloop.core.promotion import SliceScore, slice_regressions
from ctloop.core.thresholds import Change, Floor, pct, worse_word
from ctloop.io.registry import PromotionDecision

if TYPE_CHECKING:
    import pandas as pd

    from ctloop.ml.drift import DriftSummary

Area = Literal["data", "model", "infrastructure", "monitoring"]
Status = Literal["pass", "fail", "not-checked"]
AREAS: tuple[Area, ...] = ("data", "model", "infrastructure", "monitoring")
REGISTRY_LIMIT = 5000  # MLflow's model version description column (VARCHAR(5000))


@dataclass(frozen=True)
class Check:
    """One checklist item: ticked only when the run checked it and it held."""

    area: Area
    item: str
    status: Status
    detail: str

    def line(self) -> str:
        box = "[x]" if self.status == "pass" else "[ ]"
        note = {"pass": "", "fail": "**failed**: ", "not-checked": "not checked: "}[self.status]
        return f"- {box} {self.item} - {note}{self.detail}"


@dataclass(frozen=True)
class ValidationStatus:
    """The Great Expectations gate of the run's batches (from reports/validation.json)."""

    batches: int
    rules: int
    critical_failures: int
    warnings: int

    @property
    def passed(self) -> bool:
        return self.batches > 0 and self.critical_failures == 0

    @classmethod
    def from_results(cls, payload: dict[str, Any]) -> ValidationStatus:
        """From the JSON tasks/validation.save_results writes."""
        counts = [r["counts"] for r in payload.get("reports", [])]
        return cls(
            batches=len(counts),
            rules=sum(c["rules"] for c in counts),
            critical_failures=sum(c["critical_failures"] for c in counts),
            warnings=sum(c["warnings"] for c in counts),
        )

    def describe(self) -> str:
        verdict = "passed" if self.passed else f"{self.critical_failures} critical failure(s)"
        return (
            f"{verdict}: {self.batches} batch(es), {self.rules} rule results, "
            f"{self.warnings} warning(s)"
        )


@dataclass(frozen=True)
class DriftStatus:
    """Drift of the newest batch against the champion's training batches, at training time."""

    batch: str
    reference: tuple[str, ...]
    dataset_drift: bool
    n_drifted: int
    n_columns: int
    drifted_columns: tuple[str, ...]
    report: str | None = None  # the report's file (keyed, never replaced), relative to the project
    url: str | None = None  # the report's page over HTTP (MLflow UI's page of the run's copy)

    @classmethod
    def from_summary(
        cls,
        batch: str,
        reference: Sequence[str],
        summary: DriftSummary,
        report: str | None = None,
        url: str | None = None,
    ) -> DriftStatus:
        return cls(
            batch,
            tuple(reference),
            summary.dataset_drift,
            summary.n_drifted,
            summary.n_columns,
            tuple(summary.drifted_columns),
            report,
            url,
        )

    def describe(self) -> str:
        verdict = "dataset drift" if self.dataset_drift else "no dataset drift"
        columns = ", ".join(self.drifted_columns) or "none"
        ref = f"{self.reference[0]}..{self.reference[-1]}" if self.reference else "-"
        return (
            f"{self.batch} vs {ref}: {verdict} ({self.n_drifted}/{self.n_columns} columns "
            f"drifted: {columns})"
        )


@dataclass(frozen=True, eq=False)
class ModelCard:
    """Everything the card says; optional parts are None when the run did not produce them."""

    model_name: str
    version: str
    run_id: str
    created: str
    task: str
    metric: str
    greater_is_better: bool
    family: str
    data_version: str
    train_batches: tuple[str, ...]
    holdout_batches: tuple[str, ...]
    train_rows: int
    holdout_rows: int
    unlabelled_rows: int
    cv_kind: str
    folds: int
    cv_mean: float
    cv_std: float
    n_trials: int
    n_pruned: int
    best_params: dict[str, Any]
    holdout: dict[str, float]
    decision: PromotionDecision
    seed: int
    git_commit: str
    intended_use: str = ""
    limitations: tuple[str, ...] = ()
    approval: Approval | None = None  # None: still waiting for an answer
    validation: ValidationStatus | None = None
    signature_logged: bool | None = None  # checked on the registered version
    slice_columns: tuple[str, ...] = ()
    slice_min_size: int = 0
    slice_tolerance: float = 0.0
    importance: pd.DataFrame | None = None  # feature, importance_mean, importance_std
    shap: pd.DataFrame | None = None  # feature, mean_abs_shap
    top_features: int = 10
    brier: float | None = None
    # coverage_target, half_width, coverage_holdout (+ calibration_rows, holdout_rows)
    interval: dict[str, float] | None = None
    drift: DriftStatus | None = None
    drift_note: str = "not measured in this run"  # why `drift` is None
    notes: tuple[str, ...] = field(default=())
    budget_note: str | None = None  # TuningResult.budget_note: the time budget cut the search
    plan_warnings: tuple[str, ...] = ()  # the training plan's checks (ctloop/ml/preconditions.py)

    # --- checklist ---------------------------------------------------------------------

    def checklist(self) -> tuple[Check, ...]:
        """The ML Test Score items this pipeline can speak to, in Breck et al.'s four areas."""
        return (
            self._schema_check(),
            self._features_check(),
            self._tuning_check(),
            self._holdout_check(),
            self._floor_check(),
            self._slices_check(),
            self._uncertainty_check(),
            self._reproducible_check(),
            self._gate_check(),
            self._signature_check(),
            self._approval_check(),
            self._rollback_check(),
            Check(
                "infrastructure",
                "The ML pipeline is integration tested",
                "not-checked",
                "the project's test suite (`make test`) runs apart from the pipeline",
            ),
            self._drift_check(),
            self._regression_check(),
            Check(
                "monitoring",
                "Models are not too stale",
                "not-checked",
                "decay is measured later, by monitor-batch on newly labelled batches",
            ),
        )

    def _schema_check(self) -> Check:
        item = "Feature expectations are captured in a schema and the batches meet them"
        if self.validation is None:
            return Check("data", item, "not-checked", "no validation result for this run")
        status: Status = "pass" if self.validation.passed else "fail"
        return Check("data", item, status, f"Great Expectations {self.validation.describe()}")

    def _features_check(self) -> Check:
        item = "All features are beneficial"
        if self.importance is None or self.importance.empty:
            return Check("data", item, "not-checked", "no permutation importance in this run")
        useless = self.importance.loc[self.importance["importance_mean"] <= 0, "feature"]
        if useless.empty:
            detail = f"every one of {len(self.importance)} features has permutation importance > 0"
            return Check("data", item, "pass", detail)
        names = ", ".join(map(str, useless))
        detail = (
            f"{len(useless)} of {len(self.importance)} features have permutation importance "
            f"<= 0 on the holdout: {names}"
        )
        return Check("data", item, "fail", detail)

    def _tuning_check(self) -> Check:
        item = "Hyperparameters are tuned by cross-validation"
        if self.n_trials < 1:
            return Check("model", item, "not-checked", "no tuning trial ran")
        detail = (
            f"{self.n_trials} Optuna trials ({self.n_pruned} pruned), {self.folds}-fold "
            f"{self.cv_kind} CV: {self.metric} {self.cv_mean:.4f} ± {self.cv_std:.4f}"
        )
        if self.budget_note:
            detail += f"; {self.budget_note}"
        return Check("model", item, "pass", detail)

    def _holdout_check(self) -> Check:
        item = "Quality is measured on a holdout the search never saw"
        if self.metric not in self.holdout:
            return Check("model", item, "not-checked", "no holdout metrics")
        detail = f"{_batches(self.holdout_batches)}: {self.metric} {self.holdout[self.metric]:.4f}"
        return Check("model", item, "pass", detail)

    def _floor_check(self) -> Check:
        item = "The model beats the baseline floor"
        d = self.decision
        if math.isnan(d.floor):
            return Check("model", item, "not-checked", "no floor recorded with the decision")
        bar = Floor(d.floor, d.floor_origin)
        ok = bar.met_by(d.challenger_score, self.greater_is_better)
        word = ">=" if self.greater_is_better else "<="
        detail = f"{d.metric} {d.challenger_score:.4f} {word} {d.floor:.4g} ({d.floor_origin}"
        detail += (
            "; the gate's test: no comparable champion)"
            if d.floor_applied
            else f"; not gating: compared with champion v{d.champion_version})"
        )
        return Check("model", item, "pass" if ok else "fail", detail if ok else f"not {detail}")

    def _slices_check(self) -> Check:
        item = "Model quality is sufficient on important data slices"
        slices = self.decision.slices
        if not slices:
            why = (
                "no slice columns configured (slices.columns)"
                if not self.slice_columns
                else "no slice metrics in this run"
            )
            return Check("model", item, "not-checked", why)
        gated = [s for s in slices if s.gated]
        if self.decision.champion_score is None or not any(s.champion is not None for s in gated):
            return Check(
                "model",
                item,
                "not-checked",
                f"{len(slices)} slices reported; no comparable champion to gate them against",
            )
        regressed = self.regressions()
        holm = "" if self.decision.confidence is None else " (significant after Holm)"
        if regressed:
            names = "; ".join(f"{s.label} (n={s.n})" for s in regressed)
            detail = (
                f"{len(regressed)} slice(s) regress beyond {pct(self.slice_tolerance)} of the "
                f"champion's figure{holm}: {names}"
            )
            return Check("model", item, "fail", detail)
        detail = (
            f"{len(gated)} gated slices (n >= {self.slice_min_size}): none regresses beyond "
            f"{pct(self.slice_tolerance)} of the champion's figure{holm}"
        )
        return Check("model", item, "pass", detail)

    def _uncertainty_check(self) -> Check:
        if self.task == "classification":
            item = "Predicted probabilities are calibrated (Brier score measured)"
            if self.brier is None:
                return Check("model", item, "not-checked", "no calibration in this run")
            return Check("model", item, "pass", f"Brier score {self.brier:.4f} on the holdout")
        item = "Prediction intervals reach their coverage on the holdout"
        if self.interval is None:
            return Check("model", item, "not-checked", "no prediction intervals in this run")
        target, got = self.interval["coverage_target"], self.interval["coverage_holdout"]
        n = int(self.interval.get("holdout_rows", self.holdout_rows))
        slack = coverage_tolerance(target, n)
        detail = (
            f"{self.interval_line()}; passes from {target - slack:.3f} (target minus twice the "
            f"sampling error of a coverage measured on {n} rows)"
        )
        return Check("model", item, "pass" if got >= target - slack else "fail", detail)

    def interval_line(self) -> str:
        """'intervals: 90% target, 0.883 achieved on holdout 2013-04 (±12.5, conformal on the
        residuals of the newest 1200 training rows, predicted by a fit on the rows before
        them)': what the intervals promise and what they did on the holdout."""
        i = self.interval or {}
        rows = i.get("calibration_rows")
        n = "" if rows is None else f" {int(rows)}"
        used = (
            f"the residuals of the newest{n} training rows, predicted by a fit on the rows "
            "before them"
            if self.cv_kind == "time"
            else f"{n.strip() or 'the'} out-of-fold residuals ({self.cv_kind} CV)"
        )
        return (
            f"intervals: {i.get('coverage_target', math.nan):.0%} target, "
            f"{i.get('coverage_holdout', math.nan):.3f} achieved on holdout "
            f"{_batches(self.holdout_batches)} (±{i.get('half_width', math.nan):.4g}, conformal "
            f"on {used})"
        )

    def _reproducible_check(self) -> Check:
        item = "Training is reproducible (seed, data version, code version)"
        missing = []
        if not self.data_version or self.data_version == "unversioned":
            missing.append("data not versioned by DVC")
        if self.git_commit in ("", "unknown"):
            missing.append("code not in a git repository")
        elif self.git_commit.endswith("-dirty"):
            missing.append("code has uncommitted changes")
        detail = (
            f"seed {self.seed}, data {self.data_version[:12] or '-'}, "
            f"code {self.git_commit[:12] or '-'}"
        )
        if missing:
            return Check("infrastructure", item, "fail", f"{'; '.join(missing)} ({detail})")
        return Check("infrastructure", item, "pass", detail)

    def _gate_check(self) -> Check:
        return Check(
            "infrastructure",
            "Model quality is validated before serving",
            "pass",
            f"champion/challenger gate on the same holdout: {self.decision.reason}",
        )

    def _signature_check(self) -> Check:
        item = "Training and serving share an input schema (MLflow model signature)"
        if self.signature_logged is None:
            return Check("infrastructure", item, "not-checked", "signature not read back")
        if self.signature_logged:
            return Check("infrastructure", item, "pass", "signature logged with the version")
        return Check("infrastructure", item, "fail", "the registered version has no signature")

    def _approval_check(self) -> Check:
        item = "A person signed off the promotion"
        a = self.approval
        if a is None:
            return Check("infrastructure", item, "not-checked", "waiting for an answer")
        if a.outcome == "approved":
            return Check("infrastructure", item, "pass", a.describe())
        if a.outcome == "not-required":
            why = (
                "promotion.require_approval is off"
                if self.decision.promote
                else "the gate did not promote: nothing to sign off"
            )
            return Check("infrastructure", item, "not-checked", why)
        return Check("infrastructure", item, "fail", a.describe())

    def _rollback_check(self) -> Check:
        item = "Serving models can be rolled back"
        d = self.decision
        if not d.promote:
            champion = f"v{d.champion_version}" if d.champion_version else "none"
            return Check(
                "infrastructure",
                item,
                "not-checked",
                f"this version does not serve (champion: {champion})",
            )
        if d.champion_version is None:
            return Check(
                "infrastructure", item, "not-checked", "first champion: nothing to roll back to"
            )
        detail = f"`ctloop rollback` returns to v{d.champion_version}"
        return Check("infrastructure", item, "pass", detail)

    def _drift_check(self) -> Check:
        item = "Training and newest data are not skewed (no dataset drift)"
        if self.drift is None:
            return Check("monitoring", item, "not-checked", self.drift_note)
        status: Status = "fail" if self.drift.dataset_drift else "pass"
        return Check("monitoring", item, status, self.drift.describe())

    def _regression_check(self) -> Check:
        item = "Prediction quality has not regressed (vs the champion, same holdout)"
        d = self.decision
        if d.champion_score is None:
            return Check("monitoring", item, "not-checked", "no comparable champion")
        change = Change(d.challenger_score, d.champion_score, self.greater_is_better)
        interval = "" if d.interval is None else f" {d.interval.describe()}"
        detail = (
            f"{d.metric} {d.challenger_score:.4f} vs champion v{d.champion_version} "
            f"{d.champion_score:.4f} (gain {change.describe_gain()}{interval})"
        )
        return Check("monitoring", item, "pass" if change.better_by(0.0) else "fail", detail)

    def regressions(self) -> tuple[SliceScore, ...]:
        """The slices the gate refused (the bootstrap gate: significant after Holm)."""
        return slice_regressions(
            self.decision.slices,
            self.greater_is_better,
            self.slice_tolerance,
            self.decision.confidence,
        )

    def gain_line(self) -> str | None:
        """What the bootstrap gate compared: `gain +0.0040 [95% -0.0012, +0.0093] (paired
        bootstrap of the 27000 holdout rows, 1000 rounds; Efron & Tibshirani 1993): the lower
        bound does not exceed the margin 0.25% of the champion's figure (0.0018)`; None for the
        point gate or without a champion."""
        d = self.decision
        interval = d.interval
        if interval is None or d.champion_score is None:
            return None
        needed = d.margin * abs(d.champion_score)
        verdict = "exceeds" if interval.lower > needed else "does not exceed"
        return (
            f"gain {interval.gain:+.4f} {interval.describe()} (paired bootstrap of the "
            f"{self.holdout_rows} holdout rows, {interval.rounds} rounds; Efron & Tibshirani "
            f"1993): the lower bound {verdict} the margin {pct(d.margin)} of the champion's "
            f"figure ({needed:.4f})"
        )

    # --- rendering ---------------------------------------------------------------------

    def render(self, short: bool = False) -> str:
        """The card as Markdown; `short` keeps the tables small (registry description)."""
        parts = [
            self._head(),
            self._decision_section(),
            self._use_section(),
            self._data_section(),
            self._training_section(),
            self._slices_section(short),
            self._features_section(short),
            self._uncertainty_section(),
            self._drift_section(),
            self._checklist_section(),
        ]
        return "\n\n".join(p for p in parts if p) + "\n"

    def for_registry(self, limit: int = REGISTRY_LIMIT) -> str:
        """The card within the registry's description limit: full, else short, else cut with a
        pointer to the full card (the run's model_card.md)."""
        for text in (self.render(), self.render(short=True)):
            if len(text) <= limit:
                return text
        tail = f"\n\n... (cut: the full card is `model_card.md` of run {self.run_id})\n"
        return self.render(short=True)[: limit - len(tail)] + tail

    def _head(self) -> str:
        return (
            f"# Model card: {self.model_name} v{self.version}\n\n"
            f"{self.family} {self.task} model, primary metric {self.metric}; trained "
            f"{self.created} (MLflow run `{self.run_id}`)."
        )

    def _decision_section(self) -> str:
        d = self.decision
        verdict = "**promoted to champion**" if d.promote else "**not promoted** (challenger)"
        approval = "waiting for an answer" if self.approval is None else self.approval.describe()
        gain = self.gain_line()
        tested = "" if gain is None else f"\n- Gain over champion v{d.champion_version}: {gain}"
        return f"## Decision\n\n- Promotion: {verdict} - {d.reason}{tested}\n- Approval: {approval}"

    def _use_section(self) -> str:
        use = _free_text(self.intended_use, "model_card.intended_use") or (
            "_not stated (params.yaml model_card.intended_use)_"
        )
        limits = "\n".join(
            f"- {_free_text(x, 'model_card.limitations')}" for x in self.limitations
        ) or ("- _none stated (params.yaml model_card.limitations)_")
        return f"## Intended use\n\n{use}\n\n## Limitations\n\n{limits}"

    def _data_section(self) -> str:
        validation = "not run" if self.validation is None else self.validation.describe()
        return (
            "## Data\n\n"
            f"- Data version (DVC): `{self.data_version}`\n"
            f"- Training period: {_batches(self.train_batches)}; {self.train_rows} labelled rows\n"
            f"- Holdout: {_batches(self.holdout_batches)}; {self.holdout_rows} labelled rows\n"
            f"- Unlabelled rows excluded: {self.unlabelled_rows}\n"
            f"- Validation (Great Expectations): {validation}"
            + "".join(f"\n- Training plan warning: {w}" for w in self.plan_warnings)
        )

    def _training_section(self) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items()) or "-"
        rows = [[k, f"{v:.4f}"] for k, v in sorted(self.holdout.items())]
        return (
            "## Training and evaluation\n\n"
            f"- CV {self.metric}: {self.cv_mean:.4f} ± {self.cv_std:.4f} ({self.folds}-fold "
            f"{self.cv_kind}; {self.n_trials} trials, {self.n_pruned} pruned"
            f"{'; ' + self.budget_note if self.budget_note else ''})\n"
            f"- Best parameters: {params}\n\n"
            f"Holdout metrics ({_batches(self.holdout_batches)}):\n\n"
            + _table(["metric", "value"], rows)
        )

    def _slices_section(self, short: bool) -> str:
        slices = self.decision.slices
        if not slices:
            why = "no slice columns configured" if not self.slice_columns else "not computed"
            return f"## Slices\n\n_{why}_"
        regressed = {s.label for s in self.regressions()}
        tested = self.decision.confidence is not None
        shown = [s for s in slices if s.gated or s.label in regressed] if short else list(slices)
        rows = [
            [
                s.column,
                s.value,
                str(s.n),
                _figure(s.challenger),
                _figure(s.champion),
                "yes" if s.gated else "no",
                "**REGRESSION**" if s.label in regressed else "",
            ]
            + ([_slice_gain(s)] if tested else [])
            for s in shown
        ]
        note = (
            f"{self.metric} per slice of the holdout; slices with n >= {self.slice_min_size} are "
            f"gated: a {worse_word(self.greater_is_better)} beyond {pct(self.slice_tolerance)} "
            "of the champion's figure refuses the challenger"
        )
        if self.decision.confidence is not None:
            note += (
                " when it is significant after a Holm correction across the gated slices "
                "(paired bootstrap per slice: its gain interval and p-value in the last column)"
            )
        note += "."
        if short and len(shown) < len(slices):
            note += f" Only gated slices shown ({len(shown)} of {len(slices)})."
        header = ["column", "value", "n", "this version", "champion", "gated", "flag"]
        header += ["gain (p of the regression)"] if tested else []
        return f"## Slices\n\n{note}\n\n" + _table(header, rows)

    def _features_section(self, short: bool) -> str:
        n = min(self.top_features, 5) if short else self.top_features
        parts = ["## Top features"]
        if self.importance is None:
            parts.append("_permutation importance not computed in this run_")
        else:
            top = self.importance.head(n)
            rows = [
                [str(r.feature), f"{r.importance_mean:.4f}", f"{r.importance_std:.4f}"]
                for r in top.itertuples()
            ]
            parts.append(
                f"Permutation importance on the holdout (drop of {self.metric}):\n\n"
                + _table(["feature", "mean", "std"], rows)
            )
        if self.shap is not None:
            rows = [
                [str(r.feature), f"{r.mean_abs_shap:.4f}"] for r in self.shap.head(n).itertuples()
            ]
            parts.append("TreeSHAP (mean |SHAP|):\n\n" + _table(["feature", "mean |SHAP|"], rows))
        return "\n\n".join(parts)

    def _uncertainty_section(self) -> str:
        if self.task == "classification":
            body = (
                f"Brier score on the holdout: {self.brier:.4f} (lower is better; the calibration "
                "curve is `plots/calibration.png` of the run)"
                if self.brier is not None
                else "_calibration not computed in this run_"
            )
        elif self.interval is not None:
            body = (
                f"Prediction {self.interval_line()}. Coverage is the share of holdout targets "
                "inside prediction ± half width."
            )
        else:
            body = "_prediction intervals not computed in this run_"
        return f"## Uncertainty\n\n{body}"

    def _drift_section(self) -> str:
        if self.drift is None:
            body = f"_{self.drift_note}_"
        else:
            body = self.drift.describe()
            if self.drift.url:
                body += f"\n\nReport: <{self.drift.url}>"
                if self.drift.report:
                    body += f" (in the project: `{self.drift.report}`)"
            elif self.drift.report:
                body += f"\n\nReport: `{self.drift.report}`"
        return f"## Drift at training time\n\n{body}"

    def _checklist_section(self) -> str:
        checks = self.checklist()
        passed = sum(c.status == "pass" for c in checks)
        parts = [
            "## ML Test Score checklist\n\n"
            f"{passed} of {len(checks)} ticked: an item is ticked only when this run checked "
            "it and it held (Breck et al., 2017, *The ML Test Score*)."
        ]
        for area in AREAS:
            lines = [c.line() for c in checks if c.area == area]
            if lines:
                parts.append(f"**{area.capitalize()}**\n\n" + "\n".join(lines))
        return "\n\n".join(parts)


def coverage_tolerance(target: float, n: int) -> float:
    """Twice the binomial standard error of an empirical coverage on `n` rows whose true
    coverage is `target` (a share): exact intervals measure below their target about half the
    time, by about this much at most (~97.7%, normal approximation). Infinite without rows."""
    return 2 * math.sqrt(target * (1 - target) / n) if n > 0 else math.inf


def _batches(names: Sequence[str]) -> str:
    if not names:
        return "-"
    return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]} ({len(names)} batches)"


def _figure(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([row(header), "|" + "---|" * len(header), *map(row, rows)])


PLACEHOLDER = "TODO:"  # `ctloop init` writes the free text as visible placeholders


def is_placeholder(text: str) -> bool:
    """Free text `ctloop init` wrote and nobody has replaced yet."""
    return text.strip().startswith(PLACEHOLDER)


def _slice_gain(s: SliceScore) -> str:
    """`-0.0408 [95% -0.061, -0.021] (p=0.001)`; empty for a slice the bootstrap did not test."""
    if s.gain is None:
        return ""
    p = "" if s.p_regression is None else f" (p={s.p_regression:.3g})"
    return f"{s.gain.gain:+.4f} {s.gain.describe()}{p}"


def _free_text(text: str, key: str) -> str:
    """The text as written, or a marked placeholder: the card must not pass a template off as
    the owner's statement."""
    text = text.strip()
    if not is_placeholder(text):
        return text
    hint = text.removeprefix(PLACEHOLDER).strip()
    return f"**Not written yet** (params.yaml `{key}`): _{hint}_"
