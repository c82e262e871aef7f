"""Names made safe where they are written; the history keeps every name exactly as measured.

A site is a module's dotted name, and a module name may be any string: a lone surrogate
(``"gelu\\udcff"``, from bytes decoded with ``surrogateescape``) cannot be encoded as UTF-8, so a
TensorBoard tag, a CSV file or an HTML page holding it raises; ``"$x$"`` is TeX to matplotlib
(mathtext) and ``"$x"`` breaks a figure; ``"=HYPERLINK(...)"`` is a formula to a spreadsheet.
Each writer therefore passes names through the function for its medium:

* :func:`printable` — lone surrogates as their escape ``\\udcff`` (TensorBoard tags, Lightning's
  ``CSVLogger`` keys, console lines); every other string is unchanged;
* :func:`plot_text` — :func:`printable`, with ``$`` escaped for matplotlib's mathtext;
* :func:`legend_text` — :func:`plot_text`, and a leading ``_`` kept visible (matplotlib hides
  legend entries whose label starts with ``_``);
* :func:`html_text` — :func:`printable`, HTML-escaped;
* :func:`spreadsheet_cell` / :func:`read_spreadsheet_cell` — the rule for text cells of CSV files
  (below), exactly undone when read back; :func:`spreadsheet_frame` applies it to a table.

**Spreadsheet cells** (CSV formula injection, OWASP's rule). A text cell (a metric, site, run
label, path or column name, never a number) is written unchanged unless it starts with ``=``,
``+``, ``-``, ``@``, a tab, a carriage return or ``'``, or holds a lone surrogate. Such a cell is
written as ``'`` followed by the text with each ``\\`` doubled and each lone surrogate as
``\\udcXX``; a spreadsheet shows the leading ``'``-quoted text and evaluates nothing. Reading
(:meth:`MetricHistory.from_csv`) drops the ``'`` and undoes the escapes, so a history round-trips
exactly; every cell that starts with ``'`` in such a file was written by this rule. Numbers are
written as numbers (``-0.5`` stays a number).

Example:
    >>> printable("gelu\\udcff")
    'gelu\\\\udcff'
    >>> plot_text("cost $x$")
    'cost \\\\$x\\\\$'
    >>> spreadsheet_cell("=1+1"), read_spreadsheet_cell("'=1+1")
    ("'=1+1", '=1+1')
    >>> spreadsheet_cell("features.relu1")
    'features.relu1'
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SPREADSHEET_TRIGGERS",
    "html_text",
    "legend_text",
    "needs_spreadsheet_quote",
    "plot_text",
    "printable",
    "read_spreadsheet_cell",
    "records_frame",
    "spreadsheet_cell",
    "spreadsheet_frame",
]

#: first characters that make a spreadsheet read a cell as a formula (OWASP), plus the quote itself.
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(\\|u[0-9a-fA-F]{4})")


def printable(name: object) -> str:
    """``str(name)`` with lone surrogates written as ``\\udcXX``, so it encodes as UTF-8.

    Example:
        >>> printable("relu"), printable("a\\udc80b")
        ('relu', 'a\\\\udc80b')
    """
    text = str(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def plot_text(name: object) -> str:
    """A name as matplotlib text: printable, with ``$`` escaped so that it is never mathtext.

    Example:
        >>> plot_text("a$b")
        'a\\\\$b'
    """
    return printable(name).replace("$", r"\$")


def legend_text(name: object) -> str:
    """A legend label: :func:`plot_text`, and a leading ``_`` (hidden by matplotlib) kept visible.

    Example:
        >>> legend_text("_private")
        ' _private'
    """
    text = plot_text(name)
    return " " + text if text.startswith("_") else text


def html_text(name: object) -> str:
    """A name as HTML text: printable and escaped.

    Example:
        >>> html_text("<b>\\udcff")
        '&lt;b&gt;\\\\udcff'
    """
    return html.escape(printable(name))


def needs_spreadsheet_quote(text: str) -> bool:
    """Whether :func:`spreadsheet_cell` changes ``text`` (a formula trigger first, or a lone surrogate)."""
    return text.startswith(SPREADSHEET_TRIGGERS) or _SURROGATE.search(text) is not None


def spreadsheet_cell(text: object) -> str:
    """A text cell for a CSV file: quoted with ``'`` (and escaped) when a spreadsheet would run it.

    Example:
        >>> spreadsheet_cell("-relu"), spreadsheet_cell("'a\\\\b")
        ("'-relu", "''a\\\\\\\\b")
    """
    text = str(text)
    if not needs_spreadsheet_quote(text):
        return text
    escaped = text.replace("\\", "\\\\")
    escaped = _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", escaped)
    return "'" + escaped


def read_spreadsheet_cell(text: str) -> str:
    """The inverse of :func:`spreadsheet_cell`.

    Example:
        >>> read_spreadsheet_cell("'gelu\\\\udcff") == "gelu\\udcff"
        True
    """
    if not text.startswith("'"):
        return text
    return _ESCAPE.sub(lambda match: "\\" if match.group(1) == "\\" else chr(int(match.group(1)[1:], 16)), text[1:])


def spreadsheet_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names follow :func:`spreadsheet_cell`.

    Numbers (and missing values) are left as they are; only strings are quoted.

    Example:
        >>> import pandas as pd
        >>> spreadsheet_frame(pd.DataFrame({"site": ["=1+1", "relu"], "value": [-1.0, 2.0]})).to_dict("list")
        {'site': ["'=1+1", 'relu'], 'value': [-1.0, 2.0]}
    """
    from pandas.api.types import is_object_dtype, is_string_dtype

    copy = frame.copy()
    for column in copy.columns:
        if is_object_dtype(copy[column]) or is_string_dtype(copy[column]):
            copy[column] = copy[column].map(lambda value: spreadsheet_cell(value) if isinstance(value, str) else value)
    copy.columns = [spreadsheet_cell(name) if isinstance(name, str) else name for name in copy.columns]
    return copy


def records_frame(records: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of ``records`` whose text columns keep every name exactly (object dtype).

    pandas 3 stores inferred strings as Arrow UTF-8, which cannot hold a lone surrogate; a column
    holding any ``str`` is built with ``dtype=object`` instead, the others are inferred.

    Example:
        >>> records_frame([{"site": "gelu\\udcff", "value": 1.0}]).dtypes.tolist()
        [dtype('O'), dtype('float64')]
    """
    import pandas as pd

    names = columns if columns is not None else list(dict.fromkeys(key for record in records for key in record))
    data = {}
    for index, name in enumerate(names):
        values = [record.get(name) for record in records]
        data[index] = pd.Series(values, dtype=object if any(isinstance(v, str) for v in values) else None)
    frame = pd.DataFrame(data, columns=range(len(names)))
    frame.columns = pd.Index(names, dtype=object)  # column names may be site names too
    return frame
