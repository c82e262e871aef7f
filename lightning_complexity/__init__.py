"""lightning_complexity: how non-linear, high-dimensional and complex each layer is, while it trains.

Example:
    >>> from lightning_complexity import ComplexityMonitor, MetricHistory
    >>> monitor = ComplexityMonitor(every_n_epochs=1)
    >>> isinstance(monitor.history, MetricHistory)
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_complexity.callback import ComplexityMonitor
    from lightning_complexity.history import MetricHistory, MetricRow
    from lightning_complexity.layer_algebra import LayerAlgebra, layer_algebra
    from lightning_complexity.powerlaw import PowerLawFit, fit_power_law, fit_power_laws

# The public names load on first use (PEP 562): the console's read path (``export``, ``report``,
# ``compare``) imports ``lightning_complexity.history`` and would otherwise pay seconds for
# Lightning and torch, which only the callback needs.
_PUBLIC = {
    "ComplexityMonitor": "lightning_complexity.callback",
    "LayerAlgebra": "lightning_complexity.layer_algebra",
    "MetricHistory": "lightning_complexity.history",
    "MetricRow": "lightning_complexity.history",
    "PowerLawFit": "lightning_complexity.powerlaw",
    "fit_power_law": "lightning_complexity.powerlaw",
    "fit_power_laws": "lightning_complexity.powerlaw",
    "layer_algebra": "lightning_complexity.layer_algebra",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_complexity' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
