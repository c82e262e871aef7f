"""What a run's history holds: real sites (with module type and depth), summaries, training context.

A history mixes four kinds of rows, and a report must not count them alike:

* **sites** — one module (or functional call) measured: ``features.relu1`` at ``affinity``. The
  monitor's checkpoint state (``"sites"``) and TensorBoard (``complexity_meta/sites``) say for each
  its dotted module name, class (``ReLU``), kind (``module`` or ``functional``) and depth (its index
  in forward order). Without that metadata, types are unknown and depth is the order of first
  appearance;
* **summaries** across sites — ``affinity_signature`` at ``mean, std, min, max, max_over_mean``,
  ``betti_depth`` at ``decay_rate, normalised_area`` — and network-level metrics at site
  ``network`` (``linear_regions``);
* **training context** — the trainer's logged scalars at each measurement, at site ``trainer``
  (``val_loss``, ``val_acc``, ...);
* **bookkeeping** — ``samples`` (how many samples each site's values rest on).

**The main validation metric** (what the complexity curves are plotted against) is, among the
context keys: the one named by the caller (``--against``), else the first key that starts with
``val`` and contains ``acc`` (``val_acc``, ``val/accuracy``), else ``val_loss``, else the first key
that starts with ``val`` and contains ``loss``, else the first key that starts with ``val``; with
no such key there is none (the report says so).

Example:
    >>> from lightning_complexity import MetricHistory
    >>> h = MetricHistory([(0, 0, "affinity", "relu", 0.6), (0, 0, "affinity_signature", "mean", 0.6),
    ...                    (9, 1, "val_loss", "trainer", 0.4), (9, 1, "val_acc", "trainer", 0.9)])
    >>> contents = run_contents(h, {"relu": {"module": "relu", "type": "ReLU", "kind": "module", "depth": 0}})
    >>> [contents.label(s.name) for s in contents.sites], contents.summary_metrics, contents.context_keys
    (['relu (ReLU)'], ['affinity_signature'], ['val_loss', 'val_acc'])
    >>> main_validation_metric(contents.context_keys)
    'val_acc'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lightning_complexity.history import BOOKKEEPING_METRICS

if TYPE_CHECKING:
    from lightning_complexity.history import MetricHistory

__all__ = [
    "CONTEXT_SITE",
    "FLAG_METRICS",
    "METADATA_METRICS",
    "NETWORK_SITE",
    "SUMMARY_METRICS",
    "RunContents",
    "SiteInfo",
    "main_validation_metric",
    "parse_site_metadata",
    "run_contents",
]

#: site of the trainer's logged scalars (training context).
CONTEXT_SITE = "trainer"
#: site of network-level metrics (linear regions).
NETWORK_SITE = "network"
#: metrics whose "sites" are statistics across the real sites, not sites.
SUMMARY_METRICS = ("affinity_signature", "betti_depth")
#: bookkeeping metrics: not curves of interest (not fitted), shown in the sites table.
METADATA_METRICS = BOOKKEEPING_METRICS
#: 0/1 markers of another metric's points (``entropic_complexity_censored``: C_ε is only a lower
#: bound there): drawn as hollow points of that metric, never as a curve, a figure or a fit.
FLAG_METRICS = ("entropic_complexity_censored",)
_CALL_SUFFIX = re.compile(r"#\d+$")


@dataclass(frozen=True)
class SiteInfo:
    """One measured site: its name in the history and what the monitor knew about it.

    Attributes:
        name: the site as in the history (``features.relu1``, ``layer1.0.relu#1``).
        module: the dotted module name (None when unknown).
        type: the module's class name (``ReLU``; None when unknown).
        kind: ``"module"`` or ``"functional"`` (None when unknown).
        depth: index in forward order (from the metadata, else the order of first appearance).
    """

    name: str
    module: str | None = None
    type: str | None = None
    kind: str | None = None
    depth: int = 0

    @property
    def label(self) -> str:
        """``"features.relu1 (ReLU)"``, or the bare name when the type is unknown."""
        if not self.type:
            return self.name
        return f"{self.name} ({self.type}, functional)" if self.kind == "functional" else f"{self.name} ({self.type})"

    @property
    def block(self) -> str:
        """The top-level module the site belongs to (``features`` for ``features.relu1#1``)."""
        return _CALL_SUFFIX.sub("", self.module or self.name).split(".", 1)[0]


def parse_site_metadata(raw: Any) -> dict[str, SiteInfo]:
    """Site metadata as the monitor stores it (``{site: {"module", "type", "kind", "depth"}}``), checked.

    Entries that are not of that shape are left out rather than trusted: the metadata only labels
    the report, it never changes a value.

    Example:
        >>> parse_site_metadata({"fc.act": {"module": "fc.act", "type": "GELU", "kind": "module", "depth": 3}, "bad": 7})
        {'fc.act': SiteInfo(name='fc.act', module='fc.act', type='GELU', kind='module', depth=3)}
    """
    if not isinstance(raw, Mapping):
        return {}
    parsed = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not isinstance(entry, Mapping):
            continue
        depth = entry.get("depth")
        text = {key: entry.get(key) if isinstance(entry.get(key), str) else None for key in ("module", "type", "kind")}
        parsed[name] = SiteInfo(name=name, depth=depth if isinstance(depth, int) and not isinstance(depth, bool) else 10**9, **text)
    return parsed


@dataclass
class RunContents:
    """The roles of a history's rows (see the module docstring).

    Attributes:
        sites: the real sites, in forward order (depth).
        summary_metrics: metrics whose sites are statistics across sites.
        network_metrics: metrics at site ``network``.
        context_keys: the trainer's logged keys (rows at site ``trainer``), in order of appearance.
        site_metrics: metrics measured at real sites, in order of appearance.
        types_known: whether module types came with the run (metadata present).
    """

    sites: list[SiteInfo]
    summary_metrics: list[str]
    network_metrics: list[str]
    context_keys: list[str]
    site_metrics: list[str]
    types_known: bool
    _by_name: dict[str, SiteInfo] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {site.name: site for site in self.sites}

    def info(self, site: str) -> SiteInfo | None:
        """The :class:`SiteInfo` of a real site, None for a summary, network or trainer site."""
        return self._by_name.get(site)

    def label(self, site: str) -> str:
        """A site with its module type when known: ``"features.1 (ReLU)"``."""
        info = self._by_name.get(site)
        return info.label if info is not None else site

    def order(self, sites: Iterable[str]) -> list[str]:
        """``sites`` in forward order: real sites by depth first, then the others as given."""
        sites = list(dict.fromkeys(sites))
        real = sorted((s for s in sites if s in self._by_name), key=lambda s: self._by_name[s].depth)
        return real + [s for s in sites if s not in self._by_name]

    def blocks(self) -> list[tuple[str, list[SiteInfo]]]:
        """Real sites grouped by top-level module, blocks in forward order of their first site."""
        grouped: dict[str, list[SiteInfo]] = {}
        for site in self.sites:
            grouped.setdefault(site.block, []).append(site)
        return list(grouped.items())

    def describe_sites(self) -> str:
        """``"6 sites (3 ReLU, 1 GELU, 2 Sequential)"``, or ``"4 sites (module types unknown)"``."""
        count = f"{len(self.sites)} site{'s' if len(self.sites) != 1 else ''}"
        if not self.types_known:
            return f"{count} (module types unknown: logs without site metadata)"
        types: dict[str, int] = {}
        for site in self.sites:
            types[site.type or "unknown type"] = types.get(site.type or "unknown type", 0) + 1
        return f"{count} ({', '.join(f'{n} {t}' for t, n in types.items())})"


def run_contents(history: MetricHistory, site_metadata: Mapping[str, Any] | None = None) -> RunContents:
    """Sort a history's rows into real sites, summaries, network metrics and training context.

    ``site_metadata`` is the monitor's ``"sites"`` dict (raw, or already parsed by
    :func:`parse_site_metadata`). A site with metadata is real; so is any other site measured by a
    metric that is not a summary or bookkeeping metric, except ``trainer`` and ``network``.

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> h = MetricHistory([(0, 0, "affinity", "a", 0.6), (0, 0, "linear_regions", "network", 9.0)])
        >>> c = run_contents(h)
        >>> [s.name for s in c.sites], c.network_metrics, c.types_known
        (['a'], ['linear_regions'], False)
    """
    parsed = site_metadata and all(isinstance(info, SiteInfo) for info in site_metadata.values())
    metadata = dict(site_metadata) if parsed else parse_site_metadata(site_metadata)
    summary, network, context, site_metrics = [], [], [], []
    first_seen: dict[str, int] = {}
    for metric in history.metrics():
        sites = history.sites(metric)
        if metric in SUMMARY_METRICS:
            summary.append(metric)
            continue
        if metric in METADATA_METRICS:
            continue
        if sites == [CONTEXT_SITE]:
            context.append(metric)
            continue
        if sites == [NETWORK_SITE]:
            network.append(metric)
            continue
        site_metrics.append(metric)
        for site in sites:
            if site not in (CONTEXT_SITE, NETWORK_SITE):
                first_seen.setdefault(site, len(first_seen))
    for site in history.sites():  # sites only counted through their samples (no metric yet)
        if site in metadata:
            first_seen.setdefault(site, len(first_seen))
    real = []
    for site, order in first_seen.items():
        info = metadata.get(site)
        real.append(info if info is not None else SiteInfo(name=site, depth=10**9 + order))
    real.sort(key=lambda s: (s.depth, first_seen[s.name]))
    return RunContents(
        sites=real,
        summary_metrics=summary,
        network_metrics=network,
        context_keys=context,
        site_metrics=site_metrics,
        types_known=bool(metadata),
    )


def main_validation_metric(keys: Iterable[str], against: str | None = None) -> str | None:
    """The key to plot complexity against (rule in the module docstring).

    Raises:
        ValueError: ``against`` is given but is not among ``keys`` (the message lists them).

    Example:
        >>> main_validation_metric(["train_loss", "val_loss", "val/accuracy"])
        'val/accuracy'
        >>> main_validation_metric(["train_loss", "val_loss"]), main_validation_metric(["train_loss"])
        ('val_loss', None)
    """
    keys = list(keys)
    if against is not None:
        if against not in keys:
            listed = ", ".join(keys) if keys else "none: this run has no trainer rows"
            raise ValueError(f"--against {against!r} is not a logged trainer metric of this run (available: {listed})")
        return against
    validation = [key for key in keys if key.lower().startswith("val")]
    for accept in (lambda k: "acc" in k.lower(), lambda k: k == "val_loss", lambda k: "loss" in k.lower(), lambda k: True):
        chosen = next((key for key in validation if accept(key)), None)
        if chosen is not None:
            return chosen
    return None
