"""When to measure within training: every n steps, log-spaced steps, or any rule ``step -> bool``.

Power-law fits want points spread evenly in ``ln t``: a log-spaced schedule measures densely early,
when the curves move fast, and sparsely late (as Cockpit offers), for the cost of a handful of
measurements per decade of steps. ``schedule="log"`` measures at the distinct integers
``round(10^(k/8))``, k = 0, 1, 2, …: steps 1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, 42, 56, 75, 100,
133, … (8 per decade from step 10 on); ``LogSchedule(per_decade=...)`` chooses the density.

Example:
    >>> schedule = resolve_schedule("log")
    >>> [step for step in range(1, 120) if schedule(step)]
    [1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, 42, 56, 75, 100]
    >>> resolve_schedule(lambda step: step % 50 == 0)(100)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightning_complexity.errors import bad_argument

__all__ = ["EveryNSteps", "LogSchedule", "StepSchedule", "resolve_schedule"]

StepSchedule = Callable[[int], bool]


@dataclass(frozen=True)
class EveryNSteps:
    """Due at every ``n``-th optimizer step."""

    n: int

    def __call__(self, step: int) -> bool:
        return step > 0 and step % self.n == 0


@dataclass
class LogSchedule:
    """Due at the distinct steps ``round(10^(k/per_decade))``, k = 0, 1, 2, …"""

    per_decade: int = 8
    _steps: set[int] = field(default_factory=set, repr=False)
    _reach: int = field(default=0, repr=False)
    _k: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.per_decade, bool) or not isinstance(self.per_decade, int) or self.per_decade < 1:
            raise bad_argument("LogSchedule(per_decade=...)", self.per_decade, "an int >= 1")

    def __call__(self, step: int) -> bool:
        while self._reach <= step:
            self._reach = round(10 ** (self._k / self.per_decade))
            self._steps.add(self._reach)
            self._k += 1
        return step in self._steps


def resolve_schedule(schedule: Any) -> StepSchedule | None:
    """``schedule=`` as a callable ``step -> bool``: None, ``"log"``, a :class:`LogSchedule`, or a callable."""
    if schedule is None:
        return None
    if schedule == "log":
        return LogSchedule()
    if callable(schedule):
        return schedule
    raise bad_argument("schedule", schedule, "None, 'log', LogSchedule(per_decade=...), or a callable step -> bool")
