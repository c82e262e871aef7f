"""The monitor over a fit's life: where samples come from, resume, reuse, failures at fit end.

Every test is a real (tiny) fit; values are compared with an independent source (a fit without
the monitor, a forward written here, an uninterrupted fit).
"""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torchmetrics
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader

from lightning_complexity import ComplexityMonitor, MetricHistory
from toy import ToyRegressor, toy_data, toy_loaders, trainer

SITES = ["net.act", "relu", "relu#1"]


def _fit(tmp_path, callbacks, model=None, max_epochs=2, loaders=None, **kwargs):
    """Fit ``model`` (a module class, built after seeding, so that two fits start equal)."""
    pl.seed_everything(0, verbose=False)
    model = model() if model is not None else ToyRegressor(dropout=0.0)
    train, val = loaders or toy_loaders()
    fitted = trainer(tmp_path, callbacks, max_epochs=max_epochs, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted.fit(model, train, val)
    return model, [str(w.message) for w in caught if str(w.message).startswith("lightning_complexity")]


def _by_step(history: MetricHistory, metric: str = "effective_dimension", site: str = "relu") -> dict[int, float]:
    return {r.step: r.value for r in history if r.metric == metric and r.site == site}


# ------------------------------------------------------------------ where the samples come from


class Frozen(ToyRegressor):
    """lr = 0: every measurement sees the same weights, so every source must give the same values."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0, lr=0.0)


def test_the_validation_pass_and_the_own_pass_measure_the_same_rows(tmp_path) -> None:
    # check_val_every_n_epoch=2: epochs 1 and 3 have no validation (own pass), 2 and 4 do.
    monitor = ComplexityMonitor(metrics=["affinity", "effective_dimension", "activation_pattern_entropy"])
    _fit(tmp_path, [monitor], Frozen, max_epochs=4, check_val_every_n_epoch=2)
    assert monitor.history.steps() == [0, 8, 16, 24, 32]
    for metric in ("affinity", "effective_dimension", "activation_pattern_entropy"):
        for site in SITES:
            values = list(_by_step(monitor.history, metric, site).values())
            assert np.ptp(values) <= 1e-12 * max(1.0, abs(values[0])), (metric, site, values)


def test_the_probe_is_spread_over_the_validation_set(tmp_path) -> None:
    # 40 validation batches of 8 rows, 64 samples: 8 batches, one from each fifth of the set.
    train, _ = toy_loaders()
    val = DataLoader(toy_data(320, 1), batch_size=8)
    monitor = ComplexityMonitor(metrics="effective_dimension", max_samples=64)
    model, _ = _fit(tmp_path, [monitor], Frozen, max_epochs=1, loaders=(train, val))
    chosen = sorted(monitor._probe.validation_batches)
    assert len(chosen) == 8 and chosen[0] < 5 and chosen[-1] >= 35
    assert all(b // 5 == i for i, b in enumerate(chosen))  # one per stratum of 5 batches
    rows = torch.cat([val.dataset[b * 8 : (b + 1) * 8][0] for b in chosen])
    model.eval()
    with torch.no_grad():
        h = torch.relu(model.net(rows))
    from lightning_complexity.functional import effective_dimension

    assert _by_step(monitor.history)[8] == pytest.approx(effective_dimension(h.double()).item(), rel=1e-9)


def test_a_shuffled_validation_loader_gets_a_fixed_probe_and_a_warning(tmp_path) -> None:
    train, _ = toy_loaders()
    val = DataLoader(toy_data(128, 1), batch_size=32, shuffle=True)
    monitor = ComplexityMonitor(metrics="effective_dimension")
    _, messages = _fit(tmp_path, [monitor], Frozen, max_epochs=3, loaders=(train, val))
    assert sum("does not read its dataset in order" in m for m in messages) == 1
    values = list(_by_step(monitor.history).values())
    assert len(values) == 4 and np.ptp(values) <= 1e-12 * values[0]  # the same rows every time


def test_positions_as_samples_cover_the_maps_with_the_validation_probe(tmp_path) -> None:
    from test_hostile import Recorder, WideMaps

    recorder = Recorder(layers="act_map")
    monitor = ComplexityMonitor(metrics=[recorder], spatial="positions", max_samples=512, every_n_epochs=None)
    def frozen_maps():
        model = WideMaps()
        model.lr = 0.0  # the maps below are those the measurement saw
        return model

    model, _ = _fit(tmp_path, [monitor], frozen_maps, max_epochs=1)
    inputs, _ = recorder.seen["act_map"]
    x = toy_data(128, 1).tensors[0]
    model.eval()
    with torch.no_grad():
        maps = model.maps(x)  # (128, 4, 16, 16)
    # 512 samples from 128 inputs: 4 positions each, at different pixels for different inputs.
    assert inputs.shape == (512, 4)
    where = {}
    for i in range(128):
        pixels = maps[i].permute(1, 2, 0).reshape(-1, 4).double()
        for row in inputs[4 * i : 4 * i + 4]:
            match = torch.nonzero((pixels == row).all(dim=1)).flatten()
            assert len(match) >= 1  # every sample is a real position of its own input
            where.setdefault(int(match[0]), 0)
            where[int(match[0])] += 1
    assert len(where) >= 200  # of 256 pixels: not the top-left one 128 times


def test_too_few_samples_for_the_width_warns_once_per_site(tmp_path) -> None:
    probe = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    monitor = ComplexityMonitor(metrics="effective_dimension", probe=probe)
    _, messages = _fit(tmp_path, [monitor], lambda: ToyRegressor(width=16), max_epochs=2)
    few = [m for m in messages if "has 10 samples for 16 features" in m]
    assert sorted(m.split("`")[1] for m in few) == sorted(SITES)
    assert all(v == 10 for (m, s), v in monitor.history.latest().items() if m == "samples")


# ------------------------------------------------------------------ own pass isolation


class WithMetricsAndOutputs(ToyRegressor):
    """A torchmetrics metric updated in validation_step and a list of step outputs, as in the docs."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.val_mae = torchmetrics.MeanAbsoluteError()
        self.validation_outputs: list[torch.Tensor] = []
        self.epoch_means: list[float] = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        prediction = self(x)
        self.val_mae(prediction, y)
        self.validation_outputs.append(nn.functional.mse_loss(prediction, y))
        self.log("val_mae", self.val_mae, on_epoch=True)

    def on_validation_epoch_end(self):
        self.epoch_means.append(torch.stack(self.validation_outputs).mean().item())
        self.validation_outputs.clear()


def test_the_own_pass_leaves_metrics_logs_and_lists_of_the_module_untouched(tmp_path) -> None:
    plain, _ = _fit(tmp_path / "plain", [], WithMetricsAndOutputs, max_epochs=3)
    # every_n_steps=3: own passes run validation_step in the middle of training epochs.
    watched, _ = _fit(tmp_path / "watched", [ComplexityMonitor(every_n_steps=3)], WithMetricsAndOutputs, max_epochs=3)
    assert watched.epoch_means == plain.epoch_means
    assert watched.trainer.callback_metrics["val_mae"] == plain.trainer.callback_metrics["val_mae"]
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ schedule, resume, reuse


def test_epoch_labels_under_max_steps_count_completed_epochs(tmp_path) -> None:
    monitor = ComplexityMonitor(metrics="effective_dimension", every_n_steps=4)
    _fit(tmp_path, [monitor], max_epochs=5, max_steps=12)
    epochs = {r.step: r.epoch for r in monitor.history if r.site == "relu" and r.metric == "effective_dimension"}
    # 8 batches per epoch: step 12 is in the middle of the second epoch (one completed).
    assert epochs == {0: 0, 4: 0, 8: 1, 12: 1}


def test_an_empty_history_never_fails_the_end_of_fit(tmp_path) -> None:
    monitor = ComplexityMonitor(every_n_epochs=5, measure_at_start=False)
    _fit(tmp_path, [monitor], max_epochs=2, logger=TensorBoardLogger(tmp_path, name="tb"))
    assert len(monitor.history) == 0


def test_a_monitor_reused_with_a_new_trainer_measures_the_second_fit(tmp_path) -> None:
    monitor = ComplexityMonitor(metrics="effective_dimension")
    _, first_messages = _fit(tmp_path / "pretrain", [monitor], max_epochs=2)
    first = monitor.history
    _, messages = _fit(tmp_path / "finetune", [monitor], max_epochs=1)
    assert monitor.history.steps() == [0, 8]  # the second fit, measured
    assert monitor.previous_histories == [first] and first.steps() == [0, 8, 16]
    assert sum("used for a new fit" in m for m in messages) == 1


def test_a_mid_epoch_checkpoint_resumes_without_an_extra_row(tmp_path) -> None:
    full = ComplexityMonitor(metrics=["affinity", "effective_dimension"])
    _fit(tmp_path / "full", [full], max_epochs=3)
    first = ComplexityMonitor(metrics=["affinity", "effective_dimension"])
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=12, save_top_k=-1)
    _fit(tmp_path / "part", [first, checkpoints], max_epochs=2, enable_checkpointing=True)
    ckpt = tmp_path / "ckpt" / "epoch=1-step=12.ckpt"
    resumed = ComplexityMonitor(metrics=["affinity", "effective_dimension"])
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    trainer(tmp_path / "resume", [resumed], max_epochs=3).fit(ToyRegressor(dropout=0.0), train, val, ckpt_path=str(ckpt))
    # No measurement at the resumed step 12: the rows are those of an uninterrupted fit. (Their
    # values after step 12 differ: Lightning restarts a non-stateful loader at its first batch.)
    assert resumed.history.steps() == full.history.steps() == [0, 8, 16, 24]
    assert [r[:4] for r in resumed.history] == [r[:4] for r in full.history]
    before = [r for r in resumed.history if r.step <= 8]
    assert MetricHistory(before) == MetricHistory([r for r in full.history if r.step <= 8])


def test_resuming_with_other_settings_keeps_the_history_and_says_so(tmp_path) -> None:
    first = ComplexityMonitor(metrics=["effective_dimension"])
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "part", [first, checkpoints], max_epochs=2, enable_checkpointing=True)
    resumed = ComplexityMonitor(metrics=["effective_dimension", "affinity"], every_n_epochs=1)
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path / "resume", [resumed], max_epochs=3).fit(ToyRegressor(dropout=0.0), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert any("saved under other settings" in str(w.message) for w in caught)
    assert resumed.history.steps() == [0, 8, 16, 24]
    assert _by_step(resumed.history) == {**_by_step(first.history), 24: _by_step(resumed.history)[24]}
    assert ("affinity", "relu") in resumed.history.latest()


# ------------------------------------------------------------------ failures after training


def test_an_export_that_fails_at_fit_end_warns_and_keeps_the_fit(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monitor = ComplexityMonitor(metrics="effective_dimension", export_path=blocker / "history.csv")
    model, messages = _fit(tmp_path, [monitor], max_epochs=1)
    failed = [m for m in messages if "could not be written" in m]
    assert len(failed) == 1 and str(blocker / "history.csv") in failed[0]
    assert monitor.history.steps() == [0, 8] and model.trainer.state.finished


def test_an_export_from_the_environment_that_fails_warns_too(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LIGHTNING_COMPLEXITY", "1")
    monkeypatch.setenv("LIGHTNING_COMPLEXITY_METRICS", "effective_dimension")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("LIGHTNING_COMPLEXITY_EXPORT", str(tmp_path / "a_file" / "out.parquet"))
    model, messages = _fit(tmp_path, [], max_epochs=1)
    assert any("could not be written" in m for m in messages) and model.trainer.state.finished


# ------------------------------------------------------------------ configuration


def test_a_module_instance_in_layers_is_a_clear_error() -> None:
    with pytest.raises(MisconfigurationException, match=r"module instance ReLU\(\); pass its type or its name"):
        ComplexityMonitor(layers=nn.ReLU())


@pytest.mark.parametrize(("kwargs", "needle"), [({"probe_step": "predict"}, "`probe_step='predict'`"), ({"context_metrics": 3}, "`context_metrics=3`")])
def test_new_arguments_are_validated(kwargs, needle) -> None:
    with pytest.raises(MisconfigurationException) as error:
        ComplexityMonitor(**kwargs)
    assert needle in str(error.value)


def test_no_nan_from_a_healthy_fit(tmp_path) -> None:
    monitor = ComplexityMonitor()
    _, messages = _fit(tmp_path, [monitor], max_epochs=1)
    assert messages == [] and all(not math.isnan(r.value) for r in monitor.history)


class OddNames(ToyRegressor):
    """Module names that break naive writers: a lone surrogate and matplotlib mathtext."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.add_module("gelu\udcff", nn.GELU())
        self.add_module("$x^2$", nn.Tanh())

    def forward(self, x):
        return super().forward(getattr(self, "$x^2$")(getattr(self, "gelu\udcff")(x)))


def test_odd_module_names_reach_every_logger_and_figure(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    monitor = ComplexityMonitor()
    loggers = [TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")]
    model, messages = _fit(tmp_path, [monitor], OddNames, max_epochs=5, logger=loggers)
    assert model.trainer.state.finished and not [m for m in messages if "failed" in m]
    assert {"gelu\udcff", "$x^2$"} <= set(monitor.sites["affinity"])  # the history keeps the real names
    assert all(not math.isnan(v) for (m, s), v in monitor.history.latest().items() if s in ("gelu\udcff", "$x^2$"))
