"""One run's report: a self-contained HTML page, with every figure also written beside it as SVG.

The page (``report.html``) embeds its figures as base64 SVG images (vector: sharp at any zoom, and
drawn by the browser, so a report takes about a second) and has no scripts, stylesheets or links
outside itself, so it can be mailed or attached to a paper's supplement as one file. The SVG files
beside it open in any browser or vector editor (Inkscape, Illustrator) and convert to PDF for
LaTeX (``rsvg-convert -f pdf``, ``inkscape --export-type=pdf``). It shows,
in this order:

* a summary: where the values come from, the measurements, the real sites counted apart from the
  summaries across sites (with their module types), the training context and the main validation
  metric (rule: :mod:`lightning_complexity.run_contents`), failed measurements;
* **training context**: the trainer's logged scalars across measurements, and each headline
  metric (the first of each family) against the main validation metric;
* **sites**: every real site by depth, grouped by top-level module, with its module type, kind,
  sample count and metrics;
* one figure per idea (:data:`lightning_complexity.report_figures.FAMILIES`): affinity with its
  signature summaries, effective dimension with its ratio to the width, activation patterns,
  entropic complexity, Betti numbers, linear regions; a metric of no family gets its own; and the
  non-linearity signature heatmap (sites by depth × measurements);
* **power-law fits**: the exponents with their 95 % intervals, the log-log curves with their fits,
  and the table; inconclusive fits are greyed and flagged with the reason (rule:
  :mod:`lightning_complexity.report_tables`); a metric that is another one times a constant
  (``effective_dimension_ratio``) is folded into it; every fit is in ``power_laws.csv``;
* the final value of every site-level metric, and the layer-algebra table (SPEC §7) when the run
  was read from a checkpoint that holds it (also ``layer_algebra.csv``).

The time axis is the epoch (completed epochs; 0 is the measurement at initialisation; integer
ticks), or the global step when a run measured more than once per epoch (``every_n_steps``).

Example::

    from lightning_complexity.export import load_run
    from lightning_complexity.report import write_report
    report = write_report(load_run("runs/digits/version_0"), "runs/digits/version_0/complexity_report")
    report.html_path        # .../report.html, with the SVG figures beside it
"""

from __future__ import annotations

import base64
import io
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lightning_complexity.atomic import atomic_write_text
from lightning_complexity.safe_names import html_text, legend_text, plot_text

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lightning_complexity.export import RunData
    from lightning_complexity.history import MetricHistory
    from lightning_complexity.run_contents import RunContents

__all__ = ["Drawing", "FigureSpec", "Progress", "ReportResult", "curves_figure", "html_page", "html_table", "render_figures", "time_axis", "write_report"]

#: sites drawn with a legend; beyond this a colour scale in forward order replaces it.
MAX_LEGEND_SITES = 12


# ---------------------------------------------------------------------- figures
def time_axis(history: MetricHistory) -> str:
    """``"epoch"`` when every measurement has its own epoch, else ``"step"`` (several per epoch).

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> time_axis(MetricHistory([(0, 0, "a", "s", 1.0), (8, 1, "a", "s", 2.0)]))
        'epoch'
        >>> time_axis(MetricHistory([(0, 0, "a", "s", 1.0), (4, 0, "a", "s", 2.0)]))
        'step'
    """
    epoch_of_step = {row.step: row.epoch for row in history}
    return "epoch" if len(set(epoch_of_step.values())) == len(epoch_of_step) else "step"


def curves_figure(history: MetricHistory, metric: str, by: str = "epoch") -> Figure:
    """Every site's curve of ``metric`` against ``by`` (``"epoch"`` or ``"step"``), in one plot.

    Up to :data:`MAX_LEGEND_SITES` sites get a legend; more get a viridis colour scale running from
    the first site (forward order) to the last, with those two named. Values that cannot be drawn
    (NaN, ±Inf, beyond 1e300) are gaps.

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> h = MetricHistory([(0, 0, "affinity", "relu", 0.6), (9, 1, "affinity", "relu", 0.7)])
        >>> curves_figure(h, "affinity").axes[0].get_xlabel()
        'epoch'
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from lightning_complexity.figures import drawable
    from lightning_complexity.svg.colours import site_colours

    curves = [(site, t, drawable(y)) for (name, site), (t, y) in history.curves(by).items() if name == metric]
    figure = Figure(figsize=(7.5, 4.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    colours = site_colours(len(curves))
    longest = max((len(t) for _, t, _ in curves), default=0)
    marker = "o" if longest <= 30 else None
    for colour, (site, t, y) in zip(colours, curves):
        axes.plot(t, y, marker=marker, markersize=3, linewidth=1.2, color=colour, label=legend_text(site))
    axes.set_xlabel(by)
    if by == "epoch":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(plot_text(metric))
    axes.set_title(f"{plot_text(metric)} ({len(curves)} site{'s' if len(curves) != 1 else ''})")
    axes.grid(alpha=0.3)
    if len(curves) <= MAX_LEGEND_SITES:
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        scale = ScalarMappable(norm=Normalize(0, len(curves) - 1), cmap="viridis")
        bar = figure.colorbar(scale, ax=axes, label="site, forward order")
        bar.set_ticks([0, len(curves) - 1], labels=[plot_text(curves[0][0]), plot_text(curves[-1][0])], fontsize=7)
    return figure


def figure_png(figure: Figure) -> bytes:
    """A matplotlib figure (:func:`curves_figure`, :mod:`lightning_complexity.figures`) as PNG bytes (drawn with Agg; no display needed).

    zlib level 1: the figures are flat colours, so the files are barely larger than at the default
    level 6, and encoding takes a fraction of the time.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


class Drawing(Protocol):
    """A chart that writes itself as SVG (:class:`lightning_complexity.svg.chart.Chart`, :class:`~lightning_complexity.svg.heatmap.Heatmap`)."""

    def svg(self) -> str: ...


@dataclass
class FigureSpec:
    """A figure to draw: its file name (``.svg``), heading, caption, and how to draw it.

    ``draw`` may return None when the run has nothing to draw for it (the page then says
    ``empty``: why, where the reason is known).
    """

    filename: str
    title: str
    caption: str
    draw: Callable[[], Drawing | None]
    svg: str | None = None
    error: str | None = None
    empty: str = "nothing to draw for this run."


class Progress:
    """Progress on stderr as a tqdm bar, shown only when stderr is a terminal (logs stay clean).

    Example::

        progress = Progress(total=3, label="report")
        for name in ("a", "b", "c"):
            progress.advance(name)
        progress.close()
    """

    def __init__(self, total: int, label: str, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._bar = None
        if enabled and total and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm  # installed with lightning

            self._bar = tqdm(total=total, desc=label, file=self.stream, unit="figure", leave=False, dynamic_ncols=True)

    def advance(self, what: str) -> None:
        """Count one item done (``what`` names it)."""
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(what, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()


def render_figures(specs: Sequence[FigureSpec], out_dir: Path, progress: Progress) -> None:
    """Draw every figure, keep its SVG text and write ``out_dir/<filename>``; a failure is recorded, not raised."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        try:
            drawing = spec.draw()
            if drawing is not None:
                spec.svg = drawing.svg()
                atomic_write_text(out_dir / spec.filename, spec.svg)
        except Exception as error:  # noqa: BLE001 - one bad figure must not lose the whole report
            spec.error = f"{type(error).__name__}: {error}"
            progress.stream.write(f"{progress.label}: figure {spec.filename} failed ({spec.error})\n")
            progress.stream.flush()
        progress.advance(spec.filename)
    progress.close()


def file_stem(name: str) -> str:
    """A file-name-safe form of a metric name.

    Example:
        >>> file_stem("betti/0 <x>")
        'betti_0_x'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"


def _unique_filenames(specs: list[FigureSpec]) -> None:
    seen: dict[str, int] = {}
    for spec in specs:
        count = seen.get(spec.filename, 0)
        seen[spec.filename] = count + 1
        if count:
            stem, dot, suffix = spec.filename.rpartition(".")
            spec.filename = f"{stem}_{count}{dot}{suffix}"


# ---------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f4f4f4}td.text,th.text{text-align:left}figure{margin:1rem 0}img{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#555}.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.4rem .8rem}
.error{color:#a00}.scroll{overflow-x:auto}code{background:#f4f4f4;padding:0 .2rem}nav a{margin-right:1rem}
tr.muted td{color:#999}tr.muted td:last-child{font-style:italic}tr.group th{background:#fafafa;text-align:left;font-weight:600}
.summary li{margin:.15rem 0}td{white-space:nowrap}td.wrap{white-space:normal;min-width:14rem}nav a{white-space:nowrap;display:inline-block}
""".strip()


def html_page(title: str, body: Iterable[str]) -> str:
    """A complete HTML document: ``title`` (escaped here) and ``body`` (HTML fragments, already escaped).

    Example:
        >>> "<title>a &lt;b&gt;</title>" in html_page("a <b>", ["<p>x</p>"])
        True
    """
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html_text(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def format_cell(value: Any) -> str:
    """A table cell's text: floats to 4 significant digits, NaN/None as an en dash.

    Example:
        >>> format_cell(0.123456), format_cell(float("nan")), format_cell(12)
        ('0.1235', '–', '12')
    """
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def html_table(frame: pd.DataFrame, text_columns: Iterable[str] = (), row_classes: Sequence[str] | None = None, group_by: str | None = None,
               wrap_columns: Iterable[str] = ()) -> str:
    """``frame`` as an HTML table; every header and cell is escaped; ``text_columns`` align left.

    Cells keep to one line (a site label such as ``features.relu1 (ReLU)`` must not break) except
    in ``wrap_columns`` (long prose: a verdict, a list of metrics), which wrap.

    ``row_classes`` gives each row a CSS class (``"muted"`` greys it); ``group_by`` names a column
    whose value heads each run of equal rows (a row spanning the table) instead of being a column.

    Example:
        >>> import pandas as pd
        >>> "<td class=\\"text\\">a&amp;b</td>" in html_table(pd.DataFrame({"site": ["a&b"]}), ["site"])
        True
    """
    text_columns, wrap_columns = set(text_columns), set(wrap_columns)
    columns = [c for c in frame.columns if c != group_by]

    def cell(tag: str, column: Any, text: str) -> str:
        classes = " ".join(name for name, on in (("text", column in text_columns), ("wrap", column in wrap_columns)) if on)
        css = f' class="{classes}"' if classes else ""
        return f"<{tag}{css}>{html_text(text)}</{tag}>"

    header = "".join(cell("th", c, str(c)) for c in columns)
    rows: list[str] = []
    group: Any = object()
    for index, values in enumerate(frame.itertuples(index=False)):
        record = dict(zip(frame.columns, values))
        if group_by is not None and record[group_by] != group:
            group = record[group_by]
            rows.append(f'<tr class="group"><th class="text" colspan="{len(columns)}">{html_text(group)}</th></tr>')
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        rows.append(f"<tr{css}>" + "".join(cell("td", c, format_cell(record[c])) for c in columns) + "</tr>")
    return f'<div class="scroll"><table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table></div>"


def html_figure(spec: FigureSpec) -> str:
    """The figure embedded as a base64 SVG image (its scripts could not run, had it any), with its caption; a failed figure as an error line."""
    if spec.svg is None:
        if spec.error is None:
            return f"<p>{html_text(spec.title)}: {html_text(spec.empty)}</p>"
        return f'<p class="error">{html_text(spec.title)}: the figure could not be drawn ({html_text(spec.error)}).</p>'
    data = base64.b64encode(spec.svg.encode("utf-8")).decode("ascii")
    return (
        f'<figure><img alt="{html_text(spec.title)}" src="data:image/svg+xml;base64,{data}">'
        f"<figcaption>{html_text(spec.caption)} <code>{html_text(spec.filename)}</code></figcaption></figure>"
    )


#: the final-values table has one column per site up to this many sites, one row per site beyond.
_MAX_SITE_COLUMNS = 8


def _transposed(finals: pd.DataFrame) -> pd.DataFrame:
    from lightning_complexity.safe_names import records_frame

    sites = finals["site"].tolist()
    records = [{"metric": metric, **dict(zip(sites, finals[metric].tolist()))} for metric in finals.columns if metric != "site"]
    return records_frame(records, ["metric", *sites])


def _section(anchor: str, title: str) -> str:
    return f'<h2 id="{html_text(anchor)}">{html_text(title)}</h2>'


# ---------------------------------------------------------------------- the report
@dataclass
class ReportResult:
    """Where the report went: the page, the SVG figures beside it, and any figure that failed."""

    html_path: Path
    figure_paths: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _summary(run: RunData, contents: RunContents, against: str | None, by: str) -> list[str]:
    from lightning_complexity.run_contents import CONTEXT_SITE

    history = run.history
    steps = history.steps()
    epochs = sorted({row.epoch for row in history})
    items = [
        f"source: {html_text(run.kind)} <code>{html_text(run.path)}</code>" + ("" if run.exact else " (float32 values)"),
        f"{len(steps)} measurements at steps {steps[0]}–{steps[-1]}, epochs {epochs[0]}–{epochs[-1]}; time axis: {by}; {len(history)} rows",
        f"<strong>{html_text(contents.describe_sites())}</strong>, measured by {len(contents.site_metrics)} metrics",
    ]
    parts = [f"summaries across sites: {html_text(', '.join(f'{m} ({len(history.sites(m))})' for m in contents.summary_metrics))}"] if contents.summary_metrics else []
    if contents.network_metrics:
        parts.append(f"network-level: {html_text(', '.join(contents.network_metrics))}")
    if parts:
        items.append("; ".join(parts) + " (not counted as sites)")
    if contents.context_keys:
        items.append(f"training context (site <code>trainer</code>): {html_text(', '.join(contents.context_keys))}")
        if against:
            _, values = history.series(against, CONTEXT_SITE)
            finite = values[np.isfinite(values)]
            final = f"{finite[-1]:.4g} at the last measurement" if finite.size else "no finite value"
            items.append(f"main validation metric: <strong>{html_text(against)}</strong>, {final}")
    else:
        items.append("no training context (no rows at site <code>trainer</code>)" + ("" if run.exact else "; TensorBoard logs hold it only when the monitor logged it there, a checkpoint always does"))
    if run.failures:
        shown = ", ".join(str(step) for step, _ in run.failures[:10]) + (" …" if len(run.failures) > 10 else "")
        items.append(f'<span class="error">{len(run.failures)} measurement(s) failed (steps {shown}); their rows are NaN</span>')
    return ['<ul class="summary">', *(f"<li>{item}</li>" for item in items), "</ul>"]


def write_report(run: RunData, out_dir: str | Path, label: str | None = None, progress: bool = True, against: str | None = None) -> ReportResult:
    """Write ``out_dir/report.html`` and its figures (SVG) for one run.

    Args:
        run: what :func:`lightning_complexity.export.load_run` read.
        out_dir: the folder to write (created if needed).
        label: the run's name in headings (default: the path read).
        progress: a progress bar on stderr when it is a terminal.
        against: the trainer metric to plot complexity against (default: the main validation
            metric, :func:`lightning_complexity.run_contents.main_validation_metric`).

    Raises:
        ValueError: ``against`` is not one of the run's trainer metrics.

    Example::

        report = write_report(load_run("runs/digits/version_0"), "report")
        print(report.html_path, len(report.figure_paths))
    """
    from lightning_complexity.export import write_table
    from lightning_complexity.report_figures import (
        ReportData,
        against_figure,
        exponents_figure,
        family_figure,
        headline_metrics,
        loglog_figure,
        present_families,
        signature_figure,
        training_figure,
    )
    from lightning_complexity.report_tables import conclusive_thresholds, final_values_table, fits_table, folded_metrics, select_fits, sites_table
    from lightning_complexity.run_contents import main_validation_metric, run_contents

    out_dir = Path(out_dir)
    history = run.history
    label = label or str(run.path)
    by = time_axis(history)
    contents = run_contents(history, run.sites)
    against = main_validation_metric(contents.context_keys, against)
    data = ReportData.build(history, contents, by)
    folded = folded_metrics(history, by)
    families = present_families(data, folded)
    headlines = headline_metrics(data, families)
    fits = history.power_law_fits(by=by)
    shown, verdicts = select_fits(fits, contents, folded)
    conclusive = [ok for ok, _ in verdicts]

    training = FigureSpec("training.svg", "training", "The trainer's logged scalars at each measurement (solid: validation, dashed: the others).", lambda: training_figure(data))
    versus = None
    if against:
        versus = FigureSpec(f"against_{file_stem(against)}.svg", f"complexity against {against}",
                            f"Each headline metric (y) against {against} (x) at every measurement: one line per site in training order, hollow at the first measurement, filled at the last.",
                            lambda: against_figure(data, headlines, against))
    family_specs = [(family, FigureSpec(f"{family.key}.svg", family.title, family.caption, lambda f=family, p=panels: family_figure(data, f, p))) for family, panels in families]
    signature = None
    if "affinity" in history.metrics():
        order = contents.order(history.sites("affinity"))
        signature = FigureSpec("signature_affinity.svg", "non-linearity signature",
                               "Affinity per site (rows: forward order, with module type) at each measurement (columns); 1 = affine; grey: no value.",
                               lambda: signature_figure(history, "affinity", order, {s: contents.label(s) for s in order}))
    exponents = FigureSpec("powerlaw_exponents.svg", "power-law exponents", "Every exponent b with its 95% interval; grey and hollow: inconclusive (rule above).", lambda: exponents_figure(data, shown, conclusive))
    loglog = FigureSpec("powerlaw_fits.svg", "power-law fits", f"Headline curves against the {by} on log-log axes with their fits y = a·t^b (dashed and faint: inconclusive).",
                        lambda: loglog_figure(data, shown, conclusive, headlines))
    if not np.isfinite(shown["exponent"].to_numpy(dtype=float)).any():
        exponents.empty = loglog.empty = "no curve has yet the 4 points after initialisation (t > 0, y > 0) that a fit needs."
    specs = [*([training] if contents.context_keys else []), *([versus] if versus else []), *(spec for _, spec in family_specs), *([signature] if signature else []), exponents, loglog]
    _unique_filenames(specs)
    render_figures(specs, out_dir, Progress(len(specs), "report", enabled=progress))

    write_table(fits, out_dir / "power_laws.csv")
    if run.layer_algebra is not None:
        write_table(run.layer_algebra, out_dir / "layer_algebra.csv")

    sections = [("context", "Training context"), ("sites", "Sites"), *((family.key, family.title) for family, _ in family_specs), ("power-laws", "Power-law fits"), ("final", "Final values")]
    if run.layer_algebra is not None:
        sections.append(("layer-algebra", "Layer algebra"))
    body = [f"<h1>Complexity report: {html_text(label)}</h1>", *_summary(run, contents, against, by)]
    if not run.exact:
        body.append('<p class="note">Read from TensorBoard, which stores scalars as float32: values agree with the checkpoint or CSV export to about 7 significant digits.</p>')
    body.append("<nav>" + "".join(f'<a href="#{html_text(anchor)}">{html_text(title)}</a>' for anchor, title in sections) + "</nav>")

    body.append(_section("context", "Training context"))
    if contents.context_keys:
        body.append(html_figure(training))
        body.append(html_figure(versus) if versus else "<p>No validation metric (a trainer key starting with <code>val</code>) to plot complexity against; choose one with <code>--against KEY</code>.</p>")
    else:
        body.append("<p>This run has no training context: no rows at site <code>trainer</code> (the trainer's logged scalars at each measurement).</p>")

    body.append(_section("sites", "Sites"))
    summaries = ", ".join(contents.summary_metrics) or "none"
    body.append(f"<p>{html_text(contents.describe_sites())}, in forward order (depth), grouped by top-level module. Summaries across sites ({html_text(summaries)}), network-level metrics and the trainer's scalars are not sites.</p>")
    if contents.sites:
        body.append(html_table(sites_table(history, contents), ["site", "module type", "kind", "metrics"], group_by="block", wrap_columns=["metrics"]))

    for family, spec in family_specs:
        body.append(_section(family.key, family.title))
        body.append(html_figure(spec))
        if family.key == "nonlinearity" and signature is not None:
            body.append(html_figure(signature))
    if signature is not None and not any(family.key == "nonlinearity" for family, _ in family_specs):
        body.append(html_figure(signature))

    min_dof, min_r2 = conclusive_thresholds()
    body.append(_section("power-laws", "Power-law fits"))
    folded_text = f" Folded into their parent (the same curve times a constant at each site, hence the same exponent and R²): {', '.join(f'{c} → {p}' for c, p in folded.items())}." if folded else ""
    body.append(
        f"<p>Each curve is fitted with y ≈ a·t^b over the points with t = {by} &gt; 0 and y &gt; 0 (the measurement at initialisation is left out). "
        f"<strong>A fit is conclusive</strong> when it has at least {min_dof} residual degrees of freedom ({2 + min_dof} points for the power law), "
        f"R² ≥ {min_r2:g}, and a 95% interval of b that excludes 0 (the analytic one and the bootstrap one). An inconclusive fit is drawn grey "
        f"or dashed and its row greyed, with the reason: its exponent should not be quoted.{html_text(folded_text)} "
        "Every fit, folded ones included, is in <code>power_laws.csv</code>.</p>"
    )
    body.append(html_figure(exponents))
    body.append(html_figure(loglog))
    body.append(f"<p>{sum(conclusive)} of {len(conclusive)} fits are conclusive.</p>")
    body.append(html_table(fits_table(shown, verdicts, contents), ["metric", "site", "verdict"], row_classes=["" if ok else "muted" for ok in conclusive], wrap_columns=["verdict"]))

    body.append(_section("final", "Final values"))
    finals = final_values_table(history, contents)
    if len(finals) <= _MAX_SITE_COLUMNS:  # few sites: one column per site reads better than a wide row of metrics
        body.append("<p>Each site-level metric (rows) at the last measurement, sites (columns) in forward order.</p>")
        body.append(html_table(_transposed(finals), ["metric"]))
    else:
        body.append("<p>Each site-level metric at the last measurement, sites in forward order.</p>")
        body.append(html_table(finals, ["site"]))

    if run.layer_algebra is not None:
        from pandas.api.types import is_numeric_dtype

        body.append(_section("layer-algebra", "Layer algebra"))
        body.append("<p>Static per-layer metrics of the architecture (SPEC §7), computed once at the start of fit. Also in <code>layer_algebra.csv</code>.</p>")
        frame = run.layer_algebra
        body.append(html_table(frame, [c for c in frame.columns if not is_numeric_dtype(frame[c])]))

    html_path = out_dir / "report.html"
    atomic_write_text(html_path, html_page(f"Complexity report: {label}", body))
    return ReportResult(
        html_path=html_path,
        figure_paths=[out_dir / s.filename for s in specs if s.svg is not None],
        failed=[s.filename for s in specs if s.error is not None],
    )
