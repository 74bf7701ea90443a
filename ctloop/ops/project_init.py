"""`ctloop init DATA --target COLUMN`: a params.yaml for a new dataset, chosen from the data.

Pure planning (`plan_project`: a frame in, the params mapping and the reasons out) and rendering
(`render_params`), then the I/O of a new project folder (`scaffold`). What is chosen, and why:

- task: two label values (0/1, true/false, yes/no) → binary classification (ROC AUC); numbers
  → regression (RMSE); a few whole numbers or several text labels look like classes: multiclass
  is refused with what to do (`--task regression`, or recode to two classes);
- time column: a datetime column, or a text column whose values are ISO or d/m/y dates (names
  with date/time first); none → batches by arrival (`part-NNNNN` blocks of `rows_per_batch`);
- batch frequency: the finest of day/week/month/quarter/year whose median batch holds at least
  TARGET_BATCH_ROWS rows with at least MIN_BATCHES batches (validation and drift need rows);
  else the coarsest that still gives MIN_BATCHES;
- window: everything but the newest quarter of the batches (1 to 6) is ingested at first and
  trains (its newest batch is the holdout); the rest is left for `ctloop replay`;
- folds: 5, fewer when the rarer class has fewer than 10 training rows (said so);
- slices: up to two text columns of 2-10 values; identifiers (unique text per row) and other
  date columns are dropped;
- thresholds: relative to the reference figure (one setting for every metric), the floor of the
  first model a constant baseline (`promotion.min_score: null`);
- model name from the file name; the model card's free text as `TODO:` placeholders that the
  card shows as "not written yet".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ctloop.core import contract
from ctloop.core.config import Params, ValidationConfig, parse_params
from ctloop.io import data
from ctloop.steps.model_card import PLACEHOLDER

ROOT = Path(__file__).resolve().parents[2]  # the ctloop checkout: bundled params.yaml, dvc.yaml
TARGET_BATCH_ROWS = 1000
MIN_BATCHES = 4  # two training batches, the holdout, one to replay
MIN_ROWS = 100
MAX_REPLAY = 6
FREQUENCIES = ("day", "week", "month", "quarter", "year")
MAX_SLICE_VALUES = 10
CLASS_LIKE_VALUES = 10  # at most this many whole numbers look like classes, not a quantity
DATE_TEXT = re.compile(r"^\s*(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4})")
TIME_NAMES = re.compile(r"date|time|day|timestamp|period|(^|_)ts$", re.IGNORECASE)
ID_NAMES = re.compile(r"(^|[_ -])id$|^id[_ -]|uuid|identifier", re.IGNORECASE)


class InitError(ValueError):
    """The data cannot be set up automatically; the message says which column and what to do."""


@dataclass(frozen=True)
class Choice:
    """One value `ctloop init` chose: the params key, the value and why."""

    key: str
    value: Any
    why: str

    def line(self) -> str:
        return f"{self.key} = {_show(self.value)}: {self.why}"


@dataclass(frozen=True)
class ProjectPlan:
    """The params mapping for params.yaml (validated) and the choices behind it."""

    params: dict[str, Any]
    choices: tuple[Choice, ...]
    periods: tuple[str, ...]  # the batches the source is cut into


def plan_project(
    frame: pd.DataFrame,
    source: str,
    target: str,
    task: str | None = None,
    time_column: str | None = None,
    no_time_column: bool = False,
    name: str | None = None,
) -> ProjectPlan:
    """Choose a params mapping for `frame` (the raw source: rows × columns, read as delivered).

    `source` is written as data.source (relative to the new params.yaml, or absolute); `task`
    and `time_column` override the detection; `name` the model name (default: from `source`).
    Raises InitError naming the column and what to do (missing target, one value, multiclass,
    unknown encodings, too few rows or batches)."""
    if target not in frame.columns:
        raise InitError(f"--target: column '{target}' is not in {source}{_columns(frame)}")
    choices: list[Choice] = []
    task = _task(frame[target], source, task, choices)
    labelled = frame[frame[target].notna()]
    if len(labelled) < MIN_ROWS:
        raise InitError(
            f"{source}: {len(labelled)} labelled row(s) ('{target}' not empty); ctloop needs at "
            f"least {MIN_ROWS} to train, hold out and monitor"
        )
    dates = [c for c in frame.columns if c != target and _is_time(frame[c])]  # looked at once
    time = None if no_time_column else _time_column(frame, dates, time_column, choices)
    drops = _drops(frame, target, time, dates, choices)
    zone = "UTC"
    if time is not None:
        times = contract.parse_times(frame[time], zone, source)
        frequency, labels = _frequency(times, choices)
        rows_per_batch = 50_000
        periods = sorted(labels.dropna().unique())
        per_period = labels.value_counts()
        batch_rows = int(per_period.median())
    else:
        frequency = "month"  # unused without a time column
        limits = ValidationConfig.model_validate(_template().get("validation", {}))
        rows_per_batch = _rows_per_batch(len(frame), limits, choices)
        sizes = data.block_sizes(len(frame), data.BlockRule.sized(rows_per_batch, limits))
        periods = list(sizes)  # as ingestion cuts them: a short remainder joins the block before
        names = np.repeat(np.asarray(periods, dtype=object), list(sizes.values()))
        labels = pd.Series(names, index=frame.index)
        batch_rows = rows_per_batch
    if len(periods) < MIN_BATCHES:
        raise InitError(
            f"{source}: {len(periods)} batch(es); the loop needs at least {MIN_BATCHES} "
            "(two to train, the holdout, one to replay): deliver more rows"
        )
    replayed = min(MAX_REPLAY, max(1, round(len(periods) / 4)), len(periods) - 3)
    initial = periods[: len(periods) - replayed]
    choices.append(
        Choice(
            "data.ingest_until",
            initial[-1],
            f"the first {len(initial)} of {len(periods)} batch(es) are ingested and train (the "
            f"newest of them is the holdout); the last {replayed} are left for `ctloop replay`",
        )
    )
    choices.append(
        Choice(
            "replay.start/end",
            f"{periods[len(initial)]}..{periods[-1]}",
            "the batches held back, delivered one at a time by `ctloop replay`",
        )
    )
    y = _labels(frame, target, task, source)
    folds, holdout_periods = _folds(y, labels, initial, task, choices)
    slices = _slices(frame, target, time, drops, choices)
    model_name = _model_name(name or Path(source).stem)
    choices.append(Choice("promotion.model_name", model_name, "from the file name"))
    choices.append(
        Choice(
            "promotion.min_score",
            None,
            "the first model must beat a constant baseline on the holdout "
            f"({'ROC AUC 0.5' if task == 'classification' else 'the RMSE of the training mean'})",
        )
    )
    template = _template()
    raw: dict[str, Any] = {
        "seed": template.get("seed", 42),
        "paths": template.get("paths", {}),  # dvc.yaml reads them from params.yaml
        "data": {
            "source": source,
            "target": target,
            "task": task,
            "derive_target": None,
            "time_column": time,
            "batch_frequency": frequency,
            "timezone": zone,
            "rows_per_batch": rows_per_batch,
            "drop_columns": drops,
            "categorical": None,
            "numeric": None,
            "ingest_until": initial[-1],
            "max_file_mb": template["data"].get("max_file_mb", 512),
        },
        "validation": template.get("validation", {}),
        "split": {
            "window_start": None,
            "window_end": None,
            "holdout_periods": holdout_periods,
            "cv": "auto",
            "folds": folds,
            "max_train_rows": None,
        },
        "model": template["model"],
        "tune": template.get("tune", {}),
        "parallel": template.get("parallel", {}),
        "tracking": {"experiment": model_name},
        "promotion": {
            **template.get("promotion", {}),
            "model_name": model_name,
            "min_score": None,
            "require_approval": False,
        },
        "slices": {
            **template.get("slices", {}),
            "columns": slices,
            "min_size": max(30, batch_rows // 10),
        },
        "insights": template.get("insights", {}),
        "model_card": {
            "intended_use": f"{PLACEHOLDER} what the model is for, who uses its scores and how",
            "limitations": [
                f"{PLACEHOLDER} where the data comes from and where the model must not be used"
            ],
        },
        "serving": {**template.get("serving", {}), "schedule": None, "input": None},
        "drift": template.get("drift", {}),
        "continuous": {
            **template.get("continuous", {}),
            "drift_key_columns": [],
            "window_periods": max(2, len(initial)),
        },
        "replay": {
            **template.get("replay", {}),
            "start": periods[len(initial)],
            "end": periods[-1],
        },
        "stack": template.get("stack", {}),
    }
    choices.append(
        Choice(
            "continuous.window_periods",
            max(2, len(initial)),
            "retrains slide a window as long as the first one",
        )
    )
    parse_params(raw)  # a plan that does not validate is a bug here, not the user's problem
    return ProjectPlan(raw, tuple(choices), tuple(periods))


# --- detection (pure) ------------------------------------------------------------------


def _task(y: pd.Series, source: str, forced: str | None, choices: list[Choice]) -> str:
    values = y.dropna()
    distinct = values.nunique()
    column = y.name
    if distinct < 2:
        raise InitError(
            f"{source}: column '{column}': {distinct} distinct value(s): nothing to predict"
        )
    if forced is not None:
        choices.append(Choice("data.task", forced, "given by --task"))
        return forced
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        text = {str(v).strip().lower() for v in values.unique()}
        if distinct == 2 and any(text <= set(e) for e in contract.LABEL_ENCODINGS):
            why = f"two labels ({', '.join(sorted(text))}): binary classification, metric ROC AUC"
            choices.append(Choice("data.task", "classification", why))
            return "classification"
        shown = ", ".join(repr(v) for v in sorted(text)[:5])
        if distinct == 2:
            raise InitError(
                f"{source}: column '{column}': two labels ({shown}) that are not one of the "
                "encodings true/false, yes/no, 1/0: write the positive class as 1 (or true) "
                "and the other as 0, then run init again"
            )
        raise InitError(
            f"{source}: column '{column}': {distinct} text labels ({shown}...): multiclass "
            "classification is not supported yet; make it two classes (one against the rest) "
            "or predict a number"
        )
    floats = values.astype("float64")
    if distinct == 2 and set(floats.unique()) <= {0.0, 1.0}:
        why = "two labels (0, 1): binary classification, metric ROC AUC"
        choices.append(Choice("data.task", "classification", why))
        return "classification"
    whole = bool(np.all(np.equal(np.mod(floats, 1), 0)))
    if whole and distinct <= CLASS_LIKE_VALUES:
        shown = ", ".join(f"{v:g}" for v in sorted(floats.unique())[:CLASS_LIKE_VALUES])
        raise InitError(
            f"{source}: column '{column}': {distinct} whole numbers ({shown}) look like classes: "
            "multiclass classification is not supported yet; pass --task regression to predict "
            "it as a number, or recode it to 0/1"
        )
    why = f"{distinct} distinct numbers: regression, metric RMSE (in the target's units)"
    choices.append(Choice("data.task", "regression", why))
    return "regression"


def _labels(frame: pd.DataFrame, target: str, task: str, source: str) -> pd.Series:
    try:
        return contract.encode_target(frame[target], task, source)
    except data.DataError as err:
        raise InitError(str(err)) from None


def _time_column(
    frame: pd.DataFrame, dates: list[str], forced: str | None, choices: list[Choice]
) -> str | None:
    """--time-column, else the date column (`dates`: the columns holding dates) whose name
    says date/time first; None without one."""
    if forced is not None:
        if forced not in frame.columns:
            raise InitError(f"--time-column: column '{forced}' is not in the data{_columns(frame)}")
        choices.append(Choice("data.time_column", forced, "given by --time-column"))
        return forced
    found = list(dates)
    found.sort(key=lambda c: not TIME_NAMES.search(str(c)))
    if not found:
        choices.append(
            Choice(
                "data.time_column",
                None,
                "no column holds dates: batches by arrival (part-NNNNN blocks, numbered on)",
            )
        )
        return None
    others = f"; also dates, dropped: {', '.join(found[1:])}" if found[1:] else ""
    choices.append(
        Choice("data.time_column", found[0], f"its values are dates: batches by period{others}")
    )
    return found[0]


def _is_time(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return False
    sample = column.dropna().astype(str).head(1000)
    if sample.empty or not sample.str.match(DATE_TEXT).all():
        return False
    try:
        contract.parse_times(sample.rename(column.name), "UTC", "sample")
    except data.DataError:
        return False
    return True


def _frequency(times: pd.Series, choices: list[Choice]) -> tuple[str, pd.Series]:
    found: dict[str, tuple[pd.Series, int, float]] = {}
    for frequency in FREQUENCIES:
        labels = data.period_labels(times, frequency)
        counts = labels.value_counts()
        found[frequency] = (labels, len(counts), float(counts.median()) if len(counts) else 0.0)
    for frequency, (labels, n, median) in found.items():
        if n >= MIN_BATCHES and median >= TARGET_BATCH_ROWS:
            why = (
                f"the finest period whose median batch holds >= {TARGET_BATCH_ROWS} rows "
                f"({median:.0f} rows, {n} batches)"
            )
            choices.append(Choice("data.batch_frequency", frequency, why))
            return frequency, labels
    usable = [f for f, (_, n, _) in found.items() if n >= MIN_BATCHES]
    if not usable:
        spans = ", ".join(f"{n} {f}(s)" for f, (_, n, _) in found.items())
        raise InitError(
            f"the dates span too few periods ({spans}); the loop needs {MIN_BATCHES} batches: "
            "pass --no-time-column to cut batches by arrival"
        )
    frequency = usable[-1]
    labels, n, median = found[frequency]
    why = (
        f"no period reaches {TARGET_BATCH_ROWS} rows a batch: the coarsest with >= {MIN_BATCHES} "
        f"batches ({median:.0f} rows, {n} batches; validation and drift see small batches)"
    )
    choices.append(Choice("data.batch_frequency", frequency, why))
    return frequency, labels


def _rows_per_batch(rows: int, limits: ValidationConfig, choices: list[Choice]) -> int:
    def count(size: int) -> int:  # blocks as ingestion cuts them (a short remainder joins)
        return len(data.block_bounds(rows, data.BlockRule.sized(size, limits)))

    size = min(50_000, max(50, math.ceil(rows / 10)))
    if count(size) < MIN_BATCHES + 1:
        size = math.ceil(rows / (MIN_BATCHES + 1))
    blocks = count(size)
    why = (
        f"{blocks} blocks of the {rows} rows in file order (the last may be shorter; one under "
        "validation.row_count_min_factor of a block joins the block before it)"
    )
    choices.append(Choice("data.rows_per_batch", size, why))
    return size


def _drops(
    frame: pd.DataFrame, target: str, time: str | None, dates: list[str], choices: list[Choice]
) -> list[str]:
    drops = []
    for column in frame.columns:
        if column in (target, time):
            continue
        values = frame[column].dropna()
        if column in dates:
            drops.append(column)
            why = "dates (not the time column): no model feature"
        elif (
            len(values) > 50
            and values.nunique() == len(values)
            and (not pd.api.types.is_numeric_dtype(values) or ID_NAMES.search(str(column)))
        ):
            drops.append(column)
            why = "an identifier (a different value in every row): no signal"
        else:
            continue
        choices.append(Choice("data.drop_columns", column, why))
    return drops


def _folds(
    y: pd.Series, batch: pd.Series, initial: list[str], task: str, choices: list[Choice]
) -> tuple[int, int]:
    """Folds and holdout batches for a classification: the holdout needs both classes, every
    fold the rarer class (regression: 5 folds, one holdout batch)."""
    folds, holdout = 5, 1
    if task != "classification":
        return folds, holdout
    inside = batch.isin(initial)
    for holdout in (1, 2, 3):
        held = batch.isin(initial[-holdout:])
        if y[held].nunique() == 2:
            break
    else:
        held = initial[-3:]
        only = y[batch.isin(held)].dropna().unique()
        label = f"class {only[0]:g}" if len(only) else "no label"
        raise InitError(
            f"the newest initial batches ({', '.join(held)}) hold {label} only: ROC AUC cannot be "
            "measured on a holdout there. The rows look ordered by the target: "
            + (
                "without a time column the file's order is the order of arrival, so shuffle the "
                "rows (or give a time column: --time-column)"
                if batch.str.startswith("part-").all()
                else "check the time column, or pass --no-time-column and shuffle the rows"
            )
        )
    rare = int(y[inside & ~held].value_counts().min()) if y[inside & ~held].nunique() == 2 else 0
    if rare < 2 * 2:
        raise InitError(f"the training batches hold {rare} row(s) of the rarer class: too few")
    if rare < 2 * folds:
        folds = max(2, rare // 2)
        choices.append(
            Choice("split.folds", folds, f"the rarer class has {rare} training rows (5 need 10)")
        )
    if holdout > 1:
        choices.append(
            Choice("split.holdout_periods", holdout, "the newest batch alone holds one class")
        )
    return folds, holdout


def _slices(
    frame: pd.DataFrame, target: str, time: str | None, drops: list[str], choices: list[Choice]
) -> list[str]:
    picked = []
    for column in frame.columns:
        if column in (target, time) or column in drops:
            continue
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        if 2 <= values.nunique() <= MAX_SLICE_VALUES:
            picked.append(column)
        if len(picked) == 2:
            break
    why = (
        "text columns of 2-10 values: metrics per value, a challenger may not regress one"
        if picked
        else "no text column of 2-10 values: no slices"
    )
    choices.append(Choice("slices.columns", picked, why))
    return picked


def _model_name(stem: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return name or "model"


def _columns(frame: pd.DataFrame) -> str:
    shown = ", ".join(map(str, list(frame.columns)[:12]))
    return f" (its columns: {shown}{', ...' if len(frame.columns) > 12 else ''})"


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _template() -> dict[str, Any]:
    """The bundled params.yaml: model, search space, validation and other data-free defaults."""
    path = ROOT / "params.yaml"
    if not path.is_file():
        raise InitError(
            f"{path}: the bundled params.yaml (model, search space and other defaults of a new "
            "project) is missing: run ctloop from its checkout (`make install`)"
        )
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


# --- rendering and the project folder (I/O) --------------------------------------------


def render_params(plan: ProjectPlan, command: str) -> str:
    """params.yaml text: a header naming the command, each section with init's reasons."""
    by_section: dict[str, list[Choice]] = {}
    for choice in plan.choices:
        by_section.setdefault(choice.key.split(".")[0], []).append(choice)
    out = [
        f"# ctloop configuration written by `{command}`.",
        "# The single source of truth of this project: every key is explained in the README",
        "# (Configuration); `ctloop check` checks it against the data in seconds.",
        "# Replace the TODO: placeholders of model_card (the card shows them as not written).",
        "",
    ]
    for section, value in plan.params.items():
        for choice in by_section.get(section, []):
            out.append(f"# init: {choice.line()}")
        out += _section_lines(section, value)
        out.append("")
    return "\n".join(out)


def _section_lines(section: str, value: Any) -> list[str]:
    """One top-level key in block style; its leaf mappings and lists inline (as params.yaml)."""
    if not isinstance(value, dict):
        return [yaml.safe_dump({section: value}, width=100).rstrip()]
    lines = [f"{section}:"]
    for key, item in value.items():
        flow = None if isinstance(item, dict | list) else False  # a lone scalar: `key: value`
        text = yaml.safe_dump({key: item}, sort_keys=False, width=96, default_flow_style=flow)
        lines += [f"  {line}" for line in text.rstrip().splitlines()]
    return lines


def scaffold(root: Path) -> None:
    """Make `root` a ctloop project folder: dvc.yaml (the pipeline's stages) and a DVC repository
    (without git unless `root` holds a .git; analytics off). Existing files are kept."""
    from dvc.repo import Repo

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "dvc.yaml").exists():
        stages = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
        (root / "dvc.yaml").write_text(project_stages(stages, root), encoding="utf-8")
    if not (root / ".dvc").is_dir():
        git = (root / ".git").exists()
        Repo.init(str(root), no_scm=not git).close()
        scm = "" if git else "    no_scm = True\n"
        (root / ".dvc" / "config").write_text(f"[core]\n{scm}    analytics = false\n")


CODE_DEP = re.compile(r"^\s*- ctloop/\S*\n", re.MULTILINE)
EMPTY_DEPS = re.compile(r"^\s*deps:\n(?!\s*- )", re.MULTILINE)  # a stage with code deps only


def project_stages(text: str, root: Path) -> str:
    """The checkout's dvc.yaml for a project at `root`: without the code deps (`- ctloop/...`)
    unless `root` holds the ctloop source itself. A project made by `ctloop init` runs the
    installed ctloop: its folder has no ctloop/ for DVC to hash (a dep that does not exist fails
    `dvc repro`), and hashing the installed package (an absolute path into a virtual environment)
    would tie the project to one machine. There, after upgrading ctloop, `dvc repro --force`."""
    return text if (root / "ctloop").is_dir() else EMPTY_DEPS.sub("", CODE_DEP.sub("", text))


def check_plan(plan: ProjectPlan) -> Params:
    """The plan's params, validated (ConfigError lists every problem)."""
    return parse_params(plan.params)
