"""Functional activations as sites: ``F.relu``, ``F.gelu``, ``torch.tanh``, ``x.relu()``, … called by modules.

Many models never build an activation *module*: ``nn.TransformerEncoderLayer`` calls ``F.relu``,
research code writes ``F.gelu(self.fc(x))``. During a measurement pass (never during training)
a :class:`~torch.overrides.TorchFunctionMode` sees each call of the functions in
:data:`FUNCTIONAL_ACTIVATIONS`, finds the module whose code made the call (the innermost frame
whose ``self`` is a module of the model), and reports it as a site named
``<module>.<function>()`` — ``encoder.layers.0.relu()``; ``relu()`` for the model's own code —
with ``#k`` for the k-th extra call in one forward, like module sites. Calls made inside an
activation module (``nn.ReLU`` calls ``F.relu``) belong to that module's site and are not
repeated; calls inside torchmetrics objects are not the network's and are skipped.

While the mode is active, PyTorch's fused fast paths that would hide the activation
(``nn.TransformerEncoderLayer`` in eval mode) are off, because a torch-function mode makes them
step aside; the values are the same up to floating-point rounding. Code compiled with
``torch.compile`` runs no Python, so functional calls inside compiled regions are not seen.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from torch import nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(3, 4)
    ...     def forward(self, x):
    ...         return F.relu(self.fc(x))
    >>> net, calls = Net(), []
    >>> with FunctionalActivationMode(net, lambda site, x, call: calls.append((site, tuple(x.shape))) or None):
    ...     _ = net(torch.randn(2, 3))
    >>> calls
    [('relu()', (2, 4))]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lightning_complexity.sites import is_activation, named_modules

__all__ = ["FUNCTIONAL_ACTIVATIONS", "FunctionalActivationMode", "functional_site_name"]


def _activation_functions() -> dict[Any, str]:
    names = {
        F: ("relu", "relu_", "relu6", "elu", "elu_", "selu", "celu", "leaky_relu", "leaky_relu_", "gelu", "silu", "mish",
            "hardswish", "hardsigmoid", "hardtanh", "hardtanh_", "softplus", "softsign", "tanhshrink", "logsigmoid", "sigmoid", "tanh", "rrelu"),
        torch: ("relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "selu", "selu_", "celu", "celu_", "rrelu"),
        Tensor: ("relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_"),
    }
    found: dict[Any, str] = {}
    for owner, attributes in names.items():
        for attribute in attributes:
            function = getattr(owner, attribute, None)
            if function is not None:
                found.setdefault(function, attribute.rstrip("_"))
    return found


#: function → the name its sites carry (``relu_`` and ``relu`` are both ``relu``). Softmax is left
#: out on purpose: inside attention its "features" are key positions, whose mean is constant.
FUNCTIONAL_ACTIVATIONS: dict[Any, str] = _activation_functions()

#: Called for each functional activation call: ``(site base name, input, call) -> after`` where
#: ``after(output)`` (or None) receives the output once the function returned.
CallObserver = Callable[[str, Tensor, Callable[..., Any]], Callable[[Any], None] | None]


def functional_site_name(owner: str, function: str) -> str:
    """``"encoder.layers.0.relu()"``; ``"relu()"`` when the model's own code made the call.

    Example:
        >>> functional_site_name("block", "gelu"), functional_site_name("", "tanh")
        ('block.gelu()', 'tanh()')
    """
    return f"{owner}.{function}()" if owner else f"{function}()"


class FunctionalActivationMode(TorchFunctionMode):
    """Report every functional activation that a module of ``model`` calls to ``observe``.

    Args:
        model: the network; only calls made by its modules' code count.
        observe: a :data:`CallObserver`; it must only copy and reduce.
    """

    def __init__(self, model: nn.Module, observe: CallObserver) -> None:
        super().__init__()
        self._observe = observe
        self._names: dict[int, str] = {}
        self._skip: set[int] = set()
        for name, module in named_modules(model):
            self._names[id(module)] = name
            if name and is_activation(module):
                self._skip.add(id(module))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        function = FUNCTIONAL_ACTIVATIONS.get(func) if _hashable(func) else None
        if function is None or not args or not isinstance(args[0], Tensor) or not args[0].is_floating_point():
            return func(*args, **kwargs)
        owner = self._owner(sys._getframe(1))
        after = None if owner is None else self._observe(functional_site_name(owner, function), args[0], func)
        output = func(*args, **kwargs)
        if after is not None:
            after(output)
        return output

    def _owner(self, frame: Any) -> str | None:
        """The name of the module whose code is running, or None when the call is not the network's."""
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, nn.Module):
                key = id(candidate)
                if key not in self._names or key in self._skip:
                    return None  # a torchmetrics object, another model, or an activation module's own call
                # The model's own code counts wherever it runs: forward, or the step of a
                # LightningModule without forward that applies its layers itself.
                return self._names[key]
            frame = frame.f_back
        return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
