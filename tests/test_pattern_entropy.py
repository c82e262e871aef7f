"""Tests of lightning_complexity.functional.pattern_entropy (SPEC §3, companion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from lightning_complexity.functional.pattern_entropy import activation_pattern_entropy


# Tiny tensors on a small shared CPU: one intra-op thread (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _reference(pre: np.ndarray) -> float:
    """Independent NumPy/SciPy computation: mean over units of the binary entropy of P(pre > 0)."""
    on = (pre > 0).mean(axis=0)
    return float(np.mean([scipy.stats.entropy([p, 1.0 - p]) for p in on]))


def test_zero_bias_relu_layer_on_exactly_symmetric_input_is_ln2() -> None:
    generator = torch.Generator().manual_seed(0)
    half = torch.randn(500, 16, generator=generator)
    inputs = torch.cat([half, -half])  # symmetric sample: every unit is on for exactly half
    pre = inputs @ torch.randn(16, 32, generator=generator)  # a zero-bias linear layer
    assert activation_pattern_entropy(pre).item() == pytest.approx(math.log(2), abs=1e-12)


def test_zero_bias_relu_layer_on_random_symmetric_input_is_close_to_ln2() -> None:
    generator = torch.Generator().manual_seed(1)
    pre = torch.randn(20_000, 16, generator=generator) @ torch.randn(16, 32, generator=generator)
    # Sampling noise of p around 1/2 lowers h(p) by about 2·(p − 1/2)² ≈ 2/(4n).
    assert activation_pattern_entropy(pre).item() == pytest.approx(math.log(2), abs=1e-3)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_all_positive_or_all_negative_is_zero(sign: float) -> None:
    pre = sign * (torch.rand(100, 8, generator=torch.Generator().manual_seed(2)) + 0.1)
    assert activation_pattern_entropy(pre).item() == 0.0


def test_small_example_by_hand() -> None:
    pre = torch.tensor(
        [
            [1.0, 1.0, 2.0],
            [1.0, -1.0, -2.0],
            [1.0, -1.0, 0.5],
            [1.0, -1.0, -3.0],
        ]
    )
    # P(on) = 1, 1/4, 1/2 → h = 0, −¼ln¼ − ¾ln¾, ln 2.
    expected = (0.0 + (-0.25 * math.log(0.25) - 0.75 * math.log(0.75)) + math.log(2)) / 3
    assert activation_pattern_entropy(pre).item() == pytest.approx(expected, rel=1e-14)


def test_exact_zero_counts_as_off() -> None:
    pre = torch.tensor([[0.0], [1.0]])
    assert activation_pattern_entropy(pre).item() == pytest.approx(math.log(2))
    assert activation_pattern_entropy(torch.zeros(5, 3)).item() == 0.0


def test_matches_independent_reference() -> None:
    rng = np.random.default_rng(3)
    pre = rng.standard_normal((300, 20)) + rng.uniform(-2, 2, size=20)
    assert activation_pattern_entropy(torch.from_numpy(pre)).item() == pytest.approx(_reference(pre), rel=1e-12)


def test_batched_equals_per_site_and_shapes() -> None:
    generator = torch.Generator().manual_seed(4)
    pre = torch.randn(5, 200, 7, generator=generator) + torch.linspace(-2, 2, 5)[:, None, None]
    batched = activation_pattern_entropy(pre)
    assert batched.shape == (5,) and batched.dtype == torch.float64 and batched.device == pre.device
    single = torch.stack([activation_pattern_entropy(site) for site in pre])
    torch.testing.assert_close(batched, single, rtol=0, atol=0)
    assert activation_pattern_entropy(pre[0]).shape == ()


def test_data_problems_give_nan_without_raising() -> None:
    pre = torch.randn(3, 50, 4, generator=torch.Generator().manual_seed(5))
    pre[1, 7, 2] = math.nan
    pre[2, 0, 0] = math.inf
    result = activation_pattern_entropy(pre)
    assert math.isfinite(result[0].item()) and result[1:].isnan().all()
    assert activation_pattern_entropy(torch.zeros(0, 4)).isnan()
    assert activation_pattern_entropy(torch.zeros(10, 0)).isnan()


def test_integer_and_half_inputs_are_accepted() -> None:
    pre = torch.tensor([[1, -1], [-1, 1]])
    assert activation_pattern_entropy(pre).item() == pytest.approx(math.log(2))
    assert activation_pattern_entropy(pre.to(torch.bfloat16)).item() == pytest.approx(math.log(2))


def test_misuse_raises() -> None:
    with pytest.raises(ValueError, match="`pre`"):
        activation_pattern_entropy(torch.zeros(5))
    with pytest.raises(ValueError, match="`pre`"):
        activation_pattern_entropy(torch.zeros(2, 3, 4, 5))
    with pytest.raises(TypeError, match="`pre`"):
        activation_pattern_entropy(np.zeros((3, 2)))  # type: ignore[arg-type]
