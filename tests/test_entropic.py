"""Tests of lightning_complexity.functional.entropic (SPEC §3, our [project] definition).

The ln 2 / ln 4 cases rely on where k-means puts its boundaries: on 1-D uniform input, k clusters
are k equal-width (equal-mass) intervals, and 2-means on a symmetric unimodal input splits at the
centre. The zig-zag therefore has its kinks at the quartiles of a uniform input. k-means on
finite samples misplaces boundaries by a few hundredths (more for larger k), so these cases use
thousands of samples and tolerances of 0.01 nats.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lightning_complexity.functional.entropic import EntropicComplexityResult, entropic_complexity

LN2, LN4 = math.log(2), math.log(4)


# Tiny tensors on a small shared CPU: one intra-op thread (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _uniform(n: int, d: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def _zigzag(x: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest of −1, 0, 1: four affine pieces of equal mass on [−1, 1]."""
    return torch.minimum(torch.minimum((x + 1).abs(), x.abs()), (x - 1).abs())


def _assert_same(a: EntropicComplexityResult, b: EntropicComplexityResult) -> None:
    for field in dataclasses.fields(EntropicComplexityResult):
        torch.testing.assert_close(getattr(a, field.name), getattr(b, field.name), equal_nan=True)


def test_affine_map_scores_zero() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(800, 8, generator=generator)
    y = x @ torch.randn(8, 5, generator=generator) + torch.randn(5, generator=generator)
    result = entropic_complexity(x, y)
    assert result.value.item() == 0.0
    assert result.k_selected.item() == 1 and not result.censored
    assert result.linear_deficit.item() < 1e-6


def test_affine_map_of_wide_low_rank_input_scores_zero() -> None:
    """d_in = 400 > n_train: the principal axes come from the n × n Gram matrix."""
    generator = torch.Generator().manual_seed(2)
    latent = torch.randn(300, 6, generator=generator, dtype=torch.float64)
    x = latent @ torch.randn(6, 400, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(400, 3, generator=generator, dtype=torch.float64) - 2.0
    result = entropic_complexity(x, y, k_max=1)
    assert result.value.item() == 0.0 and result.linear_deficit.item() < 1e-6


def test_linear_deficit_matches_noise_fraction() -> None:
    """y = 2x + σ·noise: the best affine map leaves σ² / (4·var x + σ²) of the variance."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4000, 1, generator=generator, dtype=torch.float64)
    y = 2 * x + 1.0 * torch.randn(4000, 1, generator=generator, dtype=torch.float64)
    result = entropic_complexity(x, y, k_max=1)
    assert result.linear_deficit.item() == pytest.approx(1 / 5, abs=0.03)


def test_absolute_value_on_symmetric_uniform_input_is_ln2() -> None:
    x = _uniform(2000)
    result = entropic_complexity(x, x.abs(), k_max=4)
    assert result.value.item() == pytest.approx(LN2, abs=0.01)
    assert result.k_selected.item() == 2 and not result.censored
    assert result.linear_deficit.item() > 0.9  # no single affine map explains |x|


def test_relu_on_gaussian_input_is_ln2() -> None:
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    result = entropic_complexity(x, x.relu(), k_max=4)
    assert result.value.item() == pytest.approx(LN2, abs=0.01)
    assert result.k_selected.item() == 2


def test_kink_along_the_widest_input_direction_is_ln2() -> None:
    """3-D input; the kink lies across the first principal axis, where 2-means splits."""
    x = _uniform(3000, 3, seed=5) * torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64)
    y = torch.stack([x[:, 0].abs() + x[:, 1] - x[:, 2], 0.5 * x[:, 2]], dim=1)
    result = entropic_complexity(x, y, k_max=4)
    assert result.value.item() == pytest.approx(LN2, abs=0.01)
    assert result.k_selected.item() == 2


@pytest.mark.parametrize(
    "x",
    [torch.linspace(-1, 1, 2000, dtype=torch.float64).unsqueeze(-1), _uniform(4000, seed=6)],
    ids=["evenly-spaced", "uniform-random"],
)
def test_four_piece_zigzag_is_ln4(x: torch.Tensor) -> None:
    result = entropic_complexity(x, _zigzag(x), k_max=8)
    assert result.value.item() == pytest.approx(LN4, abs=0.01)
    assert result.k_selected.item() == 4 and not result.censored
    assert result.errors[1].item() > 0.5  # two pieces cannot follow the zig-zag


@pytest.mark.parametrize("seed", range(10))
def test_ln_k_cases_hold_across_data_and_split_seeds(seed: int) -> None:
    x = _uniform(2000, seed=100 + seed)
    absolute = entropic_complexity(x, x.abs(), k_max=4, seed=seed)
    zigzag = entropic_complexity(x, _zigzag(x), k_max=8, seed=seed)
    assert absolute.k_selected.item() == 2 and absolute.value.item() == pytest.approx(LN2, abs=0.01)
    assert zigzag.k_selected.item() == 4 and zigzag.value.item() == pytest.approx(LN4, abs=0.01)


@pytest.mark.parametrize("kind", ["high-frequency-sine", "pure-noise"])
def test_unreachable_tolerance_is_censored(kind: str) -> None:
    x = _uniform(2000, seed=7)
    if kind == "pure-noise":
        y = torch.randn(2000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    else:
        y = torch.sin(40 * x)
    result = entropic_complexity(x, y)
    assert bool(result.censored)
    assert (result.errors > 0.05).all()
    lowest = result.errors.argmin()
    assert result.value.item() == result.entropies[lowest].item()
    assert result.k_selected.item() == result.ks[lowest].item()


def test_batched_equals_per_site() -> None:
    x = torch.cat([_uniform(1500, seed=9), _uniform(1500, seed=10), _uniform(1500, seed=11)], dim=1)
    x = x.T.unsqueeze(-1)  # three 1-D sites
    y = torch.stack([x[0].abs(), _zigzag(x[1]), 3 * x[2] - 1])
    batched = entropic_complexity(x, y, k_max=8)
    assert batched.value.shape == (3,) and batched.errors.shape == (3, 4)
    for site in range(3):
        single = entropic_complexity(x[site], y[site], k_max=8)
        for field in ("value", "linear_deficit", "censored", "k_selected", "errors", "entropies"):
            torch.testing.assert_close(getattr(batched, field)[site], getattr(single, field), equal_nan=True)
    assert batched.k_selected.tolist() == [2, 4, 1]


def test_deterministic_under_the_same_seed() -> None:
    x = _uniform(1200, 2, seed=12)
    y = torch.sin(3 * x).sum(-1, keepdim=True)
    first = entropic_complexity(x, y, seed=5)
    _assert_same(first, entropic_complexity(x, y, seed=5))
    _assert_same(first, entropic_complexity(x.clone(), y.clone(), seed=5))


def test_schedule_is_truncated_to_keep_ten_points_per_coefficient() -> None:
    """d = 1 → r = 1 → 20 training points per cluster; n = 120, holdout 1/6 → n_train = 100 → k ≤ 5."""
    x = _uniform(120, seed=13)
    result = entropic_complexity(x, x.abs(), holdout=1 / 6)
    assert result.ks.tolist() == [1, 2, 4, 8, 16]
    assert result.errors[:3].isfinite().all() and result.errors[3:].isnan().all()
    assert result.entropies[:3].isfinite().all() and result.entropies[3:].isnan().all()


def test_too_few_samples_give_nan() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(14))  # r = 4 needs 50 training points
    result = entropic_complexity(x, x.relu())
    assert result.value.isnan() and result.linear_deficit.isnan() and result.errors.isnan().all()
    assert not result.censored and result.k_selected.item() == 0


def test_non_finite_site_gives_nan_and_leaves_the_others_alone() -> None:
    x = _uniform(1000, seed=15).expand(3, -1, -1).clone()
    y = x.abs()
    y[1, 10, 0] = math.nan
    x[2, 3, 0] = math.inf
    result = entropic_complexity(x, y, k_max=4)
    assert result.value[1:].isnan().all() and result.errors[1:].isnan().all()
    assert not result.censored[1:].any()
    clean = entropic_complexity(x[0], y[0], k_max=4)
    torch.testing.assert_close(result.value[0], clean.value)
    torch.testing.assert_close(result.errors[0], clean.errors)


def test_constant_output_scores_zero() -> None:
    x = torch.randn(600, 3, generator=torch.Generator().manual_seed(16))
    for y in (torch.zeros(600, 2), torch.full((600, 2), 5.0)):
        result = entropic_complexity(x, y, k_max=2)
        assert result.value.item() == 0.0 and result.linear_deficit.item() == pytest.approx(0.0, abs=1e-9)


def test_duplicate_inputs_do_not_break_clustering() -> None:
    """Fewer distinct inputs than clusters: k-means++ picks duplicates, clusters stay empty."""
    x = torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64).repeat(400, 1)
    result = entropic_complexity(x, x.abs(), k_max=8)
    assert result.errors.isfinite().all()
    # Two clusters hold {−1, 0} and {1} (or {−1} and {0, 1}): occupancies 2/3 and 1/3.
    assert result.k_selected.item() == 2
    assert result.value.item() == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3), rel=1e-12)
    assert result.entropies[-1].item() <= math.log(3) + 1e-12  # at most 3 non-empty clusters


def test_shapes_dtype_device_and_float32_input() -> None:
    x = _uniform(800, 2, seed=17)
    y = x.abs()
    result = entropic_complexity(x.float(), y.float(), k_max=4)
    assert result.value.shape == () and result.errors.shape == (3,) and result.ks.tolist() == [1, 2, 4]
    assert result.value.dtype == torch.float64 and result.censored.dtype == torch.bool
    assert result.k_selected.dtype == torch.int64 and result.value.device == x.device
    reference = entropic_complexity(x, y, k_max=4)
    torch.testing.assert_close(result.errors, reference.errors, rtol=1e-4, atol=1e-6)
    assert entropic_complexity(x, y, k_max=10).ks.tolist() == [1, 2, 4, 8]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rank": 0}, "`rank`"),
        ({"rank": 2.5}, "`rank`"),
        ({"rank": True}, "`rank`"),
        ({"k_max": 0}, "`k_max`"),
        ({"tolerance": -0.1}, "`tolerance`"),
        ({"tolerance": math.nan}, "`tolerance`"),
        ({"ridge": -1.0}, "`ridge`"),
        ({"holdout": 0.0}, "`holdout`"),
        ({"holdout": 1.0}, "`holdout`"),
        ({"seed": -1}, "`seed`"),
        ({"n_init": 0}, "`n_init`"),
        ({"max_iter": 0}, "`max_iter`"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match=name):
        entropic_complexity(x, x, **kwargs)


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="`x` and `y`"):
        entropic_complexity(torch.zeros(10, 2), torch.zeros(11, 2))
    with pytest.raises(ValueError, match="`x` and `y`"):
        entropic_complexity(torch.zeros(2, 10, 2), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="`x` and `y`"):
        entropic_complexity(torch.zeros(2, 10, 2), torch.zeros(3, 10, 2))
    with pytest.raises(ValueError, match="`x`"):
        entropic_complexity(torch.zeros(10), torch.zeros(10))
    with pytest.raises(TypeError, match="`y`"):
        entropic_complexity(torch.zeros(10, 2), [[0.0, 0.0]] * 10)  # type: ignore[arg-type]
