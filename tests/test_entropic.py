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

import numpy as np

from lightning_complexity.functional.entropic import EntropicComplexityResult, entropic_complexity, train_holdout_split

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
def test_unreachable_tolerance_is_censored_in_absolute_mode(kind: str) -> None:
    x = _uniform(2000, seed=7)
    if kind == "pure-noise":
        y = torch.randn(2000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    else:
        y = torch.sin(40 * x)
    result = entropic_complexity(x, y, k_max=16, tolerance_mode="absolute")  # 13 periods: 16 pieces cannot follow (32 can)
    assert bool(result.censored)
    assert (result.errors > 0.05).all()
    lowest = result.errors.argmin()
    assert result.value.item() == result.entropies[lowest].item()
    assert result.k_selected.item() == result.ks[lowest].item()


def test_floor_mode_censors_a_curve_still_falling_at_the_last_k() -> None:
    """sin(40x) with k ≤ 16: e(16) ≈ 0.44 after e(8) ≈ 0.95; only k = 32 follows the 13 periods."""
    x = _uniform(2000, seed=7)
    result = entropic_complexity(x, torch.sin(40 * x), k_max=16)
    assert bool(result.censored) and result.k_selected.item() == 16
    assert result.errors[-2].item() - result.errors[-1].item() > 0.05
    assert result.floor.item() == result.errors[-1].item()
    finer = entropic_complexity(x, torch.sin(40 * x), k_max=32)
    assert not bool(finer.censored) and finer.k_selected.item() == 32 and finer.floor.item() < 0.05


def test_floor_mode_scores_pure_noise_as_one_piece_with_a_floor_near_one() -> None:
    """Y independent of X: nothing to explain, so no pieces; the floor says so."""
    x = _uniform(2000, seed=7)
    y = torch.randn(2000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    result = entropic_complexity(x, y, k_max=16)
    assert result.value.item() == 0.0 and result.k_selected.item() == 1 and not bool(result.censored)
    assert result.floor.item() > 0.95 and result.linear_deficit.item() <= result.floor.item() + 0.05


@pytest.mark.parametrize("seed", range(4))
def test_floor_mode_counts_the_pieces_above_a_noise_floor(seed: int) -> None:
    """y = |x| + noise holding 30 % of var y (var |x| = 1/12 on U[−1, 1]): floor ≈ 0.3, C = ln 2.

    The absolute rule cannot reach ε = 0.05 there and reports a censored value at whatever k
    happens to have the lowest error: the situation of the spatially averaged conv blocks.
    """
    generator = torch.Generator().manual_seed(300 + seed)
    x = torch.rand(3000, 1, generator=generator, dtype=torch.float64) * 2 - 1
    noise_variance = 0.3 / 0.7 / 12
    y = x.abs() + math.sqrt(noise_variance) * torch.randn(3000, 1, generator=generator, dtype=torch.float64)
    result = entropic_complexity(x, y, k_max=8, seed=seed)
    assert result.floor.item() == pytest.approx(0.3, abs=0.04)  # 750 held-out samples
    assert result.k_selected.item() == 2 and result.value.item() == pytest.approx(LN2, abs=0.01)
    assert not bool(result.censored)
    absolute = entropic_complexity(x, y, k_max=8, seed=seed, tolerance_mode="absolute")
    assert bool(absolute.censored) and absolute.floor.item() == result.floor.item()


def test_both_modes_agree_when_the_floor_is_zero() -> None:
    x = _uniform(4000, seed=6)
    floor = entropic_complexity(x, _zigzag(x), k_max=8)
    absolute = entropic_complexity(x, _zigzag(x), k_max=8, tolerance_mode="absolute")
    _assert_same(floor, absolute)


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
    result = entropic_complexity(x, x.abs(), holdout=1 / 6, k_max=16, samples_per_coefficient=10)
    assert result.ks.tolist() == [1, 2, 4, 8, 16]
    assert result.errors[:3].isfinite().all() and result.errors[3:].isnan().all()
    assert result.entropies[:3].isfinite().all() and result.entropies[3:].isnan().all()


def test_default_schedule_keeps_five_points_per_coefficient() -> None:
    """The default: 5·(r + 1) = 10 points per cluster at d = 1, so n_train = 100 allows k ≤ 10."""
    x = _uniform(120, seed=13)
    result = entropic_complexity(x, x.abs(), holdout=1 / 6)
    assert result.ks.tolist() == [1, 2, 4, 8, 16, 32]
    assert result.errors[:4].isfinite().all() and result.errors[4:].isnan().all()


def test_too_few_samples_give_nan() -> None:
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(14))  # r = 4 needs 25 training points, has 22
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
        ({"tolerance_mode": "relative"}, "`tolerance_mode`"),
        ({"tolerance_mode": None}, "`tolerance_mode`"),
        ({"samples_per_coefficient": 0}, "`samples_per_coefficient`"),
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


# ---------------------------------------------------------------------------------------------
# The revised definition (SPEC §3): a global affine map on the full input, clusters correct it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [8, 64, 256])
@pytest.mark.parametrize("rank", [4, 16])
def test_affine_map_at_any_width_and_rank_scores_zero_and_is_never_censored(width: int, rank: int) -> None:
    """Issue 16: the first definition gave e(1) ≈ 0.76 for a linear block on 64-d isotropic input."""
    generator = torch.Generator().manual_seed(200 + width)
    x = torch.randn(2000, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(width, width, generator=generator, dtype=torch.float64) / math.sqrt(width)
    y = x @ weight + torch.randn(width, generator=generator, dtype=torch.float64)
    result = entropic_complexity(x, y, rank=rank, k_max=8, samples_per_coefficient=10)
    assert result.linear_deficit.item() < 1e-6
    assert result.value.item() == 0.0 and result.k_selected.item() == 1 and not bool(result.censored)


def test_affine_map_of_an_anisotropic_input_with_dead_channels_scores_zero() -> None:
    generator = torch.Generator().manual_seed(210)
    x = torch.randn(1500, 48, generator=generator, dtype=torch.float64) * torch.logspace(0, -3, 48, dtype=torch.float64)
    x[:, :5] = 0.0  # dead input channels: the Gram matrix is singular
    y = x @ torch.randn(48, 10, generator=generator, dtype=torch.float64) - 3.0
    exact = entropic_complexity(x, y, ridge=0.0)
    assert exact.linear_deficit.item() < 1e-12 and exact.value.item() == 0.0
    # The default ridge (1e-4 of the mean input variance) shrinks the directions with variance
    # 1e-6, 1/300 of the penalty: measured e(1) = 5.7e-6, still far below any tolerance.
    shrunk = entropic_complexity(x, y)
    assert shrunk.linear_deficit.item() < 1e-4 and shrunk.value.item() == 0.0


def _design(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


def _relative_error(y_held: np.ndarray, prediction: np.ndarray) -> float:
    return float(((y_held - prediction) ** 2).sum() / ((y_held - y_held.mean(0)) ** 2).sum())


def test_linear_deficit_equals_a_direct_least_squares_fit_on_the_same_split() -> None:
    """e(1) = held-out SSE/SST of numpy's lstsq affine fit on the full input (ridge = 0)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((900, 12)) @ rng.standard_normal((12, 12))
    y = np.tanh(x @ rng.standard_normal((12, 5)) / 3.0) + 0.5 * x[:, :5] ** 2 / 10.0
    train, held = (index.numpy() for index in train_holdout_split(900, holdout=0.25, seed=3))
    coefficients, *_ = np.linalg.lstsq(_design(x[train]), y[train], rcond=None)
    expected = _relative_error(y[held], _design(x[held]) @ coefficients)
    result = entropic_complexity(torch.from_numpy(x), torch.from_numpy(y), ridge=0.0, seed=3, k_max=1)
    assert 0.01 < expected < 0.9  # a real deficit, not a trivial 0 or 1
    assert result.linear_deficit.item() == pytest.approx(expected, rel=1e-9)
    # With the ridge: the closed form (XcᵀXc + λI)⁻¹XcᵀYc, λ = ridge·tr(XcᵀXc)/d, intercept free.
    ridge = 0.3
    xc, yc = x[train] - x[train].mean(0), y[train] - y[train].mean(0)
    slopes = np.linalg.solve(xc.T @ xc + ridge * np.trace(xc.T @ xc) / 12 * np.eye(12), xc.T @ yc)
    prediction = (x[held] - x[train].mean(0)) @ slopes + y[train].mean(0)
    result = entropic_complexity(torch.from_numpy(x), torch.from_numpy(y), ridge=ridge, seed=3, k_max=1)
    assert result.linear_deficit.item() == pytest.approx(_relative_error(y[held], prediction), rel=1e-9)


def test_wide_input_uses_the_same_ridge_solution_in_sample_space() -> None:
    """d_in > n_train: the n × n (dual) solve must equal the d × d ridge closed form."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((200, 300))
    y = np.sin(x[:, :4] @ rng.standard_normal((4, 3)))
    train, held = (index.numpy() for index in train_holdout_split(200, seed=0))
    xc, yc = x[train] - x[train].mean(0), y[train] - y[train].mean(0)
    ridge = 1e-2
    slopes = np.linalg.solve(xc.T @ xc + ridge * np.trace(xc.T @ xc) / 300 * np.eye(300), xc.T @ yc)
    prediction = (x[held] - x[train].mean(0)) @ slopes + y[train].mean(0)
    result = entropic_complexity(torch.from_numpy(x), torch.from_numpy(y), ridge=ridge, rank=2, k_max=1)
    assert result.linear_deficit.item() == pytest.approx(_relative_error(y[held], prediction), rel=1e-8)


def test_cluster_corrections_equal_a_direct_least_squares_computation() -> None:
    """Two well-separated blobs (2-means finds them exactly) with a different map on each.

    Reference, written out with numpy on the same split: lstsq affine map on the full input →
    residual → top-r principal coordinates of the training inputs → one lstsq affine correction
    of the residual per blob → held-out SSE/SST of map plus correction.
    """
    rng = np.random.default_rng(13)
    n, d, r = 1600, 6, 3
    side = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) * np.array([1.0, 2.0, 1.5, 0.7, 0.5, 0.3])
    x[:, 0] += np.where(side == 1, 12.0, -12.0)  # the blobs lie along the first principal axis
    maps = rng.standard_normal((2, d, 4))
    y = np.where(side[:, None] == 1, x @ maps[1], x @ maps[0]) + 0.05 * np.sin(3 * x[:, :4])
    train, held = (index.numpy() for index in train_holdout_split(n, seed=1))

    global_fit, *_ = np.linalg.lstsq(_design(x[train]), y[train], rcond=None)
    residual = y[train] - _design(x[train]) @ global_fit
    mean = x[train].mean(0)
    axes = np.linalg.svd(x[train] - mean, full_matrices=False)[2][:r].T
    z_train, z_held = (x[train] - mean) @ axes, (x[held] - mean) @ axes
    prediction = _design(x[held]) @ global_fit
    for blob in (0, 1):
        rows, rows_held = side[train] == blob, side[held] == blob
        correction, *_ = np.linalg.lstsq(_design(z_train[rows]), residual[rows], rcond=None)
        prediction[rows_held] += _design(z_held[rows_held]) @ correction
    expected_e2 = _relative_error(y[held], prediction)
    expected_e1 = _relative_error(y[held], _design(x[held]) @ global_fit)
    p = np.bincount(side, minlength=2) / n

    result = entropic_complexity(torch.from_numpy(x), torch.from_numpy(y), rank=r, k_max=2, ridge=0.0, seed=1, tolerance=0.02)
    assert expected_e1 > 0.05 and expected_e2 < 0.02  # the corrections do the work
    assert result.errors[0].item() == pytest.approx(expected_e1, rel=1e-9)
    assert result.errors[1].item() == pytest.approx(expected_e2, rel=1e-7)
    assert result.entropies[1].item() == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)
    assert result.k_selected.item() == 2 and not bool(result.censored)


def test_e1_is_the_global_map_and_corrections_never_see_outside_the_top_r_components() -> None:
    """A kink along the second principal axis: the global map leaves it, r = 1 cannot see it."""
    generator = torch.Generator().manual_seed(14)
    x = (torch.rand(3000, 3, generator=generator, dtype=torch.float64) * 2 - 1) * torch.tensor([3.0, 1.0, 0.3], dtype=torch.float64)
    y = torch.stack([x[:, 0] + x[:, 2], 5.0 * x[:, 1].abs()], dim=1)
    blind = entropic_complexity(x, y, rank=1, k_max=8, samples_per_coefficient=10)
    seeing = entropic_complexity(x, y, rank=2, k_max=8, samples_per_coefficient=10)
    torch.testing.assert_close(blind.linear_deficit, seeing.linear_deficit)  # e(1) ignores r
    assert blind.linear_deficit.item() > 0.2
    # No correction on the first axis helps, so the kink is all floor: one piece "above" it, and
    # only the floor (or the absolute rule's censoring) says that 40 % of var y is unexplained.
    assert (blind.errors > 0.2).all() and blind.floor.item() > 0.2
    assert blind.value.item() == 0.0 and not bool(blind.censored)
    assert bool(entropic_complexity(x, y, rank=1, k_max=8, samples_per_coefficient=10, tolerance_mode="absolute").censored)
    # 2-D k-means splits x1 at 0 once cells become squarer than strips (k = 8 on this 6 × 2 box).
    assert not bool(seeing.censored) and seeing.errors[-1].item() < 0.05


# ---------------------------------------------------------------------------------------------
# The monitor's site metric: the same numbers, the floor logged, the figure's thresholds
# ---------------------------------------------------------------------------------------------


def _noisy_kink_group():
    from lightning_complexity.site_metrics.base import SiteGroup

    generator = torch.Generator().manual_seed(400)
    x = torch.rand(2, 2000, 1, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(2, 2000, 1, generator=generator, dtype=torch.float64)
    y = x.abs() + torch.tensor([0.0, 0.25], dtype=torch.float64)[:, None, None] * noise  # floors ≈ 0, ≈ 0.43
    return SiteGroup(["clean", "noisy"], outputs=y, inputs=x), x, y


def test_site_metric_logs_the_functional_values_and_the_floor() -> None:
    from lightning_complexity.site_metrics import EntropicComplexity

    group, x, y = _noisy_kink_group()
    metric = EntropicComplexity(k_max=8)
    values = metric.compute(group)
    reference = entropic_complexity(x, y, k_max=8)
    assert set(values) == set(EntropicComplexity.produces)
    torch.testing.assert_close(values["entropic_complexity"], reference.value)
    torch.testing.assert_close(values["linear_deficit"], reference.linear_deficit)
    torch.testing.assert_close(values["entropic_error_floor"], reference.floor)
    assert values["entropic_complexity"].tolist() == pytest.approx([LN2, LN2], abs=0.01)
    assert values["entropic_error_floor"][1].item() == pytest.approx(0.0625 / (1 / 12 + 0.0625), abs=0.05)
    assert values["entropic_complexity_censored"].tolist() == [0.0, 0.0]
    assert metric.min_samples == 60  # k = 1 needs 5·(8 + 1) training points, 3/4 of the samples


def test_site_metric_figure_draws_each_blocks_threshold_in_floor_mode() -> None:
    from lightning_complexity.site_metrics import EntropicComplexity

    group, _, _ = _noisy_kink_group()
    metric = EntropicComplexity(k_max=8)
    values = metric.compute(group)
    axes = metric.figures(None)["entropic_error_curves"].axes[0]
    thresholds = sorted(float(line.get_ydata()[0]) for line in axes.get_lines() if line.get_linestyle() == ":" and len(line.get_ydata()))
    expected = sorted((values["entropic_error_floor"] + 0.05).tolist())
    assert thresholds == pytest.approx(expected, abs=1e-12)
    assert not any(line.get_label().startswith("ε =") for line in axes.get_lines())

    absolute = EntropicComplexity(k_max=8, tolerance_mode="absolute")
    absolute.compute(group)
    labels = [line.get_label() for line in absolute.figures(None)["entropic_error_curves"].axes[0].get_lines()]
    assert "ε = 0.05" in labels


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"tolerance_mode": "relative"}, "tolerance_mode"), ({"samples_per_coefficient": 0}, "samples_per_coefficient"),
     ({"rank": True}, "rank"), ({"tolerance": 0.0}, "tolerance")],
)
def test_site_metric_rejects_bad_configuration_by_name(kwargs: dict, name: str) -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lightning_complexity.site_metrics import EntropicComplexity

    with pytest.raises(MisconfigurationException, match=name):
        EntropicComplexity(**kwargs)
