"""The end-of-run summary printed in the terminal and kept as a Prefect artifact."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ctloop.core.env import RUN_SERVER_ENV


@dataclass(frozen=True)
class TrainingSummary:
    data_version: str
    batches: str
    validation: str
    metric: str
    best_params: dict[str, object]
    cv_mean: float
    cv_std: float
    n_trials: int
    n_pruned: int
    holdout_score: float
    holdout_batches: str
    model_version: str
    promoted: bool
    promotion_reason: str
    drift_batch: str
    dataset_drift: bool
    drifted_columns: tuple[str, ...]
    drift_report: Path
    validation_report: Path
    tracking_uri: str
    mlflow_run_id: str
    prefect_api_url: str | None = None  # PREFECT_API_URL of a running server, if any
    unchanged: bool = False  # same data, params and code as model_version: nothing trained
    budget_note: str | None = None  # TuningResult.budget_note: the time budget cut the search
    warnings: tuple[str, ...] = ()  # the training plan's (ctloop/ml/preconditions.py)
    # the drift report's page over HTTP (the MLflow UI's page of the run's copy); None: not
    # logged on a run (an unchanged re-run's report)
    drift_report_url: str | None = None
    mlflow_run_url: str | None = None  # the run's page in the MLflow UI (training view)
    mlflow_port: int = 5000  # stack.mlflow_port: the `mlflow ui` command the summary suggests

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (paths as strings): kept on the run as summary.json."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingSummary:
        """Inverse of to_dict (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        for key in ("drift_report", "validation_report"):
            values[key] = Path(values[key])
        values["drifted_columns"] = tuple(values["drifted_columns"])
        values["warnings"] = tuple(values.get("warnings", ()))
        return cls(**values)

    def render(self) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items())
        drifted = ", ".join(self.drifted_columns) or "none"
        return "\n".join(
            [
                "ctloop training summary",
                f"  data version     : {self.data_version} (window {self.batches})",
                f"  validation       : {self.validation} -> {self.validation_report}",
                f"  best params      : {params}",
                f"  {'CV ' + self.metric:<17}: {self.cv_mean:.4f} ± {self.cv_std:.4f} "
                f"({self._trials()})",
                f"  {'holdout ' + self.metric:<17}: {self.holdout_score:.4f} "
                f"(batch {self.holdout_batches})",
                f"  promotion        : v{self.model_version} {self._verdict()} - "
                f"{self.promotion_reason}",
                f"  drift            : {self.drift_batch}: dataset drift "
                f"{'YES' if self.dataset_drift else 'no'}; drifted columns: {drifted}",
                f"  drift report     : {self._drift_report()}",
                *(f"  warning          : {w}" for w in self.warnings),
                "where to look:",
                f"  MLflow UI  : {self._mlflow_ui()} (run {self.mlflow_run_id})",
                f"  Prefect UI : {self._prefect_ui()}",
            ]
        )

    def _drift_report(self) -> str:
        if self.drift_report_url:
            return f"{self.drift_report_url}\n                     ({self.drift_report})"
        return str(self.drift_report)

    def _trials(self) -> str:
        done = f"{self.n_trials} trials, {self.n_pruned} pruned"
        return f"{done}; {self.budget_note}" if self.budget_note else done

    def _verdict(self) -> str:
        if self.unchanged:
            return "UNCHANGED (nothing trained or registered)"
        return "PROMOTED to @champion" if self.promoted else "not promoted"

    def _mlflow_ui(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.mlflow_run_url or self.tracking_uri
        return f"mlflow ui --backend-store-uri {self.tracking_uri} --port {self.mlflow_port}"

    def _prefect_ui(self) -> str:
        if self.prefect_api_url and self.prefect_api_url == os.environ.get(RUN_SERVER_ENV):
            ui = os.environ.get("PREFECT_UI_URL", "http://127.0.0.1:4200")
            return f"`ctloop up`, then {ui} (the run is stored in the project's database)"
        if self.prefect_api_url:
            return self.prefect_api_url.removesuffix("/").removesuffix("/api")
        return "`ctloop up`   (then http://127.0.0.1:4200)"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
