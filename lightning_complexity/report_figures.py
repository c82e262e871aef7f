"""The report's figures: one figure per idea, each site in the same colour everywhere (by depth).

* :data:`FAMILIES` — what belongs together: the affinity curves with the signature's across-site
  mean and range, its spread (std) and peak (max/mean) on their own scales; the effective
  dimension with its ratio to the width on its own scale; the activation patterns; entropic
  complexity (censored points hollow) with the linear deficit; Betti numbers with their decay
  through depth; linear regions, with the per-neuron count as a second axis when it is the count
  divided by a constant. A metric of no family gets a figure of its own.
* :func:`training_figure` — the trainer's logged losses and other scalars across measurements.
* :func:`against_figure` — each headline metric against the main validation metric (one point per
  measurement, hollow at the first, filled at the last).
* :func:`exponents_figure` — every power-law exponent with its 95 % interval; inconclusive fits
  grey and hollow (rule: :mod:`lightning_complexity.report_tables`).
* :func:`loglog_figure` — the headline curves on log-log axes with their fits (inconclusive
  fits dashed).

Figures are SVG charts (:mod:`lightning_complexity.svg`): the browser draws them, so a report's
figures take milliseconds to build, not seconds; epochs get integer ticks; every name is escaped.

Example::

    data = ReportData.build(run.history, run_contents(run.history, run.sites), "epoch")
    for family, panels in present_families(data):
        svg = family_figure(data, family, panels).svg()
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_complexity.figures import PLOT_LIMIT, drawable
from lightning_complexity.run_contents import CONTEXT_SITE, FLAG_METRICS, METADATA_METRICS, RunContents
from lightning_complexity.safe_names import printable
from lightning_complexity.svg.chart import Chart, Series
from lightning_complexity.svg.chart import Panel as ChartPanel
from lightning_complexity.svg.colours import TAB10, site_colours
from lightning_complexity.svg.heatmap import Heatmap

if TYPE_CHECKING:
    import pandas as pd

    from lightning_complexity.history import MetricHistory

__all__ = [
    "FAMILIES",
    "Family",
    "Panel",
    "ReportData",
    "against_figure",
    "exponents_figure",
    "family_figure",
    "headline_metrics",
    "loglog_figure",
    "present_families",
    "signature_figure",
    "training_figure",
]


@dataclass(frozen=True)
class Panel:
    """One plot of a family figure.

    Attributes:
        metric: the metric drawn.
        sites: the sites drawn (summary statistics such as ``("std",)``); None: every site of the metric.
        title: the panel's title (default: the metric).
        band: a summary metric whose ``mean`` is drawn as a black dashed line and ``min``–``max`` as a band.
        secondary: a metric drawn as a right-hand axis when it is ``metric`` times one constant; else
            it gets a panel of its own.
        flag: a 0/1 metric; points where it is 1 are drawn hollow.
    """

    metric: str
    sites: tuple[str, ...] | None = None
    title: str | None = None
    band: str | None = None
    secondary: str | None = None
    flag: str | None = None


@dataclass(frozen=True)
class Family:
    """A figure's worth of metrics: an anchor, a heading, a caption, its panels."""

    key: str
    title: str
    caption: str
    panels: tuple[Panel, ...]


FAMILIES: tuple[Family, ...] = (
    Family("nonlinearity", "Non-linearity: affinity score",
           "Affinity score of each site (1 = affine; ReLU on a Gaussian ≈ 0.62), with the across-site mean (dashed) and range (band); "
           "then the signature's spread (std across sites) and peak (max / mean) on their own scales.",
           (Panel("affinity", band="affinity_signature"), Panel("affinity_signature", ("std",), "affinity: std across sites"),
            Panel("affinity_signature", ("max_over_mean",), "affinity: max / mean across sites"))),
    Family("dimension", "Effective dimension",
           "Effective dimension exp(H(spectrum)) of each site's output, the same divided by the site's width (comparable across widths), "
           "and the participation ratio (Σλ)²/Σλ².",
           (Panel("effective_dimension"), Panel("effective_dimension_ratio", title="effective dimension / width"), Panel("participation_ratio"))),
    Family("patterns", "Activation patterns",
           "Mean binary entropy of P(unit on) (ln 2 = half on; 0 = always on or off) and the active fraction of feature maps.",
           (Panel("activation_pattern_entropy"), Panel("active_fraction"))),
    Family("entropic", "Entropic complexity",
           "Entropic complexity C_ε of each block (hollow: censored, no number of pieces reached the tolerance), its linear deficit e(1) "
           "and, when measured, its error floor min_k e(k) (what no number of pieces explained).",
           (Panel("entropic_complexity", flag="entropic_complexity_censored"), Panel("linear_deficit", title="linear deficit e(1)"),
            Panel("entropic_error_floor", title="error floor min_k e(k)"))),
    Family("topology", "Topology of activation maps",
           "Betti numbers b0 (components) and b1 (holes) of the x > 0 maps, and their decay through depth (rate and normalised area).",
           (Panel("betti_0"), Panel("betti_1"), Panel("betti_depth", ("decay_rate",), "betti decay rate"), Panel("betti_depth", ("normalised_area",), "betti normalised area"))),
    Family("regions", "Linear regions",
           "Activation regions crossed by segments between probe inputs (right axis: per neuron, when it is the count over a constant).",
           (Panel("linear_regions", secondary="linear_regions_per_neuron"), Panel("linear_regions_per_unit_length", title="linear regions per unit length"))),
)
#: metrics drawn inside another panel (band, flag): never a figure of their own.
_DRAWN_INSIDE = {"affinity_signature", *FLAG_METRICS}


@dataclass
class ReportData:
    """What every figure needs, computed once: curves by time and by step, colours, labels."""

    history: MetricHistory
    contents: RunContents
    by: str
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
    by_step: dict[tuple[str, str], dict[int, float]]
    colours: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, history: MetricHistory, contents: RunContents, by: str) -> ReportData:
        """Curves and colours of ``history`` (sites coloured in forward order: tab10, or viridis beyond 10)."""
        by_step = {key: dict(zip(t.tolist(), y.tolist())) for key, (t, y) in history.curves("step").items()}
        sites = [s.name for s in contents.sites]
        colours = dict(zip(sites, site_colours(len(sites))))
        return cls(history=history, contents=contents, by=by, curves=history.curves(by), by_step=by_step, colours=colours)

    def sites_of(self, metric: str) -> list[str]:
        return self.contents.order(site for (name, site) in self.curves if name == metric)

    def has(self, metric: str, site: str | None = None) -> bool:
        return any(name == metric and (site is None or s == site) for name, s in self.curves)

    def colour(self, site: str) -> str:
        return self.colours.get(site, "black")

    def label(self, site: str) -> str:
        return self.contents.label(site)


# ---------------------------------------------------------------------- layout
_GREY, _MUTED = "#808080", "#999999"


def _marker(points: int) -> bool:
    return points <= 30


def _key(colour: str, hollow: bool = False, dash: str | None = None, marker: bool = True, opacity: float = 1.0) -> Series:
    """A legend key that is drawn in no panel."""
    return Series(np.empty(0), np.empty(0), colour, dash, marker=marker, hollow=hollow, opacity=opacity)


def _style(panel: ChartPanel, title: str, xlabel: str | None, by: str | None) -> None:
    """Title, x label, integer ticks on an epoch or step axis."""
    panel.title = title
    panel.xlabel = xlabel
    panel.integer_x = by in ("epoch", "step")


# ---------------------------------------------------------------------- families
def present_families(data: ReportData, folded: dict[str, str] | None = None) -> list[tuple[Family, list[Panel]]]:
    """Each family with the panels this run can draw (a non-proportional ``secondary`` gets its own
    panel), then one single-panel family per metric of no family."""
    claimed = set(_DRAWN_INSIDE) | set(METADATA_METRICS) | set(data.contents.context_keys)
    result = []
    for family in FAMILIES:
        panels = []
        for panel in family.panels:
            claimed.add(panel.metric)
            if panel.secondary:
                claimed.add(panel.secondary)
            if not data.has(panel.metric) or (panel.sites and not all(data.has(panel.metric, s) for s in panel.sites)):
                continue
            if panel.secondary and data.has(panel.secondary) and _single_factor(data, panel.secondary, panel.metric) is None:
                panels.append(Panel(panel.metric, panel.sites, panel.title, panel.band, None, panel.flag))
                panels.append(Panel(panel.secondary))
            else:
                panels.append(panel)
        if panels:
            result.append((family, panels))
    for metric in data.history.metrics():
        if metric not in claimed:
            claimed.add(metric)
            key = "other-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", printable(metric)).strip("_")  # an anchor and a file name
            result.append((Family(key, metric, f"{metric} at each of its sites.", (Panel(metric),)), [Panel(metric)]))
    return result


def _single_factor(data: ReportData, child: str, parent: str) -> float | None:
    from lightning_complexity.report_tables import proportional_to

    factors = proportional_to(data.history, child, parent, data.by)
    if not factors:
        return None
    values = list(factors.values())
    return values[0] if np.allclose(values, values[0], rtol=1e-9, atol=0) and values[0] > 0 else None


def family_figure(data: ReportData, family: Family, panels: Sequence[Panel]) -> Chart:
    """One family: a panel each, one shared legend of the sites (in forward order)."""
    chart = Chart.grid(len(panels), 2 if len(panels) == 4 else 3, title=family.title)
    for target, panel in zip(chart.panels, panels):
        _draw_panel(data, chart, target, panel)
    return chart


_SUMMARY_DASHES = ("-", "--", ":", "-.")


def _draw_panel(data: ReportData, chart: Chart, target: ChartPanel, panel: Panel) -> None:
    sites = list(panel.sites) if panel.sites else data.sites_of(panel.metric)
    for index, site in enumerate(sites):
        t, y = data.curves[(panel.metric, site)]
        y = drawable(y)
        if panel.sites:  # statistics of one summary: black, a dash each, labelled in the panel
            target.line(t, y, "black", _SUMMARY_DASHES[index % 4], 1.2, marker=_marker(len(t)), marker_size=5, label=site)
            continue
        colour = data.colour(site)
        hollow = None
        if panel.flag and data.has(panel.flag, site):
            flags = np.asarray([data.by_step.get((panel.flag, site), {}).get(step, 0.0) for step in _steps_of(data, panel.metric, site)])
            hollow = flags == 1
        if hollow is not None and hollow.any():
            line = target.line(t, y, colour, "-", 1.3)
            target.points(t[~hollow], y[~hollow], colour, size=7)
            target.points(t[hollow], y[hollow], colour, size=8, hollow=True)
            chart.legend_entry(data.label(site), _key(colour))
            chart.legend_entry("hollow: censored", _key(_GREY, hollow=True))
        else:
            line = target.line(t, y, colour, "-", 1.3, marker=_marker(len(t)), marker_size=6)
            chart.legend_entry(data.label(site), line)
    if not target.has_finite():
        target.note("no finite value")
    target.own_legend = bool(panel.sites) and len(sites) > 1
    if panel.band and data.has(panel.band, "mean"):
        t, mean = data.curves[(panel.band, "mean")]
        chart.legend_entry("across-site mean", target.line(t, drawable(mean), "black", "--", 1.1))
        if data.has(panel.band, "min") and data.has(panel.band, "max"):
            band = target.band(t, drawable(data.curves[(panel.band, "min")][1]), drawable(data.curves[(panel.band, "max")][1]))
            chart.legend_entry("across-site min–max", band)
    if panel.secondary and data.has(panel.secondary):
        factor = _single_factor(data, panel.secondary, panel.metric)
        if factor is not None:
            target.secondary = (factor, panel.secondary.replace(panel.metric + "_", ""))
    _style(target, panel.title or panel.metric, data.by, data.by)


def _steps_of(data: ReportData, metric: str, site: str) -> list[int]:
    return list(data.by_step[(metric, site)])


# ---------------------------------------------------------------------- training context
def headline_metrics(data: ReportData, families: Sequence[tuple[Family, Sequence[Panel]]]) -> list[str]:
    """The first panel's metric of each present family: the one a paper would plot against accuracy."""
    return [panels[0].metric for _, panels in families if panels]


def training_figure(data: ReportData) -> Chart | None:
    """The trainer's logged scalars across measurements: losses in one panel, the others in another."""
    keys = data.contents.context_keys
    if not keys:
        return None
    losses = [k for k in keys if "loss" in k.lower()]
    others = [k for k in keys if k not in losses]
    groups = [(title, group) for title, group in (("losses", losses), ("other logged metrics", others)) if group]
    chart = Chart.grid(len(groups), 2, panel=(380.0, 250.0), title="Training (the trainer's logged scalars at each measurement)")
    for target, (title, group) in zip(chart.panels, groups):
        for key in group:
            t, y = data.curves[(key, CONTEXT_SITE)]
            dash = "-" if key.lower().startswith("val") else "--"
            chart.legend_entry(key, target.line(t, drawable(y), TAB10[keys.index(key) % 10], dash, 1.3, marker=_marker(len(t))))
        _style(target, title, data.by, data.by)
    return chart


def against_figure(data: ReportData, metrics: Sequence[str], against: str) -> Chart | None:
    """Each of ``metrics`` (y) against ``against`` (x) at every measurement that has both.

    One line per site in measurement order; a hollow marker at the first measurement and a larger
    filled one at the last, so the direction of training reads off the plot.
    """
    reference = data.by_step.get((against, CONTEXT_SITE), {})
    drawn = [m for m in metrics if any(np.isfinite(value) and np.isfinite(reference.get(step, np.nan)) for site in data.sites_of(m) for step, value in data.by_step[(m, site)].items())]
    if not drawn or not reference:
        return None
    chart = Chart.grid(len(drawn), 3, panel=(310.0, 240.0), title=f"Complexity against {against} (one point per measurement)")
    for target, metric in zip(chart.panels, drawn):
        for site in data.sites_of(metric):
            values = data.by_step[(metric, site)]
            steps = [s for s in values if s in reference]
            x, y = drawable(np.array([reference[s] for s in steps])), drawable(np.array([values[s] for s in steps]))
            keep = np.isfinite(x) & np.isfinite(y)
            if not keep.any():
                continue
            x, y = x[keep], y[keep]
            colour = data.colour(site)
            line = target.line(x, y, colour, "-", 1.0, marker=True, marker_size=5, opacity=0.8)
            target.points(x[:1], y[:1], colour, size=9, hollow=True)
            target.points(x[-1:], y[-1:], colour, size=10)
            chart.legend_entry(data.label(site), line)
        _style(target, metric, against, None)
    chart.legend_entry("○ first, ● last measurement", _key(_GREY, hollow=True))
    return chart


def signature_figure(history: MetricHistory, metric: str, sites: Sequence[str], labels: dict[str, str]) -> Heatmap | None:
    """Sites (rows, forward order) × measurements (columns, labelled by epoch) of ``metric``."""
    from lightning_complexity.figures import signature_grid

    grid, sites, epochs = signature_grid(history, metric, list(sites))
    if not sites:
        return None
    return Heatmap(drawable(grid), [labels.get(site, site) for site in sites], [str(e) for e in epochs], title=f"{metric} signature",
                   xlabel="epoch", ylabel="site (forward order)", colour_label=metric)


# ---------------------------------------------------------------------- power laws
def exponents_figure(data: ReportData, shown: pd.DataFrame, conclusive: Sequence[bool]) -> Chart | None:
    """Every fitted exponent b with its 95 % interval, grouped by metric; inconclusive ones grey and hollow."""
    rows = [(row, ok) for row, ok in zip(shown.to_dict(orient="records"), conclusive) if np.isfinite(row["exponent"])]
    if not rows:
        return None
    chart = Chart.grid(1, 1, panel=(460.0, 16.0 * len(rows) + 20), title="Power-law exponents")
    target = chart.panels[0]
    positions = np.arange(len(rows))[::-1]
    for y, (row, ok) in zip(positions, rows):
        colour = data.colour(row["site"]) if ok else _MUTED
        low, high = row.get("ci_low"), row.get("ci_high")
        if np.isfinite(low) and np.isfinite(high):
            target.line([low, high], [y, y], colour, "-" if ok else ":", 1.4)
        target.points([row["exponent"]], [y], colour, size=7, hollow=not ok)
        target.row_labels.append((float(y), f"{row['metric']} · {data.contents.label(row['site'])}", "black" if ok else "#8c8c8c"))
    target.vline(0.0)
    target.ylimits = (-0.7, len(rows) - 0.3)
    target.grid_y = False
    target.xlabel = "exponent b of y ≈ a·t^b, with its 95% interval (grey, hollow: inconclusive)"
    return chart


def loglog_figure(data: ReportData, shown: pd.DataFrame, conclusive: Sequence[bool], metrics: Sequence[str]) -> Chart | None:
    """The curves of ``metrics`` on log-log axes (t > 0, y > 0) with their fits: solid when
    conclusive, dashed and faint when not."""
    fitted = {(r["metric"], r["site"]): (r, ok) for r, ok in zip(shown.to_dict(orient="records"), conclusive) if np.isfinite(r["exponent"])}
    drawn = [m for m in metrics if any(key[0] == m for key in fitted)]
    if not drawn:
        return None
    chart = Chart.grid(len(drawn), 3, panel=(310.0, 240.0), title="Power-law fits on log-log axes (the initialisation point is left out)")
    for target, metric in zip(chart.panels, drawn):
        for site in data.sites_of(metric):
            t, y = data.curves[(metric, site)]
            keep = (t > 0) & np.isfinite(y) & (y > 0) & (y <= PLOT_LIMIT)
            if not keep.any():
                continue
            colour = data.colour(site)
            chart.legend_entry(data.label(site), target.points(t[keep], y[keep], colour, size=6))
            if (metric, site) in fitted:
                row, ok = fitted[(metric, site)]
                grid = np.geomspace(t[keep].min(), t[keep].max(), 30)
                with np.errstate(over="ignore", invalid="ignore"):
                    line = drawable(row.get("offset", 0.0) + row["prefactor"] * grid ** row["exponent"])
                target.line(grid, np.where(line > 0, line, np.nan), colour, "-" if ok else "--", 1.1, opacity=1.0 if ok else 0.45)
        target.log_x = target.log_y = target.has_finite()
        if not target.log_x:
            target.note("no point with t > 0 and y > 0")
        _style(target, metric, data.by, None)
    chart.legend_entry("dashed: inconclusive fit", _key(_GREY, dash="--", marker=False, opacity=0.6))
    return chart
