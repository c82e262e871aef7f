"""ComplexityMonitor end to end on a toy fit: schedule, values, loggers, resume, errors, hooks."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn

from lightning_complexity import ComplexityMonitor, MetricHistory
from toy import ToyRegressor, toy_loaders, trainer

SITES = ["net.act", "relu", "relu#1"]
METRICS = ["effective_dimension", "participation_ratio", "effective_dimension_ratio"]
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
    frame = monitor.history.to_dataframe()
    assert monitor.sites["effective_dimension"] == SITES  # forward order, reused module twice
    assert frame["metric"].unique().tolist() == METRICS
    assert sorted(set(zip(frame["step"], frame["epoch"]))) == [(e * BATCHES_PER_EPOCH, e) for e in range(4)]
    assert len(frame) == 4 * len(SITES) * len(METRICS)
    assert frame["value"].notna().all()


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


def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path) -> None:
    # Dropout draws from the RNG and the ReLU is in place: the monitor must disturb neither.
    plain, _ = _fit(tmp_path / "a", ComplexityMonitor(metrics="effective_dimension", every_n_epochs=None, measure_at_start=False, every_n_steps=10**9), max_epochs=2)
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
    assert set(charts) == set(METRICS)


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
    # The checkpoint written at the end of epoch 2 already held that epoch's rows.
    assert MetricHistory.from_state_dict(torch.load(ckpt, weights_only=False)["callbacks"][first.state_key]["history"]).steps() == [0, 8, 16]


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
    with pytest.raises(MisconfigurationException, match=r"`layers` selects no module.*Available modules: net \(Sequential\), net.fc1 \(Linear\)"):
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
    assert frame[frame.epoch <= 1]["value"].notna().all()
    late = frame[frame.epoch >= 2]
    assert late[late.site == "relu#1"]["value"].isna().all() and (late.site == "relu#1").sum() == 3 * 3
    assert late[late.site != "relu#1"]["value"].notna().all()  # NaN enters after `relu`'s first call
    ours = [str(w.message) for w in caught if "lightning_complexity" in str(w.message)]
    assert [m.split("`")[3] for m in ours] == ["relu#1"]  # once, naming the site
    assert all("non-finite" in m for m in ours)


def test_export_path_writes_the_history_at_fit_end(tmp_path) -> None:
    monitor = ComplexityMonitor(export_path=tmp_path / "out" / "history.parquet")
    _fit(tmp_path, monitor, max_epochs=1)
    assert MetricHistory.from_parquet(tmp_path / "out" / "history.parquet") == monitor.history
