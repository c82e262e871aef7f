"""torchmetrics classes over the functional core, for use outside Lightning's Trainer.

Each keeps its state with ``add_state(..., dist_reduce_fx=...)``, so ``compute`` after DDP
synchronisation covers every process's samples.

Example:
    >>> import torch
    >>> from lightning_complexity.metrics import AffinityScore
    >>> metric = AffinityScore()
    >>> x = torch.randn(512, 8, dtype=torch.float64)
    >>> metric.update(x, 2.0 * x + 1.0)
    >>> round(float(metric.compute()), 5)
    1.0
"""

from lightning_complexity.metrics.affinity import AffinityScore
from lightning_complexity.metrics.dimension import EffectiveDimension, ParticipationRatio

__all__ = ["AffinityScore", "EffectiveDimension", "ParticipationRatio"]
