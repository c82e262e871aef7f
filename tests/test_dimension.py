"""Effective dimension and participation ratio (SPEC §2) against the shared fixtures and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_complexity.functional import effective_dimension, participation_ratio
from lightning_complexity.functional.dimension import spectrum_from_moments
from lightning_complexity.functional.linalg import moments
from lightning_complexity.site_metrics import EffectiveDimension, SiteGroup


def _load(fixtures_dir, case):
    data = np.load(fixtures_dir / case["file"])
    return torch.from_numpy(data["x"]), float(data["expected_effective_dim"]), float(data["expected_participation_ratio"])


def test_every_fixture_case_within_1e6_relative(fixtures_dir, fixture_cases) -> None:
    cases = fixture_cases["effective_dim"]["cases"]
    assert len(cases) >= 5
    for case in cases:
        x, expected_dim, expected_pr = _load(fixtures_dir, case)
        for dtype in (torch.float64, torch.float32):  # fixtures are exact in float32
            got_dim = float(effective_dimension(x.to(dtype)))
            got_pr = float(participation_ratio(x.to(dtype)))
            assert got_dim == pytest.approx(expected_dim, rel=1e-6), case["name"]
            assert got_pr == pytest.approx(expected_pr, rel=1e-6), case["name"]
        assert case["expected_effective_dim"] == pytest.approx(expected_dim, rel=1e-12)


def test_batched_equals_per_site_and_moments_path(fixtures_dir, fixture_cases) -> None:
    x, _, _ = _load(fixtures_dir, fixture_cases["effective_dim"]["cases"][0])
    stack = torch.stack([x, 2.0 * x + 1.0, x.flip(1)])
    batched = effective_dimension(stack)
    singles = torch.stack([effective_dimension(s) for s in stack])
    torch.testing.assert_close(batched, singles, rtol=1e-10, atol=0)
    # Scaling and shifting do not change the dimension; permuting features neither.
    torch.testing.assert_close(batched, batched[:1].expand(3), rtol=1e-9, atol=0)
    # Streaming sums over two halves give the same spectrum as the samples.
    halves = [moments(stack[:, : len(x) // 2]), moments(stack[:, len(x) // 2 :])]
    summed = [a + b for a, b in zip(*halves)]
    from lightning_complexity.functional.dimension import effective_dimension_from_spectrum

    torch.testing.assert_close(effective_dimension_from_spectrum(spectrum_from_moments(*summed)), batched, rtol=1e-8, atol=0)


def test_analytic_cases() -> None:
    g = torch.Generator().manual_seed(0)
    # Rank-k data has dimension k (up to the 1e-11 in the log).
    basis = torch.randn(5, 40, generator=g, dtype=torch.float64)
    coefficients = torch.randn(3000, 5, generator=g, dtype=torch.float64)
    coefficients = (coefficients - coefficients.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(coefficients.T)).T)
    orthonormal = torch.linalg.qr(basis.T).Q.T
    rank5 = coefficients @ orthonormal
    assert float(effective_dimension(rank5)) == pytest.approx(5.0, rel=1e-8)
    assert float(participation_ratio(rank5)) == pytest.approx(5.0, rel=1e-8)
    # Isotropic Gaussian, n = 4096, d = 256: SPEC §2 quotes 248.1 (Marchenko–Pastur spread lowers it from 256).
    iso = torch.randn(4096, 256, generator=g, dtype=torch.float64)
    assert float(effective_dimension(iso)) == pytest.approx(248.1, abs=0.5)


def test_degenerate_inputs_give_nan_not_errors() -> None:
    assert torch.isnan(effective_dimension(torch.zeros(10, 4)))
    assert torch.isnan(participation_ratio(torch.ones(1, 4)))
    x = torch.randn(2, 50, 4, dtype=torch.float64)
    x[1, 3, 2] = float("nan")
    result = effective_dimension(x)
    assert torch.isfinite(result[0]) and torch.isnan(result[1])


def test_site_metric_reports_ratio_to_width() -> None:
    x = torch.randn(2, 500, 8, dtype=torch.float64)
    values = EffectiveDimension().compute(SiteGroup(["a", "b"], outputs=x))
    torch.testing.assert_close(values["effective_dimension_ratio"], values["effective_dimension"] / 8)
    torch.testing.assert_close(values["participation_ratio"], participation_ratio(x))


def test_torchmetrics_classes_accumulate_exactly_like_the_functional(fixtures_dir, fixture_cases) -> None:
    from lightning_complexity.metrics.dimension import EffectiveDimension as EffectiveDimensionMetric
    from lightning_complexity.metrics.dimension import ParticipationRatio

    x, expected_dim, expected_pr = _load(fixtures_dir, fixture_cases["effective_dim"]["cases"][1])
    dimension, ratio = EffectiveDimensionMetric(), ParticipationRatio()
    for chunk in x.split(333):  # uneven batches
        dimension.update(chunk.float())
        ratio.update(chunk)
    assert float(dimension.compute()) == pytest.approx(expected_dim, rel=1e-6)
    assert float(ratio.compute()) == pytest.approx(expected_pr, rel=1e-6)
    # Merging two metrics' states (what DDP's sum reduction does) equals one metric over all data.
    first, second = EffectiveDimensionMetric(), EffectiveDimensionMetric()
    first.update(x[:700])
    second.update(x[700:])
    first.merge_state(second)
    assert float(first.compute()) == pytest.approx(expected_dim, rel=1e-6)
    with pytest.raises(ValueError, match="width changed from"):
        first.update(torch.zeros(3, 5))
