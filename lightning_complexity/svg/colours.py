"""Colours as hex strings: matplotlib's tab10 (categories) and viridis (ordered values).

Example:
    >>> TAB10[0], viridis(0.0), viridis(1.0)
    ('#1f77b4', '#440154', '#fde725')
    >>> site_colours(2)
    ['#1f77b4', '#ff7f0e']
"""

from __future__ import annotations

import math

__all__ = ["TAB10", "VIRIDIS_STOPS", "site_colours", "viridis"]

TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: viridis at 17 evenly spaced points (matplotlib's table); between them it is interpolated in RGB,
#: which differs from the full 256-entry table by less than one 8-bit step.
VIRIDIS_STOPS = ("#440154", "#48186a", "#472d7b", "#424086", "#3b528b", "#33638d", "#2c728e", "#26828e", "#21918c",
                 "#1fa088", "#28ae80", "#3fbc73", "#5ec962", "#84d44b", "#addc30", "#d8e219", "#fde725")


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def viridis(fraction: float) -> str:
    """The viridis colour at ``fraction`` in [0, 1] (clipped; NaN gives the lowest colour)."""
    fraction = 0.0 if math.isnan(fraction) else min(1.0, max(0.0, fraction))
    position = fraction * (len(VIRIDIS_STOPS) - 1)
    low = min(int(position), len(VIRIDIS_STOPS) - 2)
    weight = position - low
    a, b = _rgb(VIRIDIS_STOPS[low]), _rgb(VIRIDIS_STOPS[low + 1])
    return "#" + "".join(f"{round(x + (y - x) * weight):02x}" for x, y in zip(a, b))


def site_colours(count: int) -> list[str]:
    """``count`` distinguishable colours in forward order: tab10 up to 10, else viridis."""
    if count <= len(TAB10):
        return list(TAB10[:count])
    return [viridis(i / (count - 1)) for i in range(count)]
