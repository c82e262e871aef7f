"""Charts as SVG text, for the report and the comparison pages.

The console's pages are read in a browser, which draws vector text and lines itself; building the
SVG in Python takes milliseconds a figure where matplotlib's Agg takes a tenth of a second per
axes (BENCHMARKS.md, "Console"). The charts are what those pages need and no more: line and point
series with NaN gaps, bands, linear or log axes with "nice" ticks, a right-hand axis that is the
left one times a constant, shared legends, and a heatmap with its colour bar. TensorBoard's images
are still drawn with matplotlib (:mod:`lightning_complexity.figures`).

* :mod:`.colours` — tab10 and viridis, as hex;
* :mod:`.ticks` — axis ranges and tick positions and labels;
* :mod:`.markup` — escaped text and the few SVG elements used;
* :mod:`.chart` — :class:`~.chart.Chart` of :class:`~.chart.Panel` s;
* :mod:`.heatmap` — :class:`~.heatmap.Heatmap`.

Example:
    >>> import numpy as np
    >>> from lightning_complexity.svg.chart import Chart
    >>> chart = Chart.grid(1, columns=1, title="affinity")
    >>> series = chart.panels[0].line(np.arange(3), np.array([0.6, 0.7, 0.8]), colour="#1f77b4", label="relu")
    >>> chart.svg().startswith("<svg")
    True
"""
