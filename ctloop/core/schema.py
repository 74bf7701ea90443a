"""The shared data types: the roles of a dataset's columns (Schema), the data errors every
layer raises (each message names the file, column and rule), and the names of batches delivered
without a time column (`part-00001`, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass

ARRIVAL_PREFIX = "part-"  # batches without a time column: part-00001, part-00002, ... (arrival)


ARRIVAL_DIGITS = 5  # zero-padded so the names sort like their numbers


_ARRIVAL_NAME = re.compile(rf"^{ARRIVAL_PREFIX}(\d{{{ARRIVAL_DIGITS}}})$")


class DataError(ValueError):
    """A data file or column breaks a rule; the message names the file, column and rule."""


class BatchConflictError(DataError):
    """A different file claims the name of an existing batch (batches are immutable)."""


REPLACE_HINT = "use `ctloop batch replace FILE --reason TEXT` to correct an accepted batch"


@dataclass(frozen=True)
class Schema:
    """Roles of the columns of a prepared dataset."""

    target: str
    task: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    time_column: str | None

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def arrival_number(name: str) -> int | None:
    """The number of an arrival batch name (`part-00007` -> 7); None for any other name."""
    found = _ARRIVAL_NAME.match(name)
    return int(found.group(1)) if found else None


def arrival_name(number: int) -> str:
    """`part-` and the number zero-padded to 5 digits (sortable); DataError (rule
    'batch_numbers') beyond 99999 or below 1."""
    if not 1 <= number < 10**ARRIVAL_DIGITS:
        raise DataError(
            f"batch number {number}: rule 'batch_numbers': batches without a time column are "
            f"numbered {ARRIVAL_PREFIX}00001 to {ARRIVAL_PREFIX}{10**ARRIVAL_DIGITS - 1}; "
            "raise data.rows_per_batch so fewer batches are needed"
        )
    return f"{ARRIVAL_PREFIX}{number:0{ARRIVAL_DIGITS}d}"
