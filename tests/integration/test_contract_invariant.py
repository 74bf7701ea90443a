"""The data contract's invariant, tested with generated deliveries on a real project.

Every delivery that reaches the landing folder is either **refused** (the `monitor-batch` run
fails with ctloop's own error, the file is in quarantine with a `reason.txt` naming the file and
a rule, the landing folder no longer holds it, no batch of its period exists) or **accepted**
(its batch exists in the contract's internal form, the champion scores it through the path of
`ctloop predict` with one finite score per row, and it trains: it loads through the training
plan's checks and a small model fits on the window plus it). Either way `champion` stays v1 and
every batch that existed before keeps its bytes.

Deliveries start from 300 real rows of May 2013, re-dated into a month of their own (2014-01,
2014-02, ...: each delivery is a new period, so acceptance is exercised, not only conflicts),
then Hypothesis combines mutations: dtypes (nullable, float32, Arrow-backed, category), nulls,
±inf, 1e300, the time column tz-aware or as offset text in other zones, padded and unicode column
names, renamed categories, an empty feature, the target as text or booleans; written as CSV or
Parquet. The project is trained once (module fixture); the examples run in sequence on it."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ctloop.core.config import Project
from ctloop.io import data, registry, tracking
from ctloop.ml import training
from ctloop.ml.validation import ValidationFailed
from ctloop.steps import fit, monitoring, serving, validate, windows
from flows.monitor_batch import monitor_batch
from flows.train_model import train_model
from tests.conftest import new_project, sample_months
from tests.integration.conftest import SMALL

MODEL = "ctloop-invariant"
REFERENCE = ["2013-01", "2013-02", "2013-03"]  # trained on Jan-Feb, holdout March
SOURCE_MONTH = "2013-05"  # the real rows every delivery starts from
DELIVERY_ROWS = 300  # the suite's row_count rule allows from 0.2 x 1200 = 240 rows
FIRST_PERIOD = pd.Period("2014-01", freq="M")
MAX_EXAMPLES = 12  # 250 s for the 12 on the 2-core machine at load 12 (README, Tests)
TINY = {"n_estimators": 5, "max_depth": 3, "tree_method": "hist", "n_jobs": 1}

TIME, TARGET = "date", "is_late"
INTEGERS = ("sched_dep_time", "sched_arr_time", "distance", "hour")
FLOATS = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure")
NUMERIC = (*INTEGERS, *FLOATS, "visib")
CATEGORICAL = ("carrier", "origin", "dest")
FEATURES = (*NUMERIC, *CATEGORICAL)
INTERNAL_DTYPES = {np.dtype("int64"), np.dtype("float64"), np.dtype("O"), np.dtype("<M8[ns]")}


# --- the project -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    project: Project
    rows: pd.DataFrame  # the real rows of SOURCE_MONTH deliveries are drawn from
    outbox: Path  # where deliveries are written before `receive_file` lands them
    scores: Path  # where the scoring check writes its outputs


@pytest.fixture(scope="module")
def setup(
    default_batches: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    """1,200 real rows per month Jan-Mar 2013, trained once (champion v1); dates cut in New York.
    Checks the config accepts any later month: no ingest_until, no date range in the suite."""
    root = tmp_path_factory.mktemp("invariant")
    source = root / "initial.parquet"
    sample_months(default_batches, REFERENCE, 1200).to_parquet(source, index=False)
    changes: dict[str, Any] = {
        **SMALL,
        "data": {**SMALL["data"], "source": str(source), "timezone": "America/New_York"},
        "promotion": {**SMALL["promotion"], "model_name": MODEL},
    }
    p = new_project(root / "proj", changes)
    summary = train_model(params_path=str(p.root / "params.yaml"))
    assert summary.promoted and summary.model_version == "1"
    assert p.params.data.ingest_until is None  # the landing folder takes any period anyway
    suite = json.loads(validate.suite_file(p).read_text())
    on_time = [e for e in suite["expectations"] if e.get("kwargs", {}).get("column") == TIME]
    no_range = {"expect_column_values_to_be_in_type_list", "expect_column_values_to_not_be_null"}
    assert {e["type"] for e in on_time} <= no_range, on_time  # no min/max date: any month passes
    outbox, scores = root / "outbox", root / "scores"
    outbox.mkdir()
    scores.mkdir()
    rows = default_batches[SOURCE_MONTH]
    return Setup(p, rows, outbox, scores)


# --- generated deliveries --------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One change to a delivery: `kind` names it, `column` where, `arg` how."""

    kind: str
    column: str
    arg: Any = None


@dataclass(frozen=True)
class Delivery:
    mutations: tuple[Mutation, ...]
    file_format: str  # csv | parquet
    seed: int  # the rows sampled and the positions mutated


INTEGER_DTYPES = ("Int64", "Float64", "float32", "int64[pyarrow]", "category")
FLOAT_DTYPES = ("Float64", "float32", "double[pyarrow]")
TEXT_DTYPES = ("string[python]", "string[pyarrow]", "arrow string", "category")
ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "-03:00", "+05:45")
ACCENTS = str.maketrans("aeiou", "äëïöü")

dtype_changes = st.one_of(
    st.builds(
        Mutation, st.just("dtype"), st.sampled_from(INTEGERS), st.sampled_from(INTEGER_DTYPES)
    ),
    st.builds(Mutation, st.just("dtype"), st.sampled_from(FLOATS), st.sampled_from(FLOAT_DTYPES)),
    st.builds(
        Mutation, st.just("dtype"), st.sampled_from(CATEGORICAL), st.sampled_from(TEXT_DTYPES)
    ),
)
mutations = st.one_of(
    dtype_changes,
    st.builds(
        Mutation,
        st.just("nulls"),
        st.sampled_from((*FEATURES, TARGET, TIME)),
        st.sampled_from((0.01, 0.04, 0.2, 0.6)),
    ),
    st.builds(
        Mutation, st.just("inf"), st.sampled_from(NUMERIC), st.sampled_from((np.inf, -np.inf))
    ),
    st.builds(
        Mutation, st.just("huge"), st.sampled_from(NUMERIC), st.sampled_from((1e300, -1e300))
    ),
    st.builds(
        Mutation,
        st.just("time"),
        st.just(TIME),
        st.tuples(st.sampled_from(ZONES), st.sampled_from(("aware", "text", "arrow"))),
    ),
    st.builds(
        Mutation,
        st.just("column_name"),
        st.sampled_from((*FEATURES, TARGET, TIME)),
        st.sampled_from(("padded", "unicode")),
    ),
    st.builds(
        Mutation,
        st.just("categories"),
        st.sampled_from(CATEGORICAL),
        st.sampled_from((0.05, 0.3, 1.0)),
    ),
    st.builds(Mutation, st.just("empty"), st.sampled_from(FEATURES)),
    st.builds(
        Mutation, st.just("target"), st.just(TARGET), st.sampled_from(("text", "boolean", "object"))
    ),
)
deliveries = st.builds(
    Delivery,
    st.lists(mutations, max_size=4).map(tuple),
    st.sampled_from(("parquet", "csv")),
    st.integers(0, 2**16),
)

ORIGINAL = {"time": np.dtype("<M8[ns]"), "target": np.dtype("float64")}  # what they apply to
# the order mutations apply in: values first, then their dtypes, then the time, then the names
ORDER = ("nulls", "inf", "huge", "empty", "categories", "target", "dtype", "time", "column_name")


def build_delivery(rows: pd.DataFrame, delivery: Delivery, period: pd.Period) -> pd.DataFrame:
    """`DELIVERY_ROWS` real rows re-dated into `period` (same day of month, clipped at its end),
    with the delivery's mutations applied (a new frame)."""
    frame = rows.sample(DELIVERY_ROWS, random_state=delivery.seed).reset_index(drop=True)
    months = (period - pd.Period(SOURCE_MONTH, freq="M")).n
    frame[TIME] = frame[TIME] + pd.DateOffset(months=months)
    rng = np.random.default_rng(delivery.seed)
    for m in sorted(delivery.mutations, key=lambda m: ORDER.index(m.kind)):
        frame = _apply(frame, m, rng)
    return frame


def _positions(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    return rng.choice(n, size=max(1, round(n * share)), replace=False)


def _apply(frame: pd.DataFrame, m: Mutation, rng: np.random.Generator) -> pd.DataFrame:
    """One mutation (a copy where it changes values; a mutation on a renamed column is a no-op)."""
    if m.column not in frame.columns or frame[m.column].dtype != ORIGINAL.get(
        m.kind, frame[m.column].dtype
    ):
        return frame  # renamed, or already given another form by an earlier mutation
    out = frame.copy()
    col = out[m.column]
    if m.kind == "nulls":
        at = _positions(rng, len(col), m.arg)
        if m.column in CATEGORICAL or m.column == TIME:
            col = col.copy()
            col.iloc[at] = None
        else:
            col = col.astype("float64")
            col.iloc[at] = np.nan
        out[m.column] = col
    elif m.kind in {"inf", "huge"}:
        values = col.astype("float64")
        values.iloc[_positions(rng, len(col), 0.01)] = m.arg
        out[m.column] = values
    elif m.kind == "empty":
        out[m.column] = pd.Series(
            [None] * len(col), dtype=object if m.column in CATEGORICAL else float
        )
    elif m.kind == "categories":
        values = sorted(col.dropna().unique())
        renamed = {v for v in values if rng.random() < m.arg} if m.arg < 1 else set(values)
        out[m.column] = col.map(lambda v: f"{v}-2" if v in renamed else v)
    elif m.kind == "target":
        known = col.notna()
        if m.arg == "text":
            out[m.column] = col.map({1.0: "True", 0.0: "False"}).astype(object)
        elif m.arg == "boolean":
            out[m.column] = col.astype("boolean")
        else:
            out[m.column] = pd.Series(np.where(known, col == 1.0, None), dtype=object)
    elif m.kind == "dtype":
        out[m.column] = _astype(col, m.arg)
    elif m.kind == "time":
        zone, form = m.arg
        instants = col.dt.tz_localize("America/New_York")  # the wall-clock time of the data
        shown = instants.dt.tz_convert(zone if zone[0] not in "+-" else _offset(zone))
        if form == "text":
            shown = shown.map(lambda t: t.isoformat(), na_action="ignore")
        elif form == "arrow":
            shown = shown.astype(pd.ArrowDtype(pa.timestamp("us", tz=str(shown.dt.tz))))
        out[m.column] = shown
    elif m.kind == "column_name":
        name = f" {m.column} " if m.arg == "padded" else m.column.translate(ACCENTS)
        out = out.rename(columns={m.column: name})
    return out


def _offset(text: str) -> Any:
    from datetime import timedelta, timezone

    sign = -1 if text[0] == "-" else 1
    hours, minutes = map(int, text[1:].split(":"))
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col)


def _astype(col: pd.Series, dtype: str) -> pd.Series:
    """`col` in `dtype`; integer dtypes only for whole numbers (else the float counterpart)."""
    present = col.dropna().to_numpy(dtype="float64") if is_numeric(col) else None
    whole = present is not None and bool(np.all((np.abs(present) < 2**53) & (present % 1 == 0)))
    if dtype in {"Int64", "int64[pyarrow]"} and not whole:
        dtype = "Float64" if dtype == "Int64" else "double[pyarrow]"
    if dtype == "category" and whole:
        return col.astype("Int64").astype("category")
    if dtype == "arrow string":
        return col.astype(pd.ArrowDtype(pa.string()))
    return col.astype(dtype)


# --- the state the invariant is about ------------------------------------------------------


def _hashes(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def _champion(p: Project) -> tuple[str, str]:
    tracking.use_store(p.tracking_uri)
    found = registry.get_alias(MODEL, registry.CHAMPION)
    assert found is not None
    return str(found.version), str(found.run_id)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


# --- the checks --------------------------------------------------------------------------------


def check_refused(s: Setup, err: BaseException, name: str, period: str) -> None:
    """Quarantined with a reason naming the file and a rule; nothing of its period kept."""
    p = s.project
    message = str(err)
    assert name in message and "rule '" in message, message
    # a data rule, not a fault ctloop or a library had on this input (quarantined as 'internal')
    assert "rule 'internal'" not in message, message
    folders = [f for f in p.path("quarantine").iterdir() if (f / name).is_file()]
    assert len(folders) == 1, folders
    reason = (folders[0] / "reason.txt").read_text()
    assert f"'{name}'" in reason and "rule '" in reason, reason
    assert not (p.path("landing") / name).exists()
    assert period not in data.list_batches(p.path("batches"))


def check_accepted(s: Setup, results: list[Any], period: str, name: str) -> None:
    """The batch exists in the internal form, the champion scores it as `ctloop predict` does,
    and it trains with the window."""
    p = s.project
    assert [(r.batch, r.status, r.model_version) for r in results] == [(period, "monitored", "1")]
    path = data.batch_path(p.path("batches"), period)
    stored = pd.read_parquet(path)
    assert len(stored) == DELIVERY_ROWS
    assert {c: t for c, t in stored.dtypes.items() if t not in INTERNAL_DTYPES} == {}

    # scorable: the path of `ctloop predict` (signature, data contract, champion) on its rows
    output = s.scores / f"{period}.parquet"
    report = serving.predict_file(p, path, output)
    scored = pd.read_parquet(output)
    assert report.version == "1" and report.rows == len(stored) == len(scored)
    assert np.isfinite(scored["score"].to_numpy(dtype="float64")).all()
    monitored = pd.read_parquet(monitoring.predictions_path(p, period, "1"))
    assert len(monitored) == len(stored) and np.isfinite(monitored["score"]).all()

    # trainable: the window plus this batch through the plan's checks; a small model fits
    window = windows.Window(train=(*REFERENCE[:2], period), holdout=(REFERENCE[2],), current=None)
    train, holdout = fit.load_training(p, window)
    labelled = int(stored[TARGET].notna().sum())
    assert len(train.X) == 2 * 1200 - _unlabelled(p, REFERENCE[:2]) + labelled
    model = training.fit_final(p.params, train.schema, TINY, train.X, train.y)
    assert np.isfinite(training.predict_scores(model, holdout.X, p.params.data.task)).all()


def _unlabelled(p: Project, batches: list[str]) -> int:
    return int(validate.load_batches(p, batches)[TARGET].isna().sum())


# --- the property ----------------------------------------------------------------------------


def test_every_delivery_is_refused_with_a_reason_or_accepted_and_usable(setup: Setup) -> None:
    s, p = setup, setup.project
    params = str(p.root / "params.yaml")
    numbers = itertools.count()  # one period per example, also for Hypothesis's replays
    outcomes: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    started = time.monotonic()

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(delivery=deliveries)
    def deliver(delivery: Delivery) -> None:
        index = next(numbers)
        period = str(FIRST_PERIOD + index)
        name = f"delivery{index:03d}-{period}.{delivery.file_format}"
        note(f"{name}: {delivery}")
        kinds.update(m.kind for m in delivery.mutations)
        frame = build_delivery(s.rows, delivery, pd.Period(period, freq="M"))
        before, champion = _hashes(p.path("batches")), _champion(p)
        landed = monitoring.receive_file(p, _write(frame, s.outbox / name))
        try:
            results = monitor_batch(path=landed.name, params_path=params)
        except (data.DataError, ValidationFailed) as err:
            outcomes["refused"] += 1
            rules[monitoring.rejection(landed, err).rule or "?"] += 1
            check_refused(s, err, name, period)
            assert _hashes(p.path("batches")) == before
        else:
            outcomes["accepted"] += 1
            check_accepted(s, results, period, name)
            after = _hashes(p.path("batches"))
            assert {k: after[k] for k in before} == before
            assert set(after) - set(before) == {f"{period}.parquet"}
        assert _champion(p) == champion

    deliver()
    total = sum(outcomes.values())
    print(
        f"contract invariant: {total} generated deliveries in {time.monotonic() - started:.0f} s: "
        f"{dict(outcomes)}; first rule of the refusals: {dict(rules)}; mutations: {dict(kinds)}"
    )
    assert outcomes["refused"] >= 1 and outcomes["accepted"] >= 1, outcomes
