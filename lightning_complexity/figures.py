"""Matplotlib figures for TensorBoard and reports (drawn off-screen with the Agg backend).

Example:
    >>> from lightning_complexity import MetricHistory
    >>> h = MetricHistory([(0, 0, "affinity", "relu", 0.6), (9, 1, "affinity", "relu", 0.7)])
    >>> figure = signature_heatmap(h, "affinity")
    >>> figure.axes[0].get_ylabel()
    'site (forward order)'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lightning_complexity.safe_names import legend_text, plot_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightning_complexity.history import MetricHistory

__all__ = ["PLOT_LIMIT", "drawable", "error_curves_figure", "power_law_figure", "signature_grid", "signature_heatmap", "undrawn_count"]


#: the largest magnitude drawn: matplotlib computes axis ranges and margins as differences and
#: multiples of the data limits, which overflow to Inf near the float maximum (1.8e308).
PLOT_LIMIT = 1e300


def drawable(values: np.ndarray) -> np.ndarray:
    """``values`` as float64 with NaN, ±Inf and magnitudes beyond :data:`PLOT_LIMIT` as NaN (gaps).

    Lines then break where a value cannot be drawn and show every stretch that can.

    Example:
        >>> drawable(np.array([1.0, np.inf, -2.0, 1.7e308, np.nan])).tolist()
        [1.0, nan, -2.0, nan, nan]
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(values) & (np.abs(values) <= PLOT_LIMIT), values, np.nan)


def undrawn_count(values: np.ndarray) -> int:
    """How many of ``values`` :func:`drawable` leaves out (for captions)."""
    return int(np.count_nonzero(np.isnan(drawable(values))))


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def signature_grid(history: MetricHistory, metric: str, sites: list[str] | None = None) -> tuple[np.ndarray, list[str], list[int]]:
    """``metric`` as a sites × measurements grid: (values, the rows' sites, each column's epoch).

    ``sites`` picks and orders the rows (default: the metric's sites in order of appearance); a
    site without the metric is left out; a missing value is NaN.

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> h = MetricHistory([(0, 0, "affinity", "a", 0.6), (9, 1, "affinity", "a", 0.7), (9, 1, "affinity", "b", 0.9)])
        >>> grid, sites, epochs = signature_grid(h, "affinity")
        >>> grid.tolist(), sites, epochs
        ([[0.6, 0.7], [nan, 0.9]], ['a', 'b'], [0, 1])
    """
    present = set(history.sites(metric))
    sites = [s for s in (sites if sites is not None else history.sites(metric)) if s in present]
    measured = {r.step for r in history if r.metric == metric}  # one pass, not one per step
    steps = [s for s in history.steps() if s in measured]
    grid = np.full((len(sites), len(steps)), np.nan)
    epochs = {}
    row_of = {s: i for i, s in enumerate(sites)}
    column_of = {s: j for j, s in enumerate(steps)}
    for row in history:
        if row.metric == metric:
            epochs[row.step] = row.epoch
            if row.site in row_of:
                grid[row_of[row.site], column_of[row.step]] = row.value
    return grid, sites, [epochs[s] for s in steps]


def signature_heatmap(history: MetricHistory, metric: str, sites: list[str] | None = None, labels: dict[str, str] | None = None) -> Figure:
    """Sites (rows, forward order) × measurements (columns, by epoch) of one metric, as a heatmap.

    ``sites`` picks and orders the rows (default: the metric's sites in order of appearance);
    ``labels`` names them (default: the site names). NaN, ±Inf and overflowing cells are grey.
    """
    grid, sites, epochs = signature_grid(history, metric, sites)
    labels = labels or {}
    figure = _new_figure(min(12, 3 + 0.4 * len(epochs)), min(12, 1.5 + 0.3 * len(sites)))
    axes = figure.add_subplot()
    # NaN and ±Inf cells are masked (drawn grey): a colour scale needs finite ends.
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = axes.imshow(np.ma.masked_invalid(drawable(grid)), aspect="auto", cmap=cmap, interpolation="nearest")
    figure.colorbar(image, ax=axes, label=plot_text(metric))
    axes.set_yticks(range(len(sites)), [plot_text(labels.get(site, site)) for site in sites], fontsize=7)
    ticks = range(0, len(epochs), max(1, len(epochs) // 12))
    axes.set_xticks(list(ticks), [str(epochs[j]) for j in ticks])
    axes.set_xlabel("epoch")
    axes.set_ylabel("site (forward order)")
    axes.set_title(f"{plot_text(metric)} signature")
    return figure


def power_law_figure(history: MetricHistory, metric: str, by: str = "epoch", window: tuple | None = None) -> Figure:
    """Log-log plot of every site's curve of ``metric`` (points) and its power-law fit (line).

    The legend gives each site's exponent ``b`` with its ``R²``; sites without a fit (fewer than 4
    usable points) are drawn as points only.
    """
    from lightning_complexity.powerlaw import fit_power_laws

    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    curves = {site: curve for (name, site), curve in history.curves(by).items() if name == metric}
    fits = fit_power_laws(curves, window=window)
    colours = _colours(len(curves))
    for colour, (site, (t, y)) in zip(colours, curves.items()):
        keep = (t > 0) & (y > 0) & np.isfinite(y) & (y <= PLOT_LIMIT)
        fit = fits[site]
        label = legend_text(site) if not np.isfinite(fit.exponent) else f"{legend_text(site)}: b={fit.exponent:.3g}, R²={fit.r2:.2f}"
        axes.plot(t[keep], y[keep], "o", color=colour, markersize=3, label=label)
        if np.isfinite(fit.exponent) and keep.any():
            grid = np.geomspace(t[keep].min(), t[keep].max(), 50)
            with np.errstate(over="ignore", invalid="ignore"):
                predicted = drawable(fit.predict(grid))
            axes.plot(grid, np.where(predicted > 0, predicted, np.nan), "-", color=colour, linewidth=1)
    if any(line.get_xdata().size for line in axes.get_lines()):
        axes.set_xscale("log")
        axes.set_yscale("log")
        _plain_log_labels(axes)
    else:  # nothing positive to put on log axes
        axes.text(0.5, 0.5, "no point with t > 0 and y > 0", transform=axes.transAxes, ha="center", va="center", color="grey")
    axes.set_xlabel(by)
    axes.set_ylabel(plot_text(metric))
    axes.set_title(f"{plot_text(metric)}: power-law fits y = a·t^b")
    if curves:
        axes.legend(fontsize=6, loc="best")
    return figure


def _plain_log_labels(axes) -> None:
    """Label log axes 2, 3, 0.5 rather than 2×10⁰: training curves span one or two decades."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "viridis"]
    return [cmap(i if count <= 10 else i / max(1, count - 1)) for i in range(count)]


def error_curves_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], tolerance: float) -> Figure:
    """Held-out relative error e(k) against the number of affine pieces k, one line per site."""
    figure = _new_figure(6, 4)
    axes = figure.add_subplot()
    for colour, (site, (ks, errors)) in zip(_colours(len(curves)), curves.items()):
        keep = np.isfinite(errors)
        axes.plot(ks[keep], errors[keep], "o-", color=colour, markersize=3, label=legend_text(site))
    axes.axhline(tolerance, color="grey", linestyle="--", linewidth=1, label=f"ε = {tolerance:g}")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("k (clusters = affine pieces)")
    axes.set_ylabel("held-out relative error e(k)")
    axes.set_title("entropic complexity: e(k) per block")
    axes.legend(fontsize=6, loc="best")
    return figure
