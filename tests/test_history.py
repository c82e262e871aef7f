"""MetricHistory: tidy table, exact round trips through every format, checkpoint state."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lightning_complexity import MetricHistory


@pytest.fixture()
def history() -> MetricHistory:
    rng = np.random.default_rng(0)
    h = MetricHistory()
    for step, epoch in [(0, 0), (23, 1), (46, 2)]:
        for site in ["features.relu1", "layer1.0.relu#1", "odd, site \"quoted\""]:
            for metric in ["effective_dimension", "affinity"]:
                h.append(step, epoch, metric, site, float(rng.normal()) * 10 ** float(rng.integers(-12, 12)))
    h.append(46, 2, "affinity", "nan_site", math.nan)
    h.append(46, 2, "affinity", "inf_site", math.inf)
    h.append(46, 2, "affinity", "ninf_site", -math.inf)
    h.append(46, 2, "affinity", "tiny", 5e-324)
    return h


def test_dataframe_has_the_documented_columns_and_types(history: MetricHistory) -> None:
    frame = history.to_dataframe()
    assert list(frame.columns) == ["step", "epoch", "metric", "site", "value"]
    assert frame["step"].dtype == np.int64 and frame["epoch"].dtype == np.int64
    assert frame["value"].dtype == np.float64
    assert len(frame) == len(history) == 3 * 3 * 2 + 4
    assert MetricHistory.from_dataframe(frame) == history


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_exports_round_trip_bit_exactly(history: MetricHistory, tmp_path, fmt: str) -> None:
    path = getattr(history, f"to_{fmt}")(tmp_path / f"history.{fmt}")
    back = getattr(MetricHistory, f"from_{fmt}")(path)
    assert back == history
    original, restored = history.to_dataframe(), back.to_dataframe()
    # Bit-level equality of every float, NaN included.
    assert np.array_equal(original["value"].to_numpy().view(np.int64), restored["value"].to_numpy().view(np.int64))
    pd.testing.assert_frame_equal(original, restored)


def test_csv_is_readable_by_pandas(history: MetricHistory, tmp_path) -> None:
    frame = pd.read_csv(history.to_csv(tmp_path / "h.csv"))
    assert frame["site"].tolist() == [r.site for r in history]
    assert np.allclose(frame["value"], history.to_dataframe()["value"], equal_nan=True)


def test_equality_detects_a_changed_value(history: MetricHistory) -> None:
    rows = history.rows
    rows[3] = rows[3]._replace(value=rows[3].value + 1e-9 * abs(rows[3].value) + 1e-300)
    assert MetricHistory(rows) != history


def test_state_dict_round_trip_and_series(history: MetricHistory) -> None:
    assert MetricHistory.from_state_dict(history.state_dict()) == history
    t, y = history.series("effective_dimension", "features.relu1")
    assert t.tolist() == [0, 1, 2]
    steps, _ = history.series("effective_dimension", "features.relu1", by="step")
    assert steps.tolist() == [0, 23, 46]
    assert history.steps() == [0, 23, 46]
    assert history.metrics() == ["effective_dimension", "affinity"]


def test_bad_files_raise_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected CSV header step,epoch,metric,site,value"):
        MetricHistory.from_csv(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a lightning_complexity history"):
        MetricHistory.from_json(bad_json)
