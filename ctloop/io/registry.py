"""Champion/challenger promotion in the MLflow model registry.

The decision is pure (`decide`); the registry writes happen in order: tags on the version first,
then the audit event on the model (ctloop/io/audit.py), then one alias move. `champion` therefore
never points at a version whose record is incomplete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctloop.core import shadow
from ctloop.core.faults import crash_point
from ctloop.core.promotion import (  # the gate's pure decision; registry moves the aliases
    CHALLENGER,
    CHAMPION,
    PromotionDecision,
)
from ctloop.io import audit, model_io
from ctloop.io.aliases import get_alias
from ctloop.io.recovery import VERSION_TAG as INTERRUPTED

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline


class RegistryError(RuntimeError):
    """The registry refuses a move (e.g. a version that is not READY)."""


def versions(name: str) -> list[ModelVersion]:
    """Every version of the registered model, oldest first (none when it does not exist)."""
    from mlflow import MlflowClient

    found = MlflowClient().search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


RUN_TAG = "ctloop.run_id"  # the training run that gated the version (a re-run may adopt one)
RECOVERED_TAG = "ctloop.recovered_from"


def gated_version_of_run(name: str, run_id: str) -> ModelVersion | None:
    """The version `run_id` registered or adopted (`adopt_version`), if it is READY, went
    through the gate (its decision is tagged) and was not left by an interrupted run; else
    None."""
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    found += client.search_model_versions(f"name = '{name}' and tags.`{RUN_TAG}` = '{run_id}'")
    for version in sorted(found, key=lambda v: -int(v.version)):
        tags = version.tags or {}
        if version.status == "READY" and "promotion.promote" in tags and INTERRUPTED not in tags:
            return version
    return None


def registered_by(name: str, run_id: str) -> list[ModelVersion]:
    """The READY versions `run_id` registered, newest first."""
    from mlflow import MlflowClient

    found = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    ready = [v for v in found if v.status == "READY"]
    return sorted(ready, key=lambda v: -int(v.version))


def adopt_version(name: str, version: str, run_id: str, failed_run_id: str) -> None:
    """Let the training run `run_id` finish a version that the failed run `failed_run_id`
    registered with the same fingerprint (instead of registering an identical one): the version
    is tagged with the new run and where it came from; the interrupted mark (kept in the
    `ctloop.recovered_from` tag) no longer hides it from the gate's bookkeeping."""
    from mlflow import MlflowClient

    client = MlflowClient()
    tags = client.get_model_version(name, version).tags or {}
    note = f"{failed_run_id}: {tags[INTERRUPTED]}" if INTERRUPTED in tags else failed_run_id
    client.set_model_version_tag(name, version, RECOVERED_TAG, note)
    client.set_model_version_tag(name, version, RUN_TAG, run_id)
    if INTERRUPTED in tags:
        client.delete_model_version_tag(name, version, INTERRUPTED)


def load_version(name: str, version: str) -> Pipeline:
    """Load a registered scikit-learn pipeline from the configured registry.

    skops versions load with no pickle and only types from model_io.TRUSTED_MODULES
    (model_io.ModelSafetyError otherwise); versions saved with cloudpickle before load with a
    model_io.LegacyModelWarning, pickle being allowed for that one load only."""
    model: Pipeline = model_io.load_registered(name, version)
    return model


def mark_challenger(name: str, version: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)


def apply_decision(name: str, decision: PromotionDecision) -> None:
    """Record the decision on the version (`promotion.*` tags, the bootstrap gate's interval
    included: `promotion.test`, `gain`, `gain_lower`, `gain_upper`, `confidence`, `rounds`) and
    (if promoted) the audit event on the model with that interval, then
    move `champion` in one call: the alias never moves without its record, nor to a version
    that is not READY. A crash before the move leaves the old champion and an unapplied event.
    The promoted version then loses `challenger` (`retire_challenger`)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, decision.challenger_version, key, value)
    if not decision.promote:
        return
    current = get_alias(name, CHAMPION)
    if current is not None and str(current.version) == decision.challenger_version:
        retire_challenger(name, decision.challenger_version)
        return  # applied already (a re-run finishing a failed run's version): no second event
    status = client.get_model_version(name, decision.challenger_version).status
    if status != "READY":
        raise RegistryError(
            f"model '{name}': v{decision.challenger_version} is {status}, not READY: not promoted"
        )
    previous = get_alias(name, CHAMPION)
    event = audit.new_event(
        "promote",
        None if previous is None else str(previous.version),
        decision.challenger_version,
        decision.reason,
        metric=decision.metric,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
        gain_lower=decision.gain_lower,
        gain_upper=decision.gain_upper,
        confidence=decision.confidence,
    )
    audit.record_event(name, event)
    crash_point("promotion")  # tests only (CTLOOP_CRASH_AT): event recorded, alias not moved
    client.set_registered_model_alias(name, CHAMPION, decision.challenger_version)
    retire_challenger(name, decision.challenger_version)


def retire_challenger(name: str, version: str) -> None:
    """Remove the alias `challenger` from `version` once it is champion (a version shows one
    role in the MLflow UI); left alone when it already points at another version. The move of
    `champion` before it is the audited one: a crash in between leaves both aliases on the
    version, which the next promotion (or this call again) clears."""
    from mlflow import MlflowClient

    current = get_alias(name, CHALLENGER)
    if current is not None and str(current.version) == version:
        MlflowClient().delete_registered_model_alias(name, CHALLENGER)


def get_shadow(name: str) -> ModelVersion | None:
    """The version holding the alias `shadow` (ctloop/core/shadow.py), or None."""
    return get_alias(name, shadow.SHADOW)


def put_in_shadow(name: str, version: str, reason: str) -> str | None:
    """Give `version` the alias `shadow` (one at a time): the previous shadow, if any and other,
    is tagged as replaced by it (`ctloop.shadow.state` replaced, `ctloop.shadow.replaced_by`),
    then the new one is tagged (state shadow, 0 wins, `reason`: why it went to shadow, and
    `ctloop.shadow.replaces`), then the alias moves. Returns the replaced version, or None."""
    from mlflow import MlflowClient

    client = MlflowClient()
    current = get_shadow(name)
    previous = None if current is None else str(current.version)
    if previous == version:
        return None
    if previous is not None:
        client.set_model_version_tag(name, previous, shadow.STATE_TAG, shadow.REPLACED)
        client.set_model_version_tag(name, previous, shadow.REPLACED_BY_TAG, version)
    tags = {
        **shadow.ShadowState(version).tags(),
        shadow.STATE_TAG: shadow.IN_SHADOW,
        shadow.REASON_TAG: reason[:5000],
        shadow.REPLACES_TAG: previous or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, shadow.SHADOW, version)
    return previous


def leave_shadow(name: str, version: str, state: str) -> None:
    """Remove the alias `shadow` from `version` (if it still holds it) and tag its final
    `ctloop.shadow.state` (e.g. promoted)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(name, version, shadow.STATE_TAG, state)
    current = get_shadow(name)
    if current is not None and str(current.version) == version:
        client.delete_registered_model_alias(name, shadow.SHADOW)
