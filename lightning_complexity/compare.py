"""Several runs side by side: overlaid curves per metric and a table of final values and exponents.

Figures: one per metric. Each site gets its own small panel in which every run is a line (colour
and line style by run, one legend for the figure), so runs stay comparable however many sites
there are. With more than ``max_panels`` sites, that many are shown, evenly spaced in forward
order (first and last included); the figure's title says so and every value is in the tables.

Tables:

* ``comparison.csv`` — one row per run: ``run, source, path, measurements, last_step, last_epoch``
  then, for every ``(metric, site)`` of any run, ``final/<metric>/<site>`` (the value at the run's
  last measurement) and ``exponent/<metric>/<site>`` (the power-law exponent b; NaN with fewer than
  4 points after initialisation). A curve a run lacks is NaN.
* ``comparison_long.csv`` — the same numbers one row per run, metric and site, with R².
* ``comparison.html`` — the figures embedded and one table per metric (rows: sites; columns:
  each run's final value and exponent).

Example::

    from lightning_complexity.compare import write_comparison
    from lightning_complexity.export import load_run
    runs = [load_run("runs/digits/version_0"), load_run("runs/digits/version_1")]
    write_comparison(runs, ["lr=1e-2", "lr=1e-3"], "comparison")
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lightning_complexity.safe_names import html_text, legend_text, plot_text, records_frame
from lightning_complexity.atomic import atomic_write_text
from lightning_complexity.report import FigureSpec, Progress, file_stem, html_figure, html_page, html_table, render_figures, time_axis

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lightning_complexity.export import RunData
    from lightning_complexity.history import MetricHistory

__all__ = ["ComparisonResult", "comparison_figure", "comparison_table", "comparison_long_table", "run_labels", "write_comparison"]

_LINE_STYLES = ("-", "--", ":", "-.")
_PANEL_COLUMNS = 4


def run_labels(paths: Sequence[str | Path]) -> list[str]:
    """Short distinct names for runs: the fewest trailing path parts that tell them apart.

    Example:
        >>> run_labels(["runs/a/version_0", "runs/b/version_0"])
        ['a/version_0', 'b/version_0']
        >>> run_labels(["x/last.ckpt", "x/last.ckpt"])
        ['last.ckpt', 'last.ckpt#2']
    """
    parts = [Path(p).resolve().parts for p in paths]  # resolved, so "." and ".." get real names
    for keep in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-keep:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    labels = [p[-1] for p in parts]  # the same run given twice: number the repeats
    counts: dict[str, int] = {}
    unique = []
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
        unique.append(label if counts[label] == 1 else f"{label}#{counts[label]}")
    return unique


def _union(items: Sequence[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(item for group in items for item in group))


def _shown_sites(sites: list[str], max_panels: int) -> list[str]:
    if len(sites) <= max_panels:
        return sites
    picks = np.unique(np.linspace(0, len(sites) - 1, max_panels).round().astype(int))
    return [sites[i] for i in picks]


def run_style(index: int) -> tuple[object, str]:
    """Colour and line style of the ``index``-th run (tab10 colours, 4 line styles, both cycling)."""
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10), _LINE_STYLES[index % len(_LINE_STYLES)]


def comparison_figure(histories: Sequence[MetricHistory], labels: Sequence[str], metric: str, by: str = "epoch", max_panels: int = 12) -> Figure:
    """One panel per site of ``metric``, each overlaying every run's curve (legend: runs).

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> a = MetricHistory([(0, 0, "affinity", "relu", 0.6), (9, 1, "affinity", "relu", 0.7)])
        >>> b = MetricHistory([(0, 0, "affinity", "relu", 0.5), (9, 1, "affinity", "relu", 0.9)])
        >>> [ax.get_title() for ax in comparison_figure([a, b], ["a", "b"], "affinity").axes]
        ['relu']
    """
    if max_panels < 1:
        raise ValueError(f"max_panels must be >= 1, got {max_panels!r}")
    all_sites = _union([h.sites(metric) for h in histories])
    sites = _shown_sites(all_sites, max_panels)
    columns = min(_PANEL_COLUMNS, max(1, len(sites)))
    rows = math.ceil(len(sites) / columns) if sites else 1
    from matplotlib.figure import Figure

    from lightning_complexity.figures import drawable

    figure = Figure(figsize=(3.1 * columns + 0.6, 2.3 * rows + 1.0), dpi=100, layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False, sharex=True)
    curves = [h.curves(by) for h in histories]
    handles = {}
    for index, site in enumerate(sites):
        axes = panels[index // columns][index % columns]
        for run_index, (label, run_curves) in enumerate(zip(labels, curves)):
            if (metric, site) not in run_curves:
                continue
            t, y = run_curves[(metric, site)]
            y = drawable(y)  # NaN, ±Inf and overflowing magnitudes left as gaps: draw what can be drawn
            colour, style = run_style(run_index)
            (line,) = axes.plot(t, y, linestyle=style, color=colour, marker="o" if len(t) <= 30 else None, markersize=2.5, linewidth=1.3, label=legend_text(f"{label}:{site}"))
            handles.setdefault(label, line)
        axes.set_title(plot_text(site), fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        if index // columns == rows - 1 or index + columns >= len(sites):
            axes.set_xlabel(by, fontsize=8)
    for index in range(len(sites), rows * columns):
        panels[index // columns][index % columns].set_visible(False)
    title = f"{plot_text(metric)} by run"
    if len(sites) < len(all_sites):
        title += f" — {len(sites)} of {len(all_sites)} sites, evenly spaced in forward order"
    figure.suptitle(title, fontsize=10)
    if handles:
        figure.legend(list(handles.values()), [legend_text(label) for label in handles], loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    return figure


def _final_values(history: MetricHistory) -> dict[tuple[str, str], tuple[float, int, int]]:
    """``(metric, site)`` → (value, epoch, step) at the curve's last measurement."""
    return {(row.metric, row.site): (row.value, row.epoch, row.step) for row in history}


def comparison_long_table(runs: Sequence[RunData], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run, metric and site: final value (and its epoch/step), exponent, R², points.

    Example::

        comparison_long_table([load_run("a"), load_run("b")], ["a", "b"]).head()
    """
    import pandas as pd

    records = []
    for run, label in zip(runs, labels):
        fits = run.history.power_law_fits(by=time_axis(run.history)).set_index(["metric", "site"])
        for (metric, site), (value, epoch, step) in _final_values(run.history).items():
            fit = fits.loc[(metric, site)]
            records.append({"run": label, "metric": metric, "site": site, "final_value": value, "final_epoch": epoch, "final_step": step,
                            "exponent": float(fit["exponent"]), "r2": float(fit["r2"]), "n_points": int(fit["n_points"])})
    columns = ["run", "metric", "site", "final_value", "final_epoch", "final_step", "exponent", "r2", "n_points"]
    return records_frame(records, columns)


def comparison_table(runs: Sequence[RunData], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run: where it came from, then ``final/<metric>/<site>`` and ``exponent/<metric>/<site>`` columns.

    Example::

        table = comparison_table([load_run("a"), load_run("b")], ["a", "b"])
        table.set_index("run")["final/affinity/relu"]
    """
    import pandas as pd

    long = comparison_long_table(runs, labels)
    curves = list(dict.fromkeys(zip(long["metric"], long["site"])))
    records = []
    for run, label in zip(runs, labels):
        mine = long[long["run"] == label].set_index(["metric", "site"])
        steps = run.history.steps()
        record: dict[str, object] = {"run": label, "source": run.kind, "path": str(run.path), "measurements": len(steps),
                                     "last_step": max(steps), "last_epoch": max(row.epoch for row in run.history)}
        for metric, site in curves:
            present = (metric, site) in mine.index
            record[f"final/{metric}/{site}"] = float(mine.loc[(metric, site), "final_value"]) if present else math.nan
            record[f"exponent/{metric}/{site}"] = float(mine.loc[(metric, site), "exponent"]) if present else math.nan
        records.append(record)
    return records_frame(records)


@dataclass
class ComparisonResult:
    """Where the comparison went."""

    html_path: Path
    csv_path: Path
    long_csv_path: Path
    png_paths: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _metric_table(long: pd.DataFrame, metric: str, labels: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    mine = long[long["metric"] == metric]
    sites = list(dict.fromkeys(mine["site"]))
    frame = pd.DataFrame({"site": pd.Series(sites, dtype=object)})
    for label in labels:
        by_site = mine[mine["run"] == label].set_index("site")
        frame[f"{label}: final"] = [by_site.loc[s, "final_value"] if s in by_site.index else math.nan for s in sites]
        frame[f"{label}: exponent b"] = [by_site.loc[s, "exponent"] if s in by_site.index else math.nan for s in sites]
    return frame


def write_comparison(runs: Sequence[RunData], labels: Sequence[str], out_dir: str | Path, max_panels: int = 12, progress: bool = True) -> ComparisonResult:
    """Write ``comparison.html``, ``comparison.csv``, ``comparison_long.csv`` and one PNG per metric.

    Args:
        runs: what :func:`lightning_complexity.export.load_run` read, one per run.
        labels: the runs' names (see :func:`run_labels`), as many as runs and distinct.
        out_dir: the folder to write (created if needed).
        max_panels: the most site panels per figure.
        progress: report each figure on stderr.

    Raises:
        ValueError: fewer than two runs, labels not matching the runs, or ``max_panels < 1``.

    Example::

        write_comparison([load_run("a.ckpt"), load_run("b.ckpt")], ["a", "b"], "comparison")
    """
    if len(runs) < 2:
        raise ValueError(f"a comparison needs at least two runs, got {len(runs)}")
    if len(labels) != len(runs) or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be {len(runs)} distinct names, one per run; got {list(labels)!r}")
    if isinstance(max_panels, bool) or not isinstance(max_panels, int) or max_panels < 1:
        raise ValueError(f"max_panels must be an int >= 1, got {max_panels!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histories = [run.history for run in runs]
    by = "epoch" if all(time_axis(h) == "epoch" for h in histories) else "step"
    metrics = _union([h.metrics() for h in histories])
    specs = [
        FigureSpec(f"compare_{file_stem(metric)}.png", metric, f"{metric} for each run (colour and line style by run), one panel per site, against the {by}.",
                   lambda m=metric: comparison_figure(histories, labels, m, by, max_panels))
        for metric in metrics
    ]
    render_figures(specs, out_dir, Progress(len(specs), "compare", enabled=progress))

    from lightning_complexity.export import write_table

    table = comparison_table(runs, labels)
    long = comparison_long_table(runs, labels)
    csv_path = write_table(table, out_dir / "comparison.csv")
    long_csv_path = write_table(long, out_dir / "comparison_long.csv")

    overview = table[["run", "source", "path", "measurements", "last_step", "last_epoch"]]
    body = [
        f"<h1>Complexity comparison of {len(runs)} runs</h1>",
        html_table(overview, ["run", "source", "path"]),
        f"<p>Time axis: {by}. Final values are each run's last measurement; exponents are the power-law fits y ≈ a·t^b (SPEC §4; NaN with fewer than 4 points after initialisation). Tables also in <code>comparison.csv</code> (one row per run) and <code>comparison_long.csv</code>.</p>",
    ]
    if not all(run.exact for run in runs):
        body.append('<p class="note">Some runs were read from TensorBoard, which stores scalars as float32 (about 7 significant digits).</p>')
    body.append("<nav>" + "".join(f'<a href="#{html.escape(file_stem(m))}">{html_text(m)}</a>' for m in metrics) + "</nav>")
    for metric, spec in zip(metrics, specs):
        body.append(f'<h2 id="{html.escape(file_stem(metric))}">{html_text(metric)}</h2>')
        body.append(html_figure(spec))
        body.append(html_table(_metric_table(long, metric, labels), ["site"]))
    html_path = out_dir / "comparison.html"
    atomic_write_text(html_path, html_page(f"Complexity comparison: {', '.join(labels)}", body))
    return ComparisonResult(
        html_path=html_path, csv_path=csv_path, long_csv_path=long_csv_path,
        png_paths=[out_dir / s.filename for s in specs if s.png is not None], failed=[s.filename for s in specs if s.png is None],
    )
