"""Dataset lineage: the schema MLflow records is the one it would infer from the whole table."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ctloop.io.tracking import infer_schema, schema_rows


def test_schema_of_the_representative_rows_is_the_whole_tables() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    df = pd.DataFrame(
        {
            "carrier": rng.choice(["UA", "AA", "B6"], n).astype(object),
            "tailnum": pd.Series(rng.choice(["N1", "N2"], n), dtype=object).where(
                np.arange(n) != 4321  # one missing text value, late in the table
            ),
            "distance": rng.integers(100, 3000, n),
            "temp": rng.normal(50, 10, n),
            "wind_gust": np.where(np.arange(n) % 7 == 0, np.nan, rng.normal(20, 5, n)),
            "is_late": rng.integers(0, 2, n),
        }
    )
    rows = schema_rows(df)
    assert len(rows) <= 2 * df.shape[1] and 4321 in rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole, sample = infer_schema(df), infer_schema(df.iloc[rows])
    assert sample == whole
    assert not whole.input_dict()["tailnum"].required and whole.input_dict()["carrier"].required
