"""Entropic complexity per block (SPEC §3, our definition) and the activation-pattern entropy.

``EntropicComplexity`` watches *blocks* — by default every module that has an activation module
as a direct child (a ResNet ``BasicBlock``, a ``Sequential`` stage) — and measures how many
affine pieces the map from the block's input to its output needs: ``entropic_complexity`` (C_ε in
nats), ``linear_deficit`` (e(1), the held-out error of one affine map) and
``entropic_complexity_censored`` (1 when no k reached the tolerance). TensorBoard gets the e(k)
curves as a figure.

``PatternEntropy`` is the cheap companion on activation sites: the mean over units of the binary
entropy of P(unit input > 0) (``activation_pattern_entropy``; ln 2 ≈ 0.693 for a zero-bias ReLU
layer on symmetric input, 0 when every unit is always on or always off).

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
from lightning_complexity.functional.entropic import entropic_complexity
from lightning_complexity.functional.pattern_entropy import activation_pattern_entropy
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric
from lightning_complexity.sites import LayerSpec, is_activation

__all__ = ["EntropicComplexity", "PatternEntropy", "blocks_with_activations"]


def blocks_with_activations(name: str, module: nn.Module) -> bool:
    """Default block selection: a non-root module with an activation module as a direct child."""
    return name != "" and any(is_activation(child) for child in module.children())


class EntropicComplexity(SiteMetric):
    """C_ε, e(1) and the censored flag per block, plus an e(k) figure.

    Args:
        layers: blocks to measure (default: :func:`blocks_with_activations`).
        rank, k_max, tolerance: as in :func:`~lightning_complexity.functional.entropic_complexity`.
        figure_every_n: draw the e(k) figure at every n-th measurement (0: never).
    """

    name = "entropic_complexity"
    produces = ("entropic_complexity", "linear_deficit", "entropic_complexity_censored")
    needs = SiteNeeds(input=True, output=True)

    def __init__(self, layers: LayerSpec = blocks_with_activations, rank: int = 16, k_max: int = 16, tolerance: float = 0.05, figure_every_n: int = 1) -> None:
        super().__init__(layers)
        for argument, value, ok in (("rank", rank, isinstance(rank, int) and rank >= 1), ("k_max", k_max, isinstance(k_max, int) and k_max >= 1)):
            if not ok or isinstance(value, bool):
                raise bad_argument(f"EntropicComplexity({argument}=...)", value, "an int >= 1")
        if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
            raise bad_argument("EntropicComplexity(tolerance=...)", tolerance, "a float in (0, 1)")
        self.rank, self.k_max, self.tolerance = rank, k_max, float(tolerance)
        self.figure_every_n = int(figure_every_n)
        # One affine map needs 10·(r+1) training points, and a quarter of the samples is held out.
        self.min_samples = int(math.ceil(10 * (rank + 1) / 0.75))
        self._curves: dict[str, tuple[Tensor, Tensor]] = {}
        self._measurements = 0

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        result = entropic_complexity(group.inputs, group.outputs, rank=self.rank, k_max=self.k_max, tolerance=self.tolerance)
        for i, site in enumerate(group.sites):  # kept on device until a figure asks for them
            self._curves[site] = (result.ks, result.errors[i])
        return {
            "entropic_complexity": result.value,
            "linear_deficit": result.linear_deficit,
            "entropic_complexity_censored": result.censored.to(torch.float64),
        }

    def figures(self, history: Any) -> dict[str, Any]:
        self._measurements += 1
        if not self._curves or self.figure_every_n <= 0 or (self._measurements - 1) % self.figure_every_n:
            return {}
        from lightning_complexity.figures import error_curves_figure

        curves = {site: (ks.cpu().numpy(), errors.cpu().numpy()) for site, (ks, errors) in self._curves.items()}
        return {"entropic_error_curves": error_curves_figure(curves, self.tolerance)}

    def __repr__(self) -> str:
        return f"EntropicComplexity(layers={self.layers!r}, rank={self.rank}, k_max={self.k_max}, tolerance={self.tolerance})"


class PatternEntropy(SiteMetric):
    """``activation_pattern_entropy`` of each activation site's input (nats, in [0, ln 2])."""

    name = "activation_pattern_entropy"
    produces = ("activation_pattern_entropy",)
    needs = SiteNeeds(input=True, output=False)

    def group_key(self, data) -> tuple | None:
        return None if data.input is None else (tuple(data.input.shape),)

    def samples(self, data) -> int:
        return 0 if data.input is None else int(data.input.shape[0])

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        return {"activation_pattern_entropy": activation_pattern_entropy(group.inputs)}
