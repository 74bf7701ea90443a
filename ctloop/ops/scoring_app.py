"""The ASGI app of `ctloop serve-model`: MLflow's scoring server (`/ping`, `/invocations`, the
same request and answer formats as `mlflow models serve`) around a version that ctloop loads
itself (ctloop/io/model_io.py: skops with checked types, no pickle), so the server needs no
MLFLOW_ALLOW_PICKLE_DESERIALIZATION.

uvicorn imports it (serving.serve_command) with MLFLOW_TRACKING_URI, CTLOOP_SERVE_MODEL and
CTLOOP_SERVE_VERSION in its environment (serving.serve_env); a missing one raises KeyError.
"""

from __future__ import annotations

import os

from mlflow.pyfunc import scoring_server  # noqa: TID253 (the server's app: only uvicorn imports it)

from ctloop.io import model_io

name, version = os.environ[model_io.SERVE_MODEL_ENV], os.environ[model_io.SERVE_VERSION_ENV]
app = scoring_server.init(model_io.load_pyfunc(name, version))
