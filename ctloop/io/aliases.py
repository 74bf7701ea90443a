"""Reading a model's aliases in the MLflow registry (`champion`, `challenger`): the one lookup
that the registry (ctloop/io/registry.py) and its audit trail (ctloop/io/audit.py) share."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion


def get_alias(name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None (no model or no alias yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise
