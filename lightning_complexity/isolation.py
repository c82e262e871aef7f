"""Running the user's code for a measurement without leaving a trace in the training it watches.

The monitor's own pass (:mod:`lightning_complexity.probe_step`) calls the user's
``validation_step`` (or another step) outside the trainer's loops. Everything that call could
change is forked or restored here, so training with the monitor on stays bit-identical to training
without it:

* every random generator it can touch: torch's CPU generator and every CUDA device's, numpy's
  global generator and Python's ``random`` (a VAE's ``randn_like`` in eval mode, a dataset that
  augments with ``np.random``);
* module modes (eval inside, each module's own flag restored after) and ``no_grad``;
* ``self.log``/``self.log_dict`` are muted (the loop's metric collections never see the pass);
* torchmetrics states inside the module (``self.val_acc(preds, y)`` in a step) and the module's own
  list, dict and set attributes (the ``self.validation_step_outputs.append(...)`` pattern) are
  restored to what they held before.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    >>> _ = torch.manual_seed(0)
    >>> with isolated(model):
    ...     _ = model(torch.randn(4, 2))      # draws from the global generator
    >>> after = torch.rand(1)
    >>> _ = torch.manual_seed(0)
    >>> bool(after == torch.rand(1)), model.training
    (True, True)
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_complexity.modes import evaluation_mode

__all__ = ["forked_rngs", "isolated", "muted_logging", "preserved_state"]

_CONTAINERS = (list, dict, set)


@contextlib.contextmanager
def forked_rngs() -> Iterator[None]:
    """Every global random generator (torch CPU, every CUDA device, numpy, ``random``) is as it was after the block."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextlib.contextmanager
def muted_logging(module: nn.Module) -> Iterator[None]:
    """``module.log`` and ``module.log_dict`` do nothing inside the block."""
    names = [name for name in ("log", "log_dict") if hasattr(module, name)]
    shadowed = {name: module.__dict__[name] for name in names if name in module.__dict__}
    for name in names:
        object.__setattr__(module, name, _ignore)
    try:
        yield
    finally:
        for name in names:
            if name in shadowed:
                object.__setattr__(module, name, shadowed[name])
            else:
                module.__dict__.pop(name, None)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def _metric_states(module: nn.Module) -> list[tuple[Any, dict[str, Any]]]:
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover - torchmetrics is a dependency
        return []
    saved = []
    for metric in module.modules():
        if isinstance(metric, Metric):
            names = [*metric._defaults, "_update_count", "_computed", "_forward_cache", "_is_synced", "_cache"]
            saved.append((metric, {name: _clone(getattr(metric, name)) for name in names if hasattr(metric, name)}))
    return saved


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_clone(item) for item in value]
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    return copy.copy(value)


@contextlib.contextmanager
def preserved_state(module: nn.Module) -> Iterator[None]:
    """torchmetrics states and the module's list/dict/set attributes are restored after the block."""
    metrics = _metric_states(module)
    containers = {name: (value, copy.copy(value)) for name, value in vars(module).items() if type(value) in _CONTAINERS}
    try:
        yield
    finally:
        for metric, state in metrics:
            for name, value in state.items():
                setattr(metric, name, value)
        for name, (original, snapshot) in containers.items():
            # Restore in place: the user's code may hold a reference to the same list.
            original.clear()
            original.update(snapshot) if not isinstance(original, list) else original.extend(snapshot)
            if vars(module).get(name) is not original:
                object.__setattr__(module, name, original)


@contextlib.contextmanager
def isolated(module: nn.Module) -> Iterator[None]:
    """All of the above: forked RNGs, eval mode under ``no_grad``, muted logging, preserved state."""
    with forked_rngs(), evaluation_mode(module), muted_logging(module), preserved_state(module):
        yield
