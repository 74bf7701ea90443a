"""Batch scoring flow: a CSV/Parquet file -> checked against the champion's signature and the
data contract -> scored with `models:/<name>@champion` (fold spread, conformal interval) ->
predictions file and the `predictions` artifact. Only wiring here; the work is in
ctloop/steps/serving.py."""

from __future__ import annotations

from prefect import flow

from ctloop.core.config import load_project
from ctloop.steps import serving
from flows import naming
from tasks import scoring as ps


@flow(name="predict-batch", flow_run_name=naming.predict_run_name, log_prints=True)
def predict_batch(
    input_path: str, output_path: str | None = None, params_path: str = "params.yaml"
) -> serving.PredictionReport:
    """Score `input_path` with the champion into `output_path` (CSV or Parquet by extension;
    default `<paths.predictions>/<input stem>.champion-v<N>.parquet`). Relative paths are
    relative to the folder of params.yaml. A file that does not match the model signature or
    breaks a critical rule of the data contract (ctloop/ml/suite_rules.py) fails the run before any
    model is loaded, naming each column and rule."""
    project = load_project(params_path)
    source = serving.resolve_input(project, input_path)
    target = None if output_path is None else serving.resolve_input(project, output_path)
    if target is not None:
        serving.check_suffix(target, "output")
    frame = ps.read_input(source)
    ref = ps.resolve_champion(project)
    checked = ps.check_signature(frame, ref, source)
    checked = ps.check_contract(project, checked, ref, source)
    model = ps.load_champion(project, ref)
    return ps.score_and_write(project, model, frame, checked, source, target)
