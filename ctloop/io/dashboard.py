"""The monitoring dashboard's storage: an Evidently 0.7 local workspace (`evidently ui
--workspace PATH` serves it). One Evidently project per registered model, one snapshot per
monitored (batch, model version, batch content), each written once under an id derived from
those (the same inputs again find their snapshot: no duplicate).

What goes in a snapshot is decided in ctloop/steps/dashboard.py; this module turns it into
Evidently's objects and files. Evidently is imported inside the functions (heavy). Snapshots are
written atomically and never replaced (ctloop/io/files.py), then read back through Evidently's
own workspace API, so a layout Evidently no longer reads fails here, worded by ctloop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

from ctloop.io import files

if TYPE_CHECKING:
    from evidently.core.serialization import SnapshotModel
    from evidently.ui.workspace import Workspace

VALUE_METRIC = "evidently:metric_v2:CtloopValue"  # type of ctloop's own values in a snapshot
VALUE_LABEL = "name"  # the label telling ctloop's values apart (a panel's metric_labels)


class DashboardError(RuntimeError):
    """The dashboard's workspace cannot be read or written; the message says which and why."""


@dataclass(frozen=True)
class PanelSpec:
    """One dashboard panel: a line (or bar) plot of ctloop values over the snapshots."""

    title: str
    values: tuple[tuple[str, str], ...]  # (value name, legend)
    subtitle: str = ""
    kind: str = "line"  # line | bar
    size: str = "half"  # full | half


def _workspace(path: Path) -> Workspace:
    from evidently.ui.workspace import Workspace

    path.mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def ensure_project(
    path: Path, project_id: UUID, name: str, description: str, panels: list[PanelSpec]
) -> None:
    """Create the Evidently project `project_id` (named `name`) and its dashboard unless the
    workspace at `path` has them; a dashboard whose panels differ from `panels` (ctloop's
    definition changed) is rewritten. DashboardError when the workspace cannot be written."""
    from evidently.sdk.models import ProjectModel

    try:
        ws = _workspace(path)
        if ws.get_project(project_id) is None:
            ws.add_project(ProjectModel(id=project_id, name=name, description=description))
        wanted = dashboard_model(project_id, panels)
        if ws.get_dashboard(project_id).dict() != wanted.dict():
            ws.save_dashboard(project_id, wanted)
    except (OSError, ValueError) as err:
        raise DashboardError(
            f"dashboard: cannot create the Evidently project '{name}' in {path} "
            f"({type(err).__name__}: {err}); check that the folder (paths.dashboard in "
            "params.yaml) is writable"
        ) from err


def dashboard_model(project_id: UUID, panels: list[PanelSpec]) -> Any:
    """Evidently's DashboardModel of `panels` (one tab), with ids derived from the project and
    the panel titles: the same definition always gives the same model."""
    from evidently.sdk.models import DashboardModel, DashboardPanelPlot, PanelMetric
    from evidently.sdk.models import DashboardTabModel as Tab

    plots = [
        DashboardPanelPlot(
            id=uuid5(project_id, f"panel:{p.title}"),
            title=p.title,
            subtitle=p.subtitle or None,
            size=p.size,
            values=[
                PanelMetric(legend=legend, metric=VALUE_METRIC, metric_labels={VALUE_LABEL: name})
                for name, legend in p.values
            ],
            plot_params={"plot_type": p.kind, **({"is_stacked": False} if p.kind == "bar" else {})},
        )
        for p in panels
    ]
    tab = Tab(
        id=uuid5(project_id, "tab:monitoring"), title="Monitoring", panels=[p.id for p in plots]
    )
    return DashboardModel(tabs=[tab], panels=plots)


def snapshot_file(path: Path, project_id: UUID, snapshot_id: UUID) -> Path:
    """Where the local workspace keeps a snapshot: <workspace>/<project>/snapshots/<id>.json."""
    from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME

    return path / str(project_id) / SNAPSHOTS_DIR_NAME / f"{snapshot_id}.json"


def has_snapshot(path: Path, project_id: UUID, snapshot_id: UUID) -> bool:
    return snapshot_file(path, project_id, snapshot_id).is_file()


def snapshot_metadata(path: Path, project_id: UUID) -> list[dict[str, Any]]:
    """(timestamp, metadata, tags) of every snapshot of the project, as plain dicts."""
    folder = snapshot_file(path, project_id, UUID(int=0)).parent
    out = []
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DashboardError(f"dashboard: cannot read snapshot {file}: {err}") from err
        out.append({k: raw.get(k) for k in ("timestamp", "metadata", "tags", "name")})
    return out


def build_snapshot(
    parts: list[str],
    name: str,
    header: str,
    timestamp: datetime,
    metadata: dict[str, str],
    tags: list[str],
    values: dict[str, float],
) -> SnapshotModel:
    """One snapshot of Evidently snapshot models `parts` (JSON of `Snapshot.dumps()`: drift, data
    summary, quality), merged in order, headed by `header` and a table of ctloop's `values`, each
    of which is also a metric result of type VALUE_METRIC labelled `name=<value name>` (what the
    dashboard's panels plot)."""
    from evidently.core.metric_types import MetricConfig, SingleValue, single_value_location
    from evidently.core.report import ReportModel
    from evidently.core.serialization import SnapshotModel
    from evidently.legacy.renderers.html_widgets import header_text, table_data

    results: dict[Any, Any] = {}
    top: list[Any] = []
    widgets: list[Any] = [header_text(label=header)]
    tests: list[Any] = []
    if values:
        rows = [[k, f"{v:.6g}"] for k, v in values.items()]
        widgets.append(table_data(column_names=["ctloop value", "value"], data=rows, title=""))
    for text in parts:
        model = SnapshotModel.parse_obj(json.loads(text))
        results.update(model.metric_results)
        top += [m for m in model.top_level_metrics if m not in top]
        widgets += model.widgets
        tests += model.tests_widgets
    for key, value in values.items():
        config = MetricConfig(
            metric_id=f"ctloop:{key}", params={"type": VALUE_METRIC, VALUE_LABEL: key}
        )
        result = SingleValue(value=float(value), display_name=key)
        result.metric_value_location = single_value_location(config)
        results[config.metric_id] = result
        top.append(config.metric_id)
    return SnapshotModel(
        report=ReportModel(items=[]),
        name=name,
        timestamp=timestamp,
        metadata=metadata,
        tags=tags,
        metric_results=results,
        top_level_metrics=top,
        widgets=widgets,
        tests_widgets=tests,
    )


def write_snapshot(path: Path, project_id: UUID, snapshot_id: UUID, model: SnapshotModel) -> bool:
    """Write the snapshot once (atomically; an existing one of this id is kept: False) and read it
    back through Evidently's workspace. DashboardError when either fails."""
    from evidently.legacy.utils import NumpyEncoder

    target = snapshot_file(path, project_id, snapshot_id)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(model.dict(), cls=NumpyEncoder)
        written = files.write_once(target, text)
        if _workspace(path).get_run(project_id, snapshot_id) is None:
            raise ValueError("the workspace does not list it")
    except (OSError, ValueError, TypeError) as err:
        raise DashboardError(
            f"dashboard: cannot add snapshot {snapshot_id} to {path} "
            f"({type(err).__name__}: {err}); the monitor run is not recorded on the dashboard"
        ) from err
    return written


def summary_snapshot(current: Any, definition: Any, with_quality: str | None, name: str) -> str:
    """Evidently's data summary of the batch `current` (a DataFrame), and its quality preset
    (`with_quality`: "classification" or "regression", None: no labels) as `Snapshot.dumps()`.
    `definition` is Evidently's DataDefinition of the columns."""
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset, DataSummaryPreset, RegressionPreset

    items: list[Any] = [DataSummaryPreset()]
    if with_quality == "classification":
        items.append(ClassificationPreset())
    elif with_quality == "regression":
        items.append(RegressionPreset())
    snapshot = Report(items).run(
        current_data=Dataset.from_pandas(current, data_definition=definition), name=name
    )
    return snapshot.dumps()


def data_definition(
    numeric: list[str],
    categorical: list[str],
    task: str,
    target: str | None,
) -> Any:
    """Evidently's DataDefinition: the features' types and, when `target` is given, the quality
    task over ctloop's prediction columns (`score`, `prediction`)."""
    from evidently import BinaryClassification, DataDefinition, Regression

    kwargs: dict[str, Any] = {"numerical_columns": numeric, "categorical_columns": categorical}
    if target is not None and task == "classification":
        kwargs["classification"] = [
            BinaryClassification(
                target=target,
                prediction_labels="prediction",
                prediction_probas="score",
                pos_label=1,
            )
        ]
        kwargs["categorical_columns"] = [*categorical, target, "prediction"]
    elif target is not None:
        kwargs["regression"] = [Regression(target=target, prediction="score")]
        kwargs["numerical_columns"] = [*numeric, target, "score"]
    return DataDefinition(**kwargs)
