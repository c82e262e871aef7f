"""Axis ranges and ticks: a data range padded by 5 % a side, and 3–7 "nice" ticks inside it.

Linear ticks are multiples of 1, 2, 2.5 or 5 × 10^k (integers only when asked: epochs, steps);
log ticks are 1, 2, 5 × 10^k, thinned to whole decades when a range spans many, and linear nice
ticks when it spans less than one 1-2-5 step. Labels carry as many decimals as the step needs and
a typographic minus.

Example:
    >>> scale = Scale.fit([0.0, 8.0], integer=True)
    >>> scale.ticks
    [0.0, 2.0, 4.0, 6.0, 8.0]
    >>> affinity = Scale.fit([0.55, 0.71])
    >>> [affinity.label(t) for t in affinity.ticks]
    ['0.55', '0.60', '0.65', '0.70']
    >>> Scale.fit([1.0, 100.0], log=True).ticks
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Scale"]

_NICE = (1.0, 2.0, 2.5, 5.0, 10.0)
_MARGIN = 0.05


def _nice_step(span: float, count: int, integer: bool) -> float:
    raw = span / max(1, count)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in _NICE if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, step)
        if step != math.floor(step):  # 2.5 → 5
            step = next(m * magnitude for m in (5.0, 10.0) if m * magnitude >= step)
    return step


def _linear_ticks(low: float, high: float, count: int, integer: bool) -> tuple[list[float], float]:
    step = _nice_step(high - low, count, integer)
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [round(k * step, 12) + 0.0 for k in range(first, last + 1)], step


def _decimals(step: float) -> int:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    while decimals < 12 and abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6:
        decimals += 1
    return decimals


@dataclass
class Scale:
    """One axis: the view range, whether it is logarithmic, its ticks and how to label them."""

    low: float
    high: float
    log: bool = False
    ticks: list[float] | None = None
    decimals: int | None = None  # None: labels in the shortest form (%g)

    @classmethod
    def fit(cls, values: Iterable[float], log: bool = False, integer: bool = False, count: int = 5, limits: tuple[float, float] | None = None) -> Scale:
        """The scale of the finite ``values`` (positive ones when ``log``); ``limits`` fixes the view range."""
        finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if limits is not None:
            low, high = limits
        elif not finite:
            low, high = (1.0, 10.0) if log else (0.0, 1.0)
        else:
            low, high = min(finite), max(finite)
            if log:
                low, high = math.log10(low), math.log10(high)
            if high - low <= 1e-12 * max(1.0, abs(low)):
                pad = 0.5 if integer or low == 0 else abs(low) * _MARGIN
                low, high = low - pad, high + pad
            else:
                pad = (high - low) * _MARGIN
                low, high = low - pad, high + pad
            if log:
                low, high = 10.0**low, 10.0**high
        scale = cls(low, high, log)
        scale.ticks, scale.decimals = scale._ticks(count, integer)
        return scale

    def _ticks(self, count: int, integer: bool) -> tuple[list[float], int | None]:
        if not self.log:
            ticks, step = _linear_ticks(self.low, self.high, count, integer)
            return ticks, (None if max(abs(self.low), abs(self.high)) >= 1e6 or step < 1e-5 else _decimals(step))
        first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
        for subs in ((1.0, 2.0, 5.0), (1.0,)):
            ticks = [m * 10.0**k for k in range(first, last + 1) for m in subs if self.low <= m * 10.0**k <= self.high]
            if len(ticks) <= 7:
                break
        if len(ticks) > 7:  # many decades: every n-th one
            every = math.ceil(len(ticks) / 6)
            ticks = ticks[::every]
        if len(ticks) < 2:  # less than a 1-2-5 step: plain ticks
            ticks, _ = _linear_ticks(self.low, self.high, 3, integer)
            ticks = [t for t in ticks if t > 0]
        return [float(f"{t:.12g}") for t in ticks], None

    def position(self, value: float) -> float:
        """``value`` as a fraction of the range (0 at ``low``, 1 at ``high``); NaN when it has none on a log axis."""
        if self.log:
            if not value > 0:
                return math.nan
            return (math.log10(value) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        return (value - self.low) / (self.high - self.low)

    def label(self, value: float) -> str:
        """A tick's text: the step's decimals, or %g; a typographic minus."""
        text = f"{value:.{self.decimals}f}" if self.decimals is not None else f"{value:.4g}"
        if float(text) == 0:  # no "−0.00"
            text = text.lstrip("-")
        return text.replace("-", "−")
