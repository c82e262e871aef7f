"""One run's report: a self-contained HTML page, with every figure also written beside it as PNG.

The page (``report.html``) embeds its images as base64 PNG and has no scripts, stylesheets or
links outside itself, so it can be mailed or attached to a paper's supplement as one file. It shows

* every metric's curves over training, one plot per metric with all its sites (a legend for up
  to 12 sites, a colour scale in forward order beyond that);
* the non-linearity signature heatmap (sites × measurements of ``affinity``) when affinity was
  measured;
* log-log power-law fits ``y ≈ a·t^b`` per metric, with each site's exponent and R², and the
  table of all fits (also written as ``power_laws.csv``);
* the layer-algebra table (SPEC §7) when the run was read from a checkpoint that holds it (also
  written as ``layer_algebra.csv``).

The time axis is the epoch (completed epochs; 0 is the measurement at initialisation), or the
global step when a run measured more than once per epoch (``every_n_steps``).

Example::

    from lightning_complexity.export import load_run
    from lightning_complexity.report import write_report
    report = write_report(load_run("runs/digits/version_0"), "runs/digits/version_0/complexity_report")
    report.html_path        # .../report.html, with the PNGs beside it
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_complexity.atomic import atomic_write_bytes, atomic_write_text
from lightning_complexity.safe_names import html_text, legend_text, plot_text, printable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lightning_complexity.export import RunData
    from lightning_complexity.history import MetricHistory

__all__ = ["FigureSpec", "Progress", "ReportResult", "curves_figure", "html_page", "html_table", "render_figures", "time_axis", "write_report"]

#: sites drawn with a legend; beyond this a colour scale in forward order replaces it.
MAX_LEGEND_SITES = 12
_MIN_FIT_POINTS = 4  # SPEC §4: a power law is fitted to at least 4 points with t > 0


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


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def site_colours(count: int) -> list[Any]:
    """``count`` distinguishable colours: tab10 up to 10, else viridis in forward order."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["viridis"](i / max(1, count - 1)) for i in range(count)]


def curves_figure(history: MetricHistory, metric: str, by: str = "epoch") -> Figure:
    """Every site's curve of ``metric`` against ``by`` (``"epoch"`` or ``"step"``), in one plot.

    Up to :data:`MAX_LEGEND_SITES` sites get a legend; more get a viridis colour scale running from
    the first site (forward order) to the last, with those two named.

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> h = MetricHistory([(0, 0, "affinity", "relu", 0.6), (9, 1, "affinity", "relu", 0.7)])
        >>> curves_figure(h, "affinity").axes[0].get_xlabel()
        'epoch'
    """
    from lightning_complexity.figures import drawable

    curves = [(site, t, drawable(y)) for (name, site), (t, y) in history.curves(by).items() if name == metric]
    figure = _new_figure(7.5, 4.2)
    axes = figure.add_subplot()
    colours = site_colours(len(curves))
    longest = max((len(t) for _, t, _ in curves), default=0)
    marker = "o" if longest <= 30 else None
    for colour, (site, t, y) in zip(colours, curves):
        axes.plot(t, y, marker=marker, markersize=3, linewidth=1.2, color=colour, label=legend_text(site))
    axes.set_xlabel(by)
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
    """The figure as PNG bytes (drawn with Agg; no display needed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


@dataclass
class FigureSpec:
    """A figure to draw: its file name, heading, caption, and how to draw it."""

    filename: str
    title: str
    caption: str
    draw: Callable[[], Figure]
    png: bytes | None = None
    error: str | None = None


class Progress:
    """Progress on stderr: a tqdm bar when stderr is a terminal and tqdm is installed, else a line per item.

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
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with lightning
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=label, file=self.stream, unit="figure", leave=False)

    def advance(self, what: str) -> None:
        """Count one item done (``what`` names it)."""
        self.done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(what, refresh=False)
            self._bar.update(1)
        else:
            print(f"{self.label}: [{self.done}/{self.total}] {what}", file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar (line mode needs nothing)."""
        if self._bar is not None:
            self._bar.close()


def render_figures(specs: Sequence[FigureSpec], out_dir: Path, progress: Progress) -> None:
    """Draw every figure, keep its PNG bytes and write ``out_dir/<filename>``; a failure is recorded, not raised."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        try:
            figure = spec.draw()
            spec.png = figure_png(figure)
            atomic_write_bytes(out_dir / spec.filename, spec.png)
        except Exception as error:  # noqa: BLE001 - one bad figure must not lose the whole report
            spec.error = f"{type(error).__name__}: {error}"
            print(f"{progress.label}: figure {spec.filename} failed ({spec.error})", file=progress.stream, flush=True)
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
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f4f4f4}td.text,th.text{text-align:left}figure{margin:1rem 0}img{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#555}.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.4rem .8rem}
.error{color:#a00}.scroll{overflow-x:auto}code{background:#f4f4f4;padding:0 .2rem}nav a{margin-right:1rem}
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


def html_table(frame: pd.DataFrame, text_columns: Iterable[str] = ()) -> str:
    """``frame`` as an HTML table; every header and cell is escaped; ``text_columns`` align left.

    Example:
        >>> import pandas as pd
        >>> "<td class=\\"text\\">a&amp;b</td>" in html_table(pd.DataFrame({"site": ["a&b"]}), ["site"])
        True
    """
    text_columns = set(text_columns)

    def cell(tag: str, column: Any, text: str) -> str:
        css = ' class="text"' if column in text_columns else ""
        return f"<{tag}{css}>{html_text(text)}</{tag}>"

    header = "".join(cell("th", c, str(c)) for c in frame.columns)
    rows = ["<tr>" + "".join(cell("td", c, format_cell(v)) for c, v in zip(frame.columns, values)) + "</tr>" for values in frame.itertuples(index=False)]
    return f'<div class="scroll"><table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table></div>"


def html_figure(spec: FigureSpec) -> str:
    """The figure embedded as a base64 PNG, with its caption; a failed figure as an error line."""
    if spec.png is None:
        return f'<p class="error">{html_text(spec.title)}: the figure could not be drawn ({html_text(spec.error or "unknown error")}).</p>'
    data = base64.b64encode(spec.png).decode("ascii")
    return (
        f'<figure><img alt="{html_text(spec.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html_text(spec.caption)} <code>{html_text(spec.filename)}</code></figcaption></figure>"
    )


# ---------------------------------------------------------------------- the report
@dataclass
class ReportResult:
    """Where the report went: the page, the PNGs beside it, and any figure that failed."""

    html_path: Path
    png_paths: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _drawable_for_fits(history: MetricHistory, by: str) -> list[str]:
    """Metrics with at least one curve of ≥ 4 usable (t > 0, finite y > 0) points."""
    metrics = []
    for (metric, _), (t, y) in history.curves(by).items():
        usable = (t > 0) & np.isfinite(y) & (y > 0)
        if np.count_nonzero(usable) >= _MIN_FIT_POINTS and metric not in metrics:
            metrics.append(metric)
    return metrics


def _sites_table(history: MetricHistory) -> pd.DataFrame:
    import pandas as pd

    metrics_at: dict[str, list[str]] = {}
    for metric in history.metrics():
        for site in history.sites(metric):
            metrics_at.setdefault(site, []).append(metric)
    return pd.DataFrame({"site": pd.Series(list(metrics_at), dtype=object), "metrics": pd.Series([", ".join(m) for m in metrics_at.values()], dtype=object)})


def _fits_table(fits: pd.DataFrame) -> pd.DataFrame:
    shown = fits[["metric", "site", "exponent", "ci_low", "ci_high", "r2", "prefactor", "n_points"]].copy()
    return shown.rename(columns={"exponent": "exponent b", "ci_low": "b 95% low", "ci_high": "b 95% high", "r2": "R²", "prefactor": "prefactor a", "n_points": "points"})


def write_report(run: RunData, out_dir: str | Path, label: str | None = None, progress: bool = True) -> ReportResult:
    """Write ``out_dir/report.html`` and its figures (PNG) for one run.

    Args:
        run: what :func:`lightning_complexity.export.load_run` read.
        out_dir: the folder to write (created if needed).
        label: the run's name in headings (default: the path read).
        progress: report each figure on stderr (a tqdm bar on a terminal).

    Example::

        report = write_report(load_run("runs/digits/version_0"), "report")
        print(report.html_path, len(report.png_paths))
    """
    from lightning_complexity.export import write_table
    from lightning_complexity.figures import power_law_figure, signature_heatmap

    out_dir = Path(out_dir)
    history = run.history
    label = label or str(run.path)
    by = time_axis(history)
    specs: list[FigureSpec] = []
    for metric in history.metrics():
        sites = history.sites(metric)
        specs.append(FigureSpec(f"curves_{file_stem(metric)}.png", metric, f"{metric} at {len(sites)} site(s) against the {by}.", lambda m=metric: curves_figure(history, m, by)))
    signature = None
    if "affinity" in history.metrics():
        signature = FigureSpec("signature_affinity.png", "non-linearity signature", "Affinity per site (rows, forward order) at each measurement (columns); 1 = affine.", lambda: signature_heatmap(history, "affinity"))
        specs.append(signature)
    fit_metrics = _drawable_for_fits(history, by)
    fit_specs = [
        FigureSpec(f"powerlaw_{file_stem(metric)}.png", f"{metric}: power-law fits", f"{metric} against the {by} on log-log axes; lines are the fits y = a·t^b (legend: exponent b, R²).", lambda m=metric: power_law_figure(history, m, by))
        for metric in fit_metrics
    ]
    specs.extend(fit_specs)
    _unique_filenames(specs)
    render_figures(specs, out_dir, Progress(len(specs), "report", enabled=progress))

    fits = history.power_law_fits(by=by)
    write_table(fits, out_dir / "power_laws.csv")
    if run.layer_algebra is not None:
        write_table(run.layer_algebra, out_dir / "layer_algebra.csv")

    curve_specs = [s for s in specs if s.filename.startswith("curves_")]
    steps = history.steps()
    epochs = sorted({row.epoch for row in history})
    body = [
        f"<h1>Complexity report: {html_text(label)}</h1>",
        "<ul>",
        f"<li>source: {html_text(run.kind)} <code>{html_text(run.path)}</code></li>",
        f"<li>{len(history)} rows; {len(steps)} measurements at steps {steps[0]}–{steps[-1]}, epochs {epochs[0]}–{epochs[-1]}</li>",
        f"<li>{len(history.metrics())} metrics, {len(history.sites())} sites; time axis: {by}</li>",
        "</ul>",
    ]
    if not run.exact:
        body.append('<p class="note">Read from TensorBoard, which stores scalars as float32: values agree with the checkpoint or CSV export to about 7 significant digits.</p>')
    sections = [("curves", "Curves"), ("signature", "Non-linearity signature"), ("power-laws", "Power-law fits"), ("sites", "Sites")]
    if run.layer_algebra is not None:
        sections.append(("layer-algebra", "Layer algebra"))
    body.append("<nav>" + "".join(f'<a href="#{anchor}">{html.escape(title)}</a>' for anchor, title in sections) + "</nav>")

    body.append('<h2 id="curves">Curves</h2>')
    for spec in curve_specs:
        body.append(f"<h3>{html_text(spec.title)}</h3>")
        body.append(html_figure(spec))

    body.append('<h2 id="signature">Non-linearity signature</h2>')
    body.append(html_figure(signature) if signature else "<p>No <code>affinity</code> in this run, so there is no signature.</p>")

    body.append('<h2 id="power-laws">Power-law fits</h2>')
    body.append(f"<p>Each curve is fitted with y ≈ a·t^b over the points with t = {by} &gt; 0 and y &gt; 0 (the measurement at initialisation is left out); a fit needs at least {_MIN_FIT_POINTS} such points. Table also in <code>power_laws.csv</code>.</p>")
    if not fit_specs:
        body.append(f"<p>No curve has {_MIN_FIT_POINTS} usable points yet, so no fit is drawn.</p>")
    for spec in fit_specs:
        body.append(html_figure(spec))
    body.append(html_table(_fits_table(fits), ["metric", "site"]))

    body.append('<h2 id="sites">Sites</h2>')
    body.append(html_table(_sites_table(history), ["site", "metrics"]))

    if run.layer_algebra is not None:
        body.append('<h2 id="layer-algebra">Layer algebra</h2>')
        body.append("<p>Static per-layer metrics of the architecture (SPEC §7), computed once at the start of fit. Also in <code>layer_algebra.csv</code>.</p>")
        from pandas.api.types import is_numeric_dtype

        frame = run.layer_algebra
        body.append(html_table(frame, [c for c in frame.columns if not is_numeric_dtype(frame[c])]))

    html_path = out_dir / "report.html"
    atomic_write_text(html_path, html_page(f"Complexity report: {label}", body))
    return ReportResult(
        html_path=html_path,
        png_paths=[out_dir / s.filename for s in specs if s.png is not None],
        failed=[s.filename for s in specs if s.png is None],
    )
