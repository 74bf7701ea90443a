"""`ctloop`: the user's entry point. Heavy libraries are imported inside commands so that
`ctloop --help` answers fast."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ctloop.core.env import (
    apply_env_defaults,
    freeze_at_exit,
    sigterm_as_exit,
    stop_worker_processes,
)

if TYPE_CHECKING:
    from ctloop.core.config import Project
    from ctloop.ops.run_api import PrefectApi

app = typer.Typer(
    help="ctloop: continuous training for tabular ML (Prefect, DVC, Great Expectations, "
    "MLflow, Evidently).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering with rich costs ~0.35 s of imports
)
expectations_app = typer.Typer(help="Great Expectations suite built from reference data.")
app.add_typer(expectations_app, name="expectations")
batch_app = typer.Typer(help="Accepted batches: correct one that was wrong.")
app.add_typer(batch_app, name="batch")


@app.callback()
def _defaults() -> None:
    """Telemetry off and Prefect start-up defaults, before any heavy import; a quick exit."""
    apply_env_defaults()
    freeze_at_exit()


ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Path to params.yaml.")]


def _fail(err: BaseException) -> typer.Exit:
    typer.secho(f"ctloop: error: {err}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def _known_errors() -> tuple[type[BaseException], ...]:
    from ctloop.core.config import ConfigError
    from ctloop.io.data import DataError
    from ctloop.io.locks import LockTimeout
    from ctloop.io.model_io import ModelSafetyError
    from ctloop.io.versioning import VersioningError
    from ctloop.ml.drift import DriftError
    from ctloop.ml.preconditions import PreconditionError
    from ctloop.ml.training import TuningError
    from ctloop.ml.validation import ValidationFailed
    from ctloop.steps.windows import WindowError

    return (
        *(ConfigError, DataError, WindowError, ValidationFailed, VersioningError, LockTimeout),
        ModelSafetyError,
        *(PreconditionError, TuningError, DriftError),
    )


def _project(params: Path) -> Project:
    from ctloop.core.config import ConfigError, load_project

    try:
        return load_project(params)
    except ConfigError as err:
        raise _fail(err) from None


def _check_against_data(project: Project, purpose: str = "train") -> None:
    """params.yaml against the data before anything expensive (ctloop/steps/config_check.py): every
    problem in one `ctloop: error:` (exit 1), warnings printed as `ctloop: warning:`."""
    from ctloop.core.config import ConfigError
    from ctloop.io.data import DataError
    from ctloop.steps.config_check import check_project

    try:
        report = check_project(project, purpose)  # type: ignore[arg-type]
    except (ConfigError, DataError) as err:
        raise _fail(err) from None
    for line in report.warnings:
        typer.secho(f"ctloop: warning: {line}", err=True, fg=typer.colors.YELLOW)


@contextlib.contextmanager
def _prefect_api(project: Project) -> Iterator[PrefectApi]:
    """The one Prefect API of this command's process tree (ctloop/ops/run_api.py): PREFECT_API_URL,
    else the running `ctloop up` stack, else the project's run server, stopped when the last
    command using it ends (also on Ctrl-C and SIGTERM). Enter it before importing Prefect."""
    from ctloop.ops import run_api
    from ctloop.ops.stack import stack_dir, stack_env, urls

    sigterm_as_exit()  # `finally` blocks run: the lease is dropped, runs are finished
    try:
        with run_api.prefect_api(
            stack_dir(project),
            lambda: stack_env(project).get("PREFECT_API_URL"),
            ui_url=urls(project)[1],
        ) as api:
            try:
                yield api
            except BaseException:
                stop_worker_processes()  # exit would wait for a worker's task nobody reads
                raise
            finally:
                from flows.runtime import drain_prefect

                drain_prefect()
    except run_api.ApiError as err:
        raise _fail(err) from None


def _api_ready(api: PrefectApi, project: Project) -> None:
    """Wait for the API (a run server starts while the flow's libraries import), say which."""
    from ctloop.ops.run_api import ApiError
    from flows.runtime import short_known_errors

    short_known_errors(_loop_errors())

    try:
        api.wait_ready(project.params.stack.startup_timeout_s)
    except ApiError as err:
        raise _fail(err) from None
    if api.source == "run-server":
        typer.echo(
            f"Prefect: run server {api.url} (database {project.path('stack') / 'prefect.db'}; "
            "the runs show in `ctloop up`'s UI)"
        )


@contextlib.contextmanager
def _api_here(project: Project, mode: str) -> Iterator[None]:
    """The Prefect API for flows run in this process (`mode` "here"); nothing otherwise."""
    if mode != "here":
        yield
        return
    with _prefect_api(project) as api:
        _api_ready(api, project)
        yield


@app.command()
def setup(params: ParamsOpt = Path("params.yaml")) -> None:
    """Create the project folders, the local default DVC remote and the MLflow store."""
    project = _project(params)
    _setup(project)


def _setup(project: Project) -> None:
    """Folders, the local DVC remote and the MLflow store of a project (`setup`, `init`)."""
    from ctloop.io import tracking, versioning

    for name in ("batches", "quarantine", "reports", "models", "mlflow_artifacts"):
        project.path(name).mkdir(parents=True, exist_ok=True)
    versioning.ensure_remote(project.root, project.path("dvc_remote"))
    store = project.tracking_uri
    if not store.startswith(("http://", "https://")):  # a tracking server manages its own store
        tracking.use_experiment(project)  # schema and experiment now, not in the first run
    typer.echo(f"ready: {project.root} (DVC remote {project.path('dvc_remote')}, MLflow {store})")


@app.command()
def init(
    data_file: Annotated[
        Path, typer.Argument(metavar="DATA", help="CSV or Parquet file (or folder) of the data.")
    ],
    target: Annotated[str, typer.Option("--target", help="The column to predict.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Project folder to write (created if missing).")
    ] = Path(),
    task: Annotated[
        str | None, typer.Option(help="classification | regression (default: detected).")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="The column of dates (default: detected).")
    ] = None,
    no_time_column: Annotated[
        bool, typer.Option(help="Batches by arrival even if a column holds dates.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Model name (default: the file name).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing params.yaml.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print params.yaml; write nothing.")] = False,
) -> None:
    """Write params.yaml for a new dataset from the data (task, metric, time column, batches,
    window, replay, slices, thresholds), say why, then set up, ingest and build the suite:
    `ctloop run` works next."""
    from ctloop.core.config import ConfigError, load_project
    from ctloop.io import data
    from ctloop.ops import project_init
    from ctloop.steps import ingest as ingest_step
    from ctloop.steps import validate, windows

    if task not in (None, "classification", "regression"):
        raise _fail(ValueError(f"--task: '{task}' (choose classification or regression)"))
    root = directory.resolve()
    params_file = root / "params.yaml"
    if params_file.exists() and not (force or dry_run):
        raise _fail(FileExistsError(f"{params_file} exists: pass --force to replace it"))
    stored = data.list_batches(root / "data" / "batches")
    if stored and not dry_run:
        raise _fail(
            FileExistsError(
                f"{root} already holds {len(stored)} batch(es) in data/batches: init a new "
                "project folder (--dir) instead of mixing datasets"
            )
        )
    source = data_file.resolve()
    written = os.path.relpath(source, root) if source.is_relative_to(root) else str(source)
    command = " ".join(["ctloop init", *sys.argv[2:]]) if len(sys.argv) > 2 else "ctloop init"
    try:
        frame = data.load_source(str(source), root)
        plan = project_init.plan_project(
            frame, written, target, task, time_column, no_time_column, name
        )
    except (data.DataError, project_init.InitError) as err:
        raise _fail(err) from None
    text = project_init.render_params(plan, command)
    if dry_run:
        typer.echo(text)
        return
    for choice in plan.choices:
        typer.echo(f"chose {choice.line()}")
    project_init.scaffold(root)
    if params_file.exists():
        backup = params_file.with_name(f"params.yaml.{int(time.time())}.bak")
        params_file.replace(backup)
        typer.echo(f"kept the previous params.yaml as {backup.name}")
    params_file.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {params_file}")
    try:
        project = load_project(params_file)
    except ConfigError as err:
        raise _fail(err) from None
    _check_against_data(project, "check")
    _setup(project)
    try:
        ingested = ingest_step.run_ingest(project)
        reference = windows.current_window(project).train
        suite = validate.build_expectations(project, reference)
    except _known_errors() as err:
        raise _fail(err) from None
    typer.echo(f"ingested {len(ingested.batches)} batch(es): {', '.join(ingested.batches)}")
    typer.echo(f"suite written: {suite} (from {reference[0]}..{reference[-1]})")
    here = "" if root == Path.cwd() else f"cd {root} && "
    typer.echo(
        f"next: {here}{ctloop_command()} run    (then `ctloop replay` delivers the held-back "
        "batches)"
    )


def ctloop_command(argv0: str | None = None) -> str:
    """How to call this CLI again: `ctloop` when that name on PATH is this program, else the
    absolute path of the running `ctloop` executable (e.g. `~/ctloop/.venv/bin/ctloop`, the venv
    not being activated), else `ctloop`."""
    import shutil

    program = Path(argv0 if argv0 is not None else sys.argv[0])
    if program.name != "ctloop":
        return "ctloop"
    running = program.resolve()
    on_path = shutil.which("ctloop")
    if on_path is not None and Path(on_path).resolve() == running:
        return "ctloop"
    return str(running)


@app.command()
def check(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check params.yaml against the data (columns, periods, windows, folds) in seconds, without
    training; `ctloop run`, `retrain` and `replay` run the same check first."""
    project = _project(params)
    _check_against_data(project, "check")
    typer.echo(f"params fit the data: {project.root / 'params.yaml'}")


@app.command()
def up(
    params: ParamsOpt = Path("params.yaml"),
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Also serve the Prefect deployments.")
    ] = True,
) -> None:
    """Start the local Prefect, MLflow and Evidently UI servers (and the deployments); logs go
    to files."""
    from ctloop.ops import stack

    project = _project(params)
    cfg = project.params.stack
    typer.echo(f"starting the local stack (waiting up to {cfg.startup_timeout_s:g} s) ...")
    began = time.monotonic()
    try:
        info = stack.up(project, serve=serve, params_path=params.resolve())
    except stack.StackError as err:
        raise _fail(err) from None
    typer.echo(f"healthy in {time.monotonic() - began:.1f} s")
    typer.echo(f"  Prefect UI : {info.prefect_ui_url}")
    typer.echo(f"  MLflow UI  : {info.mlflow_url}")
    typer.echo(f"  dashboard  : {info.evidently_url}  (Evidently UI, monitoring dashboard)")
    typer.echo(f"  logs       : {stack.log_dir(project)}")
    typer.echo("stop with: ctloop down")


@app.command()
def down(params: ParamsOpt = Path("params.yaml")) -> None:
    """Stop what `ctloop up` started (and nothing else)."""
    from ctloop.ops import stack

    project = _project(params)
    recorded = stack.state_path(project).exists()
    try:
        stopped = stack.down(project)
    except stack.StackError as err:
        raise _fail(err) from None
    if stopped:
        typer.echo(f"stopped: {', '.join(stopped)}")
    elif recorded:
        typer.echo(f"nothing was running (removed the stale {stack.state_path(project)})")
    else:
        typer.echo(f"nothing is running (no {stack.state_path(project)})")


@app.command()
def status(params: ParamsOpt = Path("params.yaml")) -> None:
    """Show what `ctloop up` started and whether it still runs."""
    from ctloop.ops import stack

    try:
        lines = stack.status(_project(params))
    except stack.StackError as err:
        raise _fail(err) from None
    typer.echo("\n".join(lines) if lines else "nothing is running (start with: ctloop up)")


@app.command()
def run(
    params: ParamsOpt = Path("params.yaml"),
    n_trials: Annotated[int | None, typer.Option(help="Override tune.n_trials.")] = None,
    family: Annotated[str | None, typer.Option(help="Override model.family.")] = None,
) -> None:
    """Run the training flow (against PREFECT_API_URL, else the running `ctloop up` stack, else
    one Prefect server for this command, on the project's database)."""
    from ctloop.ops.preflight import UnreachableError, check_servers

    project = _project(params)
    _check_against_data(project)
    try:
        check_servers(project.tracking_uri)
    except UnreachableError as err:
        raise _fail(err) from None
    with _prefect_api(project) as api:
        from flows.train_model import train_model

        _api_ready(api, project)
        try:
            train_model(params_path=str(params), n_trials=n_trials, model_family=family)
        except _known_errors() as err:
            raise _fail(err) from None


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="ingest | validate | train | evaluate | drift")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run one DVC stage (called by dvc.yaml; same steps as the flow)."""
    from ctloop.ops.stages import STAGES, run_stage

    if name not in STAGES:
        raise _fail(ValueError(f"unknown stage '{name}' (choose from {', '.join(STAGES)})"))
    try:
        run_stage(_project(params), name)
    except _known_errors() as err:
        raise _fail(err) from None


@expectations_app.command("build")
def expectations_build(
    params: ParamsOpt = Path("params.yaml"),
    start: Annotated[str | None, typer.Option(help="First reference batch.")] = None,
    end: Annotated[str | None, typer.Option(help="Last reference batch.")] = None,
    if_missing: Annotated[bool, typer.Option(help="Keep an existing suite untouched.")] = False,
) -> None:
    """Build the baseline suite from reference batches (default: the training window)."""
    from ctloop.io import data
    from ctloop.steps import ingest as ingest_step
    from ctloop.steps import sequence, validate, windows

    project = _project(params)
    _check_against_data(project)
    if if_missing and validate.suite_ready(project):
        typer.echo("suite exists: kept (rebuild without --if-missing)")
        return
    try:
        available = data.list_batches(project.path("batches"))
        if not available:
            ingest_step.run_ingest(project)
            available = data.list_batches(project.path("batches"))
        if start or end:
            reference = tuple(data.select_periods(available, start, end))
        else:
            reference = windows.current_window(project).train
        if not reference:
            raise _fail(ValueError(f"no batch between {start} and {end}"))
        path = sequence.BUILD_EXPECTATIONS(project, reference)
    except _known_errors() as err:
        raise _fail(err) from None
    typer.echo(f"suite written: {path} (from {reference[0]}..{reference[-1]})")


@batch_app.command("replace")
def batch_replace(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="CSV or Parquet file: the corrected period.")
    ],
    reason: Annotated[str, typer.Option(help="Why (recorded in the ledger and audit trail).")],
    params: ParamsOpt = Path("params.yaml"),
    batch: Annotated[
        str | None,
        typer.Option(help="The batch replaced (needed without data.time_column: part-00007)."),
    ] = None,
) -> None:
    """Supersede an accepted batch with a corrected file holding exactly its one period (without
    a time column: the rows of the batch named by --batch): read, cut and validated like a
    delivery (refused the same way: nothing replaced); the old content stays in DVC's cache and
    remote; the replacement and its reason are recorded."""
    from ctloop.steps import correction

    project = _project(params)
    try:
        done = correction.replace_batch(project, file, reason, say=typer.echo, batch=batch)
    except _known_errors() as err:
        raise _fail(err) from None
    for warning in done.warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    entry = done.replacement
    if entry is None:
        typer.echo(f"batch {done.batch} already holds this content: nothing replaced")
        return
    folder = project.path("batches")
    if done.finished:
        typer.echo(
            f"batch {done.batch} already holds this content (the replacement of {entry.id}); "
            "its DVC version and records are checked and complete"
        )
    else:
        typer.echo(f"replaced batch {done.batch}: {entry.old_rows} -> {entry.new_rows} rows")
    typer.echo(
        f"  data version : {entry.old_data_version} -> {done.new_data_version} (old file md5 "
        f"{entry.old_md5}: kept in the DVC cache and remote)"
    )
    typer.echo(f"  ledger       : {correction.ledger_path(folder)}")
    model = project.params.promotion.model_name
    typer.echo(
        f"  audit event  : model '{model}' tag {done.audit_event}"
        if done.audit_event
        else f"  audit event  : none (no model '{model}' registered yet: the ledger is the record)"
    )
    typer.echo(f"  monitoring   : {len(done.superseded_runs)} run(s) of {done.batch} superseded")
    if done.champion_trained_on:
        typer.echo(
            f"  champion {done.champion_trained_on} used the old rows: retrain "
            "(`ctloop retrain` or `ctloop run`) to use the corrected ones"
        )


def _registry_model(project: Project) -> str:
    """Point MLflow at the project's store and return the registered model's name."""
    from ctloop.core.config import ConfigError
    from ctloop.io.tracking import use_store

    uri = project.tracking_uri
    db = project.path("mlflow_db")
    if uri == f"sqlite:///{db}" and not db.exists():
        raise _fail(ConfigError(f"no MLflow store at {db}: run `ctloop run` first"))
    use_store(uri)
    return project.params.promotion.model_name


@app.command()
def history(params: ParamsOpt = Path("params.yaml")) -> None:
    """List every promotion and rollback of `champion` (recorded in the MLflow registry)."""
    from ctloop.io import audit

    name = _registry_model(_project(params))
    try:
        events = audit.history(name)
    except audit.AuditError as err:
        raise _fail(err) from None
    typer.echo(f"model {name}: champion events, oldest first")
    typer.echo(audit.format_history(events))
    from ctloop.steps import correction

    if corrected := correction.batch_events(name):
        typer.echo("batch replacements (`ctloop batch replace`), oldest first")
        typer.echo(correction.format_events(corrected))


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded with the event).")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Move `champion` back to the previous champion and record why."""
    from ctloop.io import audit

    name = _registry_model(_project(params))
    try:
        event = audit.rollback(name, reason)
    except audit.AuditError as err:
        raise _fail(err) from None
    typer.echo(f"model {name}: champion v{event.from_version} -> v{event.to_version}")
    typer.echo(audit.format_history([event]))


# --- continuous training ---------------------------------------------------------------


def _loop_errors() -> tuple[type[BaseException], ...]:
    from ctloop.core.policy import NoWindowError

    return (*_known_errors(), NoWindowError)


def _delivery(project: Project, here: bool) -> str:
    """How a landed file reaches the monitor: `watcher` (the running `ctloop up` stack announces
    what lands), `announce` (emit the event to PREFECT_API_URL ourselves) or `here` (run the
    monitor flow in this process)."""
    from ctloop.ops.stack import stack_env

    if here:
        return "here"
    if found := stack_env(project):
        os.environ.setdefault("PREFECT_API_URL", found["PREFECT_API_URL"])  # before prefect loads
        return "watcher"
    return "announce" if os.environ.get("PREFECT_API_URL") else "here"


def _wait_for_loop(monitor_runs_before: int, timeout_s: float) -> None:
    """After a delivery: wait until its monitor run exists, then until no monitor or retrain run is
    due or running (twice in a row, 5 s apart: a monitor's events start retrain runs)."""
    from flows.runtime import busy_runs, count_runs

    deadline = time.monotonic() + timeout_s
    busy: list[str] = ["(monitor run not created yet)"]
    idle = 0
    while idle < 2:
        if time.monotonic() > deadline:
            raise _fail(TimeoutError(f"replay: still busy after {timeout_s:g} s: {busy}"))
        time.sleep(5)
        if count_runs("monitor") <= monitor_runs_before:
            continue
        busy = busy_runs()
        idle = 0 if busy else idle + 1


def _hand_over(landed: Path, project: Project, mode: str, params: Path) -> None:
    """Pass a landed file on according to the delivery mode."""
    if mode == "here":
        _monitor_here(landed, params)
        return
    if mode == "watcher":
        typer.echo(f"landed {landed.name}: the stack's landing watcher announces it")
        return
    from flows.runtime import announce_file, send_events

    sent = announce_file(project, landed)
    send_events()
    if not sent:
        raise _fail(RuntimeError(f"could not emit ctloop.data.arrived for {landed}"))
    typer.echo(f"announced ctloop.data.arrived: {landed.name} (the monitor deployment runs it)")


def _monitor_here(landed: Path, params: Path) -> None:
    """Run the monitor flow in this process (within the command's Prefect API, see
    `_prefect_api`)."""
    from flows.monitor_batch import monitor_batch

    try:
        results = monitor_batch(path=str(landed), params_path=str(params))
    except _loop_errors() as err:
        raise _fail(err) from None
    for result in results:
        reasons = "; ".join(result.reasons)
        typer.echo(f"{result.batch}: {result.status}" + (f" ({reasons})" if reasons else ""))
        for warning in result.warnings:
            typer.secho(f"  warning: {warning}", fg=typer.colors.YELLOW)
    if any(r.retrain for r in results):  # here nothing listens for the retrain event
        typer.echo(
            "the policy asks for a retrain: run `ctloop retrain` (with `ctloop up` running, "
            "its retrain deployment does it on the event)"
        )


HereOpt = Annotated[
    bool,
    typer.Option(
        "--here",
        help="Run the monitor flow in this process instead of announcing the file to the "
        "deployments (the default when no PREFECT_API_URL is set and no `ctloop up` runs).",
    ),
]


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="A CSV or Parquet file of new data.")],
    params: ParamsOpt = Path("params.yaml"),
    here: HereOpt = False,
) -> None:
    """Deliver a new data file: copy it into the landing folder and announce it (or monitor it
    here); a rejected file exits 1 with the file, column and rule."""
    from ctloop.steps import monitoring

    project = _project(params)
    try:
        landed = monitoring.receive_file(project, file)
    except _loop_errors() as err:
        raise _fail(err) from None
    typer.echo(f"landed: {landed}")
    mode = _delivery(project, here)
    with _api_here(project, mode):
        _hand_over(landed, project, mode, params)


@app.command()
def monitor(
    path: Annotated[str, typer.Argument(help="A file in the landing folder (name or path).")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run the monitor flow here on a landed file."""
    with _api_here(_project(params), "here"):
        _monitor_here(Path(path), params)


@app.command()
def retrain(
    params: ParamsOpt = Path("params.yaml"),
    reason: Annotated[str, typer.Option(help="Why (recorded with the run).")] = "by hand",
) -> None:
    """Run the retrain flow here: the policy's window, skipped when unchanged or cooling down."""
    _check_against_data(_project(params))
    with _prefect_api(_project(params)) as api:
        from flows.retrain_model import retrain_model

        _api_ready(api, _project(params))
        try:
            result = retrain_model(params_path=str(params), trigger="manual", reason=reason)
        except _loop_errors() as err:
            raise _fail(err) from None
    typer.echo(f"skipped: {result.skipped}" if result.skipped else result.decision)


@app.command()
def replay(
    params: ParamsOpt = Path("params.yaml"),
    pace: Annotated[float | None, typer.Option(help="Seconds between deliveries.")] = None,
    label_delay: Annotated[int | None, typer.Option(help="Periods until labels arrive.")] = None,
    start: Annotated[str | None, typer.Option(help="First period delivered.")] = None,
    end: Annotated[str | None, typer.Option(help="Last period delivered.")] = None,
    here: HereOpt = False,
    wait: Annotated[
        bool | None,
        typer.Option(
            "--wait/--no-wait",
            help="With a running stack, deliver the next period only when the runs the last one "
            "triggered have finished (default: replay.wait).",
        ),
    ] = None,
) -> None:
    """Simulate production: deliver the source's periods one at a time into the landing folder,
    each announced as a `ctloop.data.arrived` event (defaults from params.yaml `replay`)."""
    from ctloop.io import data
    from ctloop.steps import replay

    project = _project(params)
    _check_against_data(project, "replay" if start is None and end is None else "check")
    cfg = project.params
    delay = cfg.replay.label_delay if label_delay is None else label_delay
    gap = cfg.replay.pace_s if pace is None else pace
    try:
        raw = data.load_source(cfg.data.source, project.root, cfg.data.max_file_mb)
        labels = replay.periods_of(raw, cfg.data, data.BlockRule.of(cfg.data, cfg.validation))
        first, last = start or cfg.replay.start, end or cfg.replay.end
        periods = replay.select(list(labels.unique()), first, last)
    except _loop_errors() as err:
        raise _fail(err) from None
    deliveries = replay.plan(periods, delay)
    mode = _delivery(project, here)
    typer.echo(f"replaying {len(periods)} period(s): {len(deliveries)} deliveries, {gap:g} s gap")
    began = int(time.time() * 1000)
    table: list[tuple[str, ...]] = []
    champion: str | None = None
    with _api_here(project, mode), _progress(len(deliveries)) as (advance, say):
        for i, delivery in enumerate(deliveries):
            if i:
                time.sleep(gap)
            rows = raw.loc[(labels == delivery.period).to_numpy()].reset_index(drop=True)
            frame = replay.delivery_frame(rows, cfg.data, delivery.labelled)
            waiting = mode != "here" and (cfg.replay.wait if wait is None else wait)
            if waiting:
                from flows.runtime import count_runs

                before = count_runs("monitor")
            landed = replay.write_delivery(frame, project.path("landing"), delivery)
            say(f"[{i + 1}/{len(deliveries)}] delivered {landed.name} ({len(frame)} rows)")
            _hand_over(landed, project, mode, params)
            if waiting:
                _wait_for_loop(before, cfg.replay.wait_timeout_s)
                say("  the monitor and any retrain it triggered have finished")
            facts, retrains = replay.read_month(project, delivery.period, began)
            table.append(replay.month_row(facts, retrains, champion))
            champion = facts.champion or champion
            say("  " + " | ".join(table[-1]))
            advance()
    typer.echo("\n" + replay.markdown_table(cfg.metric, table))


@contextlib.contextmanager
def _progress(total: int) -> Iterator[tuple[Callable[[], None], Callable[[str], None]]]:
    """A progress bar over the deliveries (rich) on a terminal, none when the output is not a
    TTY or under CI; yields (advance one step, print a line above the bar)."""
    if not sys.stdout.isatty() or os.environ.get("CI"):
        yield (lambda: None), typer.echo
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("deliveries", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("replay", total=total)

        def say(line: str) -> None:
            bar.console.print(line, markup=False, highlight=False)

        yield (lambda: bar.advance(task)), say


# --- serving -------------------------------------------------------------------------------


def _serving_errors() -> tuple[type[BaseException], ...]:
    from ctloop.steps.serving import ServingError

    return (*_known_errors(), ServingError)


@app.command()
def predict(
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV or Parquet file.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="CSV or Parquet file (default: <paths.predictions>/<INPUT stem>."
            "champion-v<N>.parquet).",
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Score a file with the champion, checked against the model signature first (no Prefect)."""
    from ctloop.steps import serving

    began = time.monotonic()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    project = _project(params)
    try:
        report = serving.predict_file(
            project, input_file.resolve(), output.resolve() if output else None
        )
    except _serving_errors() as err:
        raise _fail(err) from None
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    typer.echo("\n".join(report.lines()))
    typer.echo(f"done in {time.monotonic() - began:.1f} s")


@app.command("serve-model")
def serve_model(
    params: ParamsOpt = Path("params.yaml"),
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
) -> None:
    """Serve the champion with MLflow's scoring server on stack.host until Ctrl-C."""
    from ctloop.io.registry import CHAMPION
    from ctloop.ops import model_server
    from ctloop.steps import serving

    project = _project(params)
    cfg = project.params
    name = cfg.promotion.model_name
    try:
        version = serving.champion_version(project)
        served = serving.served_info(name, version, cfg.data.task)
    except _serving_errors() as err:
        raise _fail(err) from None
    bin_dir = Path(sys.executable).parent
    chosen = port or cfg.serving.port
    url = serving.serve_url(cfg.stack.host, chosen)
    argv = serving.serve_command(bin_dir, cfg.stack.host, chosen)
    env = serving.serve_env(dict(os.environ), project.tracking_uri, bin_dir, name, version)
    typer.echo(f"starting MLflow's scoring server for models:/{name}@{CHAMPION} (v{version}) ...")

    def ready(seconds: float) -> None:
        typer.echo(f"ready in {seconds:.1f} s: {url}  (POST {url}/invocations, GET {url}/ping)")
        typer.echo(f"answers {served.answers}")
        if served.example is not None:
            typer.echo("try it:")
            typer.echo(f"  {serving.curl_command(url, served.example)}")
        typer.echo("stop with Ctrl-C")

    try:
        code = model_server.run(argv, env, url, cfg.stack.startup_timeout_s, ready)
    except model_server.ServerError as err:
        raise _fail(err) from None
    if code:
        raise _fail(RuntimeError(f"the scoring server exited with status {code} (see above)"))
    typer.echo("scoring server stopped")
