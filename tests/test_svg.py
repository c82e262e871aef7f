"""The console's SVG charts: data read back from the drawn SVG (through its own tick labels) equals
the data given; NaN gaps, log axes, the right-hand axis, the heatmap's colours, escaping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from svg_checks import SVG, data_marks, parse

from lightning_complexity.svg.chart import Chart
from lightning_complexity.svg.colours import viridis
from lightning_complexity.svg.heatmap import MISSING, Heatmap
from lightning_complexity.svg.ticks import Scale


def _ticks(root, axis: str) -> list[tuple[float, float]]:
    """(pixel, value) of each tick label on the x (``"x"``) or left y (``"y"``) axis of a one-panel chart."""
    frame = next(r for r in root.iter(SVG + "rect") if r.get("fill") == "none")
    left, top, height = float(frame.get("x")), float(frame.get("y")), float(frame.get("height"))
    out = []
    for text in root.iter(SVG + "text"):
        value = text.text.replace("−", "-")
        try:
            number = float(value)
        except ValueError:
            continue
        x, y = float(text.get("x")), float(text.get("y"))
        if axis == "x" and text.get("text-anchor") == "middle" and y > top + height:
            out.append((x, number))
        elif axis == "y" and text.get("text-anchor") == "end" and x < left:
            out.append((y - 10 * 0.35, number))  # labels sit 0.35 em below their tick
    return out


def _inverse(ticks: list[tuple[float, float]], log: bool = False):
    (p0, v0), (p1, v1) = ticks[0], ticks[-1]
    if log:
        v0, v1 = math.log10(v0), math.log10(v1)
    return lambda p: (10 ** (v0 + (p - p0) * (v1 - v0) / (p1 - p0))) if log else v0 + (p - p0) * (v1 - v0) / (p1 - p0)


@pytest.mark.parametrize("log", [False, True])
def test_points_read_back_through_the_tick_labels_equal_the_data(log) -> None:
    rng = np.random.default_rng(0)
    x = np.arange(1, 9, dtype=float)
    y = np.exp(rng.normal(0, 1, x.size)) if log else rng.normal(0.6, 0.1, x.size)
    chart = Chart.grid(1, 1)
    panel = chart.panels[0]
    panel.log_x = panel.log_y = log
    panel.integer_x = not log
    panel.points(x, y, "#1f77b4")
    root = parse(chart.svg())
    to_x, to_y = _inverse(_ticks(root, "x"), log), _inverse(_ticks(root, "y"), log)
    circles = [e for e in root.iter(SVG + "circle")]
    back = np.array([(to_x(float(c.get("cx"))), to_y(float(c.get("cy")))) for c in circles])
    # coordinates carry 2 decimals on a 330 × 240 px plot: 1e-4 of the range
    np.testing.assert_allclose(back[:, 0], x, rtol=2e-3 if log else 0, atol=0 if log else 2e-4 * np.ptp(x) * 1.1)
    np.testing.assert_allclose(back[:, 1], y, rtol=3e-3 if log else 0, atol=0 if log else 2e-4 * np.ptp(y) * 1.1)


def test_nan_and_inf_are_gaps_and_the_range_ignores_them() -> None:
    chart = Chart.grid(1, 1)
    chart.panels[0].line(np.arange(7), np.array([1.0, 2.0, np.nan, 3.0, 4.0, np.inf, 5.0]), "#000000", marker=True)
    root = parse(chart.svg())
    paths = [e for e in data_marks(root) if e.tag == SVG + "path"]
    assert len(paths) == 2  # [0, 1] and [3, 4]; the lone last point is a marker only
    assert len(list(root.iter(SVG + "circle"))) == 5
    scale = chart.panels[0].scales()[1]
    assert scale.low == pytest.approx(1.0 - 0.2) and scale.high == pytest.approx(5.0 + 0.2)  # 5 % margins of the finite range


def test_nice_ticks() -> None:
    assert Scale.fit([0, 8], integer=True).ticks == [0, 2, 4, 6, 8]
    assert Scale.fit([0, 1], integer=True).ticks == [0, 1]  # never 0.5 on an epoch axis
    assert Scale.fit([0.55, 0.71]).ticks == [0.55, 0.6, 0.65, 0.7]
    constant = Scale.fit([0.6, 0.6])
    assert constant.low < 0.6 < constant.high and len(constant.ticks) >= 2
    assert Scale.fit([3, 400], log=True).ticks == [5, 10, 20, 50, 100, 200, 500]
    many = Scale.fit([1e-6, 1e3], log=True)
    assert 2 <= len(many.ticks) <= 7 and all(math.log10(t).is_integer() for t in many.ticks)
    assert [Scale.fit([-0.02, 0.01]).label(t) for t in Scale.fit([-0.02, 0.01]).ticks] == ["−0.02", "−0.01", "0.00", "0.01"]


def test_the_right_hand_axis_is_the_left_one_times_its_factor() -> None:
    chart = Chart.grid(1, 1)
    panel = chart.panels[0]
    panel.line(np.arange(5), np.array([235.0, 240, 242, 241, 246]), "#000000")
    panel.secondary = (1 / 144, "per_neuron")
    root = parse(chart.svg())
    frame = next(r for r in root.iter(SVG + "rect") if r.get("fill") == "none")
    right_edge = float(frame.get("x")) + float(frame.get("width"))
    left = _inverse(_ticks(root, "y"))
    right = [(float(t.get("y")) - 3.5, float(t.text.replace("−", "-"))) for t in root.iter(SVG + "text") if float(t.get("x")) > right_edge and t.text[0].isdigit()]
    assert len(right) >= 2
    for pixel, value in right:
        assert left(pixel) / 144 == pytest.approx(value, rel=1e-4)


def test_heatmap_cells_take_the_viridis_colour_of_their_value() -> None:
    values = np.array([[0.0, 0.5], [1.0, np.nan]])
    root = parse(Heatmap(values, ["a", "b"], ["0", "1"]).svg())
    cells = [r.get("fill") for r in root.iter(SVG + "rect") if r.get("fill") not in ("white", "none", "url(#bar)")]
    assert cells == [viridis(0.0), viridis(0.5), viridis(1.0), MISSING]
    assert viridis(0.5) == "#21918c"  # matplotlib's viridis at 0.5 (its table, rounded)


def test_names_are_escaped_text_never_markup() -> None:
    hostile = '</text><script>alert("x")</script>&amp;\x07'
    chart = Chart.grid(1, 1, title=hostile)
    chart.legend_entry(hostile, chart.panels[0].line([0, 1], [0, 1], "#000000"))
    svg = chart.svg()
    root = parse(svg)
    assert not list(root.iter(SVG + "script")) and "<script" not in svg
    texts = [t.text for t in root.iter(SVG + "text")]
    assert texts.count('</text><script>alert("x")</script>&amp;\\x07') == 2  # title and legend, the bell written as \x07
