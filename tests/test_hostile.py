"""The monitor on hostile models and probes: every case is a real (tiny) fit (GitHub issue 6).

The promise under test: the monitor never breaks the fit it watches. A metric that is undefined at
a site gives NaN in the history and ONE warning naming the metric and the site, however many
measurements there are; values that are defined are checked against an independent forward pass.
"""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_complexity import ComplexityMonitor
from lightning_complexity.capture import SiteNeeds
from lightning_complexity.functional import activation_pattern_entropy, effective_dimension, participation_ratio
from lightning_complexity.functional.affinity import affinity_score
from lightning_complexity.site_metrics import SiteMetric
from toy import ToyRegressor, toy_loaders, trainer

LN2 = math.log(2.0)


def _fit(tmp_path, callbacks, model, max_epochs: int = 2, **kwargs):
    """Fit ``model`` on the toy data; returns the monitor's warnings (messages) and the trainer."""
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = trainer(tmp_path, callbacks, max_epochs=max_epochs, **kwargs)
        fitted.fit(model, train, val)
    return [str(w.message) for w in caught if str(w.message).startswith("lightning_complexity")], fitted


def _nan_warnings(messages: list[str]) -> list[tuple[str, str]]:
    """(metric, site) of every "is NaN at site" warning, in order."""
    return [(m.split("`")[1], m.split("`")[3]) for m in messages if "is NaN at site" in m]


def _latest(monitor: ComplexityMonitor) -> dict[tuple[str, str], float]:
    last = monitor.history.steps()[-1]
    return {(r.metric, r.site): r.value for r in monitor.history if r.step == last}


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class Recorder(SiteMetric):
    """Keeps what the monitor hands to metrics, to check dtypes, sample counts and raw values."""

    name = "recorder"
    produces = ("recorded_rows",)
    needs = SiteNeeds(input=True, output=True)

    def __init__(self, layers=None) -> None:
        super().__init__(layers)
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def compute(self, group):
        for i, site in enumerate(group.sites):
            self.seen[site] = (group.inputs[i], group.outputs[i])
        return {"recorded_rows": torch.full((len(group.sites),), float(group.outputs.shape[1]), dtype=torch.float64)}


# --- constant outputs and dead channels --------------------------------------------------------------

class ConstantSites(ToyRegressor):
    """``off`` always sees negative input (ReLU output ≡ 0); ``sat`` always saturates (Hardtanh ≡ 1)."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.off, self.sat = nn.ReLU(), nn.Hardtanh()

    def forward(self, x):
        return super().forward(x + self.off(-1.0 - x.square()) + self.sat(5.0 + x.square()))


def test_constant_outputs_give_nan_dimension_affinity_one_and_one_warning_per_site(tmp_path) -> None:
    monitor = ComplexityMonitor()
    messages, _ = _fit(tmp_path, [monitor], ConstantSites(), max_epochs=2)
    assert monitor.sites["effective_dimension"] == ["off", "sat", "net.act", "relu", "relu#1"]
    frame = monitor.history.to_dataframe()
    assert len(monitor.history.steps()) == 3
    for site in ("off", "sat"):
        rows = frame[frame.site == site].set_index(["step", "metric"])["value"].unstack()
        # SPEC §2: zero variance → NaN; SPEC §1: a constant output has A = 0 and ρ = 1.
        assert rows[["effective_dimension", "participation_ratio", "effective_dimension_ratio"]].isna().all().all()
        assert (rows["affinity"] == 1.0).all()
        assert (rows["activation_pattern_entropy"] == 0.0).all()  # always off / always on
    assert frame[~frame.site.isin(["off", "sat"])]["value"].notna().all()
    # Three measurements, two undefined sites: exactly one warning each, naming metric and site.
    assert _nan_warnings(messages) == [("effective_dimension", "off"), ("effective_dimension", "sat")]
    assert all("constant" in m for m in messages if "is NaN at site" in m)


class DeadChannels(ToyRegressor):
    """``gate`` has 4 of its 8 units dead for every input (bias −100), and a frozen input map."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.gate_in, self.gate = nn.Linear(6, 8), nn.ReLU()
        with torch.no_grad():
            self.gate_in.bias[:4] = -100.0
        self.gate_in.requires_grad_(False)

    def forward(self, x):
        return super().forward(x + self.gate(self.gate_in(x))[:, 4:].sum(1, keepdim=True))


def test_dead_channels_give_finite_values_equal_to_an_independent_computation(tmp_path) -> None:
    probe = torch.randn(256, 6, generator=torch.Generator().manual_seed(1))
    monitor = ComplexityMonitor(probe=probe)
    model = DeadChannels()
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _nan_warnings(messages) == []
    with torch.no_grad():
        pre = model.gate_in(probe)
        out = torch.relu(pre)
    assert (out[:, :4] == 0).all() and (out[:, 4:] > 0).any()
    for step in monitor.history.steps():  # the gate is frozen: every measurement sees the same data
        values = {(r.metric, r.site): r.value for r in monitor.history if r.step == step}
        assert values[("effective_dimension", "gate")] == pytest.approx(effective_dimension(out.double()).item(), rel=1e-9)
        assert values[("effective_dimension", "gate")] <= 4.0 + 1e-9  # only 4 live channels
        assert values[("affinity", "gate")] == pytest.approx(affinity_score(pre.double(), out.double()).item(), abs=1e-9)
        assert 0.0 < values[("affinity", "gate")] < 1.0
        assert values[("activation_pattern_entropy", "gate")] == pytest.approx(activation_pattern_entropy(pre).item(), abs=1e-12)
        assert values[("activation_pattern_entropy", "gate")] <= LN2 / 2 + 1e-12  # half the units never fire


# --- tiny probes -----------------------------------------------------------------------------------------

def test_probe_narrower_than_the_layers(tmp_path) -> None:
    """n = 8 samples, width 64: D_eff ≤ n − 1, affinity through its d > 2n low-rank path."""
    probe = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    monitor = ComplexityMonitor(probe=probe)
    model = ToyRegressor(width=64, dropout=0.0)
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _nan_warnings(messages) == []
    model.eval()
    with torch.no_grad():
        pre1 = model.net.fc2(model.net.act(model.net.fc1(probe)))
        pre2 = model.fc3(torch.relu(pre1))
    latest = _latest(monitor)
    for site, pre in (("relu", pre1), ("relu#1", pre2)):
        out = torch.relu(pre).double()
        assert latest[("effective_dimension", site)] == pytest.approx(effective_dimension(out).item(), rel=1e-9)
        assert 1.0 <= latest[("effective_dimension", site)] <= 7.0 + 1e-9
        assert latest[("affinity", site)] == pytest.approx(affinity_score(pre.double(), out).item(), abs=1e-9)
        assert 0.0 <= latest[("affinity", site)] <= 1.0


def test_probe_of_one_sample_gives_nan_and_one_warning_per_metric_and_site(tmp_path) -> None:
    monitor = ComplexityMonitor(probe=torch.randn(1, 6))
    messages, _ = _fit(tmp_path, [monitor], ToyRegressor(), max_epochs=2)
    frame = monitor.history.to_dataframe()
    assert monitor.history.steps() == [0, 8, 16]
    per_site = frame[frame.site.isin(["net.act", "relu", "relu#1"]) & (frame.metric != "samples")]
    assert len(per_site) == 3 * 3 * 5 and per_site["value"].isna().all()
    assert (frame[frame.metric == "samples"]["value"] == 1).all()  # what the NaN rests on
    expected = sorted((metric, site) for metric in ("activation_pattern_entropy", "affinity", "effective_dimension") for site in ("net.act", "relu", "relu#1"))
    assert sorted(_nan_warnings(messages)) == expected  # once each over three measurements
    assert all("fewer than 2 samples" in m for m in messages if "is NaN at site" in m)
    # No signature can be summarised from NaN scores: its rows are NaN or absent, never an error.
    assert frame[frame.metric == "affinity_signature"]["value"].isna().all()


def test_probe_of_two_samples_gives_the_rank_one_values(tmp_path) -> None:
    probe = torch.randn(2, 6, generator=torch.Generator().manual_seed(3))
    monitor = ComplexityMonitor(probe=probe)
    model = ToyRegressor(dropout=0.0)
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _nan_warnings(messages) == []
    assert monitor.history.to_dataframe()["value"].notna().all()
    model.eval()
    with torch.no_grad():
        act = model.net.act(model.net.fc1(probe))
    assert not torch.equal(act[0], act[1])
    latest = _latest(monitor)
    for site in ("net.act", "relu", "relu#1"):
        # Two distinct samples span one direction: D_eff = PR = 1 (up to the 1e-11 in the log).
        assert latest[("effective_dimension", site)] == pytest.approx(1.0, abs=1e-9)
        assert latest[("participation_ratio", site)] == pytest.approx(1.0, abs=1e-9)
        assert latest[("effective_dimension_ratio", site)] == pytest.approx(1.0 / 16, abs=1e-9)
        # Any map is affine on two points: ρ = 1 up to the 1e-6 covariance jitter.
        assert 0.999 <= latest[("affinity", site)] <= 1.0
        # Each unit fires on 0, 1 or 2 of the 2 samples: its entropy is 0 or ln 2.
        units = latest[("activation_pattern_entropy", site)] * 16 / LN2
        assert units == pytest.approx(round(units), abs=1e-9)


# --- precision, compilation, in-place activations ------------------------------------------------------

def test_bf16_mixed_precision_activations_are_measured_in_float64(tmp_path) -> None:
    probe = torch.randn(128, 6, generator=torch.Generator().manual_seed(4))
    recorder = Recorder()
    monitor = ComplexityMonitor(metrics=["effective_dimension", "affinity", recorder], probe=probe)
    model = ToyRegressor(dropout=0.0)
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1, precision="bf16-mixed")
    assert _nan_warnings(messages) == []
    assert monitor.history.to_dataframe()["value"].notna().all()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what Lightning's bf16-mixed runs
        pre0 = model.net.fc1(probe)
        act = model.net.act(pre0)
        pre1 = model.net.fc2(act)
    assert act.dtype == torch.bfloat16  # the activations really are bf16
    inputs, outputs = recorder.seen["net.act"]
    assert inputs.dtype == outputs.dtype == torch.float64  # statistics run in float64
    assert torch.equal(inputs, pre0.double()) and torch.equal(outputs, act.double())
    assert torch.equal(recorder.seen["relu"][0], pre1.double())
    latest = _latest(monitor)
    assert latest[("effective_dimension", "net.act")] == pytest.approx(effective_dimension(act.double()).item(), rel=1e-12)
    assert latest[("affinity", "net.act")] == pytest.approx(affinity_score(pre0.double(), act.double()).item(), abs=1e-12)


def _compiled_fit(tmp_path, backend: str):
    probe = torch.randn(100, 6, generator=torch.Generator().manual_seed(5))
    monitor = ComplexityMonitor(metrics="effective_dimension", probe=probe)
    model = ToyRegressor(dropout=0.0)
    torch._dynamo.reset()
    model.net = torch.compile(model.net, backend=backend)
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _nan_warnings(messages) == []
    assert not [m for m in messages if "measurement at step" in m]
    # The hooks registered inside the compiled submodule fired at every measurement; the site is
    # named as without torch.compile (no `_orig_mod`).
    assert monitor.sites["effective_dimension"] == ["net.act", "relu", "relu#1"]
    assert monitor.history.steps() == [0, 8]
    inner = model.net._orig_mod
    model.eval()
    with torch.no_grad():
        act = inner.act(inner.fc1(probe))
        h1 = torch.relu(inner.fc2(act))
        h2 = torch.relu(model.fc3(h1))
    assert _no_hooks_left(model)
    return _latest(monitor), {"net.act": act, "relu": h1, "relu#1": h2}


def test_hooks_inside_a_compiled_submodule_fire(tmp_path) -> None:
    latest, samples = _compiled_fit(tmp_path, backend="eager")  # dynamo traces the hooks, no codegen
    for site, values in samples.items():
        assert latest[("effective_dimension", site)] == pytest.approx(effective_dimension(values.double()).item(), rel=1e-12)


@pytest.mark.slow
def test_hooks_inside_an_inductor_compiled_submodule_fire(tmp_path) -> None:
    latest, samples = _compiled_fit(tmp_path, backend="inductor")
    for site, values in samples.items():  # inductor may fuse and round float32 differently
        assert latest[("effective_dimension", site)] == pytest.approx(effective_dimension(values.double()).item(), rel=1e-6)


class InplaceSiLU(ToyRegressor):
    def __init__(self) -> None:
        super().__init__(dropout=0.1)
        self.silu = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.head(self.silu(self.fc3(self.relu(self.net(x)))))


def test_full_fit_with_inplace_silu_is_bit_identical_and_captures_the_pre_activation(tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    plain = InplaceSiLU()
    _fit(tmp_path / "plain", [], plain, max_epochs=2)
    probe = torch.randn(128, 6, generator=torch.Generator().manual_seed(6))
    monitor = ComplexityMonitor(metrics=["affinity", "activation_pattern_entropy"], probe=probe, every_n_steps=3)
    pl.seed_everything(0, verbose=False)
    watched = InplaceSiLU()
    messages, _ = _fit(tmp_path / "watched", [monitor], watched, max_epochs=2)
    assert _nan_warnings(messages) == []
    assert len(monitor.history.steps()) >= 6  # many probe forwards between training steps
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name  # dropout's RNG and the in-place SiLU are undisturbed
    watched.eval()
    with torch.no_grad():
        pre = watched.fc3(watched.relu(watched.net(probe)))
    assert (pre < 0).any()
    latest = _latest(monitor)
    # Had the hook kept the overwritten input, x = y and the score would be exactly 1.
    assert latest[("affinity", "silu")] == pytest.approx(affinity_score(pre.double(), nn.functional.silu(pre).double()).item(), abs=1e-9)
    assert latest[("affinity", "silu")] < 0.999
    assert latest[("activation_pattern_entropy", "silu")] == pytest.approx(activation_pattern_entropy(pre).item(), abs=1e-12)


# --- modules called several times ---------------------------------------------------------------------

class ReusedTanh(ToyRegressor):
    """``squash`` runs three times per forward, and a fourth time only on full probe batches."""

    def __init__(self, full_batch: int) -> None:
        super().__init__(dropout=0.0)
        self.squash, self.mix = nn.Tanh(), nn.Linear(6, 6)
        self.full_batch = full_batch

    def calls(self, x):
        a = self.squash(x)
        b = self.squash(self.mix(a))
        c = self.squash(2.0 * b)
        outs = [a, b, c]
        if x.shape[0] == self.full_batch:  # data-dependent: the last, partial batch skips it
            outs.append(self.squash(c - 1.0))
        return outs

    def forward(self, x):
        outs = self.calls(x)
        return super().forward(outs[2] + (outs[3] if len(outs) > 3 else 0.0))


def test_a_module_called_several_times_gives_one_site_per_call(tmp_path) -> None:
    probe = torch.randn(100, 6, generator=torch.Generator().manual_seed(7))
    monitor = ComplexityMonitor(metrics=["effective_dimension", "affinity"], probe=probe, probe_batch_size=40)
    model = ReusedTanh(full_batch=40)
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _nan_warnings(messages) == []
    assert monitor.sites["effective_dimension"] == ["squash", "squash#1", "squash#2", "squash#3", "net.act", "relu", "relu#1"]
    model.eval()
    with torch.no_grad():
        batches = [model.calls(chunk) for chunk in probe.split(40)]
    latest = _latest(monitor)
    for k, site in enumerate(["squash", "squash#1", "squash#2", "squash#3"]):
        # squash#3 only saw the two full batches (80 of the 100 samples).
        outputs = torch.cat([outs[k] for outs in batches if len(outs) > k]).double()
        assert outputs.shape[0] == (80 if k == 3 else 100)
        assert latest[("effective_dimension", site)] == pytest.approx(effective_dimension(outputs).item(), rel=1e-9)
        assert latest[("participation_ratio", site)] == pytest.approx(participation_ratio(outputs).item(), rel=1e-9)


# --- a forward that raises during the probe -------------------------------------------------------------

class ProbeBomb(ToyRegressor):
    """Raises on the second probe batch of the measurement at the end of epoch 2 (step 16)."""

    def __init__(self, poison: torch.Tensor) -> None:
        super().__init__(dropout=0.1)
        self.poison = poison

    def forward(self, x):
        if not self.training and self.current_epoch == 1 and x.shape == self.poison.shape and torch.equal(x, self.poison):
            raise RuntimeError("probe bomb")
        return super().forward(x)


class ModeSpy(Callback):
    """Records the dropout's training flag right after the monitor (callbacks run in order)."""

    def __init__(self) -> None:
        self.modes: dict[int, bool] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.modes[trainer.global_step] = pl_module.net.drop.training


def test_a_forward_that_raises_during_the_probe_skips_one_measurement_with_one_warning(tmp_path) -> None:
    probe = torch.randn(100, 6, generator=torch.Generator().manual_seed(8))
    monitor = ComplexityMonitor(metrics=["effective_dimension"], probe=probe, probe_batch_size=50)
    spy = ModeSpy()
    model = ProbeBomb(poison=probe[50:])
    messages, _ = _fit(tmp_path, [monitor, spy], model, max_epochs=3)
    failures = [m for m in messages if "measurement at step" in m]
    assert len(failures) == 1 and "step 16" in failures[0] and "probe bomb" in failures[0]
    assert _nan_warnings(messages) == []
    # Step 16 failed: its rows are there and NaN (a failed measurement is visible), the fit went on.
    assert monitor.history.steps() == [0, 8, 16, 24]
    at_16 = [r for r in monitor.history if r.step == 16]
    assert at_16 and all(math.isnan(r.value) for r in at_16 if r.site != "trainer")
    assert [s for s, _ in monitor.failures] == [16]
    assert any("1 of 4 measurements of this fit failed (steps 16)" in m for m in messages)
    assert spy.modes[16] is True  # train/eval modes restored although the probe forward raised
    assert _no_hooks_left(model)
    # The next measurement starts from empty buffers: half a probe from step 16 must not leak in.
    model.eval()
    with torch.no_grad():
        act = model.net.act(model.net.fc1(probe))
    assert _latest(monitor)[("effective_dimension", "net.act")] == pytest.approx(effective_dimension(act.double()).item(), rel=1e-9)


def test_a_forward_that_raises_during_training_still_removes_the_hooks(tmp_path) -> None:
    class TrainBomb(ToyRegressor):
        def forward(self, x):
            if self.training and self.global_step == 5:
                raise RuntimeError("train bomb")
            return super().forward(x)

    model = TrainBomb()
    monitor = ComplexityMonitor(every_n_steps=2)
    with pytest.raises(RuntimeError, match="train bomb"):
        _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _no_hooks_left(model) and monitor._capture is None
    assert monitor.history.steps() == [0, 2, 4]  # what was measured before the failure is kept


# --- conv maps with every position a sample ------------------------------------------------------------

class WideMaps(ToyRegressor):
    """A 16×16 map per input: 256 positions per sample, far more than the sample budget."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.lift = nn.Linear(6, 256)
        self.conv, self.act_map = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
        self.proj = nn.Linear(4, 6)

    def maps(self, x):
        return self.conv(self.lift(x).view(-1, 1, 16, 16))

    def forward(self, x):
        return super().forward(self.proj(self.act_map(self.maps(x)).mean(dim=(2, 3))))


@pytest.mark.parametrize(("probe_rows", "expected_rows"), [(4, 64), (5, 60), (300, 64)])
def test_positions_as_samples_stay_within_the_budget(tmp_path, probe_rows, expected_rows) -> None:
    max_samples = 64
    probe = torch.randn(probe_rows, 6, generator=torch.Generator().manual_seed(9))
    recorder = Recorder(layers="act_map")
    monitor = ComplexityMonitor(metrics=["effective_dimension", recorder], probe=probe, max_samples=max_samples, spatial="positions")
    model = WideMaps()
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert _nan_warnings(messages) == []
    rows = [r.value for r in monitor.history if r.metric == "recorded_rows"]
    assert rows and all(r <= max_samples for r in rows)
    # 4 inputs → 16 positions each; 5 → 12 each; 300 inputs → the first 64, one position each.
    assert rows[-1] == expected_rows
    inputs, outputs = recorder.seen["act_map"]
    assert outputs.shape == (expected_rows, 4) and inputs.shape == (expected_rows, 4)
    model.eval()
    with torch.no_grad():
        maps = model.maps(probe[:max_samples])
    # Every captured row is the channel vector of one real position of one probe input.
    positions = {tuple(v) for v in maps.permute(0, 2, 3, 1).reshape(-1, 4).double().tolist()}
    assert all(tuple(row) in positions for row in inputs.tolist())
    assert torch.equal(outputs, inputs.clamp_min(0.0))
    assert len({tuple(row) for row in inputs.tolist()}) == expected_rows  # distinct positions, no repeats
    # Which positions: each input's rows come from its own map, and the kept pixels differ from
    # input to input, so together they cover the map (not the same pixels of every input).
    per_input = expected_rows // min(probe_rows, max_samples)
    pixels_seen = set()
    for i in range(expected_rows // per_input):
        own = maps[i].permute(1, 2, 0).reshape(-1, 4).double()
        for row in inputs[i * per_input : (i + 1) * per_input]:
            match = torch.nonzero((own == row).all(dim=1)).flatten()
            assert len(match), f"a row of input {i} is not one of its own positions"
            pixels_seen.add(int(match[0]))
    assert len(pixels_seen) >= 0.75 * expected_rows
    value = _latest(monitor)[("effective_dimension", "act_map")]
    assert value == pytest.approx(effective_dimension(outputs).item(), rel=1e-12)
    assert np.isfinite(value) and 1.0 <= value <= 4.0


# --- regressions: bugs these tests found in capture, callback and probe (fixed) -----------------

class DoubleSequence(ToyRegressor):
    """A float64 model whose in-place ReLU sees a sequence (N, T=4, D=8)."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.tokens, self.act_seq = nn.Linear(6, 32), nn.ReLU(inplace=True)
        self.double()

    def pre(self, x):
        return self.tokens(x.double()).view(-1, 4, 8)

    def forward(self, x):
        return super().forward(self.act_seq(self.pre(x)).mean(1)[:, :6]).float()


def test_inplace_activation_on_float64_sequences_with_positions_as_samples(tmp_path) -> None:
    probe = torch.randn(64, 6, generator=torch.Generator().manual_seed(10))
    monitor = ComplexityMonitor(metrics="affinity", layers="act_seq", probe=probe, max_samples=256, spatial="positions")
    model = DoubleSequence()
    messages, _ = _fit(tmp_path, [monitor], model, max_epochs=1)
    assert messages == []
    model.eval()
    with torch.no_grad():
        pre = model.pre(probe).reshape(-1, 8)  # 4 positions per input, all kept (256 // 64)
    reference = affinity_score(pre, torch.relu(pre)).item()
    assert reference < 0.9
    assert _latest(monitor)[("affinity", "act_seq")] == pytest.approx(reference, abs=1e-9)  # gets 1.0


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_true_precision_plugins_are_measured(tmp_path, precision) -> None:
    monitor = ComplexityMonitor(metrics="effective_dimension")
    messages, _ = _fit(tmp_path, [monitor], ToyRegressor(dropout=0.0), max_epochs=1, precision=precision)
    assert not [m for m in messages if "measurement at step" in m]
    assert monitor.history.steps() == [0, 8]
