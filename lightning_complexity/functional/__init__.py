"""Pure tensor functions behind every metric: torch tensors in, torch tensors out, on the input's device.

Inputs are samples ``(n, d)`` or a batch of sites ``(b, n, d)``; statistics run in float64.

Example:
    >>> import torch
    >>> from lightning_complexity.functional import effective_dimension
    >>> float(effective_dimension(torch.randn(4096, 4, dtype=torch.float64))) > 3.9
    True
"""

from lightning_complexity.functional.dimension import effective_dimension, participation_ratio

__all__ = ["effective_dimension", "participation_ratio"]
