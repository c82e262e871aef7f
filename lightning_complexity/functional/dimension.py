"""Effective dimension and participation ratio of a representation (SPEC §2).

Janik & Witaszczyk (arXiv 2006.04791): with λ the eigenvalues of the covariance of the centred
samples and ``p = λ / Σλ``, the effective dimension is ``exp(−Σ p ln(p + 1e-11))``; the
participation ratio is ``(Σλ)² / Σλ²``. Both are invariant to the covariance's normalisation, so
they can be computed from streaming sums ``(n, Σx, Σxxᵀ)`` that add across batches and ranks.

Example:
    >>> import torch
    >>> x = torch.randn(2048, 8, dtype=torch.float64) @ torch.diag(torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64))
    >>> round(float(effective_dimension(x)), 1), round(float(participation_ratio(x)), 1)
    (4.0, 4.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_complexity.functional.linalg import as_batched, covariance, covariance_from_moments, symmetric_eigvalsh

__all__ = [
    "covariance_spectrum",
    "effective_dimension",
    "effective_dimension_from_spectrum",
    "participation_ratio",
    "participation_ratio_from_spectrum",
    "spectrum_from_moments",
]

_LOG_EPS = 1e-11  # inside the log, as in the authors' code


def covariance_spectrum(x: Tensor) -> Tensor:
    """Eigenvalues ``(b, d)`` (float64, ≥ 0) of the sample covariances of ``(n, d)``/``(b, n, d)`` samples.

    Sites with NaN/Inf samples or fewer than two rows get a NaN spectrum (``eigh`` of a NaN
    matrix raises on some backends, so those sites are zeroed before the stacked ``eigh``).
    """
    batched, _ = as_batched(x)
    finite = torch.isfinite(batched).flatten(1).all(dim=1) & (batched.shape[-2] >= 2)
    if batched.shape[-2] < 2:
        return torch.full(batched.shape[:1] + batched.shape[-1:], torch.nan, dtype=batched.dtype, device=batched.device)
    clean = torch.where(finite[:, None, None], batched, 0.0)
    # Shift by the first sample (the covariance does not change): a constant column then centres
    # to exact zeros. Centring by the mean alone leaves ±1 ulp when the mean of n equal values is
    # inexact (n = 9 copies of 0.1), so constant data got D_eff = 1 instead of NaN.
    cov = covariance(clean - clean[:, :1])
    # Finite samples beyond ~1e154 overflow the covariance, and ``eigh`` of an Inf matrix raises
    # (LinAlgError): such sites get a NaN spectrum like non-finite samples do.
    finite &= torch.isfinite(cov).flatten(1).all(dim=1)
    cov = torch.where(finite[:, None, None], cov, 0.0)
    return torch.where(finite[:, None], symmetric_eigvalsh(cov), torch.nan)


def _normalise_scale(batched: Tensor) -> Tensor:
    """Each site of ``(b, n, d)`` times the power of two that brings its largest |x| into [0.5, 1).

    The effective dimension and participation ratio do not depend on the data's scale, and a
    power-of-two factor is exact in floating point, so this changes no value at ordinary scales
    while keeping float64 data near 1e±300 clear of overflow (→ Inf) and underflow (→ 0) in the
    covariance and in the squared eigenvalues.
    """
    if batched.numel() == 0:
        return batched
    peak = batched.abs().flatten(1).amax(dim=1)
    exponent = torch.where(torch.isfinite(peak) & (peak > 0), torch.frexp(peak).exponent, 0)
    # Two factors: 2**-exponent alone overflows for subnormal peaks (exponent < -1022).
    half = torch.div(-exponent, 2, rounding_mode="floor")
    two = torch.tensor(2.0, dtype=batched.dtype, device=batched.device)
    scale_a, scale_b = two ** half.to(batched.dtype), two ** (-exponent - half).to(batched.dtype)
    return batched * scale_a[:, None, None] * scale_b[:, None, None]


def spectrum_from_moments(n: Tensor, total: Tensor, outer: Tensor) -> Tensor:
    """Eigenvalues of the covariance built from streaming sums (see :func:`linalg.moments`)."""
    return symmetric_eigvalsh(covariance_from_moments(n.to(torch.float64), total.to(torch.float64), outer.to(torch.float64)))


def effective_dimension_from_spectrum(eigenvalues: Tensor) -> Tensor:
    """``exp`` of the entropy of the normalised spectrum; NaN where the spectrum is all zero or not finite."""
    total = eigenvalues.sum(dim=-1, keepdim=True)
    p = eigenvalues / total
    value = torch.exp(-(p * torch.log(p + _LOG_EPS)).sum(dim=-1))
    return torch.where(total.squeeze(-1) > 0, value, torch.nan)


def participation_ratio_from_spectrum(eigenvalues: Tensor) -> Tensor:
    """``(Σλ)² / Σλ²``; NaN where the spectrum is all zero or not finite."""
    if eigenvalues.shape[-1] == 0:
        return torch.full(eigenvalues.shape[:-1], torch.nan, dtype=eigenvalues.dtype, device=eigenvalues.device)
    # Relative to the largest eigenvalue (the ratio is scale-free): λ² overflows above ~1e154 and
    # underflows to 0 below ~1e-162, which gave NaN for perfectly good spectra.
    peak = eigenvalues.amax(dim=-1, keepdim=True)
    relative = eigenvalues / torch.where(peak > 0, peak, 1.0)
    total = relative.sum(dim=-1)
    square = (relative**2).sum(dim=-1)
    return torch.where(square > 0, total**2 / square, torch.nan)


def _unbatch(value: Tensor, added: bool) -> Tensor:
    return value.squeeze(0) if added else value


def effective_dimension(x: Tensor) -> Tensor:
    """Effective dimension of samples ``(n, d)`` → scalar, or ``(b, n, d)`` → ``(b,)`` (float64).

    Samples with NaN/Inf, fewer than two rows, or zero variance give NaN.

    Example:
        >>> effective_dimension(torch.eye(3, dtype=torch.float64).repeat(10, 1)).round(decimals=4)
        tensor(2., dtype=torch.float64)
    """
    batched, added = as_batched(x)
    return _unbatch(effective_dimension_from_spectrum(covariance_spectrum(_normalise_scale(batched))), added)


def participation_ratio(x: Tensor) -> Tensor:
    """Participation ratio ``(Σλ)²/Σλ²`` of samples ``(n, d)`` → scalar, ``(b, n, d)`` → ``(b,)``.

    Example:
        >>> participation_ratio(torch.eye(3, dtype=torch.float64).repeat(10, 1)).round(decimals=4)
        tensor(2., dtype=torch.float64)
    """
    batched, added = as_batched(x)
    return _unbatch(participation_ratio_from_spectrum(covariance_spectrum(_normalise_scale(batched))), added)
