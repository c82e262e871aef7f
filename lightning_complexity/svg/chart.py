"""Line charts as SVG: a :class:`Chart` is a grid of :class:`Panel` s with a title and one legend.

A panel holds line and point series (NaN values are gaps), bands, vertical lines, a note when it
has nothing to show, and optionally a right-hand axis that is the left one times a constant, row
labels instead of y ticks (a dot plot), its own small legend. Sizes are in px; the chart's
``width`` × ``height`` is its natural size (100 px an inch, as the PNGs before).

Example:
    >>> import numpy as np
    >>> chart = Chart.grid(2, columns=2, title="Entropic complexity")
    >>> first = chart.panels[0]
    >>> first.title, first.xlabel, first.integer_x = "C_eps", "epoch", True
    >>> series = first.line(np.arange(4), np.array([1.0, np.nan, 2.0, 3.0]), colour="#1f77b4", marker=True)
    >>> chart.legend_entry("conv1 (Conv2d)", series)
    >>> chart.panels[1].note("no finite value")
    >>> svg = chart.svg()
    >>> svg.count("<circle"), "conv1 (Conv2d)" in svg
    (4, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lightning_complexity.svg import markup
from lightning_complexity.svg.ticks import Scale

__all__ = ["Band", "Chart", "LegendEntry", "Panel", "Series"]

TICK_SIZE, TITLE_SIZE, LABEL_SIZE, HEADING_SIZE, LEGEND_SIZE = 10.0, 12.5, 11.0, 14.0, 10.0
_GRID, _FRAME, _MUTED = "#d0d0d0", "#444444", "#888888"


@dataclass
class Series:
    """Points (x, y) joined by a line (``dash``: ``"-"``, ``"--"``, ``":"``, ``"-."``; None: no line), with optional markers."""

    x: np.ndarray
    y: np.ndarray
    colour: str
    dash: str | None = "-"
    width: float = 1.3
    marker: bool = False
    marker_size: float = 6.0  # diameter, px
    hollow: bool = False
    opacity: float = 1.0
    label: str | None = None


@dataclass
class Band:
    """The area between ``low`` and ``high`` over ``x`` (NaN: a gap)."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    colour: str = "#808080"
    opacity: float = 0.15


@dataclass
class LegendEntry:
    """A legend line: a series' look, or a filled square (``patch``)."""

    label: str
    colour: str
    dash: str | None = "-"
    marker: bool = False
    hollow: bool = False
    opacity: float = 1.0
    patch: bool = False

    @classmethod
    def of(cls, label: str, style: Series | Band) -> LegendEntry:
        if isinstance(style, Band):
            return cls(label, style.colour, None, opacity=style.opacity, patch=True)
        return cls(label, style.colour, style.dash, style.marker, style.hollow, style.opacity)


@dataclass
class Panel:
    """One plot: its series and how its axes look."""

    title: str = ""
    xlabel: str | None = None
    ylabel: str | None = None
    integer_x: bool = False
    log_x: bool = False
    log_y: bool = False
    xlimits: tuple[float, float] | None = None
    ylimits: tuple[float, float] | None = None
    y_ticks: bool = True
    grid_y: bool = True
    series: list[Series] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    vlines: list[tuple[float, str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    row_labels: list[tuple[float, str, str]] = field(default_factory=list)  # (y, text, colour)
    secondary: tuple[float, str] | None = None  # (factor, label): right axis = left × factor
    own_legend: bool = False

    def line(self, x, y, colour: str, dash: str | None = "-", width: float = 1.3, marker: bool = False, marker_size: float = 6.0,
             hollow: bool = False, opacity: float = 1.0, label: str | None = None) -> Series:
        """Add a series; ``x`` and ``y`` are converted to float64 (NaN and ±Inf are gaps)."""
        series = Series(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), colour, dash, width, marker, marker_size, hollow, opacity, label)
        self.series.append(series)
        return series

    def points(self, x, y, colour: str, size: float = 6.0, hollow: bool = False, opacity: float = 1.0, label: str | None = None) -> Series:
        """Add markers without a line."""
        return self.line(x, y, colour, dash=None, marker=True, marker_size=size, hollow=hollow, opacity=opacity, label=label)

    def band(self, x, low, high, colour: str = "#808080", opacity: float = 0.15) -> Band:
        band = Band(np.asarray(x, dtype=np.float64), np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64), colour, opacity)
        self.bands.append(band)
        return band

    def vline(self, x: float, colour: str = "black", width: float = 0.8) -> None:
        self.vlines.append((float(x), colour, width))

    def note(self, message: str) -> None:
        """A grey message in the middle of the plot (e.g. why it is empty)."""
        self.notes.append(message)

    def has_finite(self) -> bool:
        """Whether any series has a point with finite x and y."""
        return any(bool((np.isfinite(s.x) & np.isfinite(s.y)).any()) for s in self.series)

    # ------------------------------------------------------------------ layout
    def scales(self) -> tuple[Scale, Scale]:
        xs = [s.x for s in self.series] + [b.x for b in self.bands] + [np.array([v[0] for v in self.vlines])]
        ys = [s.y[np.isfinite(s.x)] for s in self.series] + [np.concatenate([b.low, b.high]) for b in self.bands]
        x_values = np.concatenate(xs) if xs else np.array([])
        y_values = np.concatenate(ys) if ys else np.array([])
        x = Scale.fit(x_values.tolist(), log=self.log_x, integer=self.integer_x, limits=self.xlimits)
        y = Scale.fit(y_values.tolist(), log=self.log_y, limits=self.ylimits, count=5)
        return x, y

    def left_gutter(self, y: Scale) -> float:
        """px needed left of the plot: y tick labels (or row labels) and the y label."""
        if self.row_labels:
            labels = max(markup.text_width(label, TICK_SIZE) for _, label, _ in self.row_labels)
        elif self.y_ticks:
            labels = max((markup.text_width(y.label(t), TICK_SIZE) for t in y.ticks or []), default=0.0)
        else:
            labels = 0.0
        return labels + 10 + (LABEL_SIZE + 6 if self.ylabel else 0)

    def right_gutter(self, y: Scale) -> float:
        if not self.secondary:
            return 0.0
        factor, _ = self.secondary
        right = Scale.fit([], limits=(y.low * factor, y.high * factor))
        return max((markup.text_width(right.label(t), TICK_SIZE) for t in right.ticks or []), default=0.0) + 10 + LABEL_SIZE + 6

    # ------------------------------------------------------------------ drawing
    def draw(self, left: float, top: float, width: float, height: float, clip_id: str) -> list[str]:
        """SVG elements of the panel whose plot area is (left, top, width, height)."""
        xs, ys = self.scales()
        bottom = top + height

        def px(value: float) -> float:
            return left + xs.position(value) * width

        def py(value: float) -> float:
            return bottom - ys.position(value) * height

        out = [f'<clipPath id="{clip_id}"><rect x="{markup.number(left)}" y="{markup.number(top)}" width="{markup.number(width)}" height="{markup.number(height)}"/></clipPath>']
        # grid and ticks
        for tick in xs.ticks or []:
            x = px(tick)
            out.append(markup.line(x, top, x, bottom, _GRID, 0.6))
            out.append(markup.line(x, bottom, x, bottom + 3.5, _FRAME, 0.8))
            out.append(markup.text(x, bottom + 5 + TICK_SIZE, xs.label(tick), TICK_SIZE, anchor="middle"))
        if self.y_ticks and not self.row_labels:
            for tick in ys.ticks or []:
                y = py(tick)
                if self.grid_y:
                    out.append(markup.line(left, y, left + width, y, _GRID, 0.6))
                out.append(markup.line(left - 3.5, y, left, y, _FRAME, 0.8))
                out.append(markup.text(left - 6, y + TICK_SIZE * 0.35, ys.label(tick), TICK_SIZE, anchor="end"))
        for y_value, label, colour in self.row_labels:
            out.append(markup.text(left - 6, py(y_value) + TICK_SIZE * 0.35, label, TICK_SIZE, anchor="end", colour=colour))
        if self.secondary:
            factor, label = self.secondary
            right = Scale.fit([], limits=(ys.low * factor, ys.high * factor))
            for tick in right.ticks or []:
                y = py(tick / factor)
                out.append(markup.line(left + width, y, left + width + 3.5, y, _FRAME, 0.8))
                out.append(markup.text(left + width + 6, y + TICK_SIZE * 0.35, right.label(tick), TICK_SIZE))
            gutter = max((markup.text_width(right.label(t), TICK_SIZE) for t in right.ticks or []), default=0.0)
            out.append(markup.text(left + width + 10 + gutter + LABEL_SIZE * 0.8, top + height / 2, label, LABEL_SIZE, anchor="middle", rotate=True))
        # data, clipped to the plot area
        out.append(f'<g clip-path="url(#{clip_id})">')
        for band in self.bands:
            out.extend(_band_paths(band, px, py))
        for x_value, colour, line_width in self.vlines:
            out.append(markup.line(px(x_value), top, px(x_value), bottom, colour, line_width))
        for series in self.series:
            out.extend(_series_elements(series, px, py))
        out.append("</g>")
        out.append(f'<rect x="{markup.number(left)}" y="{markup.number(top)}" width="{markup.number(width)}" height="{markup.number(height)}" fill="none" stroke="{_FRAME}" stroke-width="0.8"/>')
        for index, message in enumerate(self.notes):
            out.append(markup.text(left + width / 2, top + height / 2 + index * 14, message, LABEL_SIZE, anchor="middle", colour=_MUTED))
        if self.title:
            out.append(markup.text(left + width / 2, top - 7, self.title, TITLE_SIZE, anchor="middle"))
        if self.xlabel:
            out.append(markup.text(left + width / 2, bottom + 10 + TICK_SIZE + LABEL_SIZE, self.xlabel, LABEL_SIZE, anchor="middle"))
        if self.ylabel:
            out.append(markup.text(left - self.left_gutter(ys) + LABEL_SIZE, top + height / 2, self.ylabel, LABEL_SIZE, anchor="middle", rotate=True))
        if self.own_legend:
            entries = [LegendEntry.of(s.label, s) for s in self.series if s.label]
            out.extend(_legend(entries, left + width - 8 - _legend_width(entries, 9.0), top + 6, 9.0, background=True))
        return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _pixels(x: np.ndarray, y: np.ndarray, px, py) -> tuple[np.ndarray, np.ndarray]:
    return np.array([px(v) for v in x.tolist()]), np.array([py(v) for v in y.tolist()])


def _series_elements(series: Series, px, py) -> list[str]:
    with np.errstate(invalid="ignore"):
        x, y = _pixels(series.x, series.y, px, py)
    ok = np.isfinite(x) & np.isfinite(y)
    out = []
    if series.dash is not None:
        for start, stop in _runs(ok):
            if stop - start >= 2:
                out.append(markup.path(list(zip(x[start:stop].tolist(), y[start:stop].tolist())), series.colour, series.width, series.dash, series.opacity))
    if series.marker:
        out.extend(markup.circle(a, b, series.marker_size / 2, series.colour, series.hollow, series.opacity) for a, b in zip(x[ok].tolist(), y[ok].tolist()))
    return out


def _band_paths(band: Band, px, py) -> list[str]:
    x, low = _pixels(band.x, band.low, px, py)
    _, high = _pixels(band.x, band.high, px, py)
    ok = np.isfinite(x) & np.isfinite(low) & np.isfinite(high)
    out = []
    for start, stop in _runs(ok):
        if stop - start >= 2:
            outline = list(zip(x[start:stop].tolist(), high[start:stop].tolist())) + list(zip(x[start:stop][::-1].tolist(), low[start:stop][::-1].tolist()))
            out.append(markup.path(outline, band.colour, 0, fill=band.colour, fill_opacity=band.opacity, closed=True))
    return out


_ROW = 15.0  # px per legend line at LEGEND_SIZE


def _legend_width(entries: list[LegendEntry], size: float = LEGEND_SIZE) -> float:
    return 0.0 if not entries else 30 + max(markup.text_width(e.label, size) for e in entries)


def _legend(entries: list[LegendEntry], left: float, top: float, size: float = LEGEND_SIZE, background: bool = False) -> list[str]:
    row = _ROW * size / LEGEND_SIZE
    out = []
    if background and entries:
        out.append(markup.rect(left - 4, top - 2, _legend_width(entries, size) + 4, row * len(entries) + 4, "white", opacity=0.8))
    for index, entry in enumerate(entries):
        y = top + row * (index + 0.5)
        if entry.patch:
            out.append(markup.rect(left, y - 5, 20, 10, entry.colour, opacity=entry.opacity))
        else:
            if entry.dash is not None:
                out.append(markup.line(left, y, left + 20, y, entry.colour, 1.5, entry.dash, entry.opacity))
            if entry.marker:
                out.append(markup.circle(left + 10, y, 3, entry.colour, entry.hollow, entry.opacity))
        out.append(markup.text(left + 26, y + size * 0.35, entry.label, size))
    return out


@dataclass
class Chart:
    """A titled grid of panels with one legend on the right.

    Attributes:
        panels: in reading order, ``columns`` a row.
        panel_size: the plot area of each panel (px), without its labels.
    """

    panels: list[Panel]
    columns: int
    panel_size: tuple[float, float] = (330.0, 240.0)
    title: str | None = None
    legend: list[LegendEntry] = field(default_factory=list)

    @classmethod
    def grid(cls, count: int, columns: int, panel: tuple[float, float] = (330.0, 240.0), title: str | None = None) -> Chart:
        """``count`` empty panels in rows of ``columns``."""
        return cls([Panel() for _ in range(max(1, count))], max(1, min(columns, count)), panel, title)

    def legend_entry(self, label: str, style: Series | Band) -> None:
        """Add ``label`` drawn like ``style`` to the chart's legend, once."""
        if all(entry.label != label for entry in self.legend):
            self.legend.append(LegendEntry.of(label, style))

    @property
    def rows(self) -> int:
        return -(-len(self.panels) // self.columns)

    @property
    def _bottom(self) -> float:
        """px below each plot: tick labels, and the x label when a panel has one."""
        return 10 + TICK_SIZE + (LABEL_SIZE + 8 if any(p.xlabel for p in self.panels) else 0)

    def _layout(self) -> tuple[float, float, float, float, float]:
        """(left gutter, right gutter, heading height, width, height) in px: the same gutters for every panel, so columns align."""
        y_scales = [panel.scales()[1] for panel in self.panels]
        left = max(panel.left_gutter(y) for panel, y in zip(self.panels, y_scales))
        right = max(panel.right_gutter(y) for panel, y in zip(self.panels, y_scales)) + 14
        heading = 34.0 if self.title else 8.0
        column = left + self.panel_size[0] + right
        width = self.columns * column + _legend_width(self.legend) + (12 if self.legend else 0)
        if self.title:
            width = max(width, markup.text_width(self.title, HEADING_SIZE) + 20)
        row = 26 + self.panel_size[1] + self._bottom
        height = heading + self.rows * row
        legend_height = _ROW * len(self.legend) + 20
        return left, right, heading, width, max(height, heading + legend_height)

    def svg(self) -> str:
        """The chart as a standalone SVG document."""
        left, right, heading, width, height = self._layout()
        pw, ph = self.panel_size
        bottom = self._bottom
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{markup.number(width)}" height="{markup.number(height)}" viewBox="0 0 {markup.number(width)} {markup.number(height)}" font-family="{markup.FONT}">',
               f'<rect width="{markup.number(width)}" height="{markup.number(height)}" fill="white"/>']
        if self.title:
            panels_width = self.columns * (left + pw + right)  # centred over the panels, not the legend
            out.append(markup.text(max(panels_width / 2, markup.text_width(self.title, HEADING_SIZE) / 2 + 10), 22, self.title, HEADING_SIZE, anchor="middle", weight="600"))
        for index, panel in enumerate(self.panels):
            row, column = divmod(index, self.columns)
            x = column * (left + pw + right) + left
            y = heading + row * (26 + ph + bottom) + 26
            out.extend(panel.draw(x, y, pw, ph, f"clip{index}"))
        if self.legend:
            legend_left = self.columns * (left + pw + right) + 4
            legend_top = max(heading, heading + (height - heading - _ROW * len(self.legend)) / 2)
            out.extend(_legend(self.legend, legend_left, legend_top))
        out.append("</svg>")
        return "\n".join(out)
