"""torchmetrics classes for the effective dimension and participation ratio (SPEC §2).

The state is the streaming sums ``(n, Σx, Σxxᵀ)`` in float64, reduced across processes by
summation, so the result covers every sample seen by every rank, however the data was batched.

Example:
    >>> import torch
    >>> metric = EffectiveDimension()
    >>> for chunk in torch.randn(4096, 8, dtype=torch.float64).split(1000):
    ...     metric.update(chunk)
    >>> 7.9 < float(metric.compute()) <= 8.0
    True
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_complexity.functional.dimension import (
    effective_dimension_from_spectrum,
    participation_ratio_from_spectrum,
    spectrum_from_moments,
)

__all__ = ["EffectiveDimension", "ParticipationRatio"]


class _CovarianceSpectrumMetric(Metric):
    """Shared state: float64 streaming sums of ``(N, d)`` activation batches."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", default=torch.zeros(0, 0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, activations: Tensor) -> None:
        """Add a batch of samples ``(N, d)`` (conv maps: reduce them to ``(N, C)`` first)."""
        if activations.ndim != 2:
            raise ValueError(f"`activations` must have shape (N, d), got {tuple(activations.shape)}")
        x = activations.detach().to(torch.float64)
        if self.total.numel() == 0:
            self.total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        elif self.total.shape[0] != x.shape[1]:
            raise ValueError(f"`activations` width changed from {self.total.shape[0]} to {x.shape[1]}")
        self.count = self.count + x.shape[0]
        self.total = self.total + x.sum(dim=0)
        self.outer = self.outer + x.T @ x

    def _spectrum(self) -> Tensor:
        if self.total.numel() == 0 or float(self.count) < 2:
            return torch.full((1,), float("nan"), dtype=torch.float64, device=self.count.device)
        return spectrum_from_moments(self.count.reshape(1), self.total.unsqueeze(0), self.outer.unsqueeze(0))[0]


class EffectiveDimension(_CovarianceSpectrumMetric):
    """``exp(−Σ p ln p)`` of the normalised covariance spectrum of every sample seen."""

    def compute(self) -> Tensor:
        return effective_dimension_from_spectrum(self._spectrum())


class ParticipationRatio(_CovarianceSpectrumMetric):
    """``(Σλ)² / Σλ²`` of the covariance spectrum of every sample seen.

    Example:
        >>> metric = ParticipationRatio()
        >>> metric.update(torch.eye(3, dtype=torch.float64).repeat(10, 1))
        >>> round(float(metric.compute()), 6)
        2.0
    """

    def compute(self) -> Tensor:
        return participation_ratio_from_spectrum(self._spectrum())
