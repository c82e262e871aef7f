"""Which modules to watch: resolving ``layers=`` into dotted module names.

``layers`` may be

* ``None`` (default): every *activation*, found by the rule of :func:`is_activation`, plus the
  functional activations (``F.relu``, ``torch.tanh``, …) that modules call (see
  :mod:`lightning_complexity.functional_capture`);
* a glob on dotted names (``"features.*.relu"``); it also matches functional sites
  (``"*.relu()"``);
* a module type or tuple of types (subclasses count); a string that is an importable class path
  (``"torch.nn.ReLU"``, ``"transformers.activations.GELUActivation"``, as LightningCLI writes it in
  YAML) is that type: a dotted path of identifiers whose module part imports and whose last part
  names an ``nn.Module`` subclass; any other string is a glob;
* a callable ``(name, module) -> bool``;
* a list mixing these (a module is selected when any entry selects it).

Names are the model's dotted module names with the wrappers left out: ``torch.compile``'s
``_orig_mod`` and the ``module`` of ``DataParallel``/``DistributedDataParallel``, so a site is called
the same with and without them.

Example:
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.Tanh())
    >>> select_modules(model, None)
    ['1', '3']
    >>> select_modules(model, "torch.nn.Linear")
    ['0', '2']
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Sequence
from typing import Union

from torch import nn

from lightning_complexity.errors import bad_argument

__all__ = [
    "ACTIVATION_NAME_TOKENS",
    "LayerSpec",
    "admits_functional",
    "describe_available",
    "is_activation",
    "named_modules",
    "resolve_layer_spec",
    "select_modules",
    "validate_layer_spec",
]

LayerPredicate = Callable[[str, nn.Module], bool]
LayerSpec = Union[None, str, type, tuple, LayerPredicate, Sequence[Union[str, type, LayerPredicate]]]

_ACCEPTED = (
    "None, a glob on dotted module names, a module type or its class path ('torch.nn.ReLU'), "
    "a callable (name, module) -> bool, or a list of these"
)

#: Lower-case pieces of class names that mark a parameter-free leaf module as an activation
#: (HuggingFace's ``GELUActivation``/``NewGELUActivation``, timm's ``Swish``/``Mish``, a user's
#: ``MyReLU``). A class name that also contains one of ``_NOT_ACTIVATION`` is not one.
ACTIVATION_NAME_TOKENS = (
    "activation", "relu", "gelu", "silu", "swish", "mish", "tanh", "sigmoid", "softplus", "softsign",
    "elu", "hardswish", "hardsigmoid", "hardtanh", "snake", "squareplus", "sine",
)
_NOT_ACTIVATION = ("norm", "dropout", "pool", "attention", "embed", "loss", "conv", "linear", "block", "layer")
_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _torch_activation_types() -> tuple[type, ...]:
    from torch.nn.modules import activation

    types = [getattr(activation, name) for name in dir(activation)]
    return tuple(
        t for t in types
        if isinstance(t, type) and issubclass(t, nn.Module) and t.__module__ == activation.__name__ and t is not nn.MultiheadAttention
    )


_TORCH_ACTIVATIONS = _torch_activation_types()


def _is_metric(module: nn.Module) -> bool:
    # torchmetrics objects are modules but measure the model; they are never sites.
    return any(cls.__module__.startswith("torchmetrics") and cls.__name__ == "Metric" for cls in type(module).__mro__)


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an activation site by default.

    The rule, in order:

    1. an instance of a class of ``torch.nn.modules.activation`` (``ReLU``, ``GELU``, ``SiLU``,
       ``Softmax``, …; subclasses such as ``class MyReLU(nn.ReLU)`` count), except
       ``MultiheadAttention``;
    2. otherwise a *parameter-free leaf* module (no children, no parameters) whose class name,
       lower-cased, contains one of :data:`ACTIVATION_NAME_TOKENS` and none of ``norm``,
       ``dropout``, ``pool``, ``attention``, ``embed``, ``loss``, ``conv``, ``linear``, ``block``,
       ``layer``: HuggingFace's ``GELUActivation``, ``NewGELUActivation``, ``QuickGELUActivation``,
       ``SiLUActivation``, timm's ``Swish``, ``Mish``, ``GELUTanh``, a user's ``Swish``.

    Example:
        >>> import torch.nn as nn
        >>> class Swish(nn.Module):
        ...     def forward(self, x):
        ...         return x * x.sigmoid()
        >>> is_activation(nn.GELU()), is_activation(Swish()), is_activation(nn.LayerNorm(4))
        (True, True, False)
    """
    if isinstance(module, _TORCH_ACTIVATIONS):
        return True
    if isinstance(module, nn.MultiheadAttention) or _is_metric(module):
        return False
    if next(module.children(), None) is not None or next(module.parameters(recurse=False), None) is not None:
        return False
    name = type(module).__name__.lower()
    return any(token in name for token in ACTIVATION_NAME_TOKENS) and not any(word in name for word in _NOT_ACTIVATION)


def named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` pairs of ``model`` with wrapper segments left out of the names.

    ``torch.compile``'s ``OptimizedModule`` keeps the model as ``_orig_mod`` and the data-parallel
    wrappers as ``module``; both segments are dropped, and the wrappers themselves are not listed,
    so names are the same with and without them. torchmetrics objects and everything under them
    are left out (they are not part of the network).
    """
    wrappers = _wrapper_types()
    skip_prefixes: list[str] = []
    renamed: dict[str, str] = {"": ""}
    result = []
    for name, module in model.named_modules(remove_duplicate=True):
        if any(name == p or name.startswith(p + ".") for p in skip_prefixes):
            continue
        if name and _is_metric(module):
            skip_prefixes.append(name)
            continue
        parent, _, leaf = name.rpartition(".")
        shown_parent = renamed.get(parent, parent)
        parent_module = model.get_submodule(parent) if name else None
        if parent_module is not None and isinstance(parent_module, wrappers) and leaf in ("_orig_mod", "module"):
            shown = shown_parent  # the wrapped module takes its wrapper's name
        else:
            shown = f"{shown_parent}.{leaf}" if shown_parent else leaf
        renamed[name] = shown
        if isinstance(module, wrappers):
            continue
        result.append((shown, module))
    return result


def _wrapper_types() -> tuple[type, ...]:
    types: list[type] = [nn.DataParallel, nn.parallel.DistributedDataParallel]
    try:
        from torch._dynamo.eval_frame import OptimizedModule

        types.append(OptimizedModule)
    except ImportError:  # pragma: no cover - very old torch
        pass
    return tuple(types)


def _entries(layers: LayerSpec) -> list:
    if isinstance(layers, (list, tuple)):
        return list(layers)
    return [layers]


def _class_from_path(text: str) -> type | None:
    """The ``nn.Module`` subclass a dotted class path names, or None if ``text`` is not one."""
    if not _CLASS_PATH.match(text):
        return None
    module_name, _, attribute = text.rpartition(".")
    if not attribute[:1].isupper():
        return None
    try:
        found = getattr(importlib.import_module(module_name), attribute, None)
    except Exception:  # noqa: BLE001 - not importable: the string is a glob on names
        return None
    return found if isinstance(found, type) and issubclass(found, nn.Module) else None


def resolve_layer_spec(layers: LayerSpec, argument: str = "layers") -> LayerSpec:
    """``layers`` with class-path strings turned into types; raises for forms we do not accept."""
    if layers is None:
        return None
    entries = _entries(layers)
    if not entries:
        raise bad_argument(argument, layers, _ACCEPTED + " (an empty list selects nothing)")
    resolved = []
    for entry in entries:
        if isinstance(entry, nn.Module):
            raise bad_argument(argument, layers, _ACCEPTED + f" (got a module instance {type(entry).__name__}(); pass its type or its name)")
        if isinstance(entry, str):
            resolved.append(_class_from_path(entry) or entry)
        elif isinstance(entry, type) and issubclass(entry, nn.Module):
            resolved.append(entry)
        elif callable(entry) and not isinstance(entry, type):
            resolved.append(entry)
        else:
            raise bad_argument(argument, layers, _ACCEPTED)
    if isinstance(layers, (list, tuple)):
        return resolved
    return resolved[0]


def validate_layer_spec(layers: LayerSpec, argument: str = "layers") -> None:
    """Raise ``MisconfigurationException`` when ``layers`` has a form we do not accept."""
    resolve_layer_spec(layers, argument)


def select_modules(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Names (see :func:`named_modules`) of the modules ``layers`` selects, in registration order."""
    layers = resolve_layer_spec(layers)
    selected = []
    for name, module in named_modules(model):
        if name == "" and layers is None:
            continue
        if layers is None:
            if is_activation(module):
                selected.append(name)
        elif any(_matches(entry, name, module) for entry in _entries(layers)):
            selected.append(name)
    return selected


def admits_functional(layers: LayerSpec, site: str) -> bool:
    """Whether a functional site (``"encoder.layers.0.relu()"``) is watched under ``layers``:
    always with ``None``, else when a glob entry matches its name."""
    if layers is None:
        return True
    return any(isinstance(entry, str) and fnmatch.fnmatchcase(site, entry) for entry in _entries(layers))


def _matches(entry: str | type | LayerPredicate, name: str, module: nn.Module) -> bool:
    if isinstance(entry, str):
        return fnmatch.fnmatchcase(name, entry)
    if isinstance(entry, type):
        return isinstance(module, entry)
    return bool(entry(name, module))


def describe_available(model: nn.Module, limit: int = 60) -> str:
    """A short listing of module names and types, for the error when nothing matches."""
    names = [f"{name} ({type(module).__name__})" for name, module in named_modules(model) if name]
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
