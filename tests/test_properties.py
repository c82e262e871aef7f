"""Property-based tests of every functional on hostile inputs (GitHub issue 6).

Inputs cover float16, bfloat16, float32 and float64; 1 to a few hundred samples; widths 1 to 64;
unbatched ``(n, d)`` and batched ``(b, n, d)``; Gaussian, constant, constant-column, duplicated-row,
low-rank, dead (all-zero) and heavy-tailed data; scales from 1e-300 to 1e300 (within each dtype's
range, where the data fit); and NaN/±Inf sprinkled into one site. The property: a finite value in
the documented range, NaN exactly where the data make the metric undefined, and never an
exception the caller did not cause (only a wrong shape or option may raise ``ValueError``).

Expectations are derived from the data actually handed to the function (after the cast to the
dtype under test), never from the functions under test, and values are checked against
independent numpy/scipy references where one is cheap.

Examples are drawn with ``derandomize=True``, so CI runs the same cases every time. For a deeper
local run: ``LC_PROPERTY_EXAMPLES_SCALE=20 pytest tests/test_properties.py``.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from lightning_complexity.functional import (
    activation_pattern_entropy,
    active_fraction,
    betti_numbers,
    effective_dimension,
    entropic_complexity,
    participation_ratio,
)
from lightning_complexity.functional.affinity import affinity_score
from lightning_complexity.powerlaw import fit_power_law

_SCALE = max(1, int(os.environ.get("LC_PROPERTY_EXAMPLES_SCALE", "1")))


def _settings(max_examples: int):
    return settings(
        max_examples=max_examples * _SCALE,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


# Tiny tensors on a small shared CPU: one intra-op thread (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Decimal exponents of the data's spread per dtype: from far below to far above 1, within range
# (a float16 activation never exceeds 65504; float64 data may be anywhere in float64's range).
SCALES = {
    torch.float16: (-3, 0, 2, 4),
    torch.bfloat16: (-30, -3, 0, 3, 30),
    torch.float32: (-30, -8, 0, 8, 30),
    torch.float64: (-300, -150, -30, -8, 0, 8, 30, 150, 300),
}
STRUCTURES = ("gaussian", "constant", "constant_columns", "duplicated_rows", "low_rank", "dead", "heavy_tailed", "discrete", "offset")
CORRUPTIONS = ("none", "none", "none", "none", "none", "nan", "inf", "-inf")
LN2 = math.log(2.0)


# --- data ------------------------------------------------------------------------------------------

def _structured(generator: torch.Generator, n: int, d: int, structure: str) -> torch.Tensor:
    """``(n, d)`` float64 data of unit-ish spread with the requested pathology."""
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    if structure == "constant":
        x = torch.full((n, d), 0.75, dtype=torch.float64)
    elif structure == "constant_columns":
        dead = torch.rand(d, generator=generator) < 0.5
        dead[0] = True
        x[:, dead] = 1.5
    elif structure == "duplicated_rows":
        x = x[torch.randint(0, max(1, n // 4), (n,), generator=generator)]
    elif structure == "low_rank":
        k = 1 + int(torch.randint(0, 3, (1,), generator=generator))
        x = torch.randn(n, k, generator=generator, dtype=torch.float64) @ torch.randn(k, d, generator=generator, dtype=torch.float64)
    elif structure == "dead":  # ReLU output with a negative bias: many exactly-zero units
        x = (x - 1.0).clamp_min(0.0)
    elif structure == "heavy_tailed":
        x = x / torch.rand(n, d, generator=generator, dtype=torch.float64).clamp_min(1e-3) ** 2
    elif structure == "discrete":
        x = torch.randint(-1, 2, (n, d), generator=generator).to(torch.float64)
    elif structure == "offset":  # a large mean next to a small spread: cancellation in centring
        x = x + 1e3
    return x


def _corrupt(x: torch.Tensor, corruption: str, generator: torch.Generator) -> torch.Tensor:
    if corruption == "none" or x.numel() == 0:
        return x
    flat = x.reshape(-1).clone()
    count = 1 + int(torch.randint(0, 3, (1,), generator=generator))
    index = torch.randint(0, flat.numel(), (count,), generator=generator)
    flat[index] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[corruption]
    return flat.reshape(x.shape)


def _exactly_scaled(t: torch.Tensor, exponent: int) -> torch.Tensor | None:
    """``t · 2**exponent`` if every entry stays finite and normal (so the scaling is exact), else None."""
    if not torch.isfinite(t).all():
        return None
    scaled = t * 2.0 ** (exponent // 2) * 2.0 ** (exponent - exponent // 2)
    tiny = torch.finfo(torch.float64).tiny
    normal = lambda v: bool(torch.isfinite(v).all() and ((v == 0) | (v.abs() >= tiny)).all())  # noqa: E731
    return scaled if normal(t) and normal(scaled) and bool(((scaled == 0) == (t == 0)).all()) else None


@st.composite
def sample_sets(draw, min_n: int = 1, max_n: int = 300, max_d: int = 64):
    """``(x, per_site)``: x ``(n, d)`` or ``(b, n, d)`` of one dtype; per_site lists the float64 sites.

    At most one site of a batch is corrupted, so the others prove sites are independent.
    """
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    batch = draw(st.sampled_from((None, 1, 3)))
    scale = 10.0 ** draw(st.sampled_from(SCALES[dtype]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    sites = []
    corrupted = draw(st.integers(0, (batch or 1) - 1))
    corruption = draw(st.sampled_from(CORRUPTIONS))
    for i in range(batch or 1):
        structure = draw(st.sampled_from(STRUCTURES))
        site = _structured(generator, n, d, structure) * scale
        sites.append(_corrupt(site, corruption if i == corrupted else "none", generator).to(dtype))
    x = sites[0] if batch is None else torch.stack(sites)
    return x, [site.to(torch.float64) for site in sites]


def _facts(site: torch.Tensor) -> dict:
    """What the data (float64, after the cast) say about a site, computed independently."""
    n, d = site.shape
    finite = bool(torch.isfinite(site).all())
    facts = {"n": n, "d": d, "finite": finite, "varies": False, "rank_bound": 0}
    if finite and n > 0:
        varying_columns = int(((site.amax(0) - site.amin(0)) > 0).sum())
        distinct_rows = int(torch.unique(site, dim=0).shape[0])
        facts["varies"] = varying_columns > 0
        facts["rank_bound"] = min(varying_columns, distinct_rows - 1)
    return facts


def _as_list(value: torch.Tensor) -> list[float]:
    return [float(v) for v in value.reshape(-1).tolist()]


# --- effective dimension and participation ratio (SPEC §2) ----------------------------------------

def _reference_spectrum(site: torch.Tensor) -> np.ndarray:
    """Normalised covariance spectrum with numpy (scale-free: the data are divided by max |x| first)."""
    x = site.numpy()
    x = x / np.abs(x).max()
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(site.shape[1], site.shape[1])), 0, None)
    return eig / eig.sum()


@_settings(50)
@given(sample_sets())
def test_effective_dimension_and_participation_ratio_are_in_range_or_nan(case) -> None:
    x, sites = case
    dimension, ratio = effective_dimension(x), participation_ratio(x)
    assert dimension.dtype == ratio.dtype == torch.float64
    assert dimension.shape == ratio.shape == x.shape[:-2]
    for site, ed, pr in zip(sites, _as_list(dimension), _as_list(ratio)):
        facts = _facts(site)
        if not (facts["finite"] and facts["n"] >= 2 and facts["varies"]):
            # SPEC §2 / docstring: NaN/Inf, fewer than two rows, or zero variance give NaN.
            assert math.isnan(ed) and math.isnan(pr), (facts, ed, pr)
            event("undefined site")
            continue
        event("finite site")
        # Finite data with some variance: a finite value, whatever the scale.
        assert math.isfinite(ed) and math.isfinite(pr), (facts, ed, pr)
        bound = facts["rank_bound"]
        assert 1.0 - 1e-9 <= pr <= ed * (1 + 1e-9) + 1e-9  # exp(Rényi-2 entropy) ≤ exp(Shannon entropy)
        assert ed <= bound * (1 + 1e-6) + 1e-9, (facts, ed)
        p = _reference_spectrum(site)
        assert ed == pytest.approx(float(np.exp(-(p * np.log(p + 1e-11)).sum())), rel=1e-6)
        assert pr == pytest.approx(float(1.0 / (p**2).sum()), rel=1e-6)


@_settings(30)
@given(sample_sets(min_n=2, max_d=16), st.integers(-1000, 1000), st.floats(-1e3, 1e3))
def test_effective_dimension_is_invariant_to_scale_and_shift(case, exponent, shift) -> None:
    """Covariance spectra scale by c²: the normalised spectrum, hence D_eff and PR, do not change.

    A power-of-two scale is exact in floating point, so any difference is the implementation's.
    """
    x, _ = case
    x = x.to(torch.float64)
    base_ed, base_pr = effective_dimension(x), participation_ratio(x)
    moved = _exactly_scaled(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), exponent)
    if moved is None:
        return  # the scaled data left float64's normal range: the scaling itself is inexact
    event("compared")
    moved = torch.where(torch.isfinite(x), moved, x)  # keep the NaN/Inf where they were
    torch.testing.assert_close(effective_dimension(moved), base_ed, rtol=1e-9, atol=0, equal_nan=True)
    torch.testing.assert_close(participation_ratio(moved), base_pr, rtol=1e-9, atol=0, equal_nan=True)
    if abs(shift) > 0 and torch.isfinite(x).all() and x.abs().max() < 1e100:
        # A shift below the data's own resolution is lost in float64 rounding, so compare loosely.
        shifted = x + shift * x.abs().max()
        torch.testing.assert_close(effective_dimension(shifted), base_ed, rtol=1e-4, atol=1e-6, equal_nan=True)


def test_effective_dimension_far_outside_float32_range_is_finite() -> None:
    """Regression: float64 data beyond ~1e154 overflowed the covariance and ``eigh`` raised
    ``LinAlgError``; data below ~1e-154 underflowed it to 0 and gave NaN for varying data."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, 8, generator=g, dtype=torch.float64)
    reference = effective_dimension(x)
    for scale in (1e-300, 1e-200, 1e160, 1e200, 1e300):
        torch.testing.assert_close(effective_dimension(x * scale), reference, rtol=1e-9, atol=0)
        torch.testing.assert_close(participation_ratio(x * scale), participation_ratio(x), rtol=1e-9, atol=0)


def test_constant_float64_data_with_an_inexact_mean_is_undefined() -> None:
    """Regression: the mean of 9 copies of 0.1 is not 0.1 in float64, centring left ±1 ulp and a
    constant site got D_eff = PR = 1 instead of NaN (zero variance, SPEC §2)."""
    constant = torch.full((9, 3), 0.1, dtype=torch.float64)
    varying = torch.randn(9, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for value in (0.1, 0.3, 1.0 / 3.0):
        stacked = torch.stack([torch.full((9, 3), value, dtype=torch.float64), varying])
        dimension, ratio = effective_dimension(stacked), participation_ratio(stacked)
        assert math.isnan(dimension[0]) and math.isnan(ratio[0]), value
        assert dimension[1] == pytest.approx(effective_dimension(varying).item(), rel=1e-12)
    assert math.isnan(effective_dimension(constant)) and math.isnan(participation_ratio(constant))


# --- activation-pattern entropy (SPEC §3) ----------------------------------------------------------

@_settings(50)
@given(sample_sets(min_n=1))
def test_pattern_entropy_is_in_zero_ln2_or_nan(case) -> None:
    x, sites = case
    entropy = activation_pattern_entropy(x)
    assert entropy.dtype == torch.float64 and entropy.shape == x.shape[:-2]
    for site, value in zip(sites, _as_list(entropy)):
        if not _facts(site)["finite"]:
            assert math.isnan(value)
            continue
        on = (site.numpy() > 0).mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.nan_to_num(on * np.log(on)) - np.nan_to_num((1 - on) * np.log(1 - on))
        assert 0.0 <= value <= LN2 + 1e-12
        assert value == pytest.approx(float(h.mean()), abs=1e-12)


# --- affinity score (SPEC §1) ----------------------------------------------------------------------

ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "abs": torch.abs,
    "leaky": lambda x: torch.nn.functional.leaky_relu(x, 0.1),
    "psd_affine": lambda x: 2.0 * x + 0.5,  # a PSD affine map: ρ = 1 (within 1e-5, SPEC §1)
    "constant": lambda x: torch.full_like(x, 0.3),
    "sign": torch.sign,
}


@st.composite
def activation_pairs(draw, max_n: int = 200, max_d: int = 48):
    """``(x, y, name)``: an activation's input and output, cast to one dtype (y computed in float64)."""
    x, sites = draw(sample_sets(min_n=1, max_n=max_n, max_d=max_d))
    name = draw(st.sampled_from(sorted(ACTIVATIONS)))
    y = ACTIVATIONS[name](torch.stack(sites)).to(x.dtype)
    return x, (y if x.ndim == 3 else y[0]), name


@_settings(40)
@given(
    activation_pairs(),
    st.sampled_from(("exact", "sinkhorn", "paired")),
    st.sampled_from(("none", "ledoit_wolf", "auto")),
    st.sampled_from(("relative", "absolute")),
)
def test_affinity_score_is_at_most_one_or_nan(case, ot, shrinkage, jitter) -> None:
    x, y, name = case
    # Keep float64 data within 1e60 (float32 activations never exceed 3.4e38); beyond ~1e77 the
    # map overflows and the score is NaN, covered by the dedicated test below.
    x, y = (torch.where(t.isfinite(), t.clamp(-1e60, 1e60), t) if t.dtype == torch.float64 else t for t in (x, y))
    scores = affinity_score(x, y, ot=ot, shrinkage=shrinkage, jitter=jitter)
    assert scores.dtype == torch.float64 and scores.shape == x.shape[:-2]
    xs, ys = x.to(torch.float64).reshape(-1, *x.shape[-2:]), y.to(torch.float64).reshape(-1, *y.shape[-2:])
    for xi, yi, score in zip(xs, ys, _as_list(scores)):
        n = xi.shape[0]
        if n < 2 or not (torch.isfinite(xi).all() and torch.isfinite(yi).all()):
            assert math.isnan(score), (n, score)  # docstring: non-finite or n < 2 scores NaN
            event("undefined site")
            continue
        event("finite site")
        assert math.isfinite(score), score
        assert score <= 1.0 + 1e-9
        if ot == "exact" and shrinkage == "none":
            # W2² is at most the cost of the independent coupling, tr Ŝz + tr Ŝy ≤ 2 tr Sy: ρ ≥ 0.
            assert score >= -1e-9, score
        if ot == "paired" and shrinkage == "none":
            # ‖A xc − yc‖² ≤ 2‖A xc‖² + 2‖yc‖², and tr(A Ŝx A) ≤ tr Sy: ρ ≥ 1 − √2.
            assert score >= 1.0 - math.sqrt(2.0) - 1e-9, score
        # SPEC §1 (relative rule, the default): an output with tr Sy ≤ 1e-12·tr Sx is a constant
        # map, A = 0 and ρ = 1 — at any magnitude, since the samples are centred on the first one
        # before the mean is taken (an exactly constant column centres to exact zeros).
        if jitter == "relative" and bool((yi == yi[0]).all()):
            assert score == 1.0, score


@_settings(25)
@given(activation_pairs(max_n=120, max_d=24), st.sampled_from(("exact", "sinkhorn", "paired")))
def test_affinity_batched_equals_per_site(case, ot) -> None:
    x, y, _ = case
    if x.ndim == 2:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    batched = affinity_score(x, y, ot=ot)
    single = torch.stack([affinity_score(xi, yi, ot=ot) for xi, yi in zip(x, y)])
    torch.testing.assert_close(batched, single, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_affinity_exact_on_float64_data_beyond_1e77_does_not_raise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    reference = affinity_score(x, torch.relu(x), ot="exact").item()
    score = affinity_score(x * 1e100, torch.relu(x) * 1e100, ot="exact").item()  # ValueError today
    # A (hence ρ up to the 1e-6 jitter) is invariant to scaling both covariances together, so a
    # fix that rescales them before the roots gives the same score; masking gives NaN.
    assert math.isnan(score) or score == pytest.approx(reference, abs=1e-6)


# --- entropic complexity (SPEC §3) -----------------------------------------------------------------

@st.composite
def entropic_cases(draw):
    x, sites = draw(sample_sets(min_n=20, max_n=300, max_d=12))
    maps = {
        "relu": torch.relu,
        "abs": torch.abs,
        "affine": lambda t: t @ torch.ones(t.shape[-1], 2, dtype=t.dtype) + 1.0,
        "sum_abs": lambda t: t.abs().sum(-1, keepdim=True),
        "constant": lambda t: torch.zeros(*t.shape[:-1], 3, dtype=t.dtype),
    }
    name = draw(st.sampled_from(sorted(maps)))
    y = maps[name](torch.stack(sites)).to(x.dtype)
    rank = draw(st.integers(1, 4))
    k_max = draw(st.sampled_from((1, 2, 4, 8)))
    return x, (y if x.ndim == 3 else y[0]), rank, k_max


@_settings(40)
@given(entropic_cases(), st.sampled_from(("floor", "absolute")))
def test_entropic_complexity_is_in_zero_ln_k_or_nan(case, mode) -> None:
    x, y, rank, k_max = case
    result = entropic_complexity(x, y, rank=rank, k_max=k_max, n_init=2, max_iter=20, tolerance_mode=mode)
    assert result.ks.tolist() == [2**i for i in range(k_max.bit_length())]
    xs, ys = x.to(torch.float64).reshape(-1, *x.shape[-2:]), y.to(torch.float64).reshape(-1, *y.shape[-2:])
    values = result.value.reshape(-1)
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        n, d_in = xi.shape
        held = int(round(0.25 * n))
        measurable = held >= 2 and n - held >= 5 * (min(rank, d_in) + 1)  # 5 points per coefficient
        finite = bool(torch.isfinite(xi).all() and torch.isfinite(yi).all())
        value = float(values[i])
        k = int(result.k_selected.reshape(-1)[i])
        errors = result.errors.reshape(-1, len(result.ks))[i]
        entropies = result.entropies.reshape(-1, len(result.ks))[i]
        if not (measurable and finite):
            assert math.isnan(value) and k == 0 and torch.isnan(errors).all(), (measurable, finite, value)
            event("undefined site: " + ("non-finite" if measurable else "too few samples"))
            continue
        event(f"measured site, k* = {k}")
        assert math.isfinite(value) and k in result.ks.tolist(), (value, k)
        assert -1e-12 <= value <= math.log(k) + 1e-12  # an entropy over at most k clusters
        assert (errors[~errors.isnan()] >= 0).all() and math.isfinite(float(errors[0]))
        used = ~entropies.isnan()
        assert (entropies[used] >= -1e-12).all()
        assert (entropies[used] <= torch.log(result.ks[used].double()) + 1e-12).all()
        # The selection rule, recomputed from the reported curve.
        censored = bool(result.censored.reshape(-1)[i])
        measured_errors = errors[~errors.isnan()]
        floor = float(measured_errors.min())
        assert float(result.floor.reshape(-1)[i]) == floor
        threshold = floor + 0.05 if mode == "floor" else 0.05
        qualifying = (measured_errors <= threshold).nonzero()
        expected = int(qualifying[0]) if len(qualifying) else int(measured_errors.argmin())
        assert k == int(result.ks[expected]) and value == float(entropies[expected])
        if mode == "floor":
            assert censored == (expected == len(measured_errors) - 1 and float(measured_errors[expected]) > 0.05)
        else:
            assert censored == (len(qualifying) == 0)


@_settings(25)
@given(entropic_cases(), st.integers(-900, 900), st.integers(-900, 900))
def test_entropic_complexity_is_invariant_to_the_scale_of_input_and_output(case, x_exponent, y_exponent) -> None:
    """PCA, k-means, the relative ridge and SSE/SST are scale-free: scaling x or y by a power of two
    must not change C_ε, e(k) or H(k) (the scaling is exact in float64)."""
    x, y, rank, k_max = case
    x, y = x.to(torch.float64), y.to(torch.float64)
    moved_x, moved_y = _exactly_scaled(x, x_exponent), _exactly_scaled(y, y_exponent)
    if moved_x is None or moved_y is None:
        return
    event("compared")
    kwargs = {"rank": rank, "k_max": k_max, "n_init": 2, "max_iter": 20}
    base = entropic_complexity(x, y, **kwargs)
    scaled = entropic_complexity(moved_x, moved_y, **kwargs)
    torch.testing.assert_close(scaled.value, base.value, rtol=1e-6, atol=1e-9, equal_nan=True)
    torch.testing.assert_close(scaled.errors, base.errors, rtol=1e-6, atol=1e-9, equal_nan=True)
    torch.testing.assert_close(scaled.entropies, base.entropies, rtol=1e-6, atol=1e-9, equal_nan=True)


def test_entropic_complexity_far_outside_float32_range() -> None:
    """Regression: float64 data beyond ~1e154 overflowed the Gram matrix (``eigh`` raised
    ``LinAlgError``), and data below ~1e-154 underflowed SSE and SST, so |x| scored 0 (affine)."""
    x = torch.linspace(-1.0, 1.0, 800, dtype=torch.float64).unsqueeze(-1)
    reference = entropic_complexity(x, x.abs(), rank=1, k_max=4)
    assert reference.value.item() == pytest.approx(LN2, abs=0.01)
    for scale in (1e-300, 1e-160, 1e160, 1e300):
        result = entropic_complexity(x * scale, x.abs() * scale, rank=1, k_max=4)
        assert result.value.item() == pytest.approx(reference.value.item(), abs=1e-9), scale
        torch.testing.assert_close(result.errors, reference.errors, rtol=1e-6, atol=1e-9)


# --- Betti numbers and active fraction (SPEC §5) ---------------------------------------------------

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def _reference_betti(mask: np.ndarray) -> tuple[int, int]:
    """b0 = 8-connected components of the set; b1 = 4-connected background components that do
    not reach the border (Alexander duality in the plane), both with scipy's labelling."""
    b0 = ndimage.label(mask, structure=_EIGHT)[1]
    framed = np.pad(~mask, 1, constant_values=True)
    b1 = ndimage.label(framed, structure=_FOUR)[1] - 1
    return b0, b1


@st.composite
def feature_maps(draw):
    dtype = draw(st.sampled_from(DTYPES))
    lead = draw(st.sampled_from(((), (3,), (2, 3))))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(("gaussian", "sparse", "constant_on", "constant_off", "checkerboard", "smooth")))
    maps = torch.randn(*lead, height, width, generator=g, dtype=torch.float64)
    if kind == "sparse":
        maps = maps - 1.0
    elif kind == "constant_on":
        maps = torch.ones_like(maps)
    elif kind == "constant_off":
        maps = torch.zeros_like(maps)
    elif kind == "checkerboard":  # diagonal neighbours only: 8-connected into one piece
        i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        maps = ((i + j) % 2 == 0).to(torch.float64).expand_as(maps).clone() - 0.5
    elif kind == "smooth":
        maps = torch.nn.functional.avg_pool2d(maps.reshape(-1, 1, height, width), 3, 1, 1, count_include_pad=False).reshape(maps.shape)
    maps = _corrupt(maps * 10.0 ** draw(st.sampled_from(SCALES[dtype])), draw(st.sampled_from(CORRUPTIONS)), g).to(dtype)
    threshold = draw(st.sampled_from((0.0, 0.25, -0.25)))
    return maps, threshold


@_settings(50)
@given(feature_maps(), st.sampled_from(("scipy", "torch")))
def test_betti_numbers_match_an_independent_reference_on_any_map(case, backend) -> None:
    maps, threshold = case
    counts = betti_numbers(maps, threshold, backend=backend)
    height, width = maps.shape[-2:]
    assert counts.dtype == torch.int64 and counts.shape == (*maps.shape[:-2], 2)
    masks = (maps > threshold).reshape(-1, height, width).numpy()  # NaN is never selected
    for mask, (b0, b1) in zip(masks, counts.reshape(-1, 2).tolist()):
        assert (b0, b1) == _reference_betti(mask)
        assert 0 <= b0 <= math.ceil(height / 2) * math.ceil(width / 2)  # 8-connected pieces need a gap
        assert 0 <= b1 <= max(0, height - 2) * max(0, width - 2)  # a hole holds an interior pixel
    fraction = active_fraction(maps, threshold)
    assert fraction.dtype == torch.float64 and fraction.shape == maps.shape[:-2]
    expected = masks.reshape(*maps.shape[:-2], -1).mean(-1) if maps.ndim > 2 else masks.mean()
    np.testing.assert_allclose(fraction.numpy(), expected, rtol=0, atol=1e-15)
    assert ((fraction >= 0) & (fraction <= 1)).all()


# --- power-law fits (SPEC §4) ----------------------------------------------------------------------

_SPECIALS = (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-300, 1e300)


@st.composite
def series(draw):
    length = draw(st.integers(0, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(("epochs", "duplicates", "all_equal", "log_spaced", "random")))
    if kind == "epochs":
        t = np.arange(length, dtype=np.float64)
    elif kind == "duplicates":
        t = np.sort(rng.integers(0, 4, length)).astype(np.float64)
    elif kind == "all_equal":
        t = np.full(length, 3.0)
    elif kind == "log_spaced":
        t = np.logspace(-5, 8, length)
    else:
        t = rng.uniform(-2, 50, length)
    shape = draw(st.sampled_from(("power", "noisy_power", "constant", "saturating", "random", "huge", "tiny")))
    with np.errstate(all="ignore"):
        base = np.where(t > 0, t, 1.0)
        y = {
            "power": 2.5 * base**-0.7,
            "noisy_power": 2.5 * base**0.4 * np.exp(0.1 * rng.standard_normal(length)),
            "constant": np.full(length, 0.9),
            "saturating": 1.0 + 4.0 * base**-0.5,
            "random": rng.standard_normal(length),
            "huge": 1e300 * rng.uniform(0.5, 1.5, length),
            "tiny": 1e-300 * rng.uniform(0.5, 1.5, length),
        }[shape]
    if length and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            target = draw(st.sampled_from((t, y)))
            target[rng.integers(0, length)] = draw(st.sampled_from(_SPECIALS))
    window = draw(st.sampled_from((None, (None, None), (1.0, None), (None, 10.0), (2.0, 2.0))))
    return t, y, window


@_settings(50)
@given(series(), st.booleans(), st.sampled_from((None, "auto")))
def test_power_law_fit_never_raises_on_data_and_is_consistent(case, offset, t_min) -> None:
    t, y, window = case
    with np.errstate(all="ignore"):  # numpy warnings are fine; exceptions are not
        fit = fit_power_law(t, y, window=window, offset=offset, t_min=t_min)
    assert type(fit.conclusive) is bool
    if fit.conclusive:  # the documented rule, checked from the reported fields
        assert fit.n_points >= (5 if not offset else 6) and fit.r2 >= 0.5
        assert fit.ci_low > 0 or fit.ci_high < 0
        assert offset or fit.boot_low > 0 or fit.boot_high < 0
    if t_min == "auto":
        if not math.isnan(fit.t_min):  # "auto" only drops points from the start: refit them as a window
            with np.errstate(all="ignore"):
                assert fit == fit_power_law(t, y, window=(max(fit.t_min, (window or (None,))[0] or -math.inf), (window or (None, None))[1]), offset=offset)
        return
    low, high = (-math.inf, math.inf) if window is None else (window[0] or -math.inf, window[1] or math.inf)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(t) & np.isfinite(y) & (t > 0) & (y > 0) & (t >= low) & (t <= high)
    assert fit.n_points == int(usable.sum())
    values = (fit.exponent, fit.prefactor, fit.r2, fit.stderr, fit.ci_low, fit.ci_high)
    if fit.n_points < 4 or len(np.unique(t[usable])) < 2:
        assert all(math.isnan(v) for v in values)
        return
    if not offset:
        # The log-log fit is ordinary least squares: always defined with two distinct times.
        slope, intercept = np.polyfit(np.log(t[usable]), np.log(y[usable]), 1)
        assert fit.exponent == pytest.approx(slope, rel=1e-6, abs=1e-9)
        assert fit.prefactor == pytest.approx(math.exp(intercept), rel=1e-6) or not math.isfinite(math.exp(intercept))
        assert fit.stderr >= 0 and fit.ci_low <= fit.exponent <= fit.ci_high
        assert math.isnan(fit.r2) or -1e-9 <= fit.r2 <= 1.0 + 1e-9
        return
    if math.isfinite(fit.exponent):  # the offset model may fail (NaN), but never inconsistently
        assert all(math.isfinite(v) for v in values), values
        assert fit.stderr >= 0 and fit.ci_low <= fit.exponent <= fit.ci_high
        assert math.isnan(fit.r2) or fit.r2 <= 1.0 + 1e-9
    else:
        assert all(math.isnan(v) for v in values)


@_settings(30)
@given(
    st.floats(1e-3, 1e3),
    st.one_of(st.just(0.0), st.floats(1e-3, 3.0), st.floats(-3.0, -1e-3)),
    st.integers(4, 40),
    st.sampled_from((0.0, 0.5, 1.0)),
)
def test_power_law_fit_recovers_exact_power_laws_with_garbage_mixed_in(prefactor, exponent, length, start) -> None:
    t = start + np.arange(length, dtype=np.float64)
    y = prefactor * np.where(t > 0, t, 1.0) ** exponent
    garbage_t = np.array([0.0, -1.0, math.nan, math.inf, 5.0])
    garbage_y = np.array([1.0, 1.0, 1.0, 1.0, -2.0])  # every one of these points is unusable
    fit = fit_power_law(np.concatenate([t, garbage_t]), np.concatenate([y, garbage_y]))
    usable = int((t > 0).sum())
    assert fit.n_points == usable
    if usable < 4:
        assert math.isnan(fit.exponent)
        return
    assert fit.exponent == pytest.approx(exponent, abs=1e-9)
    assert fit.prefactor == pytest.approx(prefactor, rel=1e-9)
    if exponent == 0:  # a constant series: the fitted values do not vary, R² is undefined
        assert math.isnan(fit.r2)
    else:
        assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_power_law_fit_of_equal_times_or_constant_values_is_undefined() -> None:
    """Regression: the mean of ten equal logs is off by an ulp, so all-equal times got a slope
    (-0.125 with a 95% interval excluding 0) instead of NaN, and a constant y an R² of 0."""
    same_times = fit_power_law(np.full(10, 3.0), np.full(10, 1.15865764))
    assert math.isnan(same_times.exponent) and math.isnan(same_times.ci_low) and same_times.n_points == 10
    constant = fit_power_law(np.arange(1.0, 11.0), np.full(10, 1.15865764))
    assert constant.exponent == 0.0 and math.isnan(constant.r2)
    assert constant.prefactor == pytest.approx(1.15865764, rel=1e-15)


# --- misuse still raises (the caller's mistake, named) ---------------------------------------------

@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: effective_dimension(torch.zeros(2, 3, 4, 5)), "shape"),
        (lambda: participation_ratio(torch.zeros(5)), "shape"),
        (lambda: activation_pattern_entropy(torch.zeros(1, 2, 3, 4)), "shape"),
        (lambda: affinity_score(torch.zeros(5, 3), torch.zeros(5, 4)), "same shape"),
        (lambda: affinity_score(torch.zeros(5, 3), torch.zeros(5, 3), ot="emd"), "`ot`"),
        (lambda: affinity_score(torch.zeros(5, 3), torch.zeros(5, 3), shrinkage="oas"), "`shrinkage`"),
        (lambda: entropic_complexity(torch.zeros(5, 3), torch.zeros(4, 3)), "same b and n"),
        (lambda: entropic_complexity(torch.zeros(5, 3), torch.zeros(5, 3), rank=0), "`rank`"),
        (lambda: betti_numbers(torch.zeros(5)), "shape"),
        (lambda: fit_power_law([1, 2, 3], [1, 2]), "same length"),
        (lambda: fit_power_law([1, 2, 3, 4], [1, 2, 3, 4], window=(5, 1)), "`window`"),
    ],
)
def test_misuse_raises_value_error_naming_the_problem(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()
