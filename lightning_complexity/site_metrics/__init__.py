"""Metric families the monitor computes per site; pass instances or names in ``metrics=``.

Example:
    >>> from lightning_complexity.site_metrics import resolve_metrics
    >>> [m.name for m in resolve_metrics(None)]
    ['affinity', 'effective_dimension', 'activation_pattern_entropy']
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning_complexity.errors import bad_argument
from lightning_complexity.site_metrics.affinity import Affinity
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric
from lightning_complexity.site_metrics.dimension import EffectiveDimension
from lightning_complexity.site_metrics.entropic import EntropicComplexity
from lightning_complexity.site_metrics.pattern_entropy import PatternEntropy
from lightning_complexity.site_metrics.regions import LinearRegions
from lightning_complexity.site_metrics.topology import Betti

__all__ = ["DEFAULT_METRICS", "REGISTRY", "Affinity", "Betti", "EffectiveDimension", "EntropicComplexity", "LinearRegions", "PatternEntropy", "SiteGroup", "SiteMetric", "resolve_metrics"]

#: name accepted in ``metrics=`` → the class it builds with default arguments.
REGISTRY: dict[str, type[SiteMetric]] = {
    cls.name: cls for cls in (Affinity, EffectiveDimension, PatternEntropy, EntropicComplexity, Betti, LinearRegions)
}

#: what ``ComplexityMonitor(metrics=None)`` computes: cheap and informative.
DEFAULT_METRICS: tuple[str, ...] = ("affinity", "effective_dimension", "activation_pattern_entropy")


def _accepted() -> str:
    return f"None, a metric name from {sorted(REGISTRY)}, a SiteMetric instance, or a list of these"


def resolve_metrics(metrics: str | SiteMetric | Sequence[str | SiteMetric] | None) -> list[SiteMetric]:
    """Turn ``metrics=`` into metric objects, raising a clear error for anything unknown."""
    if metrics is None:
        metrics = DEFAULT_METRICS
    entries = [metrics] if isinstance(metrics, (str, SiteMetric)) else list(metrics) if isinstance(metrics, (list, tuple)) else None
    if not entries:
        raise bad_argument("metrics", metrics, _accepted())
    resolved: list[SiteMetric] = []
    for entry in entries:
        if isinstance(entry, SiteMetric):
            resolved.append(entry)
        elif isinstance(entry, str) and entry in REGISTRY:
            resolved.append(REGISTRY[entry]())
        else:
            raise bad_argument("metrics", entry, _accepted())
    for metric in resolved:
        bad = [name for name in metric.produces if "/" in name]
        if bad:  # tags are complexity/<metric>/<site>: a slash would make them ambiguous
            raise bad_argument("metrics", metric, f"metric names without '/' (got {bad})")
    names = [m.name for m in resolved]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise bad_argument("metrics", metrics, f"each metric at most once (repeated: {duplicated})")
    return resolved
