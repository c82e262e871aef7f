"""The console script end to end: demo, export (checkpoint and TensorBoard), report, compare, and
switching the monitor on through Lightning's callback entry point."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_complexity import ComplexityMonitor, MetricHistory
from lightning_complexity.cli import main
from svg_checks import assert_drawn

pytest.importorskip("sklearn")

DEMO_SITES = ["features.relu1", "features.relu2", "features.relu3", "classifier.act"]
TOY_SITES = ["net.act", "relu", "relu#1"]
FLOAT32_RTOL = 2.0**-24  # half an ulp: the rounding of a float64 to the nearest float32


# ---------------------------------------------------------------------- runs (built once per module)
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """The digits demo for 2 epochs: its log folder and what it printed."""
    out = tmp_path_factory.mktemp("demo") / "runs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    return out / "digits" / "version_0", printed.getvalue()


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory) -> list[tuple[Path, MetricHistory]]:
    """Two 5-epoch toy fits (seeds 0 and 1) with TensorBoard logs and checkpoints: (log folder, history)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from toy import ToyRegressor, toy_loaders, trainer

    root = tmp_path_factory.mktemp("toy")
    runs = []
    for seed in (0, 1):
        pl.seed_everything(seed, verbose=False)
        monitor = ComplexityMonitor(log_figures=False)
        logger = TensorBoardLogger(str(root), name=f"seed{seed}")
        checkpoint = ModelCheckpoint(dirpath=Path(logger.log_dir) / "checkpoints", save_last=True)
        train, val = toy_loaders()
        trainer(root, [monitor, checkpoint], max_epochs=5, logger=logger, enable_checkpointing=True).fit(ToyRegressor(width=12 + 4 * seed), train, val)
        runs.append((Path(logger.log_dir), monitor.history))
    return runs


def _embedded_images(page: str) -> list[bytes]:
    sources = re.findall(r'src="([^"]*)"', page)
    assert all(s.startswith("data:image/svg+xml;base64,") for s in sources), "the page must embed every image"
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in sources]


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert not re.findall(r'href="(?!#)', page), "only links inside the page"


# ---------------------------------------------------------------------- demo
def test_demo_writes_tensorboard_logs_and_a_history_for_every_activation(demo_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir, printed = demo_run
    assert str(log_dir / "complexity_history.csv") in printed and "tensorboard --logdir" in printed
    assert "non-linearity signature" in printed
    assert (log_dir / "complexity_power_laws.csv").is_file()
    history = MetricHistory.from_csv(log_dir / "complexity_history.csv")
    assert MetricHistory.from_parquet(log_dir / "complexity_history.parquet") == history
    assert history.sites("effective_dimension") == DEMO_SITES
    # the probe is the whole validation set (360 digits, two batches of 180) at every site and step
    assert {row.value for row in history if row.metric == "samples"} == {360.0} and "on 360 probe samples" in printed
    for site in DEMO_SITES:
        t, values = history.series("effective_dimension", site)
        assert t.tolist() == [0, 1, 2] and (values > 1).all()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert {f"complexity/effective_dimension/{s}" for s in DEMO_SITES} <= set(events.Tags()["scalars"])


# ---------------------------------------------------------------------- export
def test_export_reads_the_history_from_a_checkpoint(toy_runs, tmp_path) -> None:
    log_dir, history = toy_runs[0]
    out = tmp_path / "history.json"
    assert main(["export", str(log_dir / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    assert MetricHistory.from_json(out) == history
    fits = pd.DataFrame(json.loads((tmp_path / "history_power_laws.json").read_text()))
    expected = history.power_law_fits()
    assert len(fits) == len(expected) == len([key for key in history.curves() if key[0] != "samples"])  # a sample count is not fitted
    np.testing.assert_array_equal(fits["exponent"], expected["exponent"])  # every bit kept
    # A directory holding checkpoints reads the newest one with monitor state: exact, any format.
    assert main(["export", str(log_dir), "--format", "parquet", "--out", str(tmp_path / "from_dir")]) == 0
    assert MetricHistory.from_parquet(tmp_path / "from_dir") == history


def test_export_imports_neither_torch_nor_pandas(toy_runs, tmp_path) -> None:
    """What makes ``export`` fast (BENCHMARKS.md): the read path needs neither; the files are the same."""
    import subprocess
    import sys

    log_dir, history = toy_runs[0]
    code = (
        "import sys; from lightning_complexity.cli import main; "
        f"code = main(['export', {str(log_dir)!r}, '--out', {str(tmp_path / 'h.csv')!r}]); "
        "print(code, sorted(m for m in ('torch', 'pandas', 'lightning', 'scipy.stats') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[-2] == "0 []"
    assert MetricHistory.from_csv(tmp_path / "h.csv") == history
    fits = pd.read_csv(tmp_path / "h_power_laws.csv", float_precision="round_trip")
    np.testing.assert_array_equal(fits["exponent"], history.power_law_fits()["exponent"])


def test_export_from_tensorboard_equals_the_checkpoint_within_float32(toy_runs, tmp_path, capsys) -> None:
    log_dir, history = toy_runs[0]
    assert main(["export", str(log_dir), "--source", "tensorboard", "--out", str(tmp_path / "tb.csv")]) == 0
    assert "float32" in capsys.readouterr().err
    from_tensorboard = MetricHistory.from_csv(tmp_path / "tb.csv")
    # The training context is rebuilt from the user's own scalars in the logs: validation ones are
    # the checkpoint's rounded to float32; a training scalar is its latest logged value by each
    # measurement (none here: logged every 50 steps, these fits have 40).
    context, tb_context = ([row for row in h if row.site == "trainer"] for h in (history, from_tensorboard))
    tb_val = [(r.step, r.epoch, r.value) for r in tb_context if r.metric == "val_loss"]
    assert tb_val == [(r.step, r.epoch, float(np.float32(r.value))) for r in context if r.metric == "val_loss"] and len(tb_val) == 5
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train_loss")] if "train_loss" in events.Tags()["scalars"] else []
    expected = [(s, max((p for p in logged if p[0] <= s), default=(0, None))[1]) for s in sorted({r.step for r in context})]
    assert [(r.step, r.value) for r in tb_context if r.metric == "train_loss"] == [(s, v) for s, v in expected if v is not None]
    assert {r.metric for r in tb_context} <= {r.metric for r in context}
    history, from_tensorboard = (MetricHistory(row for row in h if row.site != "trainer") for h in (history, from_tensorboard))
    exact, rounded = history.to_dataframe(), from_tensorboard.to_dataframe()
    assert len(rounded) == len(exact) == sum(len(t) for t, _ in history.curves().values())
    assert {len(t) for (_, site), (t, _) in history.curves().items() if site != "trainer"} == {6}  # init + 5 epochs
    pd.testing.assert_frame_equal(rounded[["step", "epoch", "metric", "site"]], exact[["step", "epoch", "metric", "site"]])
    np.testing.assert_allclose(rounded["value"], exact["value"], rtol=FLOAT32_RTOL, atol=0)
    assert not np.array_equal(rounded["value"], exact["value"])  # really the float32 copy
    np.testing.assert_array_equal(rounded["value"], exact["value"].astype(np.float32).astype(np.float64))


def test_export_errors_are_one_clear_line_with_status_2(toy_runs, tmp_path, capsys) -> None:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    def error_for(*argv: str) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"lightning-complexity {argv[0]}: "), err
        return err

    assert "missing.ckpt does not exist" in error_for("export", str(tmp_path / "missing.ckpt"))
    (tmp_path / "empty").mkdir()
    err = error_for("export", str(tmp_path / "empty"))
    assert "holds no monitor data" in err and "no Lightning checkpoint" in err and "no TensorBoard event files" in err
    torch.save({"state_dict": {}, "callbacks": {"EarlyStopping{}": {}}}, tmp_path / "other.ckpt")
    assert "holds no ComplexityMonitor state" in error_for("export", str(tmp_path / "other.ckpt"))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert "is not a Lightning checkpoint" in error_for("report", str(tmp_path / "notes.txt"))
    writer = SummaryWriter(str(tmp_path / "plain_tb"))
    writer.add_scalar("loss", 1.0, 0)
    writer.close()
    assert "no complexity/<metric>/<site> scalars" in error_for("export", str(tmp_path / "plain_tb"), "--source", "tensorboard")
    toy_dir = toy_runs[0][0]
    assert "holds no monitor data in checkpoints" in error_for("compare", str(toy_dir), str(tmp_path / "plain_tb"), "--source", "checkpoint")


# ---------------------------------------------------------------------- report
def test_report_of_a_checkpoint_has_context_families_fits_and_layer_algebra(toy_runs, tmp_path, capsys) -> None:
    log_dir, history = toy_runs[0]
    out = tmp_path / "report"
    assert main(["report", str(log_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "figure" not in err.replace("figures", "")  # no per-figure lines in a log (a tqdm bar on a terminal)
    svgs = sorted(out.glob("*.svg"))
    expected = {"nonlinearity.svg", "dimension.svg", "patterns.svg", "signature_affinity.svg", "powerlaw_exponents.svg", "powerlaw_fits.svg"}
    if "trainer" in history.sites():  # the monitor records the trainer's logged scalars (train_loss, val_loss)
        expected |= {"training.svg", "against_val_loss.svg"}
    assert {p.name for p in svgs} == expected
    assert_drawn(svgs)
    page = (out / "report.html").read_text()
    _assert_self_contained(page)
    embedded = _embedded_images(page)
    assert sorted(embedded) == sorted(p.read_bytes() for p in svgs)
    for site in history.sites():
        if site not in ("trainer",):
            assert html.escape(site) in page
    fits = pd.read_csv(out / "power_laws.csv")
    assert len(fits) == len([key for key in history.curves() if key[0] != "samples"])  # a sample count is not fitted
    relu_b = fits.set_index(["metric", "site"]).loc[("affinity", "relu"), "exponent"]
    assert f"<td>{relu_b:.4g}</td>" in page
    assert 'id="layer-algebra"' in page and '<td class="text">net.fc1</td><td class="text">Linear</td>' in page
    assert "float32" not in page


def test_report_of_tensorboard_logs_covers_every_metric_family(demo_run, tmp_path) -> None:
    log_dir, _ = demo_run
    history = MetricHistory.from_csv(log_dir / "complexity_history.csv")
    out = tmp_path / "report"
    assert main(["report", str(log_dir), "--source", "tensorboard", "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    _assert_self_contained(page)
    assert {"betti_0", "entropic_complexity", "linear_regions", "affinity"} <= set(history.metrics())
    for family in ("nonlinearity", "dimension", "patterns", "entropic", "topology", "regions"):
        assert (out / f"{family}.svg").is_file() and f'id="{family}"' in page
    for site in DEMO_SITES:
        assert html.escape(site) in page
    assert "features.relu1 (ReLU)" in page and "classifier.act (GELU)" in page  # module types from complexity_meta/sites
    assert (out / "signature_affinity.svg").is_file() and "float32" in page
    assert "fits are conclusive" in page and "inconclusive" in page  # 2 epochs: too short for any fit to be conclusive
    assert 'id="layer-algebra"' not in page  # TensorBoard holds no layer-algebra table
    assert (out / "training.svg").is_file() and "val/accuracy" in page  # the context, rebuilt from the user's scalars
    assert_drawn(sorted(out.glob("*.svg")))


def test_tensorboard_context_is_the_users_scalars_at_each_measurement(demo_run, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir, _ = demo_run
    exact = [row for row in MetricHistory.from_csv(log_dir / "complexity_history.csv") if row.site == "trainer"]
    assert main(["export", str(log_dir), "--source", "tensorboard", "--out", str(tmp_path / "tb.csv")]) == 0
    rebuilt = [row for row in MetricHistory.from_csv(tmp_path / "tb.csv") if row.site == "trainer"]
    keys = ["train/loss", "train/accuracy", "val/loss", "val/accuracy"]  # what the demo logs ("/" in the names)
    assert sorted({r.metric for r in exact}) == sorted({r.metric for r in rebuilt}) == sorted(keys)
    assert sorted((r.step, r.epoch, r.metric) for r in rebuilt) == sorted((r.step, r.epoch, r.metric) for r in exact)
    val = {(r.step, r.metric): r.value for r in exact if r.metric.startswith("val/")}
    assert {(r.step, r.metric): r.value for r in rebuilt if r.metric.startswith("val/")} == {k: float(np.float32(v)) for k, v in val.items()}
    events = EventAccumulator(str(log_dir))
    events.Reload()
    for key in ("train/loss", "train/accuracy"):  # logged every 5 steps: the latest value by each measurement
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [r.value for r in rebuilt if r.metric == key] == [max(p for p in logged if p[0] <= r.step)[1] for r in rebuilt if r.metric == key]


def test_report_escapes_site_names(tmp_path) -> None:
    import torch

    sites = ["blocks.0.<script>alert(1)</script>", 'a&b"c']
    history = MetricHistory([(step, step // 4, "affinity", site, 0.5 + 0.01 * step + i) for step in (0, 4, 8) for i, site in enumerate(sites)])
    torch.save({"callbacks": {"ComplexityMonitor{'metrics': ['affinity']}": {"version": 1, "history": history.state_dict()}}}, tmp_path / "crafted.ckpt")
    assert main(["report", str(tmp_path / "crafted.ckpt"), "--quiet"]) == 0
    page = (tmp_path / "crafted_complexity_report" / "report.html").read_text()
    assert "<script>" not in page and 'a&b"c' not in page
    assert "blocks.0.&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b&quot;c" in page


# ---------------------------------------------------------------------- compare
def test_compare_overlays_runs_and_tabulates_final_values_and_exponents(toy_runs, tmp_path) -> None:
    (dir_a, history_a), (dir_b, history_b) = toy_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(dir_a), str(dir_b), "--out", str(out), "--labels", "small<a>,wide&b", "--quiet"]) == 0
    table = pd.read_csv(out / "comparison.csv", float_precision="round_trip")
    assert table["run"].tolist() == ["small<a>", "wide&b"]
    for row, history in zip(table.itertuples(index=False), (history_a, history_b)):
        record = dict(zip(table.columns, row))
        finals = {k: v for k, v in record.items() if k.startswith("final/")}
        assert finals == {f"final/{m}/{s}": v for (m, s), v in history.latest().items()}  # exact: read from checkpoints
        fits = history.power_law_fits().set_index(["metric", "site"])["exponent"]
        for (metric, site), exponent in fits.items():
            assert record[f"exponent/{metric}/{site}"] == pytest.approx(exponent, rel=1e-12)
        assert record["measurements"] == 6 and record["last_epoch"] == 5
    long = pd.read_csv(out / "comparison_long.csv")
    assert len(long) == len(history_a.curves()) + len(history_b.curves())
    svgs = sorted(out.glob("*.svg"))
    from lightning_complexity.report_tables import folded_metrics

    context = [m for m in history_a.metrics() if history_a.sites(m) == ["trainer"]]
    folded = set(folded_metrics(history_a)) & set(folded_metrics(history_b))  # the same curve times a constant: not drawn again
    assert folded == {"effective_dimension_ratio"}
    drawn = {f"compare_{m}.svg" for m in history_a.metrics() if m not in context and m not in folded and m != "samples"} | ({"compare_training.svg"} if context else set())
    assert {p.name for p in svgs} == drawn
    assert_drawn(svgs)
    page = (out / "comparison.html").read_text()
    _assert_self_contained(page)
    assert len(_embedded_images(page)) == len(svgs)
    assert "small&lt;a&gt;" in page and "wide&amp;b" in page and "small<a>" not in page
    for site in TOY_SITES:  # each with its module type (from the checkpoint's site metadata)
        assert re.search(rf">{re.escape(html.escape(site))} \((Tanh|ReLU)\)<", page), site


def test_compare_names_runs_by_their_paths_and_needs_two(toy_runs, tmp_path, capsys) -> None:
    from lightning_complexity.compare import run_labels

    assert run_labels(["runs/a/version_0", "runs/b/version_0"]) == ["a/version_0", "b/version_0"]
    assert main(["compare", str(toy_runs[0][0])]) == 2
    assert "needs at least two runs" in capsys.readouterr().err
    assert main(["compare", str(toy_runs[0][0]), str(toy_runs[1][0]), "--labels", "one", "--out", str(tmp_path)]) == 2
    assert "--labels must give 2 distinct" in capsys.readouterr().err


# ---------------------------------------------------------------------- entry point
def test_monitor_is_registered_under_lightnings_callback_factory_group() -> None:
    from importlib.metadata import entry_points

    from lightning_complexity.entry_point import ENTRY_POINT_GROUP, callbacks_from_environment

    registered = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.value.startswith("lightning_complexity.")]
    assert len(registered) == 1, "reinstall the package (pip install -e .) to register the entry point"
    assert registered[0].load() is callbacks_from_environment


def test_environment_switches_the_monitor_on_without_code_changes(tmp_path, monkeypatch) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from toy import ToyRegressor, toy_loaders, trainer

    def monitors() -> list[ComplexityMonitor]:
        return [c for c in trainer(tmp_path, [], max_epochs=1).callbacks if isinstance(c, ComplexityMonitor)]

    for name in ("LIGHTNING_COMPLEXITY", "LIGHTNING_COMPLEXITY_METRICS", "LIGHTNING_COMPLEXITY_EXPORT"):
        monkeypatch.delenv(name, raising=False)
    assert monitors() == []  # installed but not asked for: training is unchanged
    monkeypatch.setenv("LIGHTNING_COMPLEXITY", "0")
    assert monitors() == []
    monkeypatch.setenv("LIGHTNING_COMPLEXITY", "maybe")
    with pytest.warns(UserWarning, match="LIGHTNING_COMPLEXITY='maybe' is not understood"):
        assert monitors() == []

    monkeypatch.setenv("LIGHTNING_COMPLEXITY", "1")
    monkeypatch.setenv("LIGHTNING_COMPLEXITY_METRICS", "no_such_metric")
    with pytest.raises(MisconfigurationException, match="LIGHTNING_COMPLEXITY_METRICS='no_such_metric'"):
        monitors()
    monkeypatch.setenv("LIGHTNING_COMPLEXITY_METRICS", "effective_dimension, affinity")
    monkeypatch.setenv("LIGHTNING_COMPLEXITY_EXPORT", str(tmp_path / "history.csv"))
    (monitor,) = monitors()
    assert [m.name for m in monitor.metrics] == ["effective_dimension", "affinity"]
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    fit = trainer(tmp_path, [], max_epochs=1, limit_train_batches=2)
    fit.fit(ToyRegressor(), train, val)
    exported = MetricHistory.from_csv(tmp_path / "history.csv")
    assert exported.metrics()[:2] == ["effective_dimension", "participation_ratio"] and "affinity" in exported.metrics()
    assert exported.sites("affinity") == TOY_SITES and exported.steps() == [0, 2]


def test_report_of_the_demo_has_every_figure_and_table_parsed(demo_run, tmp_path) -> None:
    """The real run a new user makes: every figure embedded with its caption, every table with real values."""
    from lightning_complexity.export import load_run
    from test_report import _parse, _table

    log_dir, _ = demo_run
    run = load_run(log_dir)
    assert run.kind == "checkpoint"
    out = tmp_path / "report"
    assert main(["report", str(log_dir), "--out", str(out), "--quiet"]) == 0
    page = _parse(out / "report.html")
    svgs = {p.name: p.read_bytes() for p in out.glob("*.svg")}
    families = ("nonlinearity", "dimension", "patterns", "entropic", "topology", "regions")
    # 2 epochs: 2 points after initialisation, no curve can be fitted (a fit needs 4), so no power-law figures
    expected = {"training.svg", "against_val_accuracy.svg", "signature_affinity.svg", *(f"{f}.svg" for f in families)}
    assert set(svgs) == expected  # val/accuracy (a "/" in the key) gives a safe file name
    text = (out / "report.html").read_text(encoding="utf-8")
    why = "no curve has yet the 4 points after initialisation (t &gt; 0, y &gt; 0) that a fit needs."
    assert f"power-law exponents: {why}" in text and f"power-law fits: {why}" in text
    assert sorted(svg for _, svg in page.images) == sorted(svgs.values())
    assert {re.search(r"(\S+\.svg)$", c).group(1) for c in page.captions} == expected
    assert {"context", "sites", "power-laws", "final", "layer-algebra", *families} <= page.ids
    assert all(link.lstrip("#") in page.ids for link in page.links)
    # sites: each with its module type, kind and the samples it rests on, in forward order
    sites = _table(page, "depth", "site", "module type", "kind", "samples")
    types = [(info.name, info.type) for info in sorted(run.sites.values(), key=lambda s: s.depth)]
    assert [(row[1], row[2]) for row in sites["rows"]] == types == [
        ("features", "Sequential"), ("features.relu1", "ReLU"), ("features.relu2", "ReLU"), ("features.relu3", "ReLU"), ("classifier", "Sequential"), ("classifier.act", "GELU")]
    assert {row[4] for row in sites["rows"]} == {"360"}
    # fits: one row per shown curve, each with a verdict; never the sample count, the flag or the trainer's keys
    fits = _table(page, "metric", "site", "exponent b", "verdict")
    metrics = {row[0] for row in fits["rows"]}
    assert {"affinity", "effective_dimension", "betti_0", "linear_regions"} <= metrics
    assert not metrics & {"samples", "entropic_complexity_censored", "val/loss", "effective_dimension_ratio"}
    assert all(re.fullmatch(r"inconclusive: no fit \([012] usable points?; a fit needs 4\)", row[-1]) for row in fits["rows"])  # y = 0 is not usable
    # final values: a column per site, the checkpoint's last value of each metric
    final = _table(page, "metric", "features.relu1 (ReLU)")
    latest = run.history.latest()
    affinity = next(row for row in final["rows"] if row[0] == "affinity")
    assert affinity[final["header"].index("classifier.act (GELU)")] == f"{latest[('affinity', 'classifier.act')]:.4g}"
    algebra = _table(page, "name", "type")
    assert [row[0] for row in algebra["rows"]] == run.layer_algebra["name"].tolist() and "features.conv1" in run.layer_algebra["name"].tolist()
