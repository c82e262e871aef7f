"""Checks of the SVG figures the console writes: well-formed, sized, with data drawn and no NaN coordinates."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

SVG = "{http://www.w3.org/2000/svg}"
_NUMBER_ATTRIBUTES = ("x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "width", "height", "d")


def parse(svg: str | bytes) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)
    assert root.tag == SVG + "svg", root.tag
    return root


def data_marks(root: ElementTree.Element) -> list[ElementTree.Element]:
    """The elements that show data: markers, lines inside a panel's clipped group, heatmap cells."""
    marks = [e for g in root.iter(SVG + "g") if g.get("clip-path") for e in g if e.tag in (SVG + "path", SVG + "circle")]
    cells = [e for e in root.iter(SVG + "rect") if e.get("fill", "").startswith("#") and e.get("fill") not in ("#ffffff", "#d3d3d3")]
    return marks + cells


def assert_drawn(paths: list[Path]) -> None:
    """Each file is an SVG of real size with data drawn and only finite coordinates."""
    assert paths
    for path in paths:
        root = parse(path.read_bytes())
        assert float(root.get("width")) > 100 and float(root.get("height")) > 100, path
        assert data_marks(root), f"{path} shows no data"
        for element in root.iter():
            for name in _NUMBER_ATTRIBUTES:
                value = element.get(name)
                assert value is None or not re.search(r"nan|inf", value, re.IGNORECASE), (path, element.tag, name, value)
