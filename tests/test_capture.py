"""Capture hooks: sites per call, in-place safety, reduction rules, forward order, removal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_complexity.capture import ActivationCapture, SiteNeeds, reduce_to_samples
from lightning_complexity.sites import select_modules


class ReusedActivation(nn.Module):
    """Calls the same ReLU twice per forward, like torchvision's ResNet blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 6)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.fc2(self.relu(self.fc1(x))))


def test_each_call_is_its_own_site_in_forward_order() -> None:
    torch.manual_seed(0)
    model = ReusedActivation()
    capture = ActivationCapture(model, {"relu": SiteNeeds(input=True, output=True)})
    x = torch.randn(32, 4)
    with capture.capturing():
        for chunk in x.split(10):  # several probe forwards: call indices restart each forward
            capture.new_forward()
            model(chunk)
    sites = capture.collect()
    assert list(sites) == ["relu", "relu#1"]
    pre1 = model.fc1(x)
    pre2 = model.fc2(torch.relu(pre1))
    torch.testing.assert_close(sites["relu"].input, pre1.double())
    torch.testing.assert_close(sites["relu"].output, torch.relu(pre1).double())
    # The in-place ReLU overwrote its input; the pre-hook copied it first.
    torch.testing.assert_close(sites["relu#1"].input, pre2.double())
    assert (sites["relu#1"].input < 0).any()
    capture.remove()


def test_outputs_bit_identical_with_and_without_capture() -> None:
    torch.manual_seed(0)
    model = ReusedActivation()
    x = torch.randn(64, 4)
    reference = model(x.clone())
    capture = ActivationCapture(model, {"relu": SiteNeeds(input=True, output=True)})
    with capture.capturing():
        capture.new_forward()
        watched = model(x.clone())
    assert torch.equal(reference, watched)
    capture.remove()
    assert not model.relu._forward_hooks and not model.relu._forward_pre_hooks


def test_inactive_hooks_record_nothing_and_remove_is_idempotent() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    capture = ActivationCapture(model, {"1": SiteNeeds()})
    model(torch.randn(4, 3))
    assert capture.collect() == {}
    capture.remove()
    capture.remove()
    assert not capture.attached


def test_a_failing_reduction_never_breaks_the_forward() -> None:
    model3d = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    capture3d = ActivationCapture(model3d, {"1": SiteNeeds()}, channel_dim=7)
    with capture3d.capturing():
        out = model3d(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 3)
    assert "1" in capture3d.errors and "IndexError" in capture3d.errors["1"]
    capture3d.remove()


def test_reduction_rules() -> None:
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    torch.testing.assert_close(reduce_to_samples(x), x.double().mean(dim=(2, 3)))
    positions = reduce_to_samples(x, spatial="positions")
    assert positions.shape == (8, 3)
    torch.testing.assert_close(positions[1], x[0, :, 0, 1].double())
    # Sequences (N, T, D): the feature axis is the last one, tokens are averaged.
    seq = torch.randn(4, 7, 5)
    torch.testing.assert_close(reduce_to_samples(seq), seq.double().mean(dim=1))
    # Channels-last conv maps.
    channels_last = torch.randn(2, 4, 4, 6)
    torch.testing.assert_close(reduce_to_samples(channels_last, channel_dim=-1), channels_last.double().mean(dim=(1, 2)))
    # Position subsampling keeps the budget.
    assert reduce_to_samples(torch.randn(3, 2, 8, 8), spatial="positions", positions_per_sample=5).shape == (15, 2)
    assert reduce_to_samples(torch.randn(5, dtype=torch.bfloat16)).dtype == torch.float64


@pytest.mark.parametrize(
    "shape, axis, dtype",
    [((64, 16, 32, 32), 0, torch.float32), ((7, 300, 5), 1, torch.float32), ((40, 3, 9), 0, torch.bfloat16)],
)
def test_gate_counts_equal_a_plain_count_across_mask_chunks(monkeypatch, shape, axis, dtype) -> None:
    import lightning_complexity.reduction as reduction
    from lightning_complexity.reduction import SampleLayout, gate_counts

    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g).to(dtype)
    x.view(-1)[::97] = 0.0  # exact zeros are not positive
    x.view(-1)[5] = float("nan")  # nor is NaN
    expected = (x > 0).sum(dim=axis)
    for mask_values in (2**21, 1000, 7):  # one slice, several, and one input larger than the mask
        monkeypatch.setattr(reduction, "_MASK_VALUES", mask_values)
        monkeypatch.setattr(reduction, "_masks", {})
        units, features, inputs, _, _ = gate_counts(x, SampleLayout(axis))
        assert inputs == shape[axis]
        assert torch.equal(units, expected.flatten().long())
        assert units.sum() == features.sum() == (x > 0).sum()
    empty = x.narrow(axis, 0, 0)  # a batch without inputs counts nothing, and does not fail
    assert torch.equal(gate_counts(empty, SampleLayout(axis))[0], torch.zeros_like(expected).flatten().long())


def test_bf16_activations_are_captured_in_float64() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.GELU()).to(torch.bfloat16)
    capture = ActivationCapture(model, {"1": SiteNeeds(input=True)})
    with capture.capturing():
        model(torch.randn(8, 3, dtype=torch.bfloat16))
    data = capture.collect()["1"]
    assert data.output.dtype == torch.float64 and data.input.dtype == torch.float64
    capture.remove()


def test_maps_are_kept_within_budget() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    capture = ActivationCapture(model, {"1": SiteNeeds(maps=True)}, maps_budget=5)
    with capture.capturing():
        for _ in range(3):
            capture.new_forward()
            model(torch.randn(4, 1, 6, 6))
    data = capture.collect()["1"]
    assert data.maps.shape == (5, 2, 6, 6) and data.output.shape == (12, 2)
    capture.remove()


def test_layer_selection_forms() -> None:
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.MultiheadAttention(4, 1))
    assert select_modules(model, None) == ["1", "2.1"]  # MultiheadAttention is not an activation site
    assert select_modules(model, "2.*") == ["2.0", "2.1"]
    assert select_modules(model, nn.Linear) == ["0", "2.0", "3.out_proj"]  # out_proj subclasses Linear
    assert select_modules(model, (nn.ReLU, nn.Tanh)) == ["1", "2.1"]
    assert select_modules(model, lambda name, m: name.endswith("1")) == ["1", "2.1"]
    assert select_modules(model, ["0", nn.Tanh]) == ["0", "2.1"]
    assert select_modules(model, "nothing*") == []
    with pytest.raises(Exception, match="layers=42"):
        select_modules(model, 42)
