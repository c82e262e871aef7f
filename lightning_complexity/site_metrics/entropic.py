"""Entropic complexity per block (SPEC §3, our definition; docs/metrics.md).

``EntropicComplexity`` watches *blocks* — by default every module that has an activation module
as a direct child (a ResNet ``BasicBlock``, a ``Sequential`` stage) — and measures how many
affine pieces the map from the block's input to its output needs, beyond what one affine map on
the full input explains: ``entropic_complexity`` (C_ε in nats), ``linear_deficit`` (e(1), the
held-out error of that affine map), ``entropic_error_floor`` (min_k e(k), what no number of
pieces explained; C_ε counts pieces above it) and ``entropic_complexity_censored`` (1 when the
schedule ran out before e(k) settled: C_ε is then a lower bound). TensorBoard gets the e(k)
curves as a figure, with each block's selection threshold.

The activation-pattern entropy, the cheap companion on activation sites, lives in
:mod:`lightning_complexity.site_metrics.pattern_entropy`.

Example:
    >>> import torch
    >>> from lightning_complexity.site_metrics.base import SiteGroup
    >>> x = torch.rand(1, 2000, 1, dtype=torch.float64) * 2 - 1
    >>> values = EntropicComplexity(k_max=4).compute(SiteGroup(["abs"], outputs=x.abs(), inputs=x))
    >>> round(values["entropic_complexity"].item(), 2)  # |x| needs two affine pieces: ln 2
    0.69
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lightning_complexity.capture import SiteNeeds
from lightning_complexity.errors import bad_argument
from lightning_complexity.functional.entropic import (
    DEFAULT_K_MAX,
    DEFAULT_RANK,
    DEFAULT_SAMPLES_PER_COEFFICIENT,
    DEFAULT_TOLERANCE,
    TOLERANCE_MODES,
    entropic_complexity,
)
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric
from lightning_complexity.sites import LayerSpec, is_activation

__all__ = ["EntropicComplexity", "blocks_with_activations"]


def blocks_with_activations(name: str, module: nn.Module) -> bool:
    """Default block selection: a non-root module with an activation module as a direct child."""
    return name != "" and any(is_activation(child) for child in module.children())


class EntropicComplexity(SiteMetric):
    """C_ε, e(1), the error floor and the censored flag per block, plus an e(k) figure.

    Args:
        layers: blocks to measure (default: :func:`blocks_with_activations`).
        rank, k_max, tolerance, tolerance_mode, samples_per_coefficient: as in
            :func:`~lightning_complexity.functional.entropic_complexity` (the same defaults,
            chosen on real blocks: docs/metrics.md).
        figure_every_n: draw the e(k) figure at every n-th measurement (0: never).
    """

    name = "entropic_complexity"
    produces = ("entropic_complexity", "linear_deficit", "entropic_error_floor", "entropic_complexity_censored")
    needs = SiteNeeds(input=True, output=True)

    def __init__(
        self,
        layers: LayerSpec = blocks_with_activations,
        rank: int = DEFAULT_RANK,
        k_max: int = DEFAULT_K_MAX,
        tolerance: float = DEFAULT_TOLERANCE,
        tolerance_mode: str = "floor",
        samples_per_coefficient: int = DEFAULT_SAMPLES_PER_COEFFICIENT,
        figure_every_n: int = 1,
    ) -> None:
        super().__init__(layers)
        for argument, value in (("rank", rank), ("k_max", k_max), ("samples_per_coefficient", samples_per_coefficient)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_argument(f"EntropicComplexity({argument}=...)", value, "an int >= 1")
        if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
            raise bad_argument("EntropicComplexity(tolerance=...)", tolerance, "a float in (0, 1)")
        if tolerance_mode not in TOLERANCE_MODES:
            raise bad_argument("EntropicComplexity(tolerance_mode=...)", tolerance_mode, f"one of {TOLERANCE_MODES}")
        self.rank, self.k_max, self.tolerance = rank, k_max, float(tolerance)
        self.tolerance_mode, self.samples_per_coefficient = tolerance_mode, samples_per_coefficient
        self.figure_every_n = int(figure_every_n)
        # k = 1 needs samples_per_coefficient·(r+1) training points, and a quarter is held out.
        self.min_samples = int(math.ceil(samples_per_coefficient * (rank + 1) / 0.75))
        self._curves: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._measurements = 0

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        result = entropic_complexity(
            group.inputs, group.outputs, rank=self.rank, k_max=self.k_max, tolerance=self.tolerance,
            tolerance_mode=self.tolerance_mode, samples_per_coefficient=self.samples_per_coefficient,
        )
        threshold = result.floor + self.tolerance if self.tolerance_mode == "floor" else torch.full_like(result.floor, self.tolerance)
        for i, site in enumerate(group.sites):  # kept on device until a figure asks for them
            self._curves[site] = (result.ks, result.errors[i], threshold[i])
        return {
            "entropic_complexity": result.value,
            "linear_deficit": result.linear_deficit,
            "entropic_error_floor": result.floor,
            "entropic_complexity_censored": result.censored.to(torch.float64),
        }

    def figures(self, history: Any) -> dict[str, Any]:
        self._measurements += 1
        if not self._curves or self.figure_every_n <= 0 or (self._measurements - 1) % self.figure_every_n:
            return {}
        from lightning_complexity.figures import error_curves_figure

        curves = {site: (ks.cpu().numpy(), errors.cpu().numpy()) for site, (ks, errors, _) in self._curves.items()}
        figure = error_curves_figure(curves, self.tolerance)
        if self.tolerance_mode == "floor":
            # The shared figure draws one line at ε; here k* is where e(k) first drops below each
            # block's own floor + ε, so draw that threshold in the block's colour instead.
            axes = figure.axes[0]
            for line in list(axes.get_lines()):
                if line.get_label().startswith("ε ="):
                    line.remove()
            for line, (_, _, threshold) in zip(axes.get_lines(), self._curves.values()):
                axes.axhline(float(threshold), color=line.get_color(), linestyle=":", linewidth=1)
            axes.plot([], [], color="grey", linestyle=":", label=f"floor + ε (ε = {self.tolerance:g})")
            axes.legend(fontsize=6, loc="best")
        return {"entropic_error_curves": figure}

    def __repr__(self) -> str:
        return (
            f"EntropicComplexity(layers={self.layers!r}, rank={self.rank}, k_max={self.k_max}, tolerance={self.tolerance}, "
            f"tolerance_mode={self.tolerance_mode!r}, samples_per_coefficient={self.samples_per_coefficient})"
        )
