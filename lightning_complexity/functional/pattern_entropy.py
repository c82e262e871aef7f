"""Activation-pattern entropy: a cheap companion of the entropic complexity [project, SPEC §3].

For each unit ``j`` of an activation site, ``p_j = P(pre_j > 0)`` is the fraction of samples whose
pre-activation is positive. The pattern entropy is the mean over units of the binary entropy
``h(p) = −p ln p − (1 − p) ln(1 − p)`` in nats. It is ``ln 2`` when every unit is on for half of
the samples (a zero-bias ReLU layer on symmetric input) and 0 when every unit is always on or
always off, i.e. when a ReLU-like site acts linearly on the data.

Conventions: the input is the activation's *input* (pre-activation), ``(n, d)`` or batched
``(b, n, d)``; the result is a float64 scalar or ``(b,)`` on the input's device. A site with a
non-finite value, no samples or no units gets NaN (data problems never raise). A value exactly 0
counts as off.

Example:
    >>> import torch
    >>> pre = torch.tensor([[1.0, -1.0], [-2.0, 3.0]])  # each unit is on for half the samples
    >>> round(activation_pattern_entropy(pre).item(), 6)  # ln 2
    0.693147
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_complexity.functional.linalg import as_batched

__all__ = ["activation_pattern_entropy", "pattern_entropy_from_counts"]


def activation_pattern_entropy(pre: Tensor) -> Tensor:
    """Mean over units of the binary entropy (nats) of ``P(unit > 0)``.

    Args:
        pre: pre-activations, ``(n, d)`` or ``(b, n, d)``.

    Returns:
        A float64 scalar for ``(n, d)`` input, ``(b,)`` for ``(b, n, d)``.

    Raises:
        TypeError: ``pre`` is not a tensor.
        ValueError: ``pre`` is not 2-D or 3-D.

    Example:
        >>> import torch
        >>> pre = torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0]])
        >>> # unit 0 always on: h(1) = 0; unit 1 on for 1/4: h(1/4) = 0.562335
        >>> round(activation_pattern_entropy(pre).item(), 6)  # their mean
        0.281168
    """
    batched, added_batch = as_batched(pre, "pre")
    n, d = batched.shape[-2:]
    if n == 0 or d == 0:
        entropy = torch.full(batched.shape[:1], math.nan, dtype=torch.float64, device=batched.device)
    else:
        on = (batched > 0).to(torch.float64).mean(dim=-2)
        # xlogy gives 0·ln 0 = 0, so always-on and always-off units score exactly 0.
        per_unit = 0.0 - torch.special.xlogy(on, on) - torch.special.xlogy(1.0 - on, 1.0 - on)
        entropy = per_unit.mean(dim=-1)
        finite = torch.isfinite(batched).flatten(1).all(dim=1)
        entropy = torch.where(finite, entropy, math.nan)
    return entropy[0] if added_batch else entropy


def pattern_entropy_from_counts(on_counts: Tensor, samples: Tensor | int) -> Tensor:
    """The pattern entropy from streaming gate counts: ``on_counts[..., j]`` of ``samples``
    samples had unit ``j`` positive.

    This is how the monitor measures it (the capture hooks count gates per unit, a conv unit being
    a channel at a position, so no sample is kept); it equals :func:`activation_pattern_entropy`
    of the raw pre-activations.

    Args:
        on_counts: ``(units,)`` or ``(b, units)`` counts.
        samples: the number of samples counted, an int or ``(b,)``.

    Example:
        >>> import torch
        >>> round(pattern_entropy_from_counts(torch.tensor([4, 1]), 4).item(), 6)  # as above
        0.281168
    """
    counts = on_counts.to(torch.float64)
    total = torch.as_tensor(samples, dtype=torch.float64, device=counts.device)
    if counts.ndim == 2:
        total = total.reshape(-1, 1)
    on = counts / total
    per_unit = 0.0 - torch.special.xlogy(on, on) - torch.special.xlogy(1.0 - on, 1.0 - on)
    entropy = per_unit.mean(dim=-1) if counts.shape[-1] else torch.full(counts.shape[:-1], math.nan, dtype=torch.float64, device=counts.device)
    return torch.where(total.reshape(entropy.shape) > 0, entropy, math.nan)
