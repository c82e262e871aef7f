"""Untrusted inputs and failing writes: nothing a file holds is run, nothing written is half-written.

* crafted checkpoints (a pickle payload that would create a marker file) read by ``export``,
  ``report`` and ``compare``: the marker never appears, and the command fails clearly or skips
  the file; a real Lightning checkpoint still reads, equal to ``torch.load(weights_only=True)``;
* every writer of the package replaces its file atomically: a failure mid-write leaves the
  previous file byte for byte, and no temporary file behind;
* a checkpoint's history with columns of unequal length is refused, not cut;
* names with a lone surrogate, ``$...$``, a leading ``_`` or a formula go through every writer
  and figure, and exports still round-trip exactly;
* a history with Inf and NaN stretches gives a full report;
* CSV text cells never start with a formula character.
"""

from __future__ import annotations

import csv
import errno
import math
import os
import pathlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_complexity import MetricHistory
from lightning_complexity.cli import main
from lightning_complexity.safe_names import SPREADSHEET_TRIGGERS, legend_text, printable
from svg_checks import SVG, assert_drawn, parse

MONITOR_KEY = "ComplexityMonitor{'metrics': ['affinity']}"
HOSTILE_NAMES = ["gelu\udcff", "cost $x$", "$a", "=HYPERLINK(\"http://x\")", "_hidden", "-neg", "+plus", "@at", "'quoted", "tab\tin", "back\\slash"]


class Payload:
    """Unpickling this touches ``marker``: what a crafted checkpoint would do with ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _history(sites=("relu", "fc.act"), epochs: int = 6) -> MetricHistory:
    return MetricHistory(
        (8 * epoch, epoch, metric, site, (1.0 + i) * (1.0 + epoch) ** (0.3 if metric == "affinity" else -0.4))
        for epoch in range(epochs) for metric in ("affinity", "effective_dimension") for i, site in enumerate(sites)
    )


def _monitor_state(history: MetricHistory) -> dict:
    return {"version": 1, "history": history.state_dict()}


# ---------------------------------------------------------------------- crafted checkpoints
@pytest.mark.parametrize("payload_class", [Payload, ShellPayload])
def test_a_crafted_checkpoint_runs_nothing_in_export_report_and_compare(tmp_path, capsys, payload_class) -> None:
    marker = tmp_path / "PWNED"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": payload_class(marker), "callbacks": {}}, crafted)
    good = tmp_path / "good.ckpt"
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(_history())}}, good)
    for argv in (["export", str(crafted), "--out", str(tmp_path / "x.csv")],
                 ["report", str(crafted), "--out", str(tmp_path / "r"), "--quiet"],
                 ["compare", str(good), str(crafted), "--out", str(tmp_path / "c"), "--quiet"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "holds no ComplexityMonitor state" in err and "which was not run" in err, err
        assert ("os.system" in err or "posix.system" in err) if payload_class is ShellPayload else "pathlib" in err
        assert not marker.exists(), f"{argv[0]} ran the checkpoint's payload"


def test_a_payload_inside_the_monitor_state_is_refused(tmp_path, capsys) -> None:
    marker = tmp_path / "PWNED"
    state = _monitor_state(_history())
    state["history"]["value"][3] = Payload(marker)
    torch.save({"callbacks": {MONITOR_KEY: state}}, tmp_path / "crafted.ckpt")
    assert main(["export", str(tmp_path / "crafted.ckpt"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert f"callbacks/{MONITOR_KEY}/history/value[3] holds a builtins.getattr object" in err and "nothing in the file was run" in err
    assert not marker.exists() and not (tmp_path / "x.csv").exists()


def test_a_payload_beside_real_monitor_state_is_ignored_and_named(tmp_path, capsys) -> None:
    marker = tmp_path / "PWNED"
    history = _history()
    torch.save({"hyper_parameters": {"config": ShellPayload(marker)}, "callbacks": {MONITOR_KEY: _monitor_state(history)}}, tmp_path / "mixed.ckpt")
    assert main(["export", str(tmp_path / "mixed.ckpt"), "--out", str(tmp_path / "x.csv")]) == 0
    assert "not needed for the monitor's data, so not imported or run" in capsys.readouterr().err
    assert MetricHistory.from_csv(tmp_path / "x.csv") == history
    assert not marker.exists()


def test_a_folder_search_skips_crafted_checkpoints_without_running_them(tmp_path, capsys) -> None:
    marker = tmp_path / "PWNED"
    history = _history()
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(history)}}, tmp_path / "old.ckpt")
    os.utime(tmp_path / "old.ckpt", (1_000_000, 1_000_000))  # the crafted ones are newer: read first
    torch.save({"callbacks": {}, "x": Payload(marker)}, tmp_path / "newer.ckpt")
    state = _monitor_state(history)
    state["history"]["site"][0] = ShellPayload(marker)
    torch.save({"callbacks": {MONITOR_KEY: state}}, tmp_path / "newest.ckpt")
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 0
    assert "old.ckpt" in capsys.readouterr().out
    assert MetricHistory.from_csv(tmp_path / "x.csv") == history
    assert not marker.exists()


def test_a_legacy_pickle_checkpoint_goes_through_torch_weights_only(tmp_path, capsys) -> None:
    marker = tmp_path / "PWNED"
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(_history())}, "x": Payload(marker)}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    assert main(["export", str(tmp_path / "legacy.ckpt"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "torch.load(weights_only=True) refused it" in capsys.readouterr().err
    assert not marker.exists()
    history = _history()
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(history)}}, tmp_path / "plain_legacy.ckpt", _use_new_zipfile_serialization=False)
    assert main(["export", str(tmp_path / "plain_legacy.ckpt"), "--out", str(tmp_path / "y.csv")]) == 0
    assert MetricHistory.from_csv(tmp_path / "y.csv") == history


@pytest.fixture(scope="module")
def lightning_checkpoint(tmp_path_factory) -> tuple[Path, MetricHistory]:
    """A real Lightning checkpoint of a 3-epoch toy fit with the monitor, and the monitor's history."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_complexity import ComplexityMonitor
    from toy import ToyRegressor, toy_loaders, trainer

    root = tmp_path_factory.mktemp("fit")
    pl.seed_everything(0, verbose=False)
    monitor = ComplexityMonitor(log_figures=False)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)
    train, val = toy_loaders()
    trainer(root, [monitor, checkpoint], max_epochs=3, enable_checkpointing=True).fit(ToyRegressor(), train, val)
    return root / "checkpoints" / "last.ckpt", monitor.history


def test_a_real_lightning_checkpoint_reads_like_torch_load_weights_only(lightning_checkpoint) -> None:
    from lightning_complexity.checkpoint_reader import materialise, plain_data, read_checkpoint
    from lightning_complexity.export import load_run

    path, history = lightning_checkpoint
    reference = torch.load(path, map_location="cpu", weights_only=True)  # the second implementation
    mine = read_checkpoint(path)
    assert mine.ignored == ()
    assert set(mine.data) == set(reference)
    for key, state in reference["callbacks"].items():
        expected = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
        assert _same(plain_data(mine, mine.data["callbacks"][key], key), expected), key
    for name, tensor in reference["state_dict"].items():  # weights are not read unless asked for
        assert materialise(mine, mine.data["state_dict"][name]) == tensor.tolist(), name
    run = load_run(path)
    assert run.kind == "checkpoint" and run.history == history and run.layer_algebra is not None and run.ignored == ()


def _same(a, b) -> bool:
    # equality with NaN == NaN (the layer-algebra table holds NaN cells)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_unequal_history_columns_are_refused_not_cut(tmp_path, capsys) -> None:
    state = _history().state_dict()
    state["value"] = state["value"][:-3]
    with pytest.raises(ValueError, match=r"unequal lengths \(step=24, epoch=24, metric=24, site=24, value=21\)"):
        MetricHistory.from_state_dict(state)
    with pytest.raises(ValueError, match="missing \\['site'\\]"):
        MetricHistory.from_state_dict({k: v for k, v in state.items() if k != "site"})
    torch.save({"callbacks": {MONITOR_KEY: {"version": 1, "history": state}}}, tmp_path / "cut.ckpt")
    assert main(["export", str(tmp_path / "cut.ckpt"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "unequal lengths" in capsys.readouterr().err


# ---------------------------------------------------------------------- atomic writes
def _failing_open(real_open):
    """``open`` whose handles write half of their first write, then fail as a full disk does."""

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            self.handle.write(data[: max(1, len(data) // 2)])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def fake(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return HalfWriter(handle) if "w" in mode else handle

    return fake


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_failing_history_export_leaves_the_previous_file(tmp_path, monkeypatch, fmt) -> None:
    import pyarrow.parquet as pq

    from lightning_complexity import atomic

    target = tmp_path / f"history.{fmt}"
    getattr(_history(), f"to_{fmt}")(target)
    before = target.read_bytes()
    bigger = _history(sites=("a", "b", "c"), epochs=9)
    if fmt == "parquet":
        real = pq.write_table

        def half_then_fail(table, where, **kwargs):
            real(table, where, **kwargs)
            Path(where).write_bytes(Path(where).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(pq, "write_table", half_then_fail)
    else:
        monkeypatch.setattr(atomic, "open", _failing_open(open), raising=False)
    with pytest.raises(OSError, match="No space left"):
        getattr(bigger, f"to_{fmt}")(target)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    getattr(bigger, f"to_{fmt}")(target)  # and a write that succeeds replaces it whole
    assert getattr(MetricHistory, f"from_{fmt}")(target) == bigger
    assert _leftovers(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # a normal file's mode, not tempfile's 0o600


def test_failing_report_and_table_writes_leave_the_previous_files(tmp_path, monkeypatch) -> None:
    from lightning_complexity import atomic
    from lightning_complexity.export import RunData, write_table

    ckpt = tmp_path / "run.ckpt"
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(_history())}}, ckpt)
    out = tmp_path / "report"
    assert main(["report", str(ckpt), "--out", str(out), "--quiet"]) == 0
    write_table(_history().power_law_fits(), tmp_path / "fits.csv")
    write_table(_history().power_law_fits(), tmp_path / "fits.parquet")
    previous = {p: p.read_bytes() for p in [*out.iterdir(), tmp_path / "fits.csv", tmp_path / "fits.parquet"]}
    assert any(p.suffix == ".svg" for p in previous) and out / "report.html" in previous

    import csv

    from lightning_complexity import export

    real_to_parquet, real_writer = pd.DataFrame.to_parquet, csv.writer

    class HalfCsv:  # the header reaches the file, then the disk is full
        def __init__(self, handle, *args, **kwargs):
            self._writer = real_writer(handle, *args, **kwargs)

        def writerow(self, row):
            return self._writer.writerow(row)

        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")

    def half_parquet(self, path, *args, **kwargs):
        real_to_parquet(self, path, *args, **kwargs)
        Path(path).write_bytes(b"PAR1")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.csv, "writer", HalfCsv)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_parquet)
    for name in ("fits.csv", "fits.parquet"):
        with pytest.raises(OSError):
            write_table(_history(sites=("z",)).power_law_fits(), tmp_path / name)
    monkeypatch.setattr(atomic, "open", _failing_open(open), raising=False)
    from lightning_complexity.export import load_run
    from lightning_complexity.report import write_report

    run = load_run(ckpt)
    changed = RunData(history=_history(sites=("q", "r", "s")), path=run.path, kind=run.kind)
    with pytest.raises(OSError, match="No space left"):
        write_report(changed, out, progress=False)
    for path, content in previous.items():
        assert path.read_bytes() == content, path
    assert _leftovers(out) == [] and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------- names
@pytest.fixture()
def hostile_history() -> MetricHistory:
    rows = []
    for epoch in range(6):
        for i, site in enumerate(HOSTILE_NAMES):
            rows.append((10 * epoch, epoch, "affinity", site, 0.5 + 0.01 * i + 0.02 * epoch))
            rows.append((10 * epoch, epoch, "effective_dimension", site, (2.0 + i) * (1 + epoch) ** 0.5))
            rows.append((10 * epoch, epoch, "odd $metric$ \udcfe", site, -1.0 - epoch - i))
    return MetricHistory(rows)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_hostile_names_round_trip_exactly_through_every_export(hostile_history, tmp_path, fmt) -> None:
    path = getattr(hostile_history, f"to_{fmt}")(tmp_path / f"h.{fmt}")
    back = getattr(MetricHistory, f"from_{fmt}")(path)
    assert back == hostile_history
    assert back.sites() == HOSTILE_NAMES
    if fmt == "csv":  # valid UTF-8, which any reader opens (JSON escapes to ASCII itself)
        path.read_bytes().decode("utf-8")
    if fmt == "parquet":  # plain pandas reads it: the names are in their escaped (UTF-8) form
        assert pd.read_parquet(path)["site"].iloc[0] == "'gelu\\udcff"


def test_a_plain_parquet_file_keeps_names_as_they_are(tmp_path) -> None:
    history = MetricHistory([(0, 0, "affinity", "'quoted", 1.0), (0, 0, "affinity", "=x", 2.0)])
    frame = pd.read_parquet(history.to_parquet(tmp_path / "h.parquet"))
    assert frame["site"].tolist() == ["'quoted", "=x"]  # no surrogate: not rewritten
    assert MetricHistory.from_parquet(tmp_path / "h.parquet") == history


def _text_cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    return [cell for cell in cells if not _is_number(cell)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_csv_cells_never_start_a_formula_and_negative_numbers_stay_numbers(hostile_history, tmp_path) -> None:
    from lightning_complexity.export import write_table

    path = hostile_history.to_csv(tmp_path / "h.csv")
    frame = pd.read_csv(path)
    assert (frame["value"] < 0).any() and frame["value"].dtype == np.float64  # numbers, not quoted text
    write_table(hostile_history.power_law_fits(), tmp_path / "fits.csv")
    ckpt = tmp_path / "run.ckpt"
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(hostile_history)}}, ckpt)
    assert main(["report", str(ckpt), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert main(["compare", str(ckpt), str(ckpt), "--labels", "=a,-b", "--out", str(tmp_path / "c"), "--quiet"]) == 0
    files = [path, tmp_path / "fits.csv", *sorted((tmp_path / "r").glob("*.csv")), *sorted((tmp_path / "c").glob("*.csv"))]
    assert len(files) >= 5
    for file in files:
        cells = _text_cells(file)
        assert cells, file
        formulas = [cell for cell in cells if cell.startswith(SPREADSHEET_TRIGGERS[:-1])]
        assert formulas == [], (file, formulas)
    assert "'=HYPERLINK(\"http://x\")" in _text_cells(path) and "'-neg" in _text_cells(path)


def test_hostile_names_reach_tensorboard_and_csv_logger_without_raising(hostile_history, tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.tensorboard import SummaryWriter

    from lightning_complexity.export import load_run
    from lightning_complexity.tensorboard import EPOCH_TAG, custom_scalars_layout, scalar_tag

    writer = SummaryWriter(str(tmp_path / "tb"))
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    for step in hostile_history.steps():
        rows = [row for row in hostile_history if row.step == step]
        scalars = {scalar_tag(row.metric, row.site): row.value for row in rows}
        scalars[EPOCH_TAG] = float(rows[0].epoch)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        csv_logger.log_metrics(scalars, step=step)
    writer.add_custom_scalars(custom_scalars_layout({m: hostile_history.sites(m) for m in hostile_history.metrics()}))
    writer.close()
    csv_logger.save()
    logged = pd.read_csv(Path(csv_logger.log_dir) / "metrics.csv")
    assert scalar_tag("affinity", "gelu\udcff") == "complexity/affinity/gelu\\udcff" and scalar_tag("affinity", "gelu\udcff") in logged.columns
    back = load_run(tmp_path / "tb", source="tensorboard").history
    assert back.sites() == [printable(site) for site in HOSTILE_NAMES]  # the escaped form, as documented
    assert back.metrics() == [printable(m) for m in hostile_history.metrics()]
    np.testing.assert_allclose(back.to_dataframe()["value"], hostile_history.to_dataframe()["value"], rtol=2.0**-24)


def test_hostile_names_in_every_figure(hostile_history) -> None:
    from lightning_complexity.compare import comparison_figure
    from lightning_complexity.figures import error_curves_figure, power_law_figure, signature_heatmap
    from lightning_complexity.report import curves_figure, figure_png

    figures = [curves_figure(hostile_history, metric) for metric in hostile_history.metrics()]
    figures += [signature_heatmap(hostile_history, metric) for metric in hostile_history.metrics()]
    figures += [power_law_figure(hostile_history, metric) for metric in hostile_history.metrics()]
    figures.append(error_curves_figure({site: (np.array([1, 2, 4]), np.array([0.5, 0.2, 0.01])) for site in HOSTILE_NAMES}, 0.05))
    for figure in figures:
        assert figure_png(figure).startswith(b"\x89PNG")  # mathtext would raise while drawing
    # the console's SVG charts: every name is text in a well-formed document, exactly as printable() writes it
    chart = comparison_figure([hostile_history, hostile_history], ["$run$", "_b"], "affinity", max_panels=20)
    texts = [element.text for element in parse(chart.svg()).iter(SVG + "text")]
    for name in ["$run$", "_b", *(printable(site) for site in HOSTILE_NAMES if not any(ord(c) < 32 for c in site))]:
        assert name in texts, name
    legend = [text.get_text() for text in figures[0].axes[0].get_legend().get_texts()]
    assert legend == [legend_text(site) for site in HOSTILE_NAMES]
    assert len(legend) == len(HOSTILE_NAMES)  # "_hidden" is listed, not dropped


def test_a_report_of_hostile_names_has_every_figure_and_escaped_html(hostile_history, tmp_path) -> None:
    ckpt = tmp_path / "run.ckpt"
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(hostile_history)}}, ckpt)
    out = tmp_path / "r"
    assert main(["report", str(ckpt), "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "gelu\\udcff" in page and "&lt;" not in page.split("<body>")[0]
    assert 'class="error"' not in page


# ---------------------------------------------------------------------- Inf and NaN
def test_a_report_of_inf_and_nan_stretches_draws_what_is_finite(tmp_path) -> None:
    from lightning_complexity.report import curves_figure

    rows = []
    for epoch in range(8):
        for i, site in enumerate(["a", "b", "c"]):
            value = (1.0 + i) * (1 + epoch) ** 0.4
            if i == 0 and epoch in (3, 4):
                value = math.inf
            if i == 1 and epoch >= 5:
                value = math.nan
            if i == 2 and epoch == 0:
                value = -math.inf
            rows.append((epoch * 4, epoch, "affinity", site, value))
            rows.append((epoch * 4, epoch, "effective_dimension", site, math.nan if epoch < 2 else value))
            # finite but near the float maximum: axis ranges computed from it overflow to Inf
            rows.append((epoch * 4, epoch, "entropic_complexity", site, (1.7e308 if epoch == 3 else -1e308 if epoch == 6 else 1.0 + epoch + i)))
    history = MetricHistory(rows)
    ckpt = tmp_path / "run.ckpt"
    torch.save({"callbacks": {MONITOR_KEY: _monitor_state(history)}}, ckpt)
    out = tmp_path / "r"
    assert main(["report", str(ckpt), "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="error"' not in page
    svgs = sorted(out.glob("*.svg"))
    assert_drawn(svgs)  # finite coordinates only: NaN and Inf are gaps
    assert {p.name for p in svgs} == {"nonlinearity.svg", "dimension.svg", "entropic.svg", "signature_affinity.svg", "powerlaw_exponents.svg", "powerlaw_fits.svg"}
    for metric, site in [("affinity", "a"), ("entropic_complexity", "b")]:
        figure = curves_figure(history, metric)
        drawn = {line.get_label(): line.get_ydata() for line in figure.axes[0].get_lines()}
        _, y = history.series(metric, site)
        shown = np.isfinite(y) & (np.abs(y) <= 1e300)
        assert 0 < shown.sum() < len(y)
        np.testing.assert_array_equal(np.isfinite(drawn[site]), shown)  # every drawable point, and only those
        np.testing.assert_array_equal(drawn[site][shown], y[shown])
