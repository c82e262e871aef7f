"""Effective dimension, participation ratio and their ratio to the width, per site (SPEC §2).

Computed on each site's output (for an activation, the post-activation values), one stacked
``eigvalsh`` for every group of sites of equal width.

Example:
    >>> import torch
    >>> from lightning_complexity.site_metrics.base import SiteGroup
    >>> group = SiteGroup(["relu"], outputs=torch.randn(1, 4096, 16, dtype=torch.float64))
    >>> values = EffectiveDimension().compute(group)
    >>> sorted(values)
    ['effective_dimension', 'effective_dimension_ratio', 'participation_ratio']
"""

from __future__ import annotations

from torch import Tensor

from lightning_complexity.capture import SiteNeeds
from lightning_complexity.functional.dimension import (
    covariance_spectrum,
    effective_dimension_from_spectrum,
    participation_ratio_from_spectrum,
)
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric

__all__ = ["EffectiveDimension"]


class EffectiveDimension(SiteMetric):
    """``effective_dimension`` (exp of the spectral entropy), ``participation_ratio`` and
    ``effective_dimension_ratio`` (= effective dimension / width) of each site's output."""

    name = "effective_dimension"
    produces = ("effective_dimension", "participation_ratio", "effective_dimension_ratio")
    needs = SiteNeeds(output=True)

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        spectrum = covariance_spectrum(group.outputs)
        dimension = effective_dimension_from_spectrum(spectrum)
        return {
            "effective_dimension": dimension,
            "participation_ratio": participation_ratio_from_spectrum(spectrum),
            "effective_dimension_ratio": dimension / group.outputs.shape[-1],
        }
