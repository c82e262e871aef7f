"""lightning_complexity: how non-linear, high-dimensional and complex each layer is, while it trains.

Example:
    >>> from lightning_complexity import ComplexityMonitor, MetricHistory
    >>> monitor = ComplexityMonitor(every_n_epochs=1)
    >>> isinstance(monitor.history, MetricHistory)
    True
"""

from lightning_complexity.callback import ComplexityMonitor
from lightning_complexity.history import MetricHistory, MetricRow

__all__ = ["ComplexityMonitor", "MetricHistory", "MetricRow"]
__version__ = "0.1.0"
