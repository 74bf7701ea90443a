"""Cache keys and run fingerprints: they change with what a step reads, and only with that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.core import fingerprint
from ctloop.core.config import Params, load_project, override
from ctloop.steps.windows import Window

ROOT = Path(__file__).resolve().parents[3]


def _params(**changes: object) -> Params:
    return override(load_project(ROOT / "params.yaml"), changes).params


def _data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=50), "c": rng.choice(["x", "y"], size=50)})
    return X, pd.Series(rng.integers(0, 2, size=50), name="is_late")


def test_tuning_key_ignores_what_the_search_does_not_read() -> None:
    X, y = _data()
    base = fingerprint.tuning_key(_params(), X, y)
    for unrelated in (
        {"model_card.intended_use": "another text"},
        {"serving.port": 6001},
        {"promotion.margin": 0.05},
        {"drift.drift_share": 0.3},
        {"tune.show_progress_bar": False},
        {"split.window_end": "2013-05"},  # the rows are the input, not the window's name
    ):
        assert fingerprint.tuning_key(_params(**unrelated), X, y) == base, unrelated


def test_tuning_key_follows_params_data_and_code_it_reads() -> None:
    X, y = _data()
    base = fingerprint.tuning_key(_params(), X, y)
    space = _params().model.search_space["xgboost"]
    narrower = {**space, "max_depth": space["max_depth"].model_copy(update={"high": 5})}
    changed = [
        fingerprint.tuning_key(_params(seed=7), X, y),
        fingerprint.tuning_key(_params(**{"tune.n_trials": 3}), X, y),
        fingerprint.tuning_key(_params(**{"split.folds": 3}), X, y),
        fingerprint.tuning_key(_params(**{"model.search_space": {"xgboost": narrower}}), X, y),
        fingerprint.tuning_key(_params(), X.assign(a=X["a"] + 1e-9), y),
        fingerprint.tuning_key(_params(), X, 1 - y),
        fingerprint.tuning_key(_params(), X.astype({"a": "float32"}), y),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_keys_are_the_same_in_another_process() -> None:
    """No salted hashing: a cache written by one process is found by the next."""
    code = (
        "from tests.unit.core.test_fingerprint import _data, _params; "
        "from ctloop.core import fingerprint; "
        "print(fingerprint.tuning_key(_params(), *_data()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == fingerprint.tuning_key(_params(), *_data())


def test_file_keys_follow_content_not_time(tmp_path: Path) -> None:
    batch, suite = tmp_path / "2013-01.parquet", tmp_path / "suite.json"
    batch.write_bytes(b"rows")
    suite.write_text('{"expectations": []}')
    key = fingerprint.validation_key(batch, "2013-01", suite)
    batch.touch()
    assert fingerprint.validation_key(batch, "2013-01", suite) == key
    suite.write_text('{"expectations": [1]}')
    assert fingerprint.validation_key(batch, "2013-01", suite) != key


def test_run_fingerprint_changes_with_anything_a_run_records() -> None:
    X, y = _data()
    window = Window(("2013-01",), ("2013-02",), "2013-03")
    base = fingerprint.training_fingerprint(_params(), "v1.dir", window, (X, y), (X, y))
    assert base == fingerprint.training_fingerprint(
        _params(**{"serving.port": 6001, "stack.prefect_port": 4300}),
        "v1.dir",
        window,
        (X, y),
        (X, y),
    )
    for other in (
        fingerprint.training_fingerprint(_params(), "v2.dir", window, (X, y), (X, y)),
        fingerprint.training_fingerprint(
            _params(**{"promotion.margin": 0.01}), "v1.dir", window, (X, y), (X, y)
        ),
        fingerprint.training_fingerprint(
            _params(**{"model_card.intended_use": "x"}), "v1.dir", window, (X, y), (X, y)
        ),
        fingerprint.training_fingerprint(_params(), "v1.dir", window, (X, y), _data(1)),
    ):
        assert other != base
