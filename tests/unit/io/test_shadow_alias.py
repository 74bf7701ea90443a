"""The alias `shadow` in the real MLflow registry (SQLite in tmp_path): one at a time, a
replacement recorded on both versions, removed on promotion."""

from __future__ import annotations

from pathlib import Path

from ctloop.core import shadow
from ctloop.io import registry
from tests.unit.io.test_audit import _register

NAME = "shadow-model"


def _tags(version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(NAME, version).tags)


def test_a_newer_shadow_replaces_the_older_and_both_record_it(tmp_path: Path) -> None:
    _, second, third = _register(3, tmp_path, NAME)
    assert registry.get_shadow(NAME) is None
    assert registry.put_in_shadow(NAME, second, "refused: margin") is None
    assert registry.put_in_shadow(NAME, second, "again") is None  # already there: no change
    held = registry.get_shadow(NAME)
    assert held is not None and str(held.version) == second
    assert _tags(second)[shadow.REASON_TAG] == "refused: margin"
    assert shadow.ShadowState.from_tags(second, _tags(second)) == shadow.ShadowState(second)

    assert registry.put_in_shadow(NAME, third, "refused: slice") == second
    assert str(registry.get_shadow(NAME).version) == third  # type: ignore[union-attr]
    old, new = _tags(second), _tags(third)
    assert (old[shadow.STATE_TAG], old[shadow.REPLACED_BY_TAG]) == ("replaced", third)
    assert (new[shadow.STATE_TAG], new[shadow.REPLACES_TAG]) == ("shadow", second)

    registry.leave_shadow(NAME, second, shadow.REPLACED)  # not the holder: alias stays
    assert str(registry.get_shadow(NAME).version) == third  # type: ignore[union-attr]
    registry.leave_shadow(NAME, third, shadow.PROMOTED)
    assert registry.get_shadow(NAME) is None and _tags(third)[shadow.STATE_TAG] == "promoted"
