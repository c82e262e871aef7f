"""MetricHistory: the tidy table of every measurement, and its exports.

One row per ``(step, epoch, metric, site, value)``. Exports round-trip exactly: CSV and JSON write
each float with Python's shortest round-tripping ``repr``; NaN is written as ``nan`` (CSV) and
``null`` (JSON) and read back as NaN.

Files are replaced atomically (written beside the target, then renamed): a failure mid-write
leaves the previous file as it was. Text cells (metric, site) of a CSV follow the spreadsheet
rule of :mod:`lightning_complexity.safe_names`: a name that a spreadsheet would run as a formula
(``=``, ``+``, ``-``, ``@``, tab, CR first) or that holds a lone surrogate is written ``'``-quoted
and escaped, and :meth:`MetricHistory.from_csv` undoes it, so names round-trip exactly. Parquet
stores names as they are, except that a history holding a lone surrogate (which Parquet's UTF-8
strings cannot hold) has its names written by the same rule and the file marked so that
:meth:`MetricHistory.from_parquet` undoes it. JSON escapes such characters itself.

Example:
    >>> history = MetricHistory()
    >>> history.append(step=0, epoch=0, metric="effective_dimension", site="relu", value=3.5)
    >>> history.to_dataframe()
       step  epoch               metric  site  value
    0     0      0  effective_dimension  relu    3.5
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lightning_complexity.atomic import atomic_path, atomic_write, atomic_write_text
from lightning_complexity.safe_names import read_spreadsheet_cell, spreadsheet_cell

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BOOKKEEPING_METRICS", "POWER_LAW_COLUMNS", "MetricHistory", "MetricRow"]

COLUMNS = ("step", "epoch", "metric", "site", "value")
#: metrics that are bookkeeping, not curves of interest: ``samples`` is how many samples each
#: site's values rest on (a count the probe fixes, not something the network learns), so
#: :meth:`MetricHistory.power_law_fits` does not fit it and the report shows it in the sites table.
BOOKKEEPING_METRICS = ("samples",)
_JSON_FORMAT = "lightning_complexity.history/1"
#: Parquet key-value metadata marking a file whose text cells follow the spreadsheet rule.
_PARQUET_TEXT_KEY = b"lightning_complexity.text_cells"
_PARQUET_TEXT_RULE = b"spreadsheet_cell/1"
#: the columns of :meth:`MetricHistory.power_law_fits`: the curve, then every field of ``PowerLawFit``.
POWER_LAW_COLUMNS = ("metric", "site", "exponent", "prefactor", "r2", "stderr", "ci_low", "ci_high", "n_points", "offset", "model", "boot_low", "boot_high", "t_min", "conclusive")
# object for text: pandas 3's default string dtype is Arrow-backed and cannot hold a lone surrogate.
_FIT_DTYPES = {"metric": object, "site": object, "n_points": "int64", "model": object, "conclusive": bool}


class MetricRow(NamedTuple):
    """One measurement of one metric at one site."""

    step: int
    epoch: int
    metric: str
    site: str
    value: float


class MetricHistory:
    """Every measurement the monitor made, in the order it made them.

    Rows are appended by :class:`~lightning_complexity.ComplexityMonitor`; users read them as a
    pandas DataFrame or export them. Two histories are equal when their rows are equal, NaN
    matching NaN.

    Example:
        >>> h = MetricHistory([MetricRow(0, 0, "affinity", "relu", 0.62)])
        >>> h.series("affinity", "relu")
        (array([0]), array([0.62]))
    """

    def __init__(self, rows: Iterable[MetricRow | tuple] = ()) -> None:
        self._rows: list[MetricRow] = [MetricRow(*_normalise(*row)) for row in rows]

    # ------------------------------------------------------------------ building
    def append(self, step: int, epoch: int, metric: str, site: str, value: float) -> None:
        """Add one row."""
        self._rows.append(MetricRow(*_normalise(step, epoch, metric, site, value)))

    def extend(self, rows: Iterable[MetricRow | tuple]) -> None:
        """Add many rows."""
        self._rows.extend(MetricRow(*_normalise(*row)) for row in rows)

    def steps(self) -> list[int]:
        """Distinct steps at which something was measured, in order of first appearance."""
        return list(dict.fromkeys(row.step for row in self._rows))

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[MetricRow]:
        return iter(self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetricHistory) or len(self) != len(other):
            return False
        return all(_rows_equal(a, b) for a, b in zip(self._rows, other._rows))

    def __repr__(self) -> str:
        return f"MetricHistory({len(self)} rows, metrics={self.metrics()})"

    def snapshot(self) -> MetricHistory:
        """A history of the rows so far that later appends leave unchanged (rows are immutable,
        so they are shared, not copied: a list copy, microseconds).

        Example:
            >>> h = MetricHistory([(0, 0, "affinity", "relu", 0.6)])
            >>> frozen = h.snapshot()
            >>> h.append(1, 1, "affinity", "relu", 0.7)
            >>> len(frozen), len(h)
            (1, 2)
        """
        copy = MetricHistory()
        copy._rows = list(self._rows)
        return copy

    @property
    def rows(self) -> list[MetricRow]:
        """A copy of the rows."""
        return list(self._rows)

    def metrics(self) -> list[str]:
        """Metric names in order of first appearance."""
        return list(dict.fromkeys(row.metric for row in self._rows))

    def sites(self, metric: str | None = None) -> list[str]:
        """Site names (for one metric, or all) in order of first appearance."""
        return list(dict.fromkeys(row.site for row in self._rows if metric is None or row.metric == metric))

    def series(self, metric: str, site: str, by: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
        """``(t, values)`` of one curve, ``t`` being ``"epoch"`` or ``"step"``."""
        if by not in ("epoch", "step"):
            raise ValueError(f"`by` must be 'epoch' or 'step', got {by!r}")
        picked = [row for row in self._rows if row.metric == metric and row.site == site]
        t = np.array([getattr(row, by) for row in picked], dtype=np.int64)
        return t, np.array([row.value for row in picked], dtype=np.float64)

    def curves(self, by: str = "epoch") -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """Every ``(metric, site)`` curve as ``(t, values)``, built in one pass over the rows."""
        if by not in ("epoch", "step"):
            raise ValueError(f"`by` must be 'epoch' or 'step', got {by!r}")
        grouped: dict[tuple[str, str], tuple[list, list]] = {}
        for row in self._rows:
            times, values = grouped.setdefault((row.metric, row.site), ([], []))
            times.append(getattr(row, by))
            values.append(row.value)
        return {key: (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64)) for key, (t, v) in grouped.items()}

    def power_law_records(self, by: str = "epoch", window: tuple[float | None, float | None] | None = None, offset: bool = False) -> list[dict[str, Any]]:
        """The rows of :meth:`power_law_fits` as plain dicts (``metric``, ``site``, then every fit field).

        The same fits without pandas: the console's ``export`` writes them straight to CSV or
        JSON, and importing pandas would be half of its run time.

        Example:
            >>> history = MetricHistory([(e, e, "affinity", "relu", 2.0 * e**-0.5) for e in range(1, 6)])
            >>> record = history.power_law_records()[0]
            >>> record["metric"], record["site"], round(record["exponent"], 6), record["n_points"]
            ('affinity', 'relu', -0.5, 5)
        """
        from lightning_complexity.powerlaw import fit_power_law, fit_power_laws

        curves = {key: curve for key, curve in self.curves(by).items() if key[0] not in BOOKKEEPING_METRICS}
        if offset:
            fits = {key: fit_power_law(t, y, window=window, offset=True) for key, (t, y) in curves.items()}
        else:
            fits = fit_power_laws(curves, window=window)
        return [{"metric": metric, "site": site, **fit.to_dict()} for (metric, site), fit in fits.items()]

    def power_law_fits(self, by: str = "epoch", window: tuple[float | None, float | None] | None = None, offset: bool = False) -> pd.DataFrame:
        """A power-law fit ``y ≈ a·t^b`` of every curve (SPEC §4), as a table.

        Columns: ``metric, site`` and every field of :class:`~lightning_complexity.PowerLawFit`
        (``exponent, prefactor, r2, stderr, ci_low, ci_high, n_points, offset, model``, ...); ``t`` is the epoch (or step) and only points with ``t > 0`` and ``y > 0`` count,
        so the measurement at initialisation (epoch 0) is left out. Curves with fewer than 4 such
        points have NaN fits. The table is a pure function of the history, so it is the same for a
        resumed run as for an uninterrupted one. Bookkeeping metrics (:data:`BOOKKEEPING_METRICS`:
        ``samples``) are not fitted: a sample count has no power law to find, and its "fit" would
        sit among the real ones in every table. :meth:`power_law_records` gives the same rows
        without pandas.

        Example:
            >>> affinity = [(e, e, "affinity", "relu", 2.0 * e**-0.5) for e in range(1, 6)]
            >>> history = MetricHistory(affinity + [(e, e, "samples", "relu", 360.0) for e in range(1, 6)])
            >>> fits = history.power_law_fits()
            >>> fits["metric"].tolist(), round(float(fits["exponent"].iloc[0]), 6)
            (['affinity'], -0.5)
        """
        import pandas as pd

        records = self.power_law_records(by, window, offset)
        return pd.DataFrame({name: pd.Series([record[name] for record in records], dtype=_FIT_DTYPES.get(name)) for name in POWER_LAW_COLUMNS})

    def latest(self) -> dict[tuple[str, str], float]:
        """The last value of every ``(metric, site)`` curve."""
        return {(row.metric, row.site): row.value for row in self._rows}

    # ------------------------------------------------------------------ pandas
    def to_dataframe(self) -> pd.DataFrame:
        """A tidy DataFrame with columns ``step, epoch, metric, site, value``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "step": np.array([r.step for r in self._rows], dtype=np.int64),
                "epoch": np.array([r.epoch for r in self._rows], dtype=np.int64),
                "metric": _text_column([r.metric for r in self._rows]),
                "site": _text_column([r.site for r in self._rows]),
                "value": np.array([r.value for r in self._rows], dtype=np.float64),
            },
            columns=list(COLUMNS),
        )

    @classmethod
    def from_dataframe(cls, frame: pd.DataFrame) -> MetricHistory:
        """Inverse of :meth:`to_dataframe`."""
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"a history table needs columns {list(COLUMNS)}; missing {missing}")
        return cls(zip(*(frame[c].tolist() for c in COLUMNS)))

    # ------------------------------------------------------------------ files
    def to_csv(self, path: str | Path) -> Path:
        """Write CSV (header ``step,epoch,metric,site,value``, UTF-8); floats keep every bit.

        Metric and site cells follow the spreadsheet rule (module docstring); written atomically.
        """
        path = Path(path)
        with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows((row.step, row.epoch, spreadsheet_cell(row.metric), spreadsheet_cell(row.site), repr(row.value)) for row in self._rows)
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> MetricHistory:
        """Read a file written by :meth:`to_csv` (the spreadsheet quoting of names is undone)."""
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            if header != COLUMNS:
                raise ValueError(f"{path}: expected CSV header {','.join(COLUMNS)}, got {','.join(header)!r}")
            return cls((int(s), int(e), read_spreadsheet_cell(m), read_spreadsheet_cell(site), float(v)) for s, e, m, site, v in reader)

    def to_json(self, path: str | Path) -> Path:
        """Write JSON: ``{"format": ..., "columns": [...], "rows": [[step, epoch, metric, site, value], ...]}`` (atomically)."""
        rows = [[r.step, r.epoch, r.metric, r.site, r.value if math.isfinite(r.value) else _json_special(r.value)]
                for r in self._rows]
        # ensure_ascii (the default) writes a lone surrogate as \udcXX, which json.loads reads back.
        return atomic_write_text(path, json.dumps({"format": _JSON_FORMAT, "columns": list(COLUMNS), "rows": rows}))

    @classmethod
    def from_json(cls, path: str | Path) -> MetricHistory:
        """Read a file written by :meth:`to_json`."""
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or payload.get("columns") != list(COLUMNS):
            raise ValueError(f"{path}: not a lightning_complexity history JSON (columns {list(COLUMNS)})")
        return cls((s, e, m, site, _json_value(v)) for s, e, m, site, v in payload["rows"])

    def to_parquet(self, path: str | Path) -> Path:
        """Write Parquet (through pyarrow), atomically; names as they are unless one holds a lone surrogate."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = self.to_dataframe()
        escaped = any(_has_surrogate(name) for name in (*self.metrics(), *self.sites()))
        if escaped:  # Parquet strings must be UTF-8: write every name by the spreadsheet rule, and say so
            frame["metric"] = _text_column([spreadsheet_cell(m) for m in frame["metric"]])
            frame["site"] = _text_column([spreadsheet_cell(s) for s in frame["site"]])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if escaped:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), _PARQUET_TEXT_KEY: _PARQUET_TEXT_RULE})
        path = Path(path)
        with atomic_path(path) as temporary:
            pq.write_table(table, temporary)
        return path

    @classmethod
    def from_parquet(cls, path: str | Path) -> MetricHistory:
        """Read a file written by :meth:`to_parquet`."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        frame = table.to_pandas()
        if (table.schema.metadata or {}).get(_PARQUET_TEXT_KEY) == _PARQUET_TEXT_RULE:
            frame["metric"] = _text_column([read_spreadsheet_cell(m) for m in frame["metric"]])
            frame["site"] = _text_column([read_spreadsheet_cell(s) for s in frame["site"]])
        return cls.from_dataframe(frame)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpoints (columns as lists)."""
        return {name: [getattr(r, name) for r in self._rows] for name in COLUMNS}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MetricHistory:
        """Inverse of :meth:`state_dict`.

        Raises:
            ValueError: ``state`` is not a dict of the five columns as lists of equal length (a
                truncated or hand-edited checkpoint); nothing is cut to the shortest column.

        Example:
            >>> MetricHistory.from_state_dict({"step": [0], "epoch": [0], "metric": ["a"], "site": ["s"], "value": [1.0]})
            MetricHistory(1 rows, metrics=['a'])
        """
        if not isinstance(state, dict):
            raise ValueError(f"a history state must be a dict of columns {list(COLUMNS)}, got {type(state).__name__}")
        missing = [name for name in COLUMNS if name not in state]
        if missing:
            raise ValueError(f"a history state needs columns {list(COLUMNS)}; missing {missing}")
        not_lists = [name for name in COLUMNS if not isinstance(state[name], (list, tuple))]
        if not_lists:
            raise ValueError(f"history state columns must be lists; {not_lists} are not")
        lengths = {name: len(state[name]) for name in COLUMNS}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{name}={length}" for name, length in lengths.items())
            raise ValueError(f"history state columns have unequal lengths ({described}): the state is truncated or corrupt, and no rows are dropped to hide it")
        return cls(zip(*(state[name] for name in COLUMNS)))


def _normalise(step: Any, epoch: Any, metric: Any, site: Any, value: Any) -> tuple[int, int, str, str, float]:
    return int(step), int(epoch), str(metric), str(site), float(value)


def _text_column(values: list[str]) -> pd.Series:
    # object dtype: pandas 3's default string dtype is Arrow-backed and cannot hold a lone surrogate.
    import pandas as pd

    return pd.Series(values, dtype=object)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _rows_equal(a: MetricRow, b: MetricRow) -> bool:
    same_value = a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
    return a[:4] == b[:4] and same_value


def _json_special(value: float) -> str | None:
    # JSON has no NaN/Infinity; null stands for NaN, strings for the infinities.
    if math.isnan(value):
        return None
    return "inf" if value > 0 else "-inf"


def _json_value(value: Any) -> float:
    return math.nan if value is None else float(value)
