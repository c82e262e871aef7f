"""Training context beside the curves: the trainer's logged scalars at each measurement.

Papers in this field put complexity next to loss and accuracy (the non-linearity signature against
accuracy). At every measurement the monitor records the scalars the user logged — what
``trainer.callback_metrics`` holds at that moment: at an epoch's measurement this epoch's
validation metrics and the latest training ones — as history rows at site ``trainer`` (metric =
the logged key, e.g. ``val_loss``). They are not logged again (the user's loggers have them).

``context_metrics`` selects them: ``True`` (all scalars), ``False``/``None`` (none), or a list of
keys or globs (``["val_*", "train_loss"]``).

Example:
    >>> import torch
    >>> context_values({"val_loss": torch.tensor(0.5), "val_acc": torch.tensor(0.75), "hist": torch.ones(3)}, True)
    {'val_loss': 0.5, 'val_acc': 0.75}
    >>> context_values({"val_loss": torch.tensor(0.5), "train_loss": 1.0}, ["train_*"])
    {'train_loss': 1.0}
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch

from lightning_complexity.errors import bad_argument

__all__ = ["CONTEXT_SITE", "check_context_metrics", "context_values"]

#: the site of the context rows in the history.
CONTEXT_SITE = "trainer"


def check_context_metrics(selection: Any) -> bool | list[str]:
    """Validate ``context_metrics=``: a bool, None, or a list of key globs."""
    if selection is None or isinstance(selection, bool):
        return bool(selection)
    if isinstance(selection, str):
        return [selection]
    if isinstance(selection, Sequence) and all(isinstance(key, str) for key in selection):
        return list(selection)
    raise bad_argument("context_metrics", selection, "True (every logged scalar), False/None, or a list of keys or globs")


def context_values(metrics: Mapping[str, Any], selection: bool | list[str]) -> dict[str, float]:
    """The selected scalar entries of ``metrics`` as floats, with one host transfer."""
    if not selection:
        return {}
    keys, tensors = [], []
    for key, value in metrics.items():
        if selection is not True and not any(fnmatch.fnmatchcase(key, pattern) for pattern in selection):
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            keys.append(key)
            tensors.append(value.detach().reshape(()).to(torch.float64))
        elif isinstance(value, Real) and not isinstance(value, bool):
            keys.append(key)
            tensors.append(torch.tensor(float(value), dtype=torch.float64))
    if not keys:
        return {}
    device = tensors[0].device  # stacked on one device: one host transfer for all of them
    return dict(zip(keys, torch.stack([t.to(device) for t in tensors]).cpu().tolist()))
