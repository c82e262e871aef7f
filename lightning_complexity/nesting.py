"""The tensors inside a module's (possibly nested) output.

Example:
    >>> import torch
    >>> [t.shape for t in tensor_leaves((torch.zeros(2), {"a": [torch.ones(3)], "b": None}))]
    [torch.Size([2]), torch.Size([3])]
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["tensor_leaves"]


def tensor_leaves(value: Any) -> list[Tensor]:
    """Every tensor in ``value`` (a tensor, or dicts/lists/tuples of them), depth first, in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in tensor_leaves(item)]
    return []
