"""Every style of model a researcher trains, measured at the defaults with correct values (issue 11).

Each test fits a model written in one style with ``ComplexityMonitor()`` and compares the last
measurement (captured inside the trainer's validation pass) with an independent computation:
raw activations that hooks written in the test (or a plain re-computation) collect on the same
validation rows with the final weights, reduced and scored by the functional API.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_complexity import ComplexityMonitor
from zoo import (
    CustomActivations,
    DictBatches,
    DictDataset,
    FunctionalReLU,
    HuggingFaceClassifier,
    NoForward,
    RawHooks,
    SequenceModel,
    SmallCNN,
    TwoInputs,
    assert_matches,
    fit,
    image_data,
    latest,
    reference_values,
    regression_data,
    sequence_data,
    token_data,
)

TRAIN, VAL = regression_data(96), regression_data(64, seed=1)


def _val_inputs(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def _mlp_reference(model, x, mask=None):
    hooks = RawHooks({"net.1": model.net[1], "net.3": model.net[3]})
    model.eval()
    with torch.no_grad():
        model.net(x if mask is None else x * mask)
    hooks.remove()
    return hooks.values()


def _no_problem_warnings(messages: list[str]) -> None:
    bad = [m for m in messages if "is NaN" in m or "failed" in m or "found no site" in m or "several axes" in m]
    assert bad == [], bad


def test_a_module_without_forward_is_measured_through_its_validation_step(tmp_path) -> None:
    model = NoForward()
    monitor, messages = fit(model, TRAIN, VAL, tmp_path)
    _no_problem_warnings(messages)
    assert monitor.history.steps() == [0, 3, 6]  # at the start (own pass) and after each epoch (validation pass)
    assert_matches(monitor, _mlp_reference(model, _val_inputs(VAL)))
    assert latest(monitor)[("samples", "net.1")] == 64
    assert ("val_loss", "trainer") in latest(monitor)  # the context the curves sit beside


def test_dict_batches(tmp_path) -> None:
    model = DictBatches()
    monitor, messages = fit(model, DictDataset(TRAIN), DictDataset(VAL), tmp_path)
    _no_problem_warnings(messages)
    assert_matches(monitor, _mlp_reference(model, _val_inputs(VAL)))


def test_two_model_inputs(tmp_path) -> None:
    model = TwoInputs()
    monitor, messages = fit(model, TRAIN, VAL, tmp_path)
    _no_problem_warnings(messages)
    x = _val_inputs(VAL)
    assert_matches(monitor, _mlp_reference(model, x, (x > -1.5).float()))


def test_functional_activations_are_sites_with_stable_names(tmp_path) -> None:
    model = FunctionalReLU()
    monitor, messages = fit(model, TRAIN, VAL, tmp_path)
    _no_problem_warnings(messages)
    assert monitor.sites["affinity"] == ["relu()", "relu()#1"]  # F.relu, then Tensor.relu, in the module's own code
    assert monitor.site_info["relu()"]["kind"] == "functional"
    model.eval()
    with torch.no_grad():
        pre1 = model.fc1(_val_inputs(VAL))
        pre2 = model.fc2(torch.relu(pre1))
    assert_matches(monitor, {"relu()": reference_values(pre1, torch.relu(pre1)), "relu()#1": reference_values(pre2, torch.relu(pre2))})


def test_functional_and_plain_modules_give_the_same_numbers(tmp_path) -> None:
    # The same weights written with nn.ReLU modules: every value equal to 1e-9 at initialisation.
    functional = FunctionalReLU()
    plain = NoForward()
    plain.net.load_state_dict({"0.weight": functional.fc1.weight, "0.bias": functional.fc1.bias, "2.weight": functional.fc2.weight,
                               "2.bias": functional.fc2.bias, "4.weight": functional.fc3.weight, "4.bias": functional.fc3.bias})
    a, _ = fit(functional, TRAIN, VAL, tmp_path / "a", max_epochs=1)
    b, _ = fit(plain, TRAIN, VAL, tmp_path / "b", max_epochs=1)
    first = {k: v for k, v in zip(("relu()", "relu()#1"), ("net.1", "net.3"))}
    at_start_a = {(m, s): r.value for r in a.history for m, s in [(r.metric, r.site)] if r.step == 0}
    at_start_b = {(m, s): r.value for r in b.history for m, s in [(r.metric, r.site)] if r.step == 0}
    for functional_site, module_site in first.items():
        for metric in ("affinity", "effective_dimension", "activation_pattern_entropy", "samples"):
            assert at_start_a[(metric, functional_site)] == pytest.approx(at_start_b[(metric, module_site)], rel=1e-9, abs=1e-12)


def test_custom_activation_modules_are_found_by_default(tmp_path) -> None:
    model = CustomActivations()
    monitor, messages = fit(model, TRAIN, VAL, tmp_path)
    _no_problem_warnings(messages)
    assert [monitor.site_info[s]["type"] for s in monitor.sites["affinity"]] == ["MyReLU", "Swish", "GELUActivation", "Mish"]
    hooks = RawHooks({name: model.net[int(name.split(".")[1])] for name in monitor.sites["affinity"]})
    model.eval()
    with torch.no_grad():
        model.net(_val_inputs(VAL))
    hooks.remove()
    assert_matches(monitor, hooks.values())


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_encoder_sites_and_sample_axis(tmp_path, batch_first) -> None:
    # Batch 32 equals dim_feedforward 32: the sample axis is ambiguous by size and is settled by
    # the layer's batch_first flag; sequence-first (T, N, D) tensors must not make T the samples.
    model = SequenceModel(batch_first)
    val = sequence_data(64, seed=1)
    monitor, messages = fit(model, sequence_data(96), val, tmp_path)
    _no_problem_warnings(messages)
    sites = ["encoder.layers.0.relu()", "encoder.layers.1.relu()"]
    assert monitor.sites["affinity"] == sites
    move = (lambda t: t) if batch_first else (lambda t: t.transpose(0, 1))
    pre_hooks = {}
    for i, layer in enumerate(model.encoder.layers):
        pre_hooks[sites[i]] = []
        layer.linear1.register_forward_hook(lambda m, a, out, key=sites[i]: pre_hooks[key].append(move(out).detach().clone()))
    model.eval()
    x = _val_inputs(val)
    with torch.enable_grad():  # grad enabled: PyTorch's fused fast path (which skips linear1) is off
        model(x)
    expected = {}
    for site, chunks in pre_hooks.items():
        pre = torch.cat(chunks)
        assert pre.shape == (64, 6, 32)
        expected[site] = reference_values(pre, torch.relu(pre))
    assert_matches(monitor, expected, rel=1e-5)


def test_sequence_first_and_batch_first_encoders_agree(tmp_path) -> None:
    # Same weights, the two layouts: the measurement at initialisation must be the same.
    a, _ = fit(SequenceModel(False), sequence_data(96), sequence_data(64, seed=1), tmp_path / "a", max_epochs=1)
    b, _ = fit(SequenceModel(True), sequence_data(96), sequence_data(64, seed=1), tmp_path / "b", max_epochs=1)
    start_a = {(r.metric, r.site): r.value for r in a.history if r.step == 0 and r.site != "trainer"}
    start_b = {(r.metric, r.site): r.value for r in b.history if r.step == 0 and r.site != "trainer"}
    assert start_a.keys() == start_b.keys() and start_a
    for key, value in start_a.items():
        assert value == pytest.approx(start_b[key], rel=1e-5, abs=1e-9), key
    assert start_a[("samples", "encoder.layers.0.relu()")] == 64


def test_channels_last_cnn_equals_nchw(tmp_path) -> None:
    last = SmallCNN(channels_last=True)
    monitor, messages = fit(last, image_data(96), image_data(64, seed=1), tmp_path)
    _no_problem_warnings(messages)
    plain = SmallCNN(channels_last=False)
    plain.load_state_dict(last.state_dict())
    plain = plain.to(memory_format=torch.contiguous_format)
    hooks = RawHooks({"features.1": plain.features[1], "features.3": plain.features[3]})
    plain.eval()
    with torch.no_grad():
        plain(_val_inputs(image_data(64, seed=1)))
    hooks.remove()
    assert_matches(monitor, hooks.values(), rel=1e-5)


def test_a_compiled_network_keeps_its_site_names_and_values(tmp_path) -> None:
    torch._dynamo.reset()
    model = NoForward()
    model.net = torch.compile(model.net, backend="eager")
    monitor, messages = fit(model, TRAIN, VAL, tmp_path, max_epochs=1)
    _no_problem_warnings(messages)
    assert monitor.sites["affinity"] == ["net.1", "net.3"]
    inner = model.net._orig_mod
    hooks = RawHooks({"net.1": inner[1], "net.3": inner[3]})
    inner.eval()
    with torch.no_grad():
        inner(_val_inputs(VAL))
    hooks.remove()
    assert_matches(monitor, hooks.values())


def test_layers_as_class_paths_from_a_yaml_config(tmp_path) -> None:
    # LightningCLI passes `layers: [torch.nn.ReLU, "net.3"]` as strings.
    monitor = ComplexityMonitor(layers=["torch.nn.ReLU", "net.3"], metrics="effective_dimension")
    assert monitor.layers == [nn.ReLU, "net.3"]
    fitted, _ = fit(NoForward(), TRAIN, VAL, tmp_path, monitor=monitor, max_epochs=1)
    assert fitted.sites["effective_dimension"] == ["net.1", "net.3"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_huggingface_transformers_with_dict_batches_and_no_forward(tmp_path, kind) -> None:
    pytest.importorskip("transformers")
    model = HuggingFaceClassifier(kind)
    val = token_data(48, seed=1)
    monitor, messages = fit(model, token_data(64), val, tmp_path, max_epochs=1, batch_size=16)
    _no_problem_warnings(messages)
    if kind == "bert":
        expected_types = ["GELUActivation", "GELUActivation", "Tanh"]
    else:
        expected_types = ["NewGELUActivation", "NewGELUActivation"]
    assert [monitor.site_info[s]["type"] for s in monitor.sites["affinity"]] == expected_types
    modules = dict(model.named_modules())
    hooks = RawHooks({site: modules[site] for site in monitor.sites["affinity"]})
    model.eval()
    batch = {key: torch.stack([item[key] for item in val]) for key in val[0]}
    with torch.no_grad():
        for start in range(0, 48, 16):
            model.model(**{k: v[start : start + 16] for k, v in batch.items()})
    hooks.remove()
    assert_matches(monitor, hooks.values(), rel=1e-5)


def test_a_model_with_no_site_warns_once_and_fits(tmp_path) -> None:
    class Linear(NoForward):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 1))

    monitor, messages = fit(Linear(), TRAIN, VAL, tmp_path, max_epochs=2)
    assert len([m for m in messages if "found no site" in m]) == 1
    assert {r.site for r in monitor.history} == {"trainer"}  # only the context rows


def test_eval_time_sampling_in_the_probe_pass_leaves_training_bit_identical(tmp_path) -> None:
    class Sampling(NoForward):
        """A VAE-style model: noise in every pass, eval included."""

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.net(x + torch.randn_like(x)), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", F.mse_loss(self.net(x + torch.randn_like(x)), y))

    def train_without_and_with(monitor):
        model = Sampling()
        import lightning.pytorch as pl
        from torch.utils.data import DataLoader

        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, callbacks=[monitor] if monitor else [], enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
        trainer.fit(model, DataLoader(TRAIN, batch_size=32, shuffle=True), DataLoader(VAL, batch_size=32))
        return model

    plain = train_without_and_with(None)  # no monitor at all
    watched = train_without_and_with(ComplexityMonitor(every_n_steps=2))
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name
