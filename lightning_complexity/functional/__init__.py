"""Pure tensor functions behind every metric: torch tensors in, torch tensors out, on the input's device.

Inputs are samples ``(n, d)`` or a batch of sites ``(b, n, d)``; statistics run in float64.

Example:
    >>> import torch
    >>> from lightning_complexity.functional import effective_dimension
    >>> float(effective_dimension(torch.randn(4096, 4, dtype=torch.float64))) > 3.9
    True
"""

from lightning_complexity.functional.affinity import affinity_score, signature_summary
from lightning_complexity.functional.dimension import effective_dimension, participation_ratio
from lightning_complexity.functional.entropic import EntropicComplexityResult, entropic_complexity
from lightning_complexity.functional.pattern_entropy import activation_pattern_entropy
from lightning_complexity.functional.regions import LinearRegionCount, count_linear_regions
from lightning_complexity.functional.topology import active_fraction, betti_depth_decay, betti_numbers

__all__ = [
    "EntropicComplexityResult",
    "LinearRegionCount",
    "activation_pattern_entropy",
    "active_fraction",
    "affinity_score",
    "betti_depth_decay",
    "betti_numbers",
    "count_linear_regions",
    "effective_dimension",
    "entropic_complexity",
    "participation_ratio",
    "signature_summary",
]
