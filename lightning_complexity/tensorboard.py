"""TensorBoard extras: hierarchical tags and one custom-scalars layout.

Scalars reach every logger through ``log_metrics`` under ``complexity/<metric>/<site>``. For
TensorBoard we add one custom-scalars layout with a chart per metric overlaying all its sites
(``add_scalars`` would instead create one run per tag). Figures (heatmaps, log-log fits) go through
``SummaryWriter.add_figure``.

Example:
    >>> scalar_tag("affinity", "layer1.0.relu")
    'complexity/affinity/layer1.0.relu'
    >>> layout = custom_scalars_layout({"affinity": ["a", "b"]})
    >>> layout["complexity"]["affinity"]
    ['Multiline', ['complexity/affinity/a', 'complexity/affinity/b']]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["EPOCH_TAG", "FIGURE_PREFIX", "PREFIX", "custom_scalars_layout", "scalar_tag", "tensorboard_writers"]

PREFIX = "complexity"
FIGURE_PREFIX = "complexity_figures"
#: completed epochs at each measurement step, so a history can be rebuilt from TensorBoard alone.
EPOCH_TAG = "complexity_meta/epoch"


def scalar_tag(metric: str, site: str) -> str:
    """The hierarchical tag of one curve."""
    return f"{PREFIX}/{metric}/{site}"


def custom_scalars_layout(sites_by_metric: dict[str, Iterable[str]]) -> dict[str, dict[str, list]]:
    """One category, one multiline chart per metric listing the tags of its sites."""
    return {
        PREFIX: {metric: ["Multiline", [scalar_tag(metric, site) for site in sites]] for metric, sites in sites_by_metric.items()}
    }


def tensorboard_writers(loggers: Iterable[Any]) -> list[Any]:
    """The ``SummaryWriter`` of every attached TensorBoard logger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]
