"""TensorBoard extras: hierarchical tags and one custom-scalars layout.

Scalars reach every logger through ``log_metrics`` under ``complexity/<metric>/<site>``. For
TensorBoard we add one custom-scalars layout with a chart per metric overlaying all its sites
(``add_scalars`` would instead create one run per tag). Figures (heatmaps, log-log fits) go through
``SummaryWriter.add_figure``.

Names are made safe here, where tags are built, not in the history: a lone surrogate in a module
name (the Python literal ``"gelu\\udcff"``) cannot be encoded as UTF-8 by TensorBoard's protobufs
nor by Lightning's ``CSVLogger``, so :func:`scalar_tag` writes it as its backslash escape (the
literal ``"gelu\\\\udcff"``, see :func:`lightning_complexity.safe_names.printable`); every other
name is used as it is. A history read back from TensorBoard therefore holds the escaped form of
such a name.

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

from lightning_complexity.safe_names import printable

__all__ = [
    "EPOCH_TAG",
    "FIGURE_PREFIX",
    "POWERLAW_PREFIX",
    "PREFIX",
    "SITES_TAG",
    "SUMMARY_CHARTS",
    "custom_scalars_layout",
    "powerlaw_tag",
    "scalar_tag",
    "split_scalar_tag",
    "tensorboard_writers",
]

PREFIX = "complexity"
POWERLAW_PREFIX = "powerlaw"
FIGURE_PREFIX = "complexity_figures"
#: completed epochs at each measurement step, so a history can be rebuilt from TensorBoard alone.
EPOCH_TAG = "complexity_meta/epoch"
#: text (JSON) with each site's module, type, kind and depth, as in the checkpoint state's "sites".
SITES_TAG = "complexity_meta/sites"


def scalar_tag(metric: str, site: str) -> str:
    """The hierarchical tag of one curve, safe for every logger (lone surrogates escaped).

    The site is the tag's last part: a ``/`` in it is written ``%2F`` (and ``%`` as ``%25``), so
    that :func:`split_scalar_tag` tells it apart from a ``/`` in the metric (``val/loss``).

    Example:
        >>> scalar_tag("affinity", "gelu\\udcff"), scalar_tag("val/loss", "trainer")
        ('complexity/affinity/gelu\\\\udcff', 'complexity/val/loss/trainer')
    """
    return f"{PREFIX}/{printable(metric)}/{_quote_site(printable(site))}"


def _quote_site(site: str) -> str:
    return site.replace("%", "%25").replace("/", "%2F")


def _unquote_site(site: str) -> str:
    return site.replace("%2F", "/").replace("%25", "%")


def powerlaw_tag(metric: str, site: str, field: str) -> str:
    """The tag of one power-law fit value (``exponent``, ``r2``, ...), safe like :func:`scalar_tag`.

    Example:
        >>> powerlaw_tag("affinity", "relu", "exponent")
        'powerlaw/affinity/relu/exponent'
    """
    return f"{POWERLAW_PREFIX}/{printable(metric)}/{_quote_site(printable(site))}/{field}"


def split_scalar_tag(tag: str) -> tuple[str, str] | None:
    """``(metric, site)`` of a :func:`scalar_tag`, or None for another tag.

    The site is the last part (its ``/`` were written ``%2F``), while the metric may hold ``/`` (a
    trainer key such as ``val/loss`` at site ``trainer``).

    Example:
        >>> split_scalar_tag("complexity/val/loss/trainer"), split_scalar_tag("loss")
        (('val/loss', 'trainer'), None)
    """
    if not tag.startswith(PREFIX + "/"):
        return None
    metric, slash, site = tag[len(PREFIX) + 1 :].rpartition("/")
    return (metric, _unquote_site(site)) if slash and metric and site else None


#: summary metrics whose statistics live on different scales: one custom-scalars chart per group
#: (the affinity signature's std is about 0.1 while max / mean is about 1.2).
SUMMARY_CHARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "affinity_signature": (("mean", "min", "max"), ("std",), ("max_over_mean",)),
    "betti_depth": (("decay_rate",), ("normalised_area",)),
}


def custom_scalars_layout(sites_by_metric: dict[str, Iterable[str]]) -> dict[str, dict[str, list]]:
    """One category, one multiline chart per metric listing the tags of its sites.

    A summary metric (:data:`SUMMARY_CHARTS`) gets one chart per group of statistics of one scale
    (``affinity_signature: mean, min, max``, ``affinity_signature: std``, ...); a statistic of no
    group gets a chart of its own.

    Example:
        >>> charts = custom_scalars_layout({"affinity_signature": ["mean", "std", "min", "max", "max_over_mean"]})["complexity"]
        >>> list(charts)
        ['affinity_signature: mean, min, max', 'affinity_signature: std', 'affinity_signature: max_over_mean']
    """
    charts: dict[str, list] = {}
    for metric, sites in sites_by_metric.items():
        sites = list(sites)
        groups = [[s for s in group if s in sites] for group in SUMMARY_CHARTS.get(metric, ())]
        grouped = {s for group in groups for s in group}
        groups = [group for group in groups if group] + [[s] for s in sites if s not in grouped and metric in SUMMARY_CHARTS]
        if metric not in SUMMARY_CHARTS:
            charts[printable(metric)] = ["Multiline", [scalar_tag(metric, site) for site in sites]]
            continue
        for group in groups:
            charts[f"{printable(metric)}: {', '.join(printable(s) for s in group)}"] = ["Multiline", [scalar_tag(metric, site) for site in group]]
    return {PREFIX: charts}


def tensorboard_writers(loggers: Iterable[Any]) -> list[Any]:
    """The ``SummaryWriter`` of every attached TensorBoard logger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]
