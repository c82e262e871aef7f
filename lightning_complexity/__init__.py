"""lightning_complexity: how non-linear, high-dimensional and complex each layer is, while it trains.

Example:
    >>> from lightning_complexity import ComplexityMonitor, MetricHistory
    >>> monitor = ComplexityMonitor(every_n_epochs=1)
    >>> isinstance(monitor.history, MetricHistory)
    True
"""

from lightning_complexity.callback import ComplexityMonitor
from lightning_complexity.history import MetricHistory, MetricRow
from lightning_complexity.layer_algebra import LayerAlgebra, layer_algebra
from lightning_complexity.powerlaw import PowerLawFit, fit_power_law

__all__ = ["ComplexityMonitor", "LayerAlgebra", "MetricHistory", "MetricRow", "PowerLawFit", "fit_power_law", "layer_algebra"]
__version__ = "0.1.0"
