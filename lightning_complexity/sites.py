"""Which modules to watch: resolving ``layers=`` into dotted module names.

``layers`` may be ``None`` (every activation module: each module whose class lives in
``torch.nn.modules.activation``, except ``MultiheadAttention``), a glob on dotted module names
(``"features.*.relu"``), a module type or tuple of types, a callable ``(name, module) -> bool``, or a
list mixing these (a module is selected when any entry selects it).

Example:
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.Tanh())
    >>> select_modules(model, None)
    ['1', '3']
    >>> select_modules(model, nn.Linear)
    ['0', '2']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Union

from torch import nn

from lightning_complexity.errors import bad_argument

__all__ = ["LayerSpec", "describe_available", "is_activation", "select_modules", "validate_layer_spec"]

LayerPredicate = Callable[[str, nn.Module], bool]
LayerSpec = Union[None, str, type, tuple, LayerPredicate, Sequence[Union[str, type, LayerPredicate]]]

_ACCEPTED = "None, a glob on dotted module names, a module type, a callable (name, module) -> bool, or a list of these"


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an activation in the sense of SPEC §1 (``torch.nn.modules.activation``)."""
    return type(module).__module__ == "torch.nn.modules.activation" and not isinstance(module, nn.MultiheadAttention)


def _entries(layers: LayerSpec) -> list:
    if isinstance(layers, (list, tuple)):
        return list(layers)
    return [layers]


def validate_layer_spec(layers: LayerSpec, argument: str = "layers") -> None:
    """Raise ``MisconfigurationException`` when ``layers`` has a form we do not accept."""
    if layers is None:
        return
    entries = _entries(layers)
    if not entries:
        raise bad_argument(argument, layers, _ACCEPTED + " (an empty list selects nothing)")
    for entry in entries:
        is_type = isinstance(entry, type) and issubclass(entry, nn.Module)
        if not (isinstance(entry, str) or is_type or (callable(entry) and not isinstance(entry, type))):
            raise bad_argument(argument, layers, _ACCEPTED)


def select_modules(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Dotted names of the modules of ``model`` that ``layers`` selects, in registration order."""
    validate_layer_spec(layers)
    selected = []
    for name, module in model.named_modules():
        if name == "" and layers is None:
            continue
        if layers is None:
            if is_activation(module):
                selected.append(name)
        elif any(_matches(entry, name, module) for entry in _entries(layers)):
            selected.append(name)
    return selected


def _matches(entry: str | type | LayerPredicate, name: str, module: nn.Module) -> bool:
    if isinstance(entry, str):
        return fnmatch.fnmatchcase(name, entry)
    if isinstance(entry, type):
        return isinstance(module, entry)
    return bool(entry(name, module))


def describe_available(model: nn.Module, limit: int = 60) -> str:
    """A short listing of module names and types, for the error when nothing matches."""
    names = [f"{name} ({type(module).__name__})" for name, module in model.named_modules() if name]
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
