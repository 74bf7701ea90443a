"""Audit trail of the `champion` alias, kept in the MLflow registry itself.

Every move of `champion` (promotion or rollback) is first recorded as a registered-model tag
`ctloop.event.<13-digit epoch ms>` holding compact JSON, then the alias is moved in one call. The
trail therefore lives next to the alias it describes (visible on the model page of the MLflow UI)
and cannot drift like a side file. A crash between the two writes leaves an event whose `to` never
became the champion: `history` reports it as not applied.

No Prefect here. MLflow is imported inside functions.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ctloop.core.promotion import CHAMPION
from ctloop.io.aliases import get_alias

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

EVENT_PREFIX = "ctloop.event."
ACTIONS = ("promote", "rollback")
Action = Literal["promote", "rollback"]


class AuditError(RuntimeError):
    """A rollback or history request that cannot be served; the message names the model."""


class AuditWarning(UserWarning):
    """An event tag that cannot be read (skipped, never fatal)."""


@dataclass(frozen=True)
class ChampionEvent:
    time: str
    action: Action
    from_version: str | None
    to_version: str
    metric: str | None
    challenger_score: float | None
    champion_score: float | None
    reason: str
    applied: bool = True
    # a promotion by the bootstrap gate: the interval of the gain (metric units) and its
    # confidence; None for rollbacks, the point gate and events recorded before the bootstrap
    gain_lower: float | None = None
    gain_upper: float | None = None
    confidence: float | None = None

    def to_json(self) -> str:
        """The tag value: compact JSON; `applied` is derived when reading, never stored; the
        interval only when there is one."""
        body: dict[str, Any] = {
            "action": self.action,
            "from": self.from_version,
            "to": self.to_version,
            "metric": self.metric,
            "challenger_score": self.challenger_score,
            "champion_score": self.champion_score,
            "reason": self.reason,
            "time": self.time,
        }
        if self.gain_lower is not None and self.gain_upper is not None:
            body |= {
                "gain_lower": self.gain_lower,
                "gain_upper": self.gain_upper,
                "confidence": self.confidence,
            }
        return json.dumps(body, separators=(",", ":"))

    def interval(self) -> str | None:
        """`gain [95% +0.0012, +0.0093]` when the event carries the gate's interval."""
        if self.gain_lower is None or self.gain_upper is None:
            return None
        level = "?" if self.confidence is None else f"{self.confidence:.0%}"
        return f"gain [{level} {self.gain_lower:+.4f}, {self.gain_upper:+.4f}]"


def new_event(
    action: Action,
    from_version: str | None,
    to_version: str,
    reason: str,
    metric: str | None = None,
    challenger_score: float | None = None,
    champion_score: float | None = None,
    gain_lower: float | None = None,
    gain_upper: float | None = None,
    confidence: float | None = None,
) -> ChampionEvent:
    """An event stamped now (UTC); the gain interval of the bootstrap gate when given."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return ChampionEvent(
        now,
        action,
        from_version,
        to_version,
        metric,
        challenger_score,
        champion_score,
        reason,
        gain_lower=gain_lower,
        gain_upper=gain_upper,
        confidence=confidence,
    )


def _event_key(existing: dict[str, str]) -> str:
    """Tag key from the clock, strictly after every recorded event (same-ms moves, clock skew)."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    stamps = [_stamp(key) for key in existing]
    latest = max((s for s in stamps if s is not None), default=-1)
    return f"{EVENT_PREFIX}{max(now, latest + 1):013d}"


def _stamp(key: str) -> int | None:
    """The epoch ms of an event tag key, None for other tags or a garbled suffix."""
    if not key.startswith(EVENT_PREFIX):
        return None
    suffix = key.removeprefix(EVENT_PREFIX)
    return int(suffix) if suffix.isdigit() else None


def _model_tags(name: str) -> dict[str, str]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return dict(MlflowClient().get_registered_model(name).tags)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise AuditError(f"model '{name}' is not registered (nothing trained yet)") from None
        raise


def record_event(name: str, event: ChampionEvent) -> None:
    """Write the event tag; callers move the alias only after this returned."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_tag(name, _event_key(_model_tags(name)), event.to_json())


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_event(value: str) -> ChampionEvent:
    """One tag value as an event; ValueError (or KeyError/TypeError) when it is not one."""
    body = json.loads(value)
    if not isinstance(body, dict) or body.get("action") not in ACTIONS or body.get("to") is None:
        raise ValueError("not a champion event (action/to missing)")
    return ChampionEvent(
        time=str(body["time"]),
        action=body["action"],
        from_version=_optional_str(body.get("from")),
        to_version=str(body["to"]),
        metric=_optional_str(body.get("metric")),
        challenger_score=_optional_float(body.get("challenger_score")),
        champion_score=_optional_float(body.get("champion_score")),
        reason=str(body.get("reason", "")),
        gain_lower=_optional_float(body.get("gain_lower")),
        gain_upper=_optional_float(body.get("gain_upper")),
        confidence=_optional_float(body.get("confidence")),
    )


def _read_events(name: str, tags: dict[str, str]) -> list[ChampionEvent]:
    """Event tags oldest first; unreadable ones are skipped with an AuditWarning."""
    events: list[tuple[int, ChampionEvent]] = []
    for key, value in tags.items():
        if not key.startswith(EVENT_PREFIX):
            continue
        stamp = _stamp(key)
        try:
            if stamp is None:
                raise ValueError("key is not ctloop.event.<epoch ms>")
            events.append((stamp, parse_event(value)))
        except (ValueError, KeyError, TypeError) as err:
            warnings.warn(f"model '{name}': skipped tag {key}: {err}", AuditWarning, stacklevel=3)
    return [event for _, event in sorted(events, key=lambda pair: pair[0])]


def mark_applied(events: list[ChampionEvent], champion: str | None) -> list[ChampionEvent]:
    """An event is applied when the champion seen right after it is its `to`: the next event's
    `from` (read from the alias when it was recorded), or the current alias for the latest one.
    A crash between tag and alias move therefore shows; so does a hand-moved alias."""
    if not events:
        return []
    after = [e.from_version for e in events[1:]] + [champion]
    return [replace(e, applied=seen == e.to_version) for e, seen in zip(events, after, strict=True)]


def _current(name: str) -> tuple[list[ChampionEvent], ModelVersion | None]:
    """The events (applied or not) and the champion version they were judged against."""
    events = _read_events(name, _model_tags(name))
    champion = get_alias(name, CHAMPION)
    return mark_applied(events, None if champion is None else str(champion.version)), champion


def history(name: str) -> list[ChampionEvent]:
    """Every recorded promotion and rollback of `name`, oldest first."""
    return _current(name)[0]


def rollback_target(events: list[ChampionEvent], champion: str) -> str | None:
    """The previous champion: the `from` of the latest applied *promote* event whose `to` is the
    current champion. Rollback events are never followed, so when the champion was reached by a
    rollback its own promotion is found and the chain goes back further (v1 -> v2 -> v3, rollback
    to v2, rollback to v1, then nothing left) instead of ping-ponging between two versions."""
    for event in reversed(events):
        if event.applied and event.action == "promote" and event.to_version == champion:
            return event.from_version
    return None


def _promotion_tags(name: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags)


def _score(tags: dict[str, str]) -> float | None:
    """The version's own holdout score recorded at its promotion decision, if any."""
    raw = tags.get("promotion.challenger_score", "")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _check_ready(name: str, version: str) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        status = MlflowClient().get_model_version(name, version).status
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise AuditError(f"model '{name}': previous champion v{version} was deleted") from None
        raise
    if status != "READY":
        raise AuditError(f"model '{name}': previous champion v{version} is {status}, not READY")


def rollback(name: str, reason: str) -> ChampionEvent:
    """Move `champion` back to the previous champion (see rollback_target), event first.

    Figures come from the versions' `promotion.*` tags: challenger_score is the restored
    version's score, champion_score the outgoing one's (each on its own holdout)."""
    from mlflow import MlflowClient

    if not reason.strip():
        raise AuditError(f"model '{name}': a rollback needs a reason")
    events, current = _current(name)
    if current is None:
        raise AuditError(f"model '{name}' has no champion: nothing to roll back")
    champion = str(current.version)
    target = rollback_target(events, champion)
    if target is None:
        raise AuditError(
            f"model '{name}': champion v{champion} has no recorded previous champion "
            "to roll back to"
        )
    _check_ready(name, target)
    restored, outgoing = _promotion_tags(name, target), dict(current.tags)
    event = new_event(
        "rollback",
        champion,
        target,
        reason.strip(),
        metric=restored.get("promotion.metric") or outgoing.get("promotion.metric") or None,
        challenger_score=_score(restored),
        champion_score=_score(outgoing),
    )
    record_event(name, event)
    MlflowClient().set_registered_model_alias(name, CHAMPION, target)
    return event


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _row(event: ChampionEvent) -> list[str]:
    action = event.action if event.applied else f"{event.action} (not applied)"
    before = f"v{event.from_version}" if event.from_version else "-"
    moved = f"{before} -> v{event.to_version}"
    interval = event.interval()
    figures = (
        f"{event.metric or '-'} {_figure(event.challenger_score)} "
        f"(was {_figure(event.champion_score)}{'; ' + interval if interval else ''})"
    )
    return [event.time, action, moved, figures, event.reason]


def format_history(events: list[ChampionEvent]) -> str:
    """A plain table, oldest first: time, action, from -> to, metric new (was old; the gain's
    interval when the bootstrap gate promoted), reason."""
    if not events:
        return "no promotion or rollback recorded"
    rows = [["time (UTC)", "action", "from -> to", "metric new (was old)", "reason"]]
    rows += [_row(e) for e in events]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )
