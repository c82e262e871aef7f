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

Figures use a fixed layout (margins in inches) rather than matplotlib's constrained layout, which
costs about half of the drawing time; epochs get integer ticks; site names are drawn through
:func:`lightning_complexity.safe_names.plot_text`, never as mathtext.

Example::

    data = ReportData.build(run.history, run_contents(run.history, run.sites), "epoch")
    for family, panels in present_families(data):
        figure = family_figure(data, family, panels)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_complexity.figures import PLOT_LIMIT, drawable
from lightning_complexity.run_contents import CONTEXT_SITE, FLAG_METRICS, METADATA_METRICS, RunContents
from lightning_complexity.safe_names import legend_text, plot_text, printable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
        from matplotlib import colormaps

        by_step = {key: dict(zip(t.tolist(), y.tolist())) for key, (t, y) in history.curves("step").items()}
        sites = [s.name for s in contents.sites]
        if len(sites) <= 10:
            colours = {site: colormaps["tab10"](i) for i, site in enumerate(sites)}
        else:
            colours = {site: colormaps["viridis"](i / max(1, len(sites) - 1)) for i, site in enumerate(sites)}
        return cls(history=history, contents=contents, by=by, curves=history.curves(by), by_step=by_step, colours=colours)

    def sites_of(self, metric: str) -> list[str]:
        return self.contents.order(site for (name, site) in self.curves if name == metric)

    def has(self, metric: str, site: str | None = None) -> bool:
        return any(name == metric and (site is None or s == site) for name, s in self.curves)

    def colour(self, site: str) -> Any:
        return self.colours.get(site, "black")

    def label(self, site: str) -> str:
        return legend_text(self.contents.label(site))


# ---------------------------------------------------------------------- layout
_LEFT, _RIGHT, _BOTTOM, _TOP = 0.7, 0.2, 0.5, 0.55  # inches
_GAP_W, _GAP_H = 0.9, 0.7  # room for a right-hand axis between panels


def panel_grid(count: int, columns: int, panel: tuple[float, float] = (3.3, 2.4), legend_width: float = 0.0, title: str | None = None) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels in rows of ``columns``, margins fixed in inches (no layout engine)."""
    from matplotlib.figure import Figure

    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    width = _LEFT + columns * panel[0] + (columns - 1) * _GAP_W + _RIGHT + legend_width
    height = _BOTTOM + rows * panel[1] + (rows - 1) * _GAP_H + _TOP
    figure = Figure(figsize=(width, height), dpi=100)
    figure.subplots_adjust(left=_LEFT / width, right=1 - (_RIGHT + legend_width) / width, bottom=_BOTTOM / height, top=1 - _TOP / height,
                           wspace=_GAP_W / panel[0], hspace=_GAP_H / panel[1])
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = [grid[i // columns][i % columns] for i in range(count)]
    for extra in range(count, rows * columns):
        grid[extra // columns][extra % columns].set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    return figure, axes


def _legend_width(labels: Sequence[str]) -> float:
    """Inches a 7-point legend of these labels needs beside the panels."""
    return 0.0 if not labels else min(3.2, 0.45 + 0.058 * max(len(label) for label in labels))


def _figure_legend(figure: Figure, handles: list, labels: list[str], legend_width: float) -> None:
    if handles:
        width = figure.get_figwidth()
        figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1 - (legend_width + 0.05) / width, 0.5), fontsize=7, frameon=False)


def _style(axes: Axes, title: str, xlabel: str | None, by: str | None, log: bool = False) -> None:
    """Title, labels, grid, and few ticks: drawing ticks is most of a figure's cost, 5 per axis read well."""
    from matplotlib.ticker import MaxNLocator

    axes.set_title(plot_text(title), fontsize=9)
    if xlabel:
        axes.set_xlabel(plot_text(xlabel), fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    if not log:
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=by in ("epoch", "step")))
        axes.yaxis.set_major_locator(MaxNLocator(nbins=5))


def _marker(points: int) -> str | None:
    return "o" if points <= 30 else None


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


def family_figure(data: ReportData, family: Family, panels: Sequence[Panel]) -> Figure:
    """One family: a panel each, one shared legend of the sites (in forward order)."""
    legend: dict[str, Any] = {}
    sites_drawn = [site for panel in panels if panel.sites is None for site in data.sites_of(panel.metric)]
    labels = [data.label(s) for s in dict.fromkeys(sites_drawn)]
    width = _legend_width(labels + ["across-site mean", "hollow: censored"])
    figure, axes_list = panel_grid(len(panels), 2 if len(panels) == 4 else 3, legend_width=width, title=plot_text(family.title))
    for axes, panel in zip(axes_list, panels):
        _draw_panel(data, axes, panel, legend)
    _figure_legend(figure, list(legend.values()), list(legend), width)
    return figure


def _draw_panel(data: ReportData, axes: Axes, panel: Panel, legend: dict[str, Any]) -> None:
    sites = list(panel.sites) if panel.sites else data.sites_of(panel.metric)
    summary_styles = ["-", "--", ":", "-."]
    for index, site in enumerate(sites):
        t, y = data.curves[(panel.metric, site)]
        y = drawable(y)
        if panel.sites:  # statistics of one summary: black, a line style each, labelled in the panel
            (line,) = axes.plot(t, y, summary_styles[index % 4], color="black", marker=_marker(len(t)), markersize=2.5, linewidth=1.2, label=legend_text(site))
            continue
        colour = data.colour(site)
        (line,) = axes.plot(t, y, "-", color=colour, marker=_marker(len(t)), markersize=3, linewidth=1.3)
        if panel.flag and data.has(panel.flag, site):
            flags = np.asarray([data.by_step.get((panel.flag, site), {}).get(step, 0.0) for step in _steps_of(data, panel.metric, site)])
            hollow = flags == 1
            if hollow.any():
                line.set_marker(None)
                axes.plot(t[~hollow], y[~hollow], "o", color=colour, markersize=3.5, linestyle="none")
                axes.plot(t[hollow], y[hollow], "o", markerfacecolor="white", markeredgecolor=colour, markersize=4, linestyle="none")
                legend.setdefault("hollow: censored", axes.plot([], [], "o", markerfacecolor="white", markeredgecolor="grey", linestyle="none")[0])
        legend.setdefault(data.label(site), line)
    if not any(np.isfinite(line.get_ydata()).any() for line in axes.get_lines()):
        axes.text(0.5, 0.5, "no finite value", transform=axes.transAxes, ha="center", va="center", color="grey", fontsize=8)
    if panel.sites and len(sites) > 1:
        axes.legend(fontsize=6, frameon=False)
    if panel.band and data.has(panel.band, "mean"):
        t, mean = data.curves[(panel.band, "mean")]
        legend.setdefault("across-site mean", axes.plot(t, drawable(mean), "--", color="black", linewidth=1.1)[0])
        if data.has(panel.band, "min") and data.has(panel.band, "max"):
            axes.fill_between(t, drawable(data.curves[(panel.band, "min")][1]), drawable(data.curves[(panel.band, "max")][1]), color="grey", alpha=0.15, linewidth=0)
            from matplotlib.patches import Patch

            legend.setdefault("across-site min–max", Patch(color="grey", alpha=0.15, linewidth=0))
    if panel.secondary and data.has(panel.secondary):
        factor = _single_factor(data, panel.secondary, panel.metric)
        if factor is not None:
            secondary = axes.secondary_yaxis("right", functions=(lambda v, k=factor: v * k, lambda v, k=factor: v / k))
            secondary.set_ylabel(plot_text(panel.secondary.replace(panel.metric + "_", "")), fontsize=7)
            secondary.tick_params(labelsize=7)
    _style(axes, panel.title or panel.metric, data.by, data.by)


def _steps_of(data: ReportData, metric: str, site: str) -> list[int]:
    return list(data.by_step[(metric, site)])


# ---------------------------------------------------------------------- training context
def headline_metrics(data: ReportData, families: Sequence[tuple[Family, Sequence[Panel]]]) -> list[str]:
    """The first panel's metric of each present family: the one a paper would plot against accuracy."""
    return [panels[0].metric for _, panels in families if panels]


def training_figure(data: ReportData) -> Figure | None:
    """The trainer's logged scalars across measurements: losses in one panel, the others in another."""
    keys = data.contents.context_keys
    if not keys:
        return None
    losses = [k for k in keys if "loss" in k.lower()]
    others = [k for k in keys if k not in losses]
    groups = [(title, group) for title, group in (("losses", losses), ("other logged metrics", others)) if group]
    labels = [legend_text(k) for k in keys]
    width = _legend_width(labels)
    figure, axes_list = panel_grid(len(groups), 2, panel=(3.8, 2.5), legend_width=width, title="Training (the trainer's logged scalars at each measurement)")
    handles = {}
    from matplotlib import colormaps

    for axes, (title, group) in zip(axes_list, groups):
        for index, key in enumerate(group):
            t, y = data.curves[(key, CONTEXT_SITE)]
            style = "-" if key.lower().startswith("val") else "--"
            (line,) = axes.plot(t, drawable(y), style, color=colormaps["tab10"](keys.index(key) % 10), marker=_marker(len(t)), markersize=3, linewidth=1.3)
            handles[legend_text(key)] = line
        _style(axes, title, data.by, data.by)
    _figure_legend(figure, list(handles.values()), list(handles), width)
    return figure


def against_figure(data: ReportData, metrics: Sequence[str], against: str) -> Figure | None:
    """Each of ``metrics`` (y) against ``against`` (x) at every measurement that has both.

    One line per site in measurement order; a hollow marker at the first measurement and a larger
    filled one at the last, so the direction of training reads off the plot.
    """
    reference = data.by_step.get((against, CONTEXT_SITE), {})
    drawn = [m for m in metrics if any(np.isfinite(value) and np.isfinite(reference.get(step, np.nan)) for site in data.sites_of(m) for step, value in data.by_step[(m, site)].items())]
    if not drawn or not reference:
        return None
    sites_seen = [site for m in drawn for site in data.sites_of(m)]
    labels = [data.label(s) for s in dict.fromkeys(sites_seen)]
    width = _legend_width(labels + ["○ first, ● last measurement"])
    figure, axes_list = panel_grid(len(drawn), 3, panel=(3.1, 2.4), legend_width=width, title=f"Complexity against {plot_text(against)} (one point per measurement)")
    handles: dict[str, Any] = {}
    for axes, metric in zip(axes_list, drawn):
        for site in data.sites_of(metric):
            values = data.by_step[(metric, site)]
            steps = [s for s in values if s in reference]
            x, y = drawable(np.array([reference[s] for s in steps])), drawable(np.array([values[s] for s in steps]))
            keep = np.isfinite(x) & np.isfinite(y)
            if not keep.any():
                continue
            x, y = x[keep], y[keep]
            colour = data.colour(site)
            (line,) = axes.plot(x, y, "-", color=colour, linewidth=1.0, alpha=0.8, marker="o", markersize=2.5)
            axes.plot(x[:1], y[:1], "o", markerfacecolor="white", markeredgecolor=colour, markersize=5)
            axes.plot(x[-1:], y[-1:], "o", color=colour, markersize=5.5)
            handles.setdefault(data.label(site), line)
        _style(axes, metric, against, None)
    handles["○ first, ● last measurement"] = axes_list[0].plot([], [], "o", markerfacecolor="white", markeredgecolor="grey", linestyle="none")[0]
    _figure_legend(figure, list(handles.values()), list(handles), width)
    return figure


# ---------------------------------------------------------------------- power laws
def exponents_figure(data: ReportData, shown: pd.DataFrame, conclusive: Sequence[bool]) -> Figure | None:
    """Every fitted exponent b with its 95 % interval, grouped by metric; inconclusive ones grey and hollow."""
    rows = [(row, ok) for row, ok in zip(shown.to_dict(orient="records"), conclusive) if np.isfinite(row["exponent"])]
    if not rows:
        return None
    from matplotlib.figure import Figure

    height = 0.9 + 0.16 * len(rows)
    label_width = 0.5 + 0.055 * max(len(f"{r['metric']} · {data.contents.label(r['site'])}") for r, _ in rows)
    width = label_width + 4.6
    figure = Figure(figsize=(width, height), dpi=100)
    figure.subplots_adjust(left=label_width / width, right=1 - 0.25 / width, bottom=0.5 / height, top=1 - 0.4 / height)
    axes = figure.add_subplot()
    positions = np.arange(len(rows))[::-1]
    for y, (row, ok) in zip(positions, rows):
        colour = data.colour(row["site"]) if ok else "0.6"
        low, high = row.get("ci_low"), row.get("ci_high")
        if np.isfinite(low) and np.isfinite(high):
            axes.plot([low, high], [y, y], "-" if ok else ":", color=colour, linewidth=1.4)
        axes.plot([row["exponent"]], [y], "o", color=colour, markerfacecolor=colour if ok else "white", markersize=4.5)
    axes.axvline(0.0, color="black", linewidth=0.8)
    # Row labels as plain texts, not ticks: 40 ticks cost several times what 40 texts do.
    from matplotlib.transforms import blended_transform_factory

    axes.set_yticks([])
    beside = blended_transform_factory(axes.transAxes, axes.transData)
    for y, (row, ok) in zip(positions, rows):
        axes.text(-0.015, y, plot_text(f"{row['metric']} · {data.contents.label(row['site'])}"), transform=beside, ha="right", va="center", fontsize=7, color="black" if ok else "0.55")
    axes.set_ylim(-0.7, len(rows) - 0.3)
    axes.set_xlabel("exponent b of y ≈ a·t^b, with its 95% interval (grey, hollow: inconclusive)", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(nbins=6))
    axes.grid(axis="x", alpha=0.3)
    axes.set_title("Power-law exponents", fontsize=10)
    return figure


def loglog_figure(data: ReportData, shown: pd.DataFrame, conclusive: Sequence[bool], metrics: Sequence[str]) -> Figure | None:
    """The curves of ``metrics`` on log-log axes (t > 0, y > 0) with their fits: solid when
    conclusive, dashed and faint when not."""
    fitted = {(r["metric"], r["site"]): (r, ok) for r, ok in zip(shown.to_dict(orient="records"), conclusive) if np.isfinite(r["exponent"])}
    drawn = [m for m in metrics if any(key[0] == m for key in fitted)]
    if not drawn:
        return None
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    labels = [data.label(s) for s in dict.fromkeys(site for m in drawn for site in data.sites_of(m))]
    width = _legend_width(labels + ["dashed: inconclusive fit"])
    figure, axes_list = panel_grid(len(drawn), 3, panel=(3.1, 2.4), legend_width=width, title="Power-law fits on log-log axes (the initialisation point is left out)")
    handles: dict[str, Any] = {}
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axes, metric in zip(axes_list, drawn):
        for site in data.sites_of(metric):
            t, y = data.curves[(metric, site)]
            keep = (t > 0) & np.isfinite(y) & (y > 0) & (y <= PLOT_LIMIT)
            if not keep.any():
                continue
            colour = data.colour(site)
            (points,) = axes.plot(t[keep], y[keep], "o", color=colour, markersize=3)
            handles.setdefault(data.label(site), points)
            if (metric, site) in fitted:
                row, ok = fitted[(metric, site)]
                grid = np.geomspace(t[keep].min(), t[keep].max(), 30)
                with np.errstate(over="ignore", invalid="ignore"):
                    line = drawable(row.get("offset", 0.0) + row["prefactor"] * grid ** row["exponent"])
                axes.plot(grid, np.where(line > 0, line, np.nan), "-" if ok else "--", color=colour, linewidth=1.1, alpha=1.0 if ok else 0.45)
        log = bool(axes.get_lines())
        if log:
            axes.set_xscale("log")
            axes.set_yscale("log")
            for axis in (axes.xaxis, axes.yaxis):
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=6))
                axis.set_major_formatter(plain)
                axis.set_minor_locator(NullLocator())
        _style(axes, metric, data.by, None, log=log)
    handles["dashed: inconclusive fit"] = axes_list[0].plot([], [], "--", color="grey", alpha=0.6)[0]
    _figure_legend(figure, list(handles.values()), list(handles), width)
    return figure
