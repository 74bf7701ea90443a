"""The plain script `benchmarks/overhead.py` compares the train-model flow with: the same data,
CV, tuning and final fit, and nothing else (no orchestration, tracking, validation, versioning,
reports, registry or drift).

    .venv/bin/python benchmarks/plain_train.py PARAMS_YAML

It reads the source named in params.yaml, cuts it into the same periods as ctloop's ingestion,
takes the labelled rows of the training window, and runs `ctloop.ml.training.tune` then `fit_final`
(the same functions the flow's tune-and-fit task calls). It prints one JSON line: seconds per
phase, the CV score and the trial counts, so the caller can check both sides did the same work.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()

from harness import ROOT  # noqa: E402 (puts the project on sys.path)

from ctloop.core.env import apply_env_defaults  # noqa: E402

apply_env_defaults()

from ctloop.core.config import load_project  # noqa: E402
from ctloop.io import data  # noqa: E402
from ctloop.ml import training  # noqa: E402
from ctloop.steps import fit, windows  # noqa: E402


def main(params_path: str) -> int:
    project = load_project(params_path)
    cfg = project.params
    batches = data.split_batches(
        data.prepare(data.load_source(cfg.data.source, ROOT), cfg.data), cfg.data
    )
    names = data.select_periods(sorted(batches), None, cfg.data.ingest_until)
    labelled = [n for n in names if batches[n][cfg.data.target].notna().any()]
    window = windows.plan_window(cfg.split, names, labelled)
    import pandas as pd

    rows = pd.concat([batches[n] for n in window.train], ignore_index=True)
    train = fit.training_data(project, rows)
    loaded = time.perf_counter()

    schema = data.infer_schema(train.X.assign(**{cfg.data.target: train.y}), cfg.data)
    tuning = training.tune(cfg, schema, train.X, train.y)
    tuned = time.perf_counter()
    training.fit_final(cfg, schema, tuning.best_params, train.X, train.y)
    done = time.perf_counter()

    print(
        json.dumps(
            {
                "import_and_load_s": loaded - started,
                "tune_s": tuned - loaded,
                "fit_s": done - tuned,
                "total_s": done - started,
                "rows": len(train.y),
                "window": list(window.train),
                "cv_mean": tuning.cv_mean,
                "n_trials": len(tuning.trials),
                "n_pruned": tuning.n_pruned,
                "best_params": tuning.best_params,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
