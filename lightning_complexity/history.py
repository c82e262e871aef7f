"""MetricHistory: the tidy table of every measurement, and its exports.

One row per ``(step, epoch, metric, site, value)``. Exports round-trip exactly: CSV and JSON write
each float with Python's shortest round-tripping ``repr``; NaN is written as ``nan`` (CSV) and
``null`` (JSON) and read back as NaN.

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

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MetricHistory", "MetricRow"]

COLUMNS = ("step", "epoch", "metric", "site", "value")
_JSON_FORMAT = "lightning_complexity.history/1"


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

    def power_law_fits(self, by: str = "epoch", window: tuple[float | None, float | None] | None = None, offset: bool = False) -> pd.DataFrame:
        """A power-law fit ``y ≈ a·t^b`` of every curve (SPEC §4), as a table.

        Columns: ``metric, site, exponent, prefactor, r2, stderr, ci_low, ci_high, n_points, offset,
        model``; ``t`` is the epoch (or step) and only points with ``t > 0`` and ``y > 0`` count,
        so the measurement at initialisation (epoch 0) is left out. Curves with fewer than 4 such
        points have NaN fits. The table is a pure function of the history, so it is the same for a
        resumed run as for an uninterrupted one.
        """
        import pandas as pd

        from lightning_complexity.powerlaw import fit_power_law

        records = []
        for (metric, site), (t, y) in self.curves(by).items():
            fit = fit_power_law(t, y, window=window, offset=offset)
            records.append({"metric": metric, "site": site, **fit.to_dict()})
        columns = ["metric", "site", "exponent", "prefactor", "r2", "stderr", "ci_low", "ci_high", "n_points", "offset", "model"]
        return pd.DataFrame.from_records(records, columns=columns)

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
                "metric": pd.Series([r.metric for r in self._rows], dtype=object),
                "site": pd.Series([r.site for r in self._rows], dtype=object),
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
        """Write CSV (header ``step,epoch,metric,site,value``); floats keep every bit."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in self._rows:
                writer.writerow((row.step, row.epoch, row.metric, row.site, repr(row.value)))
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> MetricHistory:
        """Read a file written by :meth:`to_csv`."""
        with Path(path).open(newline="") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            if header != COLUMNS:
                raise ValueError(f"{path}: expected CSV header {','.join(COLUMNS)}, got {','.join(header)!r}")
            return cls((int(s), int(e), m, site, float(v)) for s, e, m, site, v in reader)

    def to_json(self, path: str | Path) -> Path:
        """Write JSON: ``{"format": ..., "columns": [...], "rows": [[step, epoch, metric, site, value], ...]}``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[r.step, r.epoch, r.metric, r.site, r.value if math.isfinite(r.value) else _json_special(r.value)]
                for r in self._rows]
        path.write_text(json.dumps({"format": _JSON_FORMAT, "columns": list(COLUMNS), "rows": rows}))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> MetricHistory:
        """Read a file written by :meth:`to_json`."""
        payload = json.loads(Path(path).read_text())
        if not isinstance(payload, dict) or payload.get("columns") != list(COLUMNS):
            raise ValueError(f"{path}: not a lightning_complexity history JSON (columns {list(COLUMNS)})")
        return cls((s, e, m, site, _json_value(v)) for s, e, m, site, v in payload["rows"])

    def to_parquet(self, path: str | Path) -> Path:
        """Write Parquet (through pandas and pyarrow)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_dataframe().to_parquet(path, index=False)
        return path

    @classmethod
    def from_parquet(cls, path: str | Path) -> MetricHistory:
        """Read a file written by :meth:`to_parquet`."""
        import pandas as pd

        return cls.from_dataframe(pd.read_parquet(path))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpoints (columns as lists)."""
        return {name: [getattr(r, name) for r in self._rows] for name in COLUMNS}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MetricHistory:
        """Inverse of :meth:`state_dict`."""
        return cls(zip(*(state[name] for name in COLUMNS)))


def _normalise(step: Any, epoch: Any, metric: Any, site: Any, value: Any) -> tuple[int, int, str, str, float]:
    return int(step), int(epoch), str(metric), str(site), float(value)


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
