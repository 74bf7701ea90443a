"""The data contract at the scoring door: the project's expectation suite (the one ingestion
validates every batch with) applied to a file before the champion scores it.

The rules of the suite on the model's input columns are evaluated on the file with the same
bounds, value sets, tolerances (`mostly`), severities and messages as ctloop/ml/validation.py
reports
for a batch: `ranges` (±inf: the finiteness rule, no tolerance; the widened reference range),
`categories` (values outside the known set), `categories_replaced` (most values unseen) and
`nulls` where the suite forbids nulls (a rule allowing no missing value). A critical failure
refuses the file (ContractViolation); anything else a row breaks is reported per column and named
in the row's `ctloop_flags`. Table rules (schema, row count, duplicates), types (the signature
check does those) and the target are not scoring matters. Null *shares* are not judged either:
a missing value is an input the model was trained with, and the share over a few scored rows
says nothing (rows of one hour share their weather).

Pure: reads the suite's JSON (no GX import, no Prefect).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core import schema as data_types
from ctloop.ml.validation import (
    CATEGORIES_REPLACED,
    CATEGORIES_REPLACED_DEFAULT,
    Level,
    RuleResult,
    _severity,
    describe,
    replaced_categories_rule,
)

FLAGS = "ctloop_flags"  # output column: the `column:rule` pairs a row broke, `;`-separated
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
NOT_NULL = "expect_column_values_to_not_be_null"
EXAMPLES = 5  # values kept per rule, as GX's partial_unexpected_count


@dataclass(frozen=True)
class Rule:
    """One rule of the suite on one input column: its family, GX type, arguments, severity."""

    rule: str
    kind: str
    column: str
    kwargs: dict[str, Any]
    severity: Level


@dataclass(frozen=True)
class Contract:
    """The suite's rules on the model's input columns (from `suite`, the suite's JSON file)."""

    suite: str
    rules: tuple[Rule, ...]
    replaced: dict[str, Any] = field(default_factory=lambda: dict(CATEGORIES_REPLACED_DEFAULT))


@dataclass(frozen=True)
class ContractCheck:
    """What a file broke: every rule result with at least one offending value (passing ones
    too: values within a rule's tolerance; `categories_replaced` only when it fails), and per
    row the `column:rule` pairs it broke (empty string: a clean row), indexed like the checked
    features."""

    suite: str
    results: tuple[RuleResult, ...]
    flags: pd.Series = field(repr=False)

    @property
    def critical_failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.success and r.severity == "critical"]

    @property
    def flagged_rows(self) -> int:
        return int((self.flags != "").sum())

    def lines(self) -> list[str]:
        """One line per column and rule: column, rule, severity (and whether tolerated), count
        and examples, as validation words them."""
        return [_line(r) for r in self.results]


class ContractViolation(data_types.DataError):
    """A file to score breaks a critical rule of the data contract; the message names the file
    and, per failure, the column and rule (`problems`). Nothing was scored or written."""

    def __init__(self, source: str, model: str, check: ContractCheck) -> None:
        self.source, self.model, self.check = source, model, check
        failures = check.critical_failures
        self.problems = tuple(_line(r) for r in failures)
        super().__init__(
            f"{source}: breaks the data contract of {model} ({len(failures)} critical rule "
            f"failure(s); rules from {check.suite}); nothing was scored:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )

    def __reduce__(self) -> tuple[type[ContractViolation], tuple[str, str, ContractCheck]]:
        return (type(self), (self.source, self.model, self.check))  # across Prefect workers


def _line(r: RuleResult) -> str:
    status = r.severity if not r.success else f"{r.severity}, within tolerance: scored"
    return f"column '{r.column}': rule '{r.rule}' ({status}): {r.observed}"


# --- reading the suite -------------------------------------------------------------------


def load_contract(suite_path: Path, columns: Sequence[str]) -> Contract:
    """The rules of the suite at `suite_path` on `columns` (the model's inputs). DataError (rule
    `suite`) when the file is missing or is not a suite."""
    path = Path(suite_path)
    if not path.is_file():
        raise data_types.DataError(
            f"{path}: rule 'suite': no expectation suite, so the data contract cannot be "
            "checked: build it (ctloop expectations build) or restore it"
        )
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        expectations = stored["expectations"]
        own = (stored.get("meta") or {}).get("ctloop") or {}
        wanted = set(columns)
        rules = tuple(
            rule for e in expectations if (rule := _rule(e)) is not None and rule.column in wanted
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise data_types.DataError(
            f"{path}: rule 'suite': not a readable expectation suite ({err!r})"
        ) from None
    replaced = {**CATEGORIES_REPLACED_DEFAULT, **(own.get(CATEGORIES_REPLACED) or {})}
    return Contract(str(path), rules, replaced)


def _rule(expectation: dict[str, Any]) -> Rule | None:
    """A scoring rule from one stored expectation (None: not one predict applies)."""
    meta = expectation.get("meta") or {}
    family, kind = str(meta.get("rule", "")), str(expectation["type"])
    kwargs = dict(expectation["kwargs"])
    column = kwargs.get("column")
    wanted = {("ranges", BETWEEN), ("categories", IN_SET), ("nulls", NOT_NULL)}
    if column is None or (family, kind) not in wanted:
        return None
    mostly = kwargs.get("mostly")  # absent or null: GX's default, 1.0 (no null allowed)
    if kind == NOT_NULL and mostly is not None and float(mostly) < 1.0:
        return None  # nulls allowed up to a share: not judged on a scored file (module doc)
    return Rule(family, kind, str(column), kwargs, _severity(meta))


# --- checking a file ---------------------------------------------------------------------


def check(contract: Contract, features: pd.DataFrame) -> ContractCheck:
    """Every rule of `contract` on the checked, cast `features` (columns as the signature
    types). Results only for rules some value breaks; ordered by column, then rule."""
    results: list[RuleResult] = []
    masks: list[tuple[str, str, pd.Series]] = []
    for rule in contract.rules:
        if rule.column not in features.columns:
            continue
        values = features[rule.column]
        bad = _offending(rule, values)
        if bad is None or not bad.any():
            continue
        results.append(_result(rule, values, bad))
        masks.append((rule.column, rule.rule, bad))
    for rule in (r for r in contract.rules if r.kind == IN_SET and r.column in features.columns):
        values = features[rule.column]
        known = rule.kwargs.get("value_set") or []
        found = replaced_categories_rule(values, rule.column, known, contract.replaced)
        if found is not None and not found.success:  # below its share: `categories` says it
            results.append(found)
            masks.append((rule.column, found.rule, values.notna() & ~values.isin(known)))
    order = {c: i for i, c in enumerate(features.columns)}
    results.sort(key=lambda r: (order.get(r.column or "", len(order)), r.rule))
    return ContractCheck(contract.suite, tuple(results), _flags(features.index, masks, order))


def _offending(rule: Rule, values: pd.Series) -> pd.Series | None:
    """Per row: does its value break the rule (as GX counts: missing values are not judged by
    value rules)? None when the rule cannot apply to the column's type."""
    if rule.kind == NOT_NULL:
        return values.isna()
    present = values.notna()
    if rule.kind == IN_SET:
        return present & ~values.isin(rule.kwargs.get("value_set") or [])
    if not pd.api.types.is_numeric_dtype(values):
        return None  # the signature check refused non-numbers already
    low, high = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
    outside = pd.Series(False, index=values.index)
    if low is not None:
        outside |= values < low
    if high is not None:
        outside |= values > high
    return present & outside


def _result(rule: Rule, values: pd.Series, bad: pd.Series) -> RuleResult:
    """The rule's outcome on the file, judged and worded as validation does for a batch."""
    count, rows = int(bad.sum()), len(values)
    judged = rows if rule.kind == NOT_NULL else int(values.notna().sum())
    mostly = rule.kwargs.get("mostly")
    allowed = 1.0 if mostly is None else float(mostly)
    success = judged == 0 or (judged - count) / judged >= allowed
    examples = [_plain(v) for v in values[bad].head(EXAMPLES)]
    result = {
        "element_count": rows,
        "unexpected_count": count,
        "unexpected_percent": 100.0 * count / judged if judged else 0.0,
        "partial_unexpected_list": examples,
    }
    return RuleResult(
        rule=rule.rule,
        expectation=rule.kind,
        column=rule.column,
        severity=rule.severity,
        success=success,
        observed=describe(rule.kind, rule.kwargs, result, rule.rule),
        details={
            "kwargs": {k: v for k, v in rule.kwargs.items() if k in ("min_value", "max_value")}
            | ({"mostly": mostly} if mostly is not None else {}),
            "result": {
                "element_count": rows,
                "unexpected_count": count,
                "partial_unexpected_list": [str(v) for v in examples],
            },
        },
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _flags(
    index: pd.Index, masks: list[tuple[str, str, pd.Series]], order: dict[str, int]
) -> pd.Series:
    """Per row the `column:rule` pairs it broke, in column order, `;`-separated (a pair once:
    a column has two `ranges` rules, finiteness and the widened range)."""
    labels: list[list[str]] = [[] for _ in range(len(index))]
    for column, rule, bad in sorted(masks, key=lambda m: (order.get(m[0], len(order)), m[1])):
        label = f"{column}:{rule}"
        for i in np.flatnonzero(bad.to_numpy(dtype=bool)):
            if label not in labels[i]:
                labels[i].append(label)
    return pd.Series([";".join(row) for row in labels], index=index, dtype=object)
