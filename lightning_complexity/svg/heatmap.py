"""A heatmap as SVG: rows × columns of cells coloured by viridis, with a colour bar.

NaN and ±Inf cells are light grey; the colour scale spans the finite values.

Example:
    >>> import numpy as np
    >>> heatmap = Heatmap(np.array([[0.6, np.nan], [0.7, 0.9]]), ["relu1", "relu2"], ["0", "1"], title="affinity signature",
    ...                   xlabel="epoch", ylabel="site (forward order)", colour_label="affinity")
    >>> svg = heatmap.svg()
    >>> svg.count('fill="#d3d3d3"'), "relu2" in svg
    (1, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_complexity.svg import markup
from lightning_complexity.svg.chart import HEADING_SIZE, LABEL_SIZE, TICK_SIZE, TITLE_SIZE
from lightning_complexity.svg.colours import VIRIDIS_STOPS, viridis
from lightning_complexity.svg.ticks import Scale

__all__ = ["MISSING", "Heatmap"]

#: the colour of a cell without a finite value.
MISSING = "#d3d3d3"


@dataclass
class Heatmap:
    """``values[i, j]`` drawn at row ``i`` (top to bottom) and column ``j``; ``column_labels`` every few columns."""

    values: np.ndarray
    row_labels: list[str]
    column_labels: list[str]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    colour_label: str = ""
    cell: tuple[float, float] = (40.0, 30.0)  # px, shrunk for large grids

    def svg(self) -> str:
        """The heatmap as a standalone SVG document."""
        values = np.asarray(self.values, dtype=np.float64)
        rows, columns = values.shape
        cell_w = max(8.0, min(self.cell[0], 900.0 / max(1, columns)))
        cell_h = max(8.0, min(self.cell[1], 900.0 / max(1, rows)))
        label_size = min(TICK_SIZE, cell_h * 0.8)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if high <= low:
            low, high = low - 0.5, high + 0.5
        scale = Scale.fit([], limits=(low, high), count=5)
        gutter = max((markup.text_width(label, label_size) for label in self.row_labels), default=0.0) + 10
        left = gutter + (LABEL_SIZE + 8 if self.ylabel else 0)
        top = 40.0 if self.title else 10.0
        width_cells, height_cells = columns * cell_w, rows * cell_h
        bar_left = left + width_cells + 16
        tick_gutter = max((markup.text_width(scale.label(t), TICK_SIZE) for t in scale.ticks or []), default=0.0)
        width = bar_left + 14 + 6 + tick_gutter + 10 + LABEL_SIZE + 10
        width = max(width, markup.text_width(self.title, TITLE_SIZE) + 20)
        height = top + max(height_cells, 120.0) + 10 + TICK_SIZE + (LABEL_SIZE + 10 if self.xlabel else 0) + 10
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{markup.number(width)}" height="{markup.number(height)}" viewBox="0 0 {markup.number(width)} {markup.number(height)}" font-family="{markup.FONT}">',
               f'<rect width="{markup.number(width)}" height="{markup.number(height)}" fill="white"/>']
        if self.title:
            out.append(markup.text(left + width_cells / 2, 24, self.title, HEADING_SIZE, anchor="middle", weight="600"))
        span = high - low
        for i in range(rows):
            for j in range(columns):
                value = values[i, j]
                colour = viridis((value - low) / span) if np.isfinite(value) else MISSING
                out.append(markup.rect(left + j * cell_w, top + i * cell_h, cell_w + 0.3, cell_h + 0.3, colour))
        for i, label in enumerate(self.row_labels):
            out.append(markup.text(left - 6, top + (i + 0.5) * cell_h + label_size * 0.35, label, label_size, anchor="end"))
        every = max(1, -(-columns // 12))
        bottom = top + height_cells
        for j in range(0, columns, every):
            x = left + (j + 0.5) * cell_w
            out.append(markup.line(x, bottom, x, bottom + 3.5, "#444444", 0.8))
            out.append(markup.text(x, bottom + 5 + TICK_SIZE, self.column_labels[j], TICK_SIZE, anchor="middle"))
        if self.xlabel:
            out.append(markup.text(left + width_cells / 2, bottom + 10 + TICK_SIZE + LABEL_SIZE, self.xlabel, LABEL_SIZE, anchor="middle"))
        if self.ylabel:
            out.append(markup.text(LABEL_SIZE + 2, top + height_cells / 2, self.ylabel, LABEL_SIZE, anchor="middle", rotate=True))
        out.append(f'<rect x="{markup.number(left)}" y="{markup.number(top)}" width="{markup.number(width_cells)}" height="{markup.number(height_cells)}" fill="none" stroke="#444444" stroke-width="0.8"/>')
        # colour bar: viridis from the bottom (low) to the top (high)
        bar_height = max(height_cells, 120.0)
        stops = "".join(f'<stop offset="{markup.number(k / (len(VIRIDIS_STOPS) - 1))}" stop-color="{c}"/>' for k, c in enumerate(VIRIDIS_STOPS))
        out.append(f'<defs><linearGradient id="bar" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>')
        out.append(f'<rect x="{markup.number(bar_left)}" y="{markup.number(top)}" width="14" height="{markup.number(bar_height)}" fill="url(#bar)" stroke="#444444" stroke-width="0.8"/>')
        for tick in scale.ticks or []:
            y = top + bar_height * (1 - scale.position(tick))
            out.append(markup.line(bar_left + 14, y, bar_left + 17.5, y, "#444444", 0.8))
            out.append(markup.text(bar_left + 20, y + TICK_SIZE * 0.35, scale.label(tick), TICK_SIZE))
        if self.colour_label:
            out.append(markup.text(bar_left + 20 + tick_gutter + 8 + LABEL_SIZE * 0.8, top + bar_height / 2, self.colour_label, LABEL_SIZE, anchor="middle", rotate=True))
        out.append("</svg>")
        return "\n".join(out)
