"""Several runs side by side: overlaid curves per metric and a table of final values and exponents.

Figures: the training context (each trainer metric, a line per run) when the runs have one, then
one figure per metric. Each site gets its own small panel (titled with its module type, in forward
order) in which every run is a line (colour and line style by run, one legend for the figure), so
runs stay comparable however many sites there are. With more than ``max_panels`` sites, that many
are shown, evenly spaced in forward order (first and last included); the figure's title says so
and every value is in the tables. Bookkeeping (``samples``) and metrics folded into their parent
(another metric times a constant in every run, e.g. ``effective_dimension_ratio``) get no figure.

Tables:

* ``comparison.csv`` — one row per run: ``run, source, path, measurements, last_step, last_epoch,
  validation_metric, validation_final`` then, for every ``(metric, site)`` of any run,
  ``final/<metric>/<site>`` (the value at the run's last measurement), ``exponent/<metric>/<site>``
  (the power-law exponent b; NaN with fewer than 4 points after initialisation) and
  ``conclusive/<metric>/<site>`` (the verdict of :mod:`lightning_complexity.report_tables`). A
  curve a run lacks is NaN.
* ``comparison_long.csv`` — the same numbers one row per run, metric and site, with R².
* ``comparison.html`` — the figures embedded and one table per metric (rows: sites; columns:
  each run's final value and exponent, an inconclusive exponent in parentheses).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_complexity.atomic import atomic_write_text
from lightning_complexity.report import FigureSpec, Progress, file_stem, format_cell, html_figure, html_page, html_table, render_figures, time_axis
from lightning_complexity.safe_names import html_text, records_frame
from lightning_complexity.svg.chart import Chart, Panel, Series
from lightning_complexity.svg.colours import TAB10

if TYPE_CHECKING:
    import pandas as pd
    from lightning_complexity.export import RunData
    from lightning_complexity.history import MetricHistory
    from lightning_complexity.run_contents import RunContents

__all__ = ["ComparisonResult", "comparison_figure", "comparison_table", "comparison_long_table", "run_labels", "write_comparison"]

_LINE_STYLES = ("-", "--", ":", "-.")
_PANEL_COLUMNS = 4
_PANEL = (260.0, 190.0)  # px


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


def run_style(index: int) -> tuple[str, str]:
    """Colour and line style of the ``index``-th run (tab10 colours, 4 line styles, both cycling).

    Example:
        >>> run_style(0), run_style(11)
        (('#1f77b4', '-'), ('#ff7f0e', '-.'))
    """
    return TAB10[index % len(TAB10)], _LINE_STYLES[index % len(_LINE_STYLES)]


def _merged_contents(histories: Sequence[MetricHistory], site_metadata: Sequence[dict] | None) -> RunContents:
    """One :class:`RunContents` over all runs: every run's rows, the metadata of the runs that have it."""
    from lightning_complexity.history import MetricHistory
    from lightning_complexity.run_contents import run_contents

    merged_metadata: dict = {}
    for metadata in reversed(list(site_metadata or [])):  # the first run's metadata wins
        merged_metadata.update(metadata or {})
    union = MetricHistory(row for history in histories for row in history)
    return run_contents(union, merged_metadata)


def comparison_figure(histories: Sequence[MetricHistory], labels: Sequence[str], metric: str, by: str = "epoch", max_panels: int = 12,
                      contents: RunContents | None = None) -> Chart:
    """One panel per site of ``metric`` (forward order, titled with the module type), each overlaying every run's curve.

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> a = MetricHistory([(0, 0, "affinity", "relu", 0.6), (9, 1, "affinity", "relu", 0.7)])
        >>> b = MetricHistory([(0, 0, "affinity", "relu", 0.5), (9, 1, "affinity", "relu", 0.9)])
        >>> [panel.title for panel in comparison_figure([a, b], ["a", "b"], "affinity").panels]
        ['relu']
    """
    if max_panels < 1:
        raise ValueError(f"max_panels must be >= 1, got {max_panels!r}")
    contents = contents if contents is not None else _merged_contents(histories, None)
    all_sites = contents.order(_union([h.sites(metric) for h in histories]))
    sites = _shown_sites(all_sites, max_panels)
    title = f"{metric} by run"
    if len(sites) < len(all_sites):
        title += f" — {len(sites)} of {len(all_sites)} sites, evenly spaced in forward order"
    chart = Chart.grid(max(1, len(sites)), _PANEL_COLUMNS, panel=_PANEL, title=title)
    curves = [h.curves(by) for h in histories]
    for panel, site in zip(chart.panels, sites):
        for run_index, (label, run_curves) in enumerate(zip(labels, curves)):
            if (metric, site) in run_curves:
                t, y = run_curves[(metric, site)]
                chart.legend_entry(label, _run_line(panel, run_index, t, y))
        panel.title, panel.xlabel, panel.integer_x = contents.label(site), by, True
    return chart


def _run_line(panel: Panel, run_index: int, t: np.ndarray, y: np.ndarray) -> Series:
    from lightning_complexity.figures import drawable

    colour, dash = run_style(run_index)
    return panel.line(t, drawable(y), colour, dash, 1.3, marker=t.size <= 30, marker_size=5)


def _context_figure(histories: Sequence[MetricHistory], labels: Sequence[str], keys: list[str], by: str) -> Chart:
    from lightning_complexity.run_contents import CONTEXT_SITE

    chart = Chart.grid(len(keys), _PANEL_COLUMNS, panel=_PANEL, title="Training context by run (the trainer's logged scalars at each measurement)")
    for panel, key in zip(chart.panels, keys):
        for run_index, (label, history) in enumerate(zip(labels, histories)):
            t, y = history.series(key, CONTEXT_SITE, by=by)
            if t.size:
                chart.legend_entry(label, _run_line(panel, run_index, t, y))
        panel.title, panel.xlabel, panel.integer_x = key, by, True
    return chart


def _final_values(history: MetricHistory) -> dict[tuple[str, str], tuple[float, int, int]]:
    """``(metric, site)`` → (value, epoch, step) at the curve's last measurement."""
    return {(row.metric, row.site): (row.value, row.epoch, row.step) for row in history}


_NOT_FITTED = {"exponent": math.nan, "r2": math.nan, "n_points": 0}


def comparison_long_table(runs: Sequence[RunData], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run, metric and site: final value (and its epoch/step), exponent, R², points, verdict.

    Example::

        comparison_long_table([load_run("a"), load_run("b")], ["a", "b"]).head()
    """
    from lightning_complexity.report_tables import fit_verdicts

    records = []
    for run, label in zip(runs, labels):
        fits = run.history.power_law_fits(by=time_axis(run.history))
        verdicts = dict(zip(zip(fits["metric"], fits["site"]), (ok for ok, _ in fit_verdicts(fits))))
        indexed = {key: row for key, row in zip(zip(fits["metric"], fits["site"]), fits.to_dict(orient="records"))}
        for (metric, site), (value, epoch, step) in _final_values(run.history).items():
            fit = indexed.get((metric, site), _NOT_FITTED)  # bookkeeping (``samples``) is not fitted
            records.append({"run": label, "metric": metric, "site": site, "final_value": value, "final_epoch": epoch, "final_step": step,
                            "exponent": float(fit["exponent"]), "r2": float(fit["r2"]), "n_points": int(fit["n_points"]), "conclusive": bool(verdicts.get((metric, site), False))})
    columns = ["run", "metric", "site", "final_value", "final_epoch", "final_step", "exponent", "r2", "n_points", "conclusive"]
    return records_frame(records, columns)


def comparison_table(runs: Sequence[RunData], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run: where it came from, its main validation metric, then ``final/``, ``exponent/`` and ``conclusive/<metric>/<site>`` columns.

    Example::

        table = comparison_table([load_run("a"), load_run("b")], ["a", "b"])
        table.set_index("run")["final/affinity/relu"]
    """
    from lightning_complexity.run_contents import CONTEXT_SITE, main_validation_metric, run_contents

    long = comparison_long_table(runs, labels)
    curves = list(dict.fromkeys(zip(long["metric"], long["site"])))
    by_run = {label: {(m, s): row for m, s, row in zip(group["metric"], group["site"], group.to_dict(orient="records"))} for label, group in long.groupby("run", sort=False)}
    records = []
    for run, label in zip(runs, labels):
        mine = by_run.get(label, {})
        steps = run.history.steps()
        against = main_validation_metric(run_contents(run.history, run.sites).context_keys)
        final_validation = mine[(against, CONTEXT_SITE)]["final_value"] if against and (against, CONTEXT_SITE) in mine else math.nan
        record: dict[str, object] = {"run": label, "source": run.kind, "path": str(run.path), "measurements": len(steps),
                                     "last_step": max(steps), "last_epoch": max(row.epoch for row in run.history),
                                     "validation_metric": against or "", "validation_final": final_validation}
        for metric, site in curves:
            row = mine.get((metric, site))
            record[f"final/{metric}/{site}"] = float(row["final_value"]) if row else math.nan
            record[f"exponent/{metric}/{site}"] = float(row["exponent"]) if row else math.nan
            record[f"conclusive/{metric}/{site}"] = bool(row["conclusive"]) if row else False
        records.append(record)
    return records_frame(records)


@dataclass
class ComparisonResult:
    """Where the comparison went."""

    html_path: Path
    csv_path: Path
    long_csv_path: Path
    figure_paths: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _metric_table(long: pd.DataFrame, metric: str, labels: Sequence[str], contents: RunContents) -> pd.DataFrame:
    mine = long[long["metric"] == metric]
    sites = contents.order(mine["site"])
    rows = {(run, site): row for run, site, row in zip(mine["run"], mine["site"], mine.to_dict(orient="records"))}
    records = []
    for site in sites:
        record: dict[str, Any] = {"site": contents.label(site)}
        for label in labels:
            row = rows.get((label, site))
            record[f"{label}: final"] = row["final_value"] if row else math.nan
            exponent = format_cell(row["exponent"]) if row else "–"
            record[f"{label}: exponent b"] = exponent if not row or row["conclusive"] or exponent == "–" else f"({exponent})"
        records.append(record)
    return records_frame(records, ["site", *(f"{label}: {part}" for label in labels for part in ("final", "exponent b"))])


def write_comparison(runs: Sequence[RunData], labels: Sequence[str], out_dir: str | Path, max_panels: int = 12, progress: bool = True) -> ComparisonResult:
    """Write ``comparison.html``, ``comparison.csv``, ``comparison_long.csv`` and one SVG per figure.

    Args:
        runs: what :func:`lightning_complexity.export.load_run` read, one per run.
        labels: the runs' names (see :func:`run_labels`), as many as runs and distinct.
        out_dir: the folder to write (created if needed).
        max_panels: the most site panels per figure.
        progress: a progress bar on stderr when it is a terminal.

    Raises:
        ValueError: fewer than two runs, labels not matching the runs, or ``max_panels < 1``.

    Example::

        write_comparison([load_run("a.ckpt"), load_run("b.ckpt")], ["a", "b"], "comparison")
    """
    from lightning_complexity.export import write_table
    from lightning_complexity.report_tables import folded_metrics
    from lightning_complexity.run_contents import FLAG_METRICS, METADATA_METRICS

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
    contents = _merged_contents(histories, [run.sites for run in runs])
    folded_everywhere = set.intersection(*(set(folded_metrics(h, by)) for h in histories))
    skipped = set(METADATA_METRICS) | set(FLAG_METRICS) | set(contents.context_keys) | folded_everywhere
    metrics = [m for m in _union([h.metrics() for h in histories]) if m not in skipped]
    specs = []
    if contents.context_keys:
        specs.append(FigureSpec("compare_training.svg", "training context", "Each trainer metric for each run (colour and line style by run).",
                                lambda: _context_figure(histories, labels, contents.context_keys, by)))
    metric_specs = [
        FigureSpec(f"compare_{file_stem(metric)}.svg", metric, f"{metric} for each run (colour and line style by run), one panel per site in forward order, against the {by}.",
                   lambda m=metric: comparison_figure(histories, labels, m, by, max_panels, contents))
        for metric in metrics
    ]
    specs += metric_specs
    render_figures(specs, out_dir, Progress(len(specs), "compare", enabled=progress))

    table = comparison_table(runs, labels)
    long = comparison_long_table(runs, labels)
    csv_path = write_table(table, out_dir / "comparison.csv")
    long_csv_path = write_table(long, out_dir / "comparison_long.csv")

    overview = table[["run", "source", "path", "measurements", "last_step", "last_epoch", "validation_metric", "validation_final"]].copy()
    overview.columns = ["run", "source", "path", "measurements", "last step", "last epoch", "validation metric", "its final value"]
    body = [
        f"<h1>Complexity comparison of {len(runs)} runs</h1>",
        html_table(overview, ["run", "source", "path", "validation metric"]),
        f"<p>{html_text(contents.describe_sites())} over all runs. Time axis: {by}. Final values are each run's last measurement; exponents are the power-law fits "
        "y ≈ a·t^b (SPEC §4; NaN with fewer than 4 points after initialisation); an exponent in parentheses is inconclusive (rule in the report, "
        "<code>lightning_complexity.report_tables</code>) and should not be quoted. Tables also in <code>comparison.csv</code> (one row per run) and "
        "<code>comparison_long.csv</code>."
        + (f" Folded into their parent in every run (not drawn again): {html_text(', '.join(sorted(folded_everywhere)))}." if folded_everywhere else "")
        + "</p>",
    ]
    if not all(run.exact for run in runs):
        body.append('<p class="note">Some runs were read from TensorBoard, which stores scalars as float32 (about 7 significant digits).</p>')
    anchors = (["training"] if contents.context_keys else []) + [file_stem(m) for m in metrics]
    names = (["training context"] if contents.context_keys else []) + metrics
    body.append("<nav>" + "".join(f'<a href="#{html.escape(a)}">{html_text(n)}</a>' for a, n in zip(anchors, names)) + "</nav>")
    if contents.context_keys:
        body.append('<h2 id="training">Training context</h2>')
        body.append(html_figure(specs[0]))
    for metric, spec in zip(metrics, metric_specs):
        body.append(f'<h2 id="{html.escape(file_stem(metric))}">{html_text(metric)}</h2>')
        body.append(html_figure(spec))
        body.append(html_table(_metric_table(long, metric, labels, contents), ["site"]))
    html_path = out_dir / "comparison.html"
    atomic_write_text(html_path, html_page(f"Complexity comparison: {', '.join(labels)}", body))
    return ComparisonResult(
        html_path=html_path, csv_path=csv_path, long_csv_path=long_csv_path,
        figure_paths=[out_dir / s.filename for s in specs if s.svg is not None], failed=[s.filename for s in specs if s.error is not None],
    )
