"""Tests of lightning_complexity.powerlaw.fit_power_law (SPEC §4)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats
import torch

from lightning_complexity.powerlaw import PowerLawFit, fit_power_law

FIELDS = ("exponent", "prefactor", "r2", "stderr", "ci_low", "ci_high", "n_points")


@pytest.mark.parametrize(("prefactor", "exponent"), [(3.0, -0.5), (0.02, 1.7), (150.0, -2.3)])
def test_exact_power_law_is_recovered(prefactor: float, exponent: float) -> None:
    t = np.arange(1, 41, dtype=float)
    fit = fit_power_law(t, prefactor * t**exponent)
    assert fit.exponent == pytest.approx(exponent, abs=1e-12)
    assert fit.prefactor == pytest.approx(prefactor, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.stderr < 1e-12
    assert fit.ci_low <= exponent + 1e-12 and fit.ci_high >= exponent - 1e-12
    assert fit.n_points == 40
    assert fit.offset == 0.0 and fit.model == "power_law"


def test_matches_scipy_linregress_on_noisy_data() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(1, 31, dtype=float)
    y = 3.0 * t**-0.5 * np.exp(0.2 * rng.standard_normal(t.size))
    fit = fit_power_law(t, y)
    reference = scipy.stats.linregress(np.log(t), np.log(y))
    quantile = scipy.stats.t.ppf(0.975, t.size - 2)
    assert fit.exponent == pytest.approx(reference.slope, rel=1e-12)
    assert fit.prefactor == pytest.approx(math.exp(reference.intercept), rel=1e-12)
    assert fit.r2 == pytest.approx(reference.rvalue**2, rel=1e-12)
    assert fit.stderr == pytest.approx(reference.stderr, rel=1e-12)
    assert fit.ci_low == pytest.approx(reference.slope - quantile * reference.stderr, rel=1e-12)
    assert fit.ci_high == pytest.approx(reference.slope + quantile * reference.stderr, rel=1e-12)


def test_interval_covers_true_exponent_at_nominal_rate() -> None:
    """Noisy y = 3 t^-0.5: the 95% interval holds -0.5 in about 95% of 200 independent series."""
    t = np.arange(1, 21, dtype=float)
    seeds = 200
    covered = covered_reference = 0
    quantile = scipy.stats.t.ppf(0.975, t.size - 2)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        y = 3.0 * t**-0.5 * np.exp(0.3 * rng.standard_normal(t.size))
        fit = fit_power_law(t, y)
        covered += fit.ci_low <= -0.5 <= fit.ci_high
        reference = scipy.stats.linregress(np.log(t), np.log(y))
        covered_reference += abs(reference.slope + 0.5) <= quantile * reference.stderr
    # Binomial(200, 0.95) has sd 3.1 successes; 4 sd around 190 is [178, 200].
    assert covered == covered_reference
    assert 178 <= covered <= 200


def test_fewer_than_four_points_give_nan() -> None:
    fit = fit_power_law([1.0, 2.0, 3.0], [1.0, 0.5, 0.3])
    assert fit.n_points == 3
    assert all(math.isnan(getattr(fit, name)) for name in FIELDS if name != "n_points")
    assert fit_power_law([], []).n_points == 0


def test_four_points_are_enough() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0])
    fit = fit_power_law(t, 2.0 * t**1.5)
    assert fit.n_points == 4
    assert fit.exponent == pytest.approx(1.5)
    assert math.isfinite(fit.ci_low) and math.isfinite(fit.ci_high)


def test_non_positive_and_non_finite_points_are_dropped() -> None:
    rng = np.random.default_rng(3)
    t_clean = np.arange(1, 21, dtype=float)
    y_clean = 5.0 * t_clean**-1.2 * np.exp(0.1 * rng.standard_normal(t_clean.size))
    t = np.concatenate([t_clean, [0.0, -1.0, 5.0, 6.0, 7.0, np.nan, 8.0]])
    y = np.concatenate([y_clean, [1.0, 1.0, 0.0, -2.0, np.inf, 1.0, np.nan]])
    fit = fit_power_law(t, y)
    clean = fit_power_law(t_clean, y_clean)
    assert fit.n_points == 20
    assert fit == clean


def test_too_few_usable_points_after_dropping() -> None:
    fit = fit_power_law([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 1.0, -1.0, 2.0, 3.0])
    assert fit.n_points == 3
    assert math.isnan(fit.exponent)


def test_window_selects_the_range() -> None:
    """A broken power law: slope -0.5 up to t = 10, then -2; each window sees one regime."""
    t = np.arange(1, 101, dtype=float)
    y = np.where(t <= 10, t**-0.5, 10**-0.5 * (t / 10) ** -2.0)
    early = fit_power_law(t, y, window=(1, 10))
    late = fit_power_law(t, y, window=(10, None))
    assert early.n_points == 10 and early.exponent == pytest.approx(-0.5)
    assert late.n_points == 91 and late.exponent == pytest.approx(-2.0)
    assert fit_power_law(t, y, window=(None, 10)) == early
    assert fit_power_law(t, y, window=(None, None)) == fit_power_law(t, y)
    whole = fit_power_law(t, y)
    assert whole.n_points == 100 and -2.0 < whole.exponent < -0.5 and whole.r2 < 1.0


def test_accepts_lists_numpy_and_torch() -> None:
    t = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0]
    y = [4.0, 2.9, 2.2, 1.9, 1.4, 1.1]
    expected = fit_power_law(np.array(t), np.array(y))
    assert fit_power_law(t, y) == expected
    assert fit_power_law(torch.tensor(t, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)).exponent == (
        pytest.approx(expected.exponent, rel=1e-6)
    )
    assert fit_power_law(torch.tensor(t, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)) == expected
    assert fit_power_law(range(1, 7), y).n_points == 6


def test_all_times_equal_gives_nan_not_an_error() -> None:
    fit = fit_power_law([2.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert fit.n_points == 5 and math.isnan(fit.exponent)


def test_constant_series_has_zero_exponent_and_undefined_r2() -> None:
    fit = fit_power_law([1.0, 2.0, 3.0, 4.0, 5.0], [2.0] * 5)
    assert fit.exponent == pytest.approx(0.0, abs=1e-12)
    assert fit.prefactor == pytest.approx(2.0)
    assert math.isnan(fit.r2)  # nothing to explain


@pytest.mark.parametrize(
    ("c", "a", "b"),
    [(2.0, 5.0, -0.7), (10.0, -8.0, -0.5), (0.5, 3.0, -1.5)],
    ids=["saturating-decay", "saturating-growth", "fast-decay"],
)
def test_offset_model_recovers_exact_saturating_curve(c: float, a: float, b: float) -> None:
    t = np.arange(1, 201, dtype=float)
    fit = fit_power_law(t, c + a * t**b, offset=True)
    assert fit.model == "offset_power_law"
    assert fit.offset == pytest.approx(c, rel=1e-6)
    assert fit.prefactor == pytest.approx(a, rel=1e-6)
    assert fit.exponent == pytest.approx(b, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-10)
    assert fit.n_points == 200


def test_offset_model_on_noisy_curve_with_large_times() -> None:
    rng = np.random.default_rng(11)
    t = np.linspace(100, 20_000, 60)
    y = 0.8 + 40.0 * t**-0.6 + 0.005 * rng.standard_normal(t.size)
    fit = fit_power_law(t, y, offset=True)
    assert fit.offset == pytest.approx(0.8, abs=0.05)
    assert fit.ci_low <= -0.6 <= fit.ci_high
    assert fit.r2 > 0.99
    # The plain power law cannot see the floor and reports a much flatter curve.
    assert fit_power_law(t, y).exponent > -0.5


def test_offset_model_failures_return_nan_not_exceptions() -> None:
    fit = fit_power_law([1.0, 2.0, 3.0], [3.0, 2.0, 1.5], offset=True)
    assert fit.n_points == 3 and math.isnan(fit.exponent) and math.isnan(fit.offset)
    fit = fit_power_law([2.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], offset=True)
    assert fit.n_points == 6 and math.isnan(fit.exponent)  # all times equal: unidentifiable
    fit = fit_power_law(np.arange(1.0, 9.0), [2.0] * 8, offset=True)
    assert fit.n_points == 8 and math.isnan(fit.exponent)  # constant: b is undefined
    noisy = fit_power_law(np.arange(1.0, 9.0), np.random.default_rng(0).uniform(1, 2, 8), offset=True)
    assert noisy.n_points == 8


def test_predict_and_to_dict() -> None:
    fit = fit_power_law([1.0, 2.0, 4.0, 8.0], [8.0, 4.0, 2.0, 1.0])
    np.testing.assert_allclose(fit.predict([1.0, 16.0]), [8.0, 0.5])
    exported = fit.to_dict()
    assert set(exported) == set(FIELDS) | {"offset", "model"}
    assert all(type(value) in (float, int, str) for value in exported.values())  # plain, exportable
    assert PowerLawFit(**exported) == fit
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.exponent = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"t": [1.0, 2.0], "y": [1.0]}, "`t` and `y`"),
        ({"t": [[1.0, 2.0]], "y": [[1.0, 2.0]]}, "`t`"),
        ({"t": ["a", "b"], "y": [1.0, 2.0]}, "`t`"),
        ({"t": [1.0, 2.0], "y": [1.0, 2.0], "window": (5, 1)}, "`window`"),
        ({"t": [1.0, 2.0], "y": [1.0, 2.0], "window": 5}, "`window`"),
        ({"t": [1.0, 2.0], "y": [1.0, 2.0], "window": (1, "x")}, "`window`"),
        ({"t": [1.0, 2.0], "y": [1.0, 2.0], "offset": "yes"}, "`offset`"),
    ],
)
def test_misuse_raises_value_error_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fit_power_law(**kwargs)
