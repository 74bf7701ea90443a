"""The training loop's steps, defined once: their order, the library function each calls and the
DVC stage (dvc.yaml) each belongs to. The Prefect flow (flows/train_model.py, through
tasks/training.py) and the DVC stages (ctloop/ops/stages.py, `ctloop stage NAME`) both call the
steps through this module, so the two routes cannot drift apart: a step is called as
`sequence.TUNE_AND_FIT(...)`, never as the function behind it.

Each call is recorded for whoever listens (`recording()` in this process; the file named by
CTLOOP_STEP_TRACE across processes: `dvc repro` runs each stage in a process of its own, the flow
runs `beside` steps in its worker process). Not steps: what only one route needs (the flow's
reconciliation, unchanged-run short-cut, approval pause and `dvc commit`, which DVC does itself
for its stages; reading the window and the training data)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, ParamSpec, TypeVar, get_args

from ctloop.steps import card, drift_report, evaluate, fit, ingest, register, validate

P = ParamSpec("P")
R = TypeVar("R")

Stage = Literal["ingest", "expectations", "validate", "train", "evaluate", "drift"]
STAGES: tuple[Stage, ...] = get_args(Stage)  # dvc.yaml's stages, in order

TRACE_ENV = "CTLOOP_STEP_TRACE"  # a file: one line per step called, appended by every process

# the library's packages whose code a stage runs: its code deps in dvc.yaml (whole folders,
# relative to the checkout), so that `dvc repro` re-runs a stage after its code changed
STAGE_CODE: dict[Stage, tuple[str, ...]] = {
    "ingest": ("ctloop/core", "ctloop/io", "ctloop/steps"),
    "expectations": ("ctloop/core", "ctloop/io", "ctloop/ml", "ctloop/steps"),
    "validate": ("ctloop/core", "ctloop/io", "ctloop/ml", "ctloop/steps"),
    "train": ("ctloop/core", "ctloop/io", "ctloop/ml", "ctloop/steps"),
    "evaluate": ("ctloop/core", "ctloop/io", "ctloop/ml", "ctloop/steps"),
    "drift": ("ctloop/core", "ctloop/io", "ctloop/ml", "ctloop/steps"),
}
STAGE_CMD_CODE = "ctloop/ops/stages.py"  # what `ctloop stage NAME` runs around the steps


@dataclass(frozen=True)
class Step(Generic[P, R]):
    """One step: its name (also the Prefect task's), its DVC stage and the library function it
    calls. `beside`: the flow computes it in its worker process beside the main line, so its
    place among the recorded calls is not fixed there."""

    name: str
    stage: Stage
    call: Callable[P, R]
    beside: bool = False

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        _record(self.name)
        return self.call(*args, **kwargs)

    @property
    def fn(self) -> Callable[P, R]:
        """The step as a plain function with the library function's name, signature and
        docstring (what Prefect's `task()` wraps in tasks/): it records the call, then makes it."""

        @functools.wraps(self.call)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            return self(*args, **kwargs)

        return run


INGEST = Step("ingest", "ingest", ingest.run_ingest)
BUILD_EXPECTATIONS = Step("build-expectations", "expectations", validate.build_expectations)
VALIDATE = Step("validate", "validate", validate.run_validation)
START_TRAINING_RUN = Step("start-training-run", "train", fit.start_training_run)
TUNE_AND_FIT = Step("tune-and-fit", "train", fit.tune_and_fit)
RECORD_TUNING = Step("record-tuning", "train", fit.record_tuning)
LEARNING_CURVE = Step("learning-curve", "evaluate", evaluate.learning_curve, beside=True)
EVALUATE_HOLDOUT = Step("evaluate-holdout", "evaluate", evaluate.evaluate_holdout)
EXPLAIN_MODEL = Step("explain-model", "evaluate", evaluate.explain_model)
REGISTER_CHALLENGER = Step("register-challenger", "evaluate", register.register_challenger)
IMPORTANCE_OVER_VERSIONS = Step(
    "importance-over-versions", "evaluate", evaluate.importance_over_versions
)
RECORD_LEARNING_CURVE = Step("record-learning-curve", "evaluate", evaluate.record_learning_curve)
APPLY_PROMOTION = Step("apply-promotion", "evaluate", register.apply_promotion)
REPORT_DRIFT = Step("report-drift", "drift", drift_report.run_drift)
MODEL_CARD = Step("model-card", "drift", card.write_model_card)

# the order both routes run them in (build-expectations only when the suite is missing)
TRAINING: tuple[Step[..., object], ...] = (
    INGEST,
    BUILD_EXPECTATIONS,
    VALIDATE,
    START_TRAINING_RUN,
    TUNE_AND_FIT,
    RECORD_TUNING,
    LEARNING_CURVE,
    EVALUATE_HOLDOUT,
    EXPLAIN_MODEL,
    REGISTER_CHALLENGER,
    IMPORTANCE_OVER_VERSIONS,
    RECORD_LEARNING_CURVE,
    APPLY_PROMOTION,
    REPORT_DRIFT,
    MODEL_CARD,
)
BY_NAME: dict[str, Step[..., object]] = {step.name: step for step in TRAINING}


def steps_of(stage: Stage) -> tuple[Step[..., object], ...]:
    """The steps a DVC stage runs, in order."""
    return tuple(step for step in TRAINING if step.stage == stage)


def code_deps(stage: Stage) -> tuple[str, ...]:
    """The code deps dvc.yaml lists for a stage: its packages, and the stage command's module for
    the stages `ctloop stage NAME` runs (`expectations` runs `ctloop expectations build`)."""
    return STAGE_CODE[stage] + (() if stage == "expectations" else (STAGE_CMD_CODE,))


_listeners: list[Callable[[str], None]] = []


def _record(name: str) -> None:
    """Tell the listeners of this process, and append to the CTLOOP_STEP_TRACE file if set."""
    for listen in list(_listeners):
        listen(name)
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with Path(trace).open("a", encoding="utf-8") as out:  # one short line: atomic append
            out.write(f"{name}\n")


@contextmanager
def recording() -> Iterator[list[str]]:
    """The names of the steps called in this process while the block runs, in order."""
    called: list[str] = []
    _listeners.append(called.append)
    try:
        yield called
    finally:
        _listeners.remove(called.append)


def read_trace(path: Path) -> list[str]:
    """The step names a CTLOOP_STEP_TRACE file holds, in the order they were called."""
    return path.read_text(encoding="utf-8").split() if path.is_file() else []


def main_line(names: list[str]) -> list[str]:
    """The recorded names without the `beside` steps (their place is not fixed in the flow)."""
    return [n for n in names if not BY_NAME[n].beside]
