"""Challengers in shadow (pure): which refused challenger goes to shadow, how its consecutive
wins against the champion are counted on labelled batches, and when it is promoted.

A challenger the gate refused at registration (`promotion.shadow: refused`), or any challenger
that did not become champion (`all`: an approval veto too), takes the registry alias `shadow`
when `promotion.shadow_batches` k > 0. The monitor then scores every new batch with it beside
the champion and, on a labelled batch, compares the two with the gate's own test on that
batch's rows (ctloop/ml/comparison.py, `promotion.decide`). The count of consecutive wins
lives on the shadow version's tags (`ShadowState.tags`):

- a win (the gate would promote it on this batch) adds one;
- a loss or an inconclusive comparison resets it to 0;
- a batch the shadow could not score (`failed`: its model did not load or predict) resets it to
  0 too: a model that cannot score every batch is not promoted on the ones it could;
- an unlabelled batch, or a batch already compared, leaves it unchanged;
- a new champion resets it (the wins were against another model).

After k consecutive wins the shadow is due for promotion (`due`). Moving the aliases is
ctloop/io/registry.py's job; no MLflow and no Prefect here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ctloop.core.promotion import GainInterval

SHADOW = "shadow"  # the registry alias of the challenger in shadow (one at a time)
TRIGGER = "shadow"  # the first word of the reason of a promotion out of shadow

ShadowMode = Literal["refused", "all"]
REFUSED: ShadowMode = "refused"
ALL: ShadowMode = "all"

Outcome = Literal["win", "loss", "inconclusive", "unlabelled", "failed"]
WIN: Outcome = "win"
LOSS: Outcome = "loss"
INCONCLUSIVE: Outcome = "inconclusive"
UNLABELLED: Outcome = "unlabelled"
FAILED: Outcome = "failed"  # the shadow could not score the batch (the champion's run goes on)

TAG_PREFIX = "ctloop.shadow."
WINS_TAG = f"{TAG_PREFIX}wins"
AGAINST_TAG = f"{TAG_PREFIX}against"
STREAK_TAG = f"{TAG_PREFIX}streak"
LAST_TAG = f"{TAG_PREFIX}last_batch"
STATE_TAG = f"{TAG_PREFIX}state"  # shadow | replaced | promoted
REASON_TAG = f"{TAG_PREFIX}reason"  # why it went to shadow (the gate's reason at registration)
REPLACES_TAG = f"{TAG_PREFIX}replaces"  # the shadow it replaced
REPLACED_BY_TAG = f"{TAG_PREFIX}replaced_by"  # the newer challenger that replaced it
IN_SHADOW, REPLACED, PROMOTED = "shadow", "replaced", "promoted"


def enters_shadow(
    mode: ShadowMode,
    k: int,
    gate_promoted: bool,
    promoted: bool,
    champion_version: str | None,
) -> bool:
    """Whether a newly registered challenger goes to shadow.

    `k` is `promotion.shadow_batches` (0: never); `gate_promoted` the gate's own verdict,
    `promoted` the final one (after approval); `champion_version` the champion it was compared
    with (None: the first model, judged by its floor, is never shadowed: there is nothing to
    compare it with). `refused`: only a challenger the gate refused; `all`: every challenger
    that did not become champion (the gate refused it, or the approval vetoed it). A promoted
    challenger never goes to shadow."""
    if k <= 0 or promoted or champion_version is None:
        return False
    return mode == ALL or not gate_promoted


def classify(labelled: bool, beats: bool, interval: GainInterval | None) -> Outcome:
    """The outcome of one batch: `unlabelled` without a measurable comparison (fewer than two
    labelled rows, one class only); `win` when the gate's test promotes the shadow on the
    batch (`beats`); `loss` when the paired bootstrap interval of the gain (`interval`) lies
    below 0 (the shadow is significantly worse); otherwise `inconclusive` (NaN bounds too)."""
    if not labelled:
        return UNLABELLED
    if beats:
        return WIN
    if interval is not None and interval.upper < 0:  # NaN compares False: inconclusive
        return LOSS
    return INCONCLUSIVE


@dataclass(frozen=True)
class ShadowState:
    """The count of one shadow version: `wins` consecutive wins (the batches of that streak in
    `streak`, oldest first) against champion `against`; `last_batch` the newest batch compared
    (labelled), so that a batch is never counted twice."""

    version: str
    against: str | None = None
    wins: int = 0
    streak: tuple[str, ...] = ()
    last_batch: str | None = None

    def tags(self) -> dict[str, str]:
        """The state as registry tags on the shadow version (`ctloop.shadow.*`)."""
        return {
            WINS_TAG: str(self.wins),
            AGAINST_TAG: self.against or "",
            STREAK_TAG: ",".join(self.streak),
            LAST_TAG: self.last_batch or "",
        }

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> ShadowState:
        """The state recorded by `tags` (a version without them starts at 0 wins; an unreadable
        count reads as 0)."""
        raw = tags.get(WINS_TAG, "0")
        wins = int(raw) if raw.isdigit() else 0
        streak = tuple(b for b in tags.get(STREAK_TAG, "").split(",") if b)
        return cls(
            version=version,
            against=tags.get(AGAINST_TAG) or None,
            wins=wins,
            streak=streak[-wins:] if wins else (),
            last_batch=tags.get(LAST_TAG) or None,
        )


def advance(state: ShadowState, champion: str, batch: str, outcome: Outcome) -> ShadowState:
    """The state after comparing the shadow with `champion` (its version) on `batch`.

    A champion other than `state.against` starts a new count (0 wins, against it) before the
    outcome applies. Then: `unlabelled`, or a batch already compared (`last_batch`), changes
    nothing; `win` adds one (the batch joins the streak); `loss`, `inconclusive` and `failed`
    (labelled or not) reset the count to 0 (the batch is then the last compared)."""
    if state.against != champion:
        state = replace(state, against=champion, wins=0, streak=(), last_batch=None)
    if outcome == UNLABELLED or batch == state.last_batch:
        return state
    if outcome == WIN:
        return replace(state, wins=state.wins + 1, streak=(*state.streak, batch), last_batch=batch)
    return replace(state, wins=0, streak=(), last_batch=batch)


def due(state: ShadowState, k: int) -> bool:
    """Whether the shadow has won `k` (> 0) consecutive labelled batches: promote it."""
    return k > 0 and state.wins >= k


def promotion_reason(state: ShadowState, k: int, last: str) -> str:
    """The reason recorded with a promotion out of shadow, starting with `shadow:` (the
    trigger): `shadow: won 2 consecutive labelled batches (2013-04, 2013-05) against champion
    v1 (promotion.shadow_batches 2); last: <the gate's reason on the last batch>`."""
    batches = ", ".join(state.streak)
    return (
        f"{TRIGGER}: won {state.wins} consecutive labelled batches ({batches}) against champion "
        f"v{state.against} (promotion.shadow_batches {k}); last: {last}"
    )


def is_shadow_promotion(reason: str) -> bool:
    """Whether a recorded reason is a promotion out of shadow."""
    return reason.startswith(f"{TRIGGER}:")
