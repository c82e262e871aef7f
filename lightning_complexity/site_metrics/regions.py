"""Linear regions crossed by segments between probe inputs (SPEC §6, our definition).

A *network* metric: it needs the model and the probe inputs, not captured sites. At each
measurement, ``num_segments`` fixed segments join pairs of probe inputs (rows 0–1, 2–3, …); the
regions each crosses are counted exactly for piecewise-linear networks (ReLU-family, max-pool,
affine layers) and by dense sampling (a lower bound) otherwise — ``method="auto"`` tries the exact
walk once and falls back for good if the network has a smooth or hidden non-linearity. Rows:
``linear_regions`` (mean count per segment), ``linear_regions_per_unit_length`` and
``linear_regions_per_neuron``, at site ``network``. Opt-in: the exact walk costs one forward per
region.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    >>> values = LinearRegions(num_segments=2).compute_network(net, torch.randn(4, 2))
    >>> sorted(values)
    ['linear_regions', 'linear_regions_per_neuron', 'linear_regions_per_unit_length']
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_complexity.capture import SiteNeeds
from lightning_complexity.errors import bad_argument
from lightning_complexity.functional.regions import count_linear_regions
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric

__all__ = ["LinearRegions"]


class LinearRegions(SiteMetric):
    """Mean number of activation regions on fixed segments between probe inputs.

    Args:
        num_segments: segments per measurement (probe rows 0–1, 2–3, …).
        method: ``"auto"``, ``"exact"`` or ``"sampled"``.
        num_samples: points per segment in sampled mode.
    """

    name = "linear_regions"
    produces = ("linear_regions", "linear_regions_per_unit_length", "linear_regions_per_neuron")
    needs = SiteNeeds(output=False)
    network_level: ClassVar[bool] = True
    site = "network"

    def __init__(self, num_segments: int = 8, method: str = "auto", num_samples: int = 1024) -> None:
        super().__init__(None)
        if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
            raise bad_argument("LinearRegions(num_segments=...)", num_segments, "an int >= 1")
        if method not in ("auto", "exact", "sampled"):
            raise bad_argument("LinearRegions(method=...)", method, "'auto', 'exact' or 'sampled'")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise bad_argument("LinearRegions(num_samples=...)", num_samples, "an int >= 2")
        self.num_segments, self.method, self.num_samples = num_segments, method, num_samples
        self.resolved_method: str | None = None if method == "auto" else method

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:  # pragma: no cover - network-level metric
        raise NotImplementedError("LinearRegions is computed from the model: use compute_network")

    def compute_network(self, model: nn.Module, probe_inputs: Tensor) -> dict[str, Tensor]:
        """Values for the whole network from the first ``2·num_segments`` probe inputs."""
        pairs = min(self.num_segments, probe_inputs.shape[0] // 2)
        if pairs < 1:
            nan = torch.tensor(float("nan"), dtype=torch.float64)
            return {name: nan for name in self.produces}
        x0, x1 = probe_inputs[0 : 2 * pairs : 2], probe_inputs[1 : 2 * pairs : 2]
        if self.resolved_method is None:
            try:
                result = count_linear_regions(model, x0, x1, method="exact")
                self.resolved_method = "exact"
            except (ValueError, RuntimeError):
                # A smooth or functional non-linearity: sampling is the only option for this model.
                self.resolved_method = "sampled"
                result = count_linear_regions(model, x0, x1, method="sampled", num_samples=self.num_samples)
        else:
            result = count_linear_regions(model, x0, x1, method=self.resolved_method, num_samples=self.num_samples)
        return {
            "linear_regions": result.counts.to(torch.float64).mean(),
            "linear_regions_per_unit_length": result.per_unit_length.to(torch.float64).mean(),
            "linear_regions_per_neuron": result.per_neuron.to(torch.float64).mean(),
        }

    def __repr__(self) -> str:
        return f"LinearRegions(num_segments={self.num_segments}, method={self.method!r}, num_samples={self.num_samples})"
