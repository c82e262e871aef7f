"""torchmetrics wrapper of the affinity score, for use outside Lightning's Trainer.

Feed the input and output of one activation batch by batch; ``compute()`` returns ρ_aff of
everything seen (SPEC §1). The exact score needs the samples themselves, so ``ot="exact"`` and
``ot="sinkhorn"`` keep the first ``max_samples`` pairs; ``ot="paired"`` needs only sums
(:func:`~lightning_complexity.functional.affinity.paired_moments`), so it keeps every sample at a
fixed ``O(d²)`` memory and reduces across processes by summation.

Example:
    >>> import torch
    >>> metric = AffinityScore()
    >>> g = torch.Generator().manual_seed(0)
    >>> for _ in range(4):
    ...     x = torch.randn(256, 16, generator=g)
    ...     metric.update(x, torch.relu(x))
    >>> 0.55 < metric.compute().item() < 0.7
    True
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_complexity.functional.affinity import (
    JITTER_OPTIONS,
    OT_OPTIONS,
    SHRINKAGE_OPTIONS,
    affinity_score,
    affinity_score_from_moments,
    paired_moments,
)

__all__ = ["AffinityScore"]

_MOMENT_SHAPES = {  # state name → shape in units of d ("" = scalar)
    "count": "",
    "sum_x": "d",
    "sum_y": "d",
    "outer_x": "dd",
    "outer_y": "dd",
    "cross": "dd",
    "sqnorm_weighted_x": "d",
    "sqnorm_weighted_y": "d",
    "quartic_x": "",
    "quartic_y": "",
}


def _zeros(shape_code: str, num_features: int) -> Tensor:
    return torch.zeros((num_features,) * len(shape_code), dtype=torch.float64)


class AffinityScore(Metric):
    """Affinity score ρ_aff of an activation (1 = affine, lower = more non-linear).

    Args:
        shrinkage: ``"none"``, ``"ledoit_wolf"`` or ``"auto"`` (Ledoit–Wolf when n < 10·d), as in
            :func:`~lightning_complexity.functional.affinity.affinity_score`.
        ot: ``"exact"`` (default), ``"sinkhorn"`` or ``"paired"``.
        jitter: ``"relative"`` (default, scale-free) or ``"absolute"`` (the authors' code), as in
            :func:`~lightning_complexity.functional.affinity.affinity_score`.
        max_samples: for ``"exact"``/``"sinkhorn"``, the number of (input, output) pairs each
            process keeps (the first ones seen); later samples are ignored. Under DDP the score is
            computed on all processes' kept samples together. Unused by ``"paired"``, which
            streams every sample.
        num_features: width ``d`` of the activations. Optional; with ``ot="paired"`` it
            allocates the sum states up front, so that every process has states of the same
            shape even if one of them never sees a batch. Otherwise ``d`` is taken from the
            first batch.
        kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    Raises:
        ValueError: an option is not one of the accepted values; a batch is not ``(N, d)``, or
            ``x`` and ``y`` differ in shape, or ``d`` changes between batches.

    Example:
        >>> metric = AffinityScore(ot="paired", num_features=8)
        >>> x = torch.randn(1000, 8)
        >>> metric.update(x, 3.0 * x - 1.0)
        >>> round(metric.compute().item(), 4)
        1.0
    """

    is_differentiable = False
    higher_is_better = None  # neither: it describes the layer, it does not grade it
    full_state_update = False

    def __init__(
        self,
        shrinkage: str = "none",
        ot: str = "exact",
        jitter: str = "relative",
        max_samples: int = 2048,
        num_features: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if shrinkage not in SHRINKAGE_OPTIONS:
            raise ValueError(f"`shrinkage` must be one of {', '.join(map(repr, SHRINKAGE_OPTIONS))}, got {shrinkage!r}")
        if ot not in OT_OPTIONS:
            raise ValueError(f"`ot` must be one of {', '.join(map(repr, OT_OPTIONS))}, got {ot!r}")
        if jitter not in JITTER_OPTIONS:
            raise ValueError(f"`jitter` must be one of {', '.join(map(repr, JITTER_OPTIONS))}, got {jitter!r}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"`max_samples` must be an integer ≥ 2, got {max_samples!r}")
        if num_features is not None and (isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1):
            raise ValueError(f"`num_features` must be a positive integer or None, got {num_features!r}")
        self.shrinkage = shrinkage
        self.ot = ot
        self.jitter = jitter
        self.max_samples = max_samples
        self.num_features = num_features
        if ot == "paired":
            # Sums add across batches and ranks; without num_features they start empty and take
            # their shape from the first batch.
            for name, shape_code in _MOMENT_SHAPES.items():
                size = num_features if num_features is not None else 0
                default = _zeros(shape_code, size) if shape_code else torch.zeros((), dtype=torch.float64)
                self.add_state(name, default=default, dist_reduce_fx="sum")
        else:
            self.add_state("inputs", default=[], dist_reduce_fx="cat")
            self.add_state("outputs", default=[], dist_reduce_fx="cat")

    def _features_seen(self) -> int | None:
        if self.ot == "paired":
            return self.sum_x.shape[0] if self.sum_x.numel() else self.num_features
        return self.inputs[0].shape[-1] if self.inputs else self.num_features

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add a batch: ``x`` the activation's inputs ``(N, d)``, ``y`` its outputs ``(N, d)``."""
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"`x` and `y` must be torch.Tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.ndim != 2 or x.shape != y.shape:
            raise ValueError(
                "`x` and `y` must both have shape (N, d) (a batch of activation inputs and outputs), "
                f"got x: {tuple(x.shape)} and y: {tuple(y.shape)}"
            )
        seen = self._features_seen()
        if seen is not None and x.shape[1] != seen:
            raise ValueError(f"every batch must have d = {seen} features, got x: {tuple(x.shape)}")
        if self.ot == "paired":
            for name, value in paired_moments(x, y).items():
                current = getattr(self, name)
                setattr(self, name, value if current.shape != value.shape else current + value)
            return
        kept = sum(batch.shape[0] for batch in self.inputs)
        room = self.max_samples - kept
        if room <= 0:
            return
        self.inputs.append(x[:room].detach().to(torch.float64))
        self.outputs.append(y[:room].detach().to(torch.float64))

    def compute(self) -> Tensor:
        """ρ_aff of the samples (or sums) gathered so far; NaN if fewer than two samples."""
        if self.ot == "paired":
            if self.sum_x.numel() == 0:
                return torch.tensor(float("nan"), dtype=torch.float64, device=self.sum_x.device)
            moments = {name: getattr(self, name) for name in _MOMENT_SHAPES}
            return affinity_score_from_moments(moments, shrinkage=self.shrinkage, jitter=self.jitter)
        if isinstance(self.inputs, list) and not self.inputs:  # after a DDP sync it is one tensor
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
        return affinity_score(
            dim_zero_cat(self.inputs), dim_zero_cat(self.outputs), shrinkage=self.shrinkage, ot=self.ot, jitter=self.jitter
        )
