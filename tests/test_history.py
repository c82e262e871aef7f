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


def test_power_law_fits_leave_out_the_sample_count_and_fit_everything_else() -> None:
    from lightning_complexity.history import BOOKKEEPING_METRICS
    from lightning_complexity.powerlaw import fit_power_law

    epochs = np.arange(0, 7)
    rows = []
    for e in epochs:
        rows += [(int(e) * 10, int(e), "affinity", "relu", 0.9 * (e + 1.0) ** -0.3), (int(e) * 10, int(e), "samples", "relu", 360.0)]
        rows += [(int(e) * 10, int(e), "val/loss", "trainer", 2.0 * (e + 1.0) ** -0.7)]  # context rows are curves like any other
    history = MetricHistory(rows)
    fits = history.power_law_fits()
    assert BOOKKEEPING_METRICS == ("samples",)
    assert list(zip(fits["metric"], fits["site"])) == [("affinity", "relu"), ("val/loss", "trainer")]
    for (metric, site), fit in zip([("affinity", "relu"), ("val/loss", "trainer")], fits.itertuples()):
        t, y = history.series(metric, site)
        slope = np.polyfit(np.log(t[t > 0]), np.log(y[t > 0]), 1)[0]  # independent: OLS of ln y on ln t
        assert fit.exponent == pytest.approx(slope, rel=1e-9) == fit_power_law(t, y).exponent
    only_samples = MetricHistory((int(e), int(e), "samples", "relu", 360.0) for e in epochs)
    assert len(only_samples.power_law_fits()) == 0 and "exponent" in only_samples.power_law_fits().columns


def test_power_law_records_are_the_frame_and_name_every_fit_field() -> None:
    import dataclasses

    from lightning_complexity.history import POWER_LAW_COLUMNS
    from lightning_complexity.powerlaw import PowerLawFit

    assert POWER_LAW_COLUMNS == ("metric", "site", *(f.name for f in dataclasses.fields(PowerLawFit)))
    rows = [(e, e, "affinity", site, 0.9 * (e + 1.0) ** -0.3 + 0.01 * i) for e in range(8) for i, site in enumerate(("a", "=b"))]
    history = MetricHistory(rows)
    frame, records = history.power_law_fits(), history.power_law_records()
    assert list(frame.columns) == list(POWER_LAW_COLUMNS) == list(records[0])
    pd.testing.assert_frame_equal(frame, pd.DataFrame(records).astype(frame.dtypes.to_dict()))


def test_tables_written_from_records_match_pandas_to_csv_byte_for_byte(tmp_path) -> None:
    from lightning_complexity.export import write_power_laws, write_table
    from lightning_complexity.safe_names import spreadsheet_frame

    t = np.arange(0, 9)
    rows = [(int(e), int(e), "affinity", "relu", 0.7 * (e + 1.0) ** -0.21) for e in t]
    rows += [(int(e), int(e), "betti/0", "-neg", float(e + 1) * 1e-300) for e in t]  # extreme and text needing the quote
    rows += [(int(e), int(e), "entropic", "flat", 1.0) for e in t]  # NaN fit fields
    history = MetricHistory(rows)
    frame = history.power_law_fits()
    for name, table in (("frame.csv", frame), ("records.csv", history.power_law_records())):
        write_power_laws(table, tmp_path / name)
    spreadsheet_frame(frame).to_csv(tmp_path / "pandas.csv", index=False, encoding="utf-8")  # the independent writer
    expected = (tmp_path / "pandas.csv").read_bytes()
    assert (tmp_path / "frame.csv").read_bytes() == expected == (tmp_path / "records.csv").read_bytes()
    assert b"'-neg" in expected and b",True\n" in expected  # the cases the test is about occur
    mixed = pd.DataFrame({"name": ["x", None], "f32": np.array([0.1, np.nan], dtype=np.float32), "n": [1, 2]})
    write_table(mixed, tmp_path / "mixed.csv")
    mixed.to_csv(tmp_path / "mixed_pandas.csv", index=False)
    assert (tmp_path / "mixed.csv").read_bytes() == (tmp_path / "mixed_pandas.csv").read_bytes()
    write_power_laws([], tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().strip() == ",".join(frame.columns)
