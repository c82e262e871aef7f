"""Activation-pattern entropy per activation site, from the gates themselves (SPEC §3's companion).

For every unit of an activation site, ``p = P(unit input > 0)``; the site's value is the mean over
units of the binary entropy of ``p`` (nats, in ``[0, ln 2]``): ln 2 ≈ 0.693 for a zero-bias ReLU
layer on symmetric input, 0 when every unit is always on or always off (the site acts linearly).

A unit is a feature at a position: for a conv map ``(N, C, H, W)`` the ``C·H·W`` gates, for a
sequence ``(N, T, D)`` the ``T·D`` token features. The capture hooks count, per unit, how many
inputs had it positive — over every captured input, whatever ``spatial=`` says, and without
keeping samples — so the value is that of the real gates, not of channel means, and sums of counts
make it exact under DDP. When the number of positions varies between batches (sequences of
different lengths) the units are the features, counted over inputs and positions.

Example:
    >>> import torch
    >>> from lightning_complexity.site_metrics.base import SiteGroup
    >>> group = SiteGroup(["relu"], gate_counts=torch.tensor([[50, 50]]), gate_samples=torch.tensor([100.0]))
    >>> round(PatternEntropy().compute(group)["activation_pattern_entropy"].item(), 6)  # ln 2
    0.693147
"""

from __future__ import annotations

from torch import Tensor

from lightning_complexity.capture import SiteData, SiteNeeds
from lightning_complexity.functional.pattern_entropy import pattern_entropy_from_counts
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric

__all__ = ["PatternEntropy"]


class PatternEntropy(SiteMetric):
    """``activation_pattern_entropy`` of each activation site's gates (nats, in [0, ln 2])."""

    name = "activation_pattern_entropy"
    produces = ("activation_pattern_entropy",)
    needs = SiteNeeds(output=False, gates=True)

    def samples(self, data: SiteData) -> int:
        return data.gate_samples

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        return {"activation_pattern_entropy": pattern_entropy_from_counts(group.gate_counts, group.gate_samples)}
