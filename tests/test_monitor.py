"""ComplexityMonitor end to end on a toy fit: schedule, values, loggers, resume, errors, hooks."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn

from lightning_complexity import ComplexityMonitor, MetricHistory
from lightning_complexity.site_metrics import Affinity
from toy import ToyRegressor, toy_loaders, trainer

SITES = ["net.act", "relu", "relu#1"]
METRICS = ["affinity", "effective_dimension", "participation_ratio", "effective_dimension_ratio", "activation_pattern_entropy"]
SIGNATURE = ["mean", "std", "min", "max", "max_over_mean"]
BATCHES_PER_EPOCH = 256 // 32


def _fit(tmp_path, monitor, max_epochs=3, model=None, **kwargs):
    pl.seed_everything(0, verbose=False)
    model = model or ToyRegressor()
    train, val = toy_loaders()
    t = trainer(tmp_path, [monitor], max_epochs=max_epochs, **kwargs)
    t.fit(model, train, val)
    return model, t


def test_schedule_sites_and_rows(tmp_path) -> None:
    monitor = ComplexityMonitor()
    _fit(tmp_path, monitor)
    everything = monitor.history.to_dataframe()
    frame = everything[everything.site != "trainer"]
    assert monitor.sites["effective_dimension"] == SITES  # forward order, reused module twice
    assert monitor.sites["affinity"] == SITES
    assert frame["metric"].unique().tolist() == METRICS[:1] + ["affinity_signature"] + METRICS[1:] + ["samples"]
    assert frame[frame.metric == "activation_pattern_entropy"]["value"].between(0, np.log(2)).all()
    assert sorted(set(zip(frame["step"], frame["epoch"]))) == [(e * BATCHES_PER_EPOCH, e) for e in range(4)]
    assert len(frame) == 4 * (len(SITES) * (len(METRICS) + 1) + len(SIGNATURE))
    assert frame["value"].notna().all()
    # The 128 validation rows are the probe (two batches of 64): every site rests on all of them.
    assert (frame[frame.metric == "samples"]["value"] == 128).all()
    signature = frame[frame.metric == "affinity_signature"]
    assert signature["site"].tolist() == SIGNATURE * 4
    scores = frame[frame.metric == "affinity"].groupby("step")["value"]
    np.testing.assert_allclose(signature[signature.site == "mean"]["value"], scores.mean(), rtol=1e-12)
    np.testing.assert_allclose(signature[signature.site == "max"]["value"], scores.max(), rtol=1e-12)
    # Context rows: the trainer's logged scalars at each epoch's measurement (none before training).
    context = everything[everything.site == "trainer"]
    assert sorted(set(context["metric"])) == ["train_loss", "val_loss"]
    assert sorted(set(context["step"])) == [8, 16, 24]
    assert monitor.site_info["relu#1"] == {"module": "relu", "type": "ReLU", "kind": "module", "depth": 2}


def test_every_n_steps(tmp_path) -> None:
    monitor = ComplexityMonitor(every_n_epochs=None, every_n_steps=5, measure_at_start=False)
    _fit(tmp_path, monitor, max_epochs=2)
    assert monitor.history.steps() == [5, 10, 15]
    _, epochs = zip(*[(r.step, r.epoch) for r in monitor.history if r.metric == "effective_dimension" and r.site == "relu"])
    assert list(epochs) == [0, 1, 1]  # step 10 is not an epoch end; step 16 would be


def _reference_dimension(samples: torch.Tensor) -> float:
    """Independent numpy computation of SPEC §2."""
    x = samples.double().numpy()
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    p = eig / eig.sum()
    return float(np.exp(-(p * np.log(p + 1e-11)).sum()))


def test_values_match_an_independent_computation_on_the_probe(tmp_path) -> None:
    probe = torch.randn(300, 6, generator=torch.Generator().manual_seed(3))
    monitor = ComplexityMonitor(probe=probe)
    model, _ = _fit(tmp_path, monitor, max_epochs=2)
    model.eval()
    with torch.no_grad():
        act = model.net.act(model.net.fc1(probe))
        h1 = torch.relu(model.net.fc2(act))
        h2 = torch.relu(model.fc3(h1))
    last = {site: v for (metric, site), v in monitor.history.latest().items() if metric == "effective_dimension"}
    for site, samples in {"net.act": act, "relu": h1, "relu#1": h2}.items():
        assert last[site] == pytest.approx(_reference_dimension(samples), rel=1e-6)


class GaussianReLU(ToyRegressor):
    """The probe's Gaussian inputs reach the ReLU unchanged: its affinity is SPEC §1's 0.621093."""

    def __init__(self) -> None:
        super().__init__()
        self.identity = nn.Linear(6, 6, bias=False)
        self.gate = nn.ReLU()
        with torch.no_grad():
            self.identity.weight.copy_(torch.eye(6))
        self.identity.weight.requires_grad_(False)

    def forward(self, x):
        return super().forward(self.gate(self.identity(x)) + x)


def test_affinity_in_the_monitor_matches_the_analytic_relu_value(tmp_path) -> None:
    probe = torch.randn(4096, 6, generator=torch.Generator().manual_seed(0))
    monitor = ComplexityMonitor(metrics=["affinity"], layers="gate", probe=probe, max_samples=4096)
    _fit(tmp_path, monitor, max_epochs=1, model=GaussianReLU())
    values = [r.value for r in monitor.history if r.metric == "affinity" and r.site == "gate"]
    assert len(values) == 2 and values[0] == values[1]  # the frozen identity keeps the input fixed
    assert values[0] == pytest.approx(0.621093, abs=0.01)  # sampling error at n = 4096, d = 6


def test_pattern_entropy_in_the_monitor_is_ln2_for_symmetric_relu_input(tmp_path) -> None:
    probe = torch.randn(4096, 6, generator=torch.Generator().manual_seed(1))
    monitor = ComplexityMonitor(metrics=["activation_pattern_entropy"], layers="gate", probe=probe, max_samples=4096, every_n_epochs=None)
    _fit(tmp_path, monitor, max_epochs=1, model=GaussianReLU())
    (value,) = [r.value for r in monitor.history if r.metric == "activation_pattern_entropy"]
    assert value == pytest.approx(np.log(2), abs=2e-3)  # binary entropy near p = 1/2 is flat


class AbsBlock(ToyRegressor):
    """A block whose map is relu(x) on 1-D input: two affine pieces, C_ε = ln 2 (SPEC §3)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Identity(), nn.ReLU())
        self.lift = nn.Linear(1, 6)

    def forward(self, x):
        return super().forward(self.lift(self.block(x[:, :1])))


def test_entropic_complexity_in_the_monitor(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    probe = torch.rand(3000, 6, generator=torch.Generator().manual_seed(2)) * 2 - 1
    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = ComplexityMonitor(metrics=["entropic_complexity"], probe=probe, max_samples=3000, every_n_epochs=None)
    _fit(tmp_path, monitor, max_epochs=1, model=AbsBlock(), logger=logger)
    assert monitor.sites["entropic_complexity"] == ["block", "net"]  # modules with an activation child, forward order
    values = {(r.metric, r.site): r.value for r in monitor.history}
    assert values[("entropic_complexity", "block")] == pytest.approx(np.log(2), abs=0.02)
    assert values[("linear_deficit", "block")] > 0.05 and values[("entropic_complexity_censored", "block")] == 0.0
    logger.experiment.flush()
    monitor.wait_for_figures()  # one measurement: no time between measurements to render it in
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "complexity_figures/entropic_error_curves" in events.Tags()["images"]


class TinyCNN(ToyRegressor):
    """Two conv sites with ReLU maps, then a linear head (a 2-D site, skipped by Betti)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()
        self.conv2, self.act2 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
        self.proj = nn.Linear(4 * 36, 6)

    def features(self, x):
        maps1 = self.act1(self.conv1((x[:, :, None] * x[:, None, :]).unsqueeze(1)))  # 6×6 maps
        return maps1, self.act2(self.conv2(maps1))

    def forward(self, x):
        _, maps2 = self.features(x)
        return super().forward(self.proj(maps2.flatten(1)))


def test_betti_numbers_in_the_monitor_match_the_functional_on_the_same_maps(tmp_path) -> None:
    from lightning_complexity.functional.topology import betti_numbers
    from lightning_complexity.site_metrics import Betti

    probe = torch.randn(80, 6, generator=torch.Generator().manual_seed(4))
    monitor = ComplexityMonitor(metrics=[Betti()], probe=probe)
    model, _ = _fit(tmp_path, monitor, max_epochs=1, model=TinyCNN())
    assert monitor.sites["betti"] == ["act1", "act2"]  # `relu` sees 2-D tensors: not a map site
    model.eval()
    with torch.no_grad():
        maps = model.features(probe[:64])  # the capture keeps the first 64 inputs' maps
    values = {(r.metric, r.site): r.value for r in monitor.history if r.step == monitor.history.steps()[-1]}
    sums = []
    for site, site_maps in zip(["act1", "act2"], maps):
        counts = betti_numbers(site_maps).double()
        assert values[("betti_0", site)] == pytest.approx(counts[..., 0].mean().item(), rel=1e-12)
        assert values[("betti_1", site)] == pytest.approx(counts[..., 1].mean().item(), rel=1e-12)
        assert values[("active_fraction", site)] == pytest.approx((site_maps > 0).double().mean().item(), rel=1e-12)
        sums.append(counts.sum(-1).mean().item())
    # Two sites at depths 0 and 1: the decay rate is the slope of ln(b0 + b1) between them.
    assert values[("betti_depth", "decay_rate")] == pytest.approx(np.log(sums[1]) - np.log(sums[0]), rel=1e-9)


def test_linear_regions_and_layer_algebra_in_the_monitor(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_complexity.functional.regions import count_linear_regions
    from lightning_complexity.site_metrics import LinearRegions

    probe = torch.randn(64, 6, generator=torch.Generator().manual_seed(5))
    logger = TensorBoardLogger(tmp_path, name="tb")
    regions = LinearRegions(num_segments=3, num_samples=512)
    monitor = ComplexityMonitor(metrics=["effective_dimension", regions], probe=probe)
    model, _ = _fit(tmp_path, monitor, max_epochs=1, logger=logger)
    assert regions.resolved_method == "sampled"  # the Tanh has no exact regions
    expected = count_linear_regions(model, probe[0:6:2], probe[1:6:2], method="sampled", num_samples=512)
    values = {(r.metric, r.site): r.value for r in monitor.history}  # the last measurement wins
    assert values[("linear_regions", "network")] == pytest.approx(expected.counts.double().mean().item())
    assert values[("linear_regions_per_neuron", "network")] == pytest.approx(expected.per_neuron.double().mean().item())
    # Layer algebra: computed once, parameters equal the model's, logged as TensorBoard text.
    assert monitor.layer_algebra.totals.parameters == sum(p.numel() for p in model.parameters())
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("complexity/layer_algebra/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "net.fc1" in text and "Linear" in text


def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path) -> None:
    # Dropout draws from the RNG and the ReLU is in place: the monitor must disturb neither.
    # The reference has no monitor at all: a probe draw that consumed the RNG would show.
    pl.seed_everything(0, verbose=False)
    plain = ToyRegressor()
    train, val = toy_loaders()
    trainer(tmp_path / "a", [], max_epochs=2).fit(plain, train, val)
    watched, _ = _fit(tmp_path / "b", ComplexityMonitor(every_n_steps=3), max_epochs=2)
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name
    assert watched.training and watched.net.drop.training  # modes restored after each probe


def test_tensorboard_events_match_the_history(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = ComplexityMonitor()
    _fit(tmp_path, monitor, logger=logger)
    logger.experiment.flush()
    monitor.wait_for_figures()  # the toy's epochs are too short to render the heatmap during training
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for metric in METRICS:
        for site in SITES:
            tag = f"complexity/{metric}/{site}"
            assert tag in tags
            steps = [e.step for e in events.Scalars(tag)]
            values = [e.value for e in events.Scalars(tag)]
            t, expected = monitor.history.series(metric, site, by="step")
            assert steps == t.tolist()
            np.testing.assert_allclose(values, expected, rtol=1e-6)  # TensorBoard stores float32
    # One custom-scalars layout with a multiline chart per metric naming every site's tag.
    from tensorboard.plugins.custom_scalar import layout_pb2

    config = events.Tensors("custom_scalars__config__")[-1]
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["effective_dimension"] == [f"complexity/effective_dimension/{s}" for s in SITES]
    # Summaries of different scale get separate charts.
    assert set(charts) == set(METRICS) | {"samples", "affinity_signature: mean, min, max", "affinity_signature: std", "affinity_signature: max_over_mean"}
    # The signature heatmap is logged as an image at every 5th measurement (figure_every_n=5).
    images = events.Images("complexity_figures/affinity_signature")
    assert [image.step for image in images] == monitor.history.steps()[::5]


def test_power_law_fits_are_logged_and_equal_the_history_table(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = ComplexityMonitor(metrics="effective_dimension")
    _fit(tmp_path, monitor, logger=logger, max_epochs=5)
    logger.experiment.flush()
    monitor.wait_for_figures()  # drawn in the background after fit returns, into a file of their own
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    fits = monitor.history.power_law_fits().set_index(["metric", "site"])
    fits = fits[[metric != "samples" for metric, _ in fits.index]]  # a sample count is bookkeeping, not fitted
    assert (fits["n_points"] == 5).all()  # epochs 1..5; the epoch-0 point (t = 0) is left out
    for (metric, site), fit in fits.iterrows():
        exponents = events.Scalars(f"powerlaw/{metric}/{site}/exponent")
        # Logged from the 4th point on: after epochs 4 and 5.
        assert [e.step for e in exponents] == monitor.history.steps()[-2:]
        assert exponents[-1].value == pytest.approx(fit["exponent"], rel=1e-5, abs=1e-7)
        assert events.Scalars(f"powerlaw/{metric}/{site}/r2")[-1].value == pytest.approx(fit["r2"], rel=1e-5, abs=1e-7)
        # Independent check of the fit: ordinary least squares of ln y on ln t with numpy.
        t, y = monitor.history.series(metric, site)
        slope = np.polyfit(np.log(t[t > 0]), np.log(y[t > 0]), 1)[0]
        assert fit["exponent"] == pytest.approx(slope, rel=1e-9, abs=1e-12)
    assert "complexity_figures/powerlaw/effective_dimension" in events.Tags()["images"]


def test_power_law_figures_come_after_fit_in_their_own_event_file_and_equal_the_inline_ones(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = {}
    for background in (True, False):
        logger = TensorBoardLogger(tmp_path / str(background), name="tb")
        monitor = ComplexityMonitor(metrics="effective_dimension", background=background)
        _fit(tmp_path, monitor, logger=logger, max_epochs=5)
        if background:
            monitor.wait_for_figures()
        assert monitor._end_figures.pending == 0  # inline: written before fit returned
        files = [p.name for p in Path(logger.log_dir).glob("events.out.tfevents.*")]
        assert len(files) == 2 and sum(f.endswith(".end_of_fit_figures") for f in files) == 1  # the logger's, and theirs
        events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
        events.Reload()
        (image,) = events.Images("complexity_figures/powerlaw/effective_dimension")
        assert image.step == monitor.history.steps()[-1]
        images[background] = image.encoded_image_string
    assert images[True] == images[False]  # the same figure, drawn from the same finished history


def test_figures_put_off_until_after_fit_equal_the_ones_rendered_during_training(tmp_path, monkeypatch) -> None:
    import lightning_complexity.recording as recording
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = {}
    for share in (float("inf"), 0.0):  # every figure rendered during training; none
        monkeypatch.setattr(recording, "_LIVE_FIGURE_SHARE", share)
        logger = TensorBoardLogger(tmp_path / str(share), name="tb")
        monitor = ComplexityMonitor(metrics=Affinity(figure_every_n=2), power_law=False)
        _fit(tmp_path, monitor, logger=logger, max_epochs=4)
        if share == 0.0:
            assert monitor._end_figures.pending + len(list(Path(logger.log_dir).glob("*.end_of_fit_figures"))) >= 1
        monitor.wait_for_figures()
        events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
        events.Reload()
        images[share] = [(image.step, image.encoded_image_string) for image in events.Images("complexity_figures/affinity_signature")]
        # Each heatmap shows the history up to its own measurement: the 1st, 3rd and 5th.
        assert [step for step, _ in images[share]] == monitor.history.steps()[::2]
    assert images[float("inf")] == images[0.0]


def test_csv_logger_receives_the_scalars(tmp_path) -> None:
    import pandas as pd

    logger = CSVLogger(tmp_path, name="csv")
    monitor = ComplexityMonitor()
    _fit(tmp_path, monitor, logger=logger)
    logged = pd.read_csv(f"{logger.log_dir}/metrics.csv")
    column = "complexity/effective_dimension/relu#1"
    got = logged.dropna(subset=[column])[["step", column]]
    t, expected = monitor.history.series("effective_dimension", "relu#1", by="step")
    assert got["step"].tolist() == t.tolist()
    np.testing.assert_allclose(got[column], expected, rtol=1e-12)


def test_resumed_fit_continues_the_curves_without_gaps_or_duplicates(tmp_path) -> None:
    # No dropout: Lightning checkpoints do not carry the global RNG, so only a deterministic model
    # resumes to bit-identical weights.
    full = ComplexityMonitor()
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    trainer(tmp_path / "full", [full], max_epochs=4).fit(ToyRegressor(dropout=0.0), train, val)

    first = ComplexityMonitor()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    trainer(tmp_path / "part", [first, checkpoints], max_epochs=2, enable_checkpointing=True).fit(ToyRegressor(dropout=0.0), train, val)
    ckpt = sorted((tmp_path / "ckpt").glob("epoch=1-*.ckpt"))[0]

    resumed = ComplexityMonitor()
    trainer(tmp_path / "resume", [resumed], max_epochs=4).fit(ToyRegressor(dropout=0.0), train, val, ckpt_path=str(ckpt))

    assert [r[:4] for r in resumed.history] == [r[:4] for r in full.history]
    np.testing.assert_allclose(resumed.history.to_dataframe()["value"], full.history.to_dataframe()["value"], rtol=1e-9)
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(resumed.history.power_law_fits(), full.history.power_law_fits(), rtol=1e-8)
    # The checkpoint written at the end of epoch 2 already held that epoch's rows.
    assert MetricHistory.from_state_dict(torch.load(ckpt, weights_only=False)["callbacks"][first.state_key]["history"]).steps() == [0, 8, 16]


def test_a_crashed_fit_resumed_from_its_last_checkpoint_equals_an_uninterrupted_one(tmp_path) -> None:
    train, val = toy_loaders()
    full = ComplexityMonitor(metrics=["affinity", "effective_dimension"])
    pl.seed_everything(0, verbose=False)
    trainer(tmp_path / "full", [full], max_epochs=4).fit(ToyRegressor(dropout=0.0), train, val)

    # The first attempt dies in the middle of the third epoch (step 20 of 8 per epoch).
    crashed = ComplexityMonitor(metrics=["affinity", "effective_dimension"])
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    pl.seed_everything(0, verbose=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path / "crash", [crashed, checkpoints], max_epochs=4, enable_checkpointing=True).fit(
            ToyRegressor(dropout=0.0, fail_at_step=20), train, val
        )
    assert crashed.history.steps() == [0, 8, 16]  # what the monitor had when the run died

    resumed = ComplexityMonitor(metrics=["affinity", "effective_dimension"])
    trainer(tmp_path / "resume", [resumed], max_epochs=4).fit(ToyRegressor(dropout=0.0), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.history == full.history  # bit-identical rows: nothing lost, nothing twice
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(resumed.history.power_law_fits(), full.history.power_law_fits())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"metrics": "nonsense"}, "`metrics='nonsense'`"),
        ({"metrics": []}, "`metrics=[]`"),
        ({"layers": 3.5}, "`layers=3.5`"),
        ({"probe": "test"}, "`probe='test'`"),
        ({"max_samples": 1}, "`max_samples=1`"),
        ({"every_n_epochs": -2}, "`every_n_epochs=-2`"),
        ({"every_n_steps": "5"}, "`every_n_steps='5'`"),
        ({"every_n_epochs": 0, "measure_at_start": False}, "`every_n_epochs=0`"),
        ({"spatial": "sum"}, "`spatial='sum'`"),
        ({"probe_batch_size": 0}, "`probe_batch_size=0`"),
        ({"export_path": "out.xlsx"}, "`export_path='out.xlsx'`"),
    ],
)
def test_bad_arguments_name_the_argument_value_and_accepted(kwargs, needle) -> None:
    with pytest.raises(MisconfigurationException) as error:
        ComplexityMonitor(**kwargs)
    assert needle in str(error.value) and "expected" in str(error.value)


def test_layers_matching_nothing_lists_the_available_modules(tmp_path) -> None:
    with pytest.raises(MisconfigurationException, match=r"`layers='encoder.\*'` selects no module.*Available modules: net \(Sequential\), net.fc1 \(Linear\)"):
        _fit(tmp_path, ComplexityMonitor(layers="encoder.*"))


def test_hooks_are_removed_after_fit_and_after_a_failing_fit(tmp_path) -> None:
    model, _ = _fit(tmp_path, ComplexityMonitor())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    failing = ToyRegressor(fail_at_step=3)
    with pytest.raises(RuntimeError, match="boom"):
        _fit(tmp_path, ComplexityMonitor(), model=failing)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in failing.modules())


class NaNAfterFirstEpoch(ToyRegressor):
    def forward(self, x):
        h = self.relu(self.net(x))
        if not self.training and self.current_epoch >= 1:
            h = h * float("nan")  # the probe sees NaN activations; training does not
        return self.head(self.relu(self.fc3(h)))


def test_nan_activations_give_nan_rows_and_one_warning_per_site(tmp_path) -> None:
    monitor = ComplexityMonitor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, monitor, model=NaNAfterFirstEpoch(), max_epochs=4)
    frame = monitor.history.to_dataframe()
    frame = frame[(frame.metric != "samples") & (frame.site != "trainer")]
    assert frame[frame.epoch <= 1]["value"].notna().all()
    late = frame[frame.epoch >= 2]
    assert late[late.site == "relu#1"]["value"].isna().all() and (late.site == "relu#1").sum() == 3 * 5
    assert late[late.site != "relu#1"]["value"].notna().all()  # NaN enters after `relu`'s first call
    ours = [str(w.message) for w in caught if "lightning_complexity" in str(w.message)]
    assert sorted((m.split("`")[1], m.split("`")[3]) for m in ours) == [
        ("activation_pattern_entropy", "relu#1"), ("affinity", "relu#1"), ("effective_dimension", "relu#1")]
    assert all("non-finite" in m for m in ours)


def test_export_path_writes_the_history_at_fit_end(tmp_path) -> None:
    monitor = ComplexityMonitor(export_path=tmp_path / "out" / "history.parquet")
    _fit(tmp_path, monitor, max_epochs=1)
    assert MetricHistory.from_parquet(tmp_path / "out" / "history.parquet") == monitor.history
