"""The training window: which batches train, which are held out, and which the drift report compares
(params `split`), planned from the batches on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ctloop.core.config import Project, SplitConfig
from ctloop.io import data

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Window:
    """Batches that train, the holdout (latest labelled ones) and the batch monitored for drift."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    current: str | None

    @property
    def used(self) -> list[str]:
        names = [*self.train, *self.holdout]
        return names + ([self.current] if self.current and self.current not in names else [])


class WindowError(ValueError):
    """The configured training window does not contain enough batches."""


def plan_window(
    split: SplitConfig, available: list[str], labelled: list[str] | None = None
) -> Window:
    """Training window from params; its latest labelled periods are the holdout (periods without
    any label yet are left out); the newest batch is the one monitored for drift."""
    inside = data.select_periods(available, split.window_start, split.window_end)
    if labelled is not None:
        inside = [n for n in inside if n in set(labelled)]
    if len(inside) <= split.holdout_periods:
        raise WindowError(
            f"split: window {split.window_start}..{split.window_end} holds {len(inside)} batch(es) "
            f"(available: {', '.join(available) or 'none'}); need more than "
            f"holdout_periods={split.holdout_periods}"
        )
    cut = len(inside) - split.holdout_periods
    newest = sorted(available)[-1]
    return Window(tuple(inside[:cut]), tuple(inside[cut:]), newest)


def current_window(project: Project) -> Window:
    """The window over the batches written so far."""
    folder = project.path("batches")
    available = data.list_batches(folder)
    labelled = data.labelled_batches(folder, available, project.params.data.target)
    return plan_window(project.params.split, available, labelled)
