"""The SVG elements the charts use, with every text escaped and every number short.

A site name may be any string (:mod:`lightning_complexity.safe_names`): :func:`svg_text` makes it
valid XML text (printable, control characters as ``\\xNN``, ``& < > " '`` escaped), so a name
can neither break the document nor add markup to it.

Text widths are estimated, not measured (no font is loaded): :func:`text_width` errs wide, so the
space kept for labels and legends is enough in the common sans-serif fonts.

Example:
    >>> svg_text("<relu & \\x07>")
    '&lt;relu &amp; \\\\x07&gt;'
    >>> text(10, 20, "a<b", size=9, anchor="end")
    '<text x="10" y="20" font-size="9" text-anchor="end">a&lt;b</text>'
"""

from __future__ import annotations

import html
import re

from lightning_complexity.safe_names import printable

__all__ = ["DASHES", "FONT", "circle", "line", "number", "path", "rect", "svg_text", "text", "text_width"]

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")  # not allowed in XML 1.0
DASHES = {"-": None, "--": "5,3", ":": "1.5,2", "-.": "6,2,1.5,2"}


def svg_text(value: object) -> str:
    """``value`` as escaped XML text."""
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", printable(value)))


def text_width(value: object, size: float) -> float:
    """An upper estimate of the width in px of ``value`` at font size ``size`` px."""
    return 0.62 * size * len(printable(value))


def number(value: float) -> str:
    """A coordinate with at most 2 decimals and no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _attributes(**attributes: object) -> str:
    parts = []
    for key, value in attributes.items():
        if value is None:
            continue
        value = number(value) if isinstance(value, float) else value
        parts.append(f'{key.rstrip("_").replace("_", "-")}="{value}"')
    return " ".join(parts)


def text(x: float, y: float, value: object, size: float, anchor: str = "start", colour: str | None = None, rotate: bool = False,
         baseline: str | None = None, weight: str | None = None, italic: bool = False) -> str:
    """A text at (x, y) (``y`` its baseline unless ``baseline`` says otherwise); ``rotate`` turns it 90° anticlockwise."""
    transform = f"rotate(-90 {number(x)} {number(y)})" if rotate else None
    attrs = _attributes(x=float(x), y=float(y), font_size=number(size), text_anchor=None if anchor == "start" else anchor, fill=colour,
                        dominant_baseline=baseline, font_weight=weight, font_style="italic" if italic else None, transform=transform)
    return f"<text {attrs}>{svg_text(value)}</text>"


def line(x1: float, y1: float, x2: float, y2: float, colour: str = "black", width: float = 1.0, dash: str = "-", opacity: float = 1.0) -> str:
    return f"<line {_attributes(x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), stroke=colour, stroke_width=number(width), stroke_dasharray=DASHES.get(dash), stroke_opacity=None if opacity == 1 else number(opacity))}/>"


def path(points: list[tuple[float, float]], colour: str, width: float, dash: str = "-", opacity: float = 1.0, fill: str | None = None, fill_opacity: float = 1.0,
         closed: bool = False) -> str:
    """A polyline (or a closed polygon when ``fill`` is given)."""
    d = "M" + " L".join(f"{number(x)} {number(y)}" for x, y in points) + (" Z" if closed else "")
    attrs = _attributes(d=d, fill=fill or "none", fill_opacity=None if fill is None or fill_opacity == 1 else number(fill_opacity),
                        stroke=colour if width > 0 else "none", stroke_width=number(width) if width > 0 else None, stroke_dasharray=DASHES.get(dash),
                        stroke_opacity=None if opacity == 1 else number(opacity), stroke_linejoin="round")
    return f"<path {attrs}/>"


def circle(x: float, y: float, radius: float, colour: str, hollow: bool = False, opacity: float = 1.0) -> str:
    fill = "white" if hollow else colour
    return f"<circle {_attributes(cx=float(x), cy=float(y), r=number(radius), fill=fill, stroke=colour, stroke_width='0.8', opacity=None if opacity == 1 else number(opacity))}/>"


def rect(x: float, y: float, width: float, height: float, fill: str, stroke: str | None = None, opacity: float = 1.0) -> str:
    return f"<rect {_attributes(x=float(x), y=float(y), width=float(width), height=float(height), fill=fill, stroke=stroke, fill_opacity=None if opacity == 1 else number(opacity))}/>"

