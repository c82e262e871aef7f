"""Betti numbers of feature maps through depth (SPEC §5, our definition after Suresh et al.).

For every watched site whose output is a 2-D feature map ``(N, C, H, W)``, the first
``maps_budget`` probe inputs' maps are thresholded (``x > threshold``) and the Betti numbers of
each map are counted exactly: ``betti_0`` (connected components) and ``betti_1`` (holes), averaged
over maps, and ``active_fraction`` (pixels above the threshold). Sites without 2-D maps (fully
connected layers) are skipped silently. Across depth, the network-level rows ``betti_depth`` at
sites ``decay_rate`` and ``normalised_area`` summarise how the topology simplifies from the first
conv site to the last (slope and mean of ln(mean b0 + b1) against normalised depth).

Example:
    >>> import torch
    >>> from lightning_complexity.site_metrics.base import SiteGroup
    >>> ring = torch.zeros(1, 1, 1, 5, 5)
    >>> ring[..., 1:4, 1:4] = 1.0
    >>> ring[..., 2, 2] = 0.0
    >>> values = Betti().compute(SiteGroup(["conv"], maps=ring))
    >>> values["betti_0"].item(), values["betti_1"].item()
    (1.0, 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_complexity.capture import SiteData, SiteNeeds
from lightning_complexity.errors import bad_argument
from lightning_complexity.functional.topology import active_fraction, betti_depth_decay, betti_numbers
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric
from lightning_complexity.sites import LayerSpec

__all__ = ["Betti"]


class Betti(SiteMetric):
    """``betti_0``, ``betti_1`` and ``active_fraction`` per conv site, and their decay with depth.

    Args:
        layers: modules whose output maps are counted (default: the monitor's selection; only
            those with 4-D outputs count).
        threshold: the super-level set is ``x > threshold`` (0: the active part of a ReLU map).
    """

    name = "betti"
    produces = ("betti_0", "betti_1", "active_fraction")
    needs = SiteNeeds(output=False, maps=True)
    min_samples = 1
    summary_metric = "betti_depth"

    def __init__(self, layers: LayerSpec = None, threshold: float = 0.0) -> None:
        super().__init__(layers)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise bad_argument("Betti(threshold=...)", threshold, "a number")
        self.threshold = float(threshold)

    def applies_to(self, data: SiteData) -> bool:
        return len(data.output_shape) == 3  # (C, H, W) per sample

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        counts = betti_numbers(group.maps, self.threshold).to(torch.float64)  # (b, N, C, 2)
        return {
            "betti_0": counts[..., 0].flatten(1).mean(dim=1),
            "betti_1": counts[..., 1].flatten(1).mean(dim=1),
            "active_fraction": active_fraction(group.maps, self.threshold).flatten(1).mean(dim=1),
        }

    def summarize(self, sites: list[str], values: dict[str, Tensor]) -> dict[tuple[str, str], Tensor]:
        summary = betti_depth_decay(values["betti_0"] + values["betti_1"])
        return {
            (self.summary_metric, "decay_rate"): torch.as_tensor(summary.decay_rate, dtype=torch.float64),
            (self.summary_metric, "normalised_area"): torch.as_tensor(summary.normalised_area, dtype=torch.float64),
        }

    def __repr__(self) -> str:
        return f"Betti(layers={self.layers!r}, threshold={self.threshold})"
