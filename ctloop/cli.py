"""`ctloop`: the user's entry point. Heavy libraries are imported inside commands so that
`ctloop --help` answers fast."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ctloop.env import apply_env_defaults

if TYPE_CHECKING:
    from ctloop.config import Project

app = typer.Typer(
    help="ctloop: continuous training for tabular ML (Prefect, DVC, Great Expectations, "
    "MLflow, Evidently).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering with rich costs ~0.35 s of imports
)
expectations_app = typer.Typer(help="Great Expectations suite built from reference data.")
app.add_typer(expectations_app, name="expectations")


@app.callback()
def _defaults() -> None:
    """Telemetry off and Prefect start-up defaults, before any heavy import."""
    apply_env_defaults()


ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Path to params.yaml.")]


def _fail(err: BaseException) -> typer.Exit:
    typer.secho(f"ctloop: error: {err}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def _known_errors() -> tuple[type[BaseException], ...]:
    from ctloop.config import ConfigError
    from tasks.data import DataError
    from tasks.pipeline import WindowError
    from tasks.validation import ValidationFailed
    from tasks.versioning import VersioningError

    return (ConfigError, DataError, WindowError, ValidationFailed, VersioningError)


def _project(params: Path) -> Project:
    from ctloop.config import ConfigError, load_project

    try:
        return load_project(params)
    except ConfigError as err:
        raise _fail(err) from None


@app.command()
def setup(params: ParamsOpt = Path("params.yaml")) -> None:
    """Create the project folders and the local default DVC remote."""
    from tasks import versioning

    project = _project(params)
    for name in ("batches", "quarantine", "reports", "models", "mlflow_artifacts"):
        project.path(name).mkdir(parents=True, exist_ok=True)
    versioning.ensure_remote(project.root, project.path("dvc_remote"))
    typer.echo(f"ready: {project.root} (DVC remote {project.path('dvc_remote')})")


@app.command()
def run(
    params: ParamsOpt = Path("params.yaml"),
    n_trials: Annotated[int | None, typer.Option(help="Override tune.n_trials.")] = None,
    family: Annotated[str | None, typer.Option(help="Override model.family.")] = None,
) -> None:
    """Run the training flow (against PREFECT_API_URL, else a temporary Prefect server)."""
    from ctloop.preflight import UnreachableError, check_servers

    project = _project(params)
    try:
        check_servers(project.tracking_uri)
    except UnreachableError as err:
        raise _fail(err) from None
    from flows.train_model import train_model

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
    from ctloop.stages import STAGES, run_stage

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
    from tasks import data, pipeline

    project = _project(params)
    if if_missing and pipeline.suite_ready(project):
        typer.echo("suite exists: kept (rebuild without --if-missing)")
        return
    try:
        available = data.list_batches(project.path("batches"))
        if not available:
            pipeline.run_ingest(project)
            available = data.list_batches(project.path("batches"))
        if start or end:
            reference = tuple(data.select_periods(available, start, end))
        else:
            reference = pipeline.current_window(project).train
        if not reference:
            raise _fail(ValueError(f"no batch between {start} and {end}"))
        path = pipeline.build_expectations(project, reference)
    except _known_errors() as err:
        raise _fail(err) from None
    typer.echo(f"suite written: {path} (from {reference[0]}..{reference[-1]})")


def _registry_model(project: Project) -> str:
    """Point MLflow at the project's store and return the registered model's name."""
    from ctloop.config import ConfigError
    from tasks.tracking import use_store

    uri = project.tracking_uri
    db = project.path("mlflow_db")
    if uri == f"sqlite:///{db}" and not db.exists():
        raise _fail(ConfigError(f"no MLflow store at {db}: run `ctloop run` first"))
    use_store(uri)
    return project.params.promotion.model_name


@app.command()
def history(params: ParamsOpt = Path("params.yaml")) -> None:
    """List every promotion and rollback of `champion` (recorded in the MLflow registry)."""
    from tasks import audit

    name = _registry_model(_project(params))
    try:
        events = audit.history(name)
    except audit.AuditError as err:
        raise _fail(err) from None
    typer.echo(f"model {name}: champion events, oldest first")
    typer.echo(audit.format_history(events))


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded with the event).")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Move `champion` back to the previous champion and record why."""
    from tasks import audit

    name = _registry_model(_project(params))
    try:
        event = audit.rollback(name, reason)
    except audit.AuditError as err:
        raise _fail(err) from None
    typer.echo(f"model {name}: champion v{event.from_version} -> v{event.to_version}")
    typer.echo(audit.format_history([event]))
