"""Running a model in eval mode for a measurement and handing it back exactly as it came.

``model.train(was_training)`` would switch *every* submodule back to training, including ones the
user froze in eval mode (a frozen BatchNorm); so each module's own flag is restored.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2).eval())
    >>> with evaluation_mode(model):
    ...     model.training
    False
    >>> model.training, model[1].training
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["evaluation_mode"]


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``no_grad`` inside the block; every module's training flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
