"""Affinity score ρ_aff of an activation and the non-linearity signature (Bouniot et al., 2310.11439).

ρ_aff measures how far a layer's output ``Y`` is from the best *affine* image of its input ``X``:
the Gaussian optimal-transport map ``T(x) = A (x − x̄) + ȳ`` is fitted from the two covariances,
and the exact W2 distance between the transported cloud ``T(X)`` and ``Y`` is compared with its
upper bound ``2 tr(Sy)`` (SPEC §1)::

    Sx = cov(X, ddof=1) + ε_x·I           Sy = cov(Y, ddof=1) + ε_y·I      ε_· = 1e-6·tr(cov)/d
    A  = Sy^½ (Sy^½ Sx Sy^½)^-½ Sy^½      (constant output, tr Sy ≤ 1e-12·tr Sx: A = 0, ρ = 1)
    W2² = (1/n) min_σ Σ_i ‖A(x_i − x̄) + ȳ − y_σ(i)‖²
    ρ  = 1 − sqrt(W2² / (2 tr Sy))         (no clipping)

The jitter is *relative* (SPEC §1, revised), so ρ(c·X, c·Y) = ρ(X, Y) for every c > 0: a ReLU
scores the same on activations of any magnitude. ``jitter="absolute"`` is the authors' code
(``ε = 1e-6``, ``A = 0`` when ``tr Sy ≤ 2e-6·d``), whose score depends on the activations' scale
(ReLU on N(0, σ²I): 0.625 at σ = 1, 0.878 at σ = 3e-4); the reference fixtures follow it.

An affine map with a PSD linear part scores 1; ReLU on a centred Gaussian scores ≈ 0.6211.
Samples are rows: ``x, y`` of shape ``(n, d)`` give a scalar, ``(b, n, d)`` give ``(b,)`` — one
score per site, with the linear algebra stacked across sites (float64 Cholesky and symmetric
``eigh``, never ``sqrtm``/``inv``, which fail on the near-singular covariances of real layers).
Statistics run in float64 whatever the activations' dtype.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(512, 8, generator=g)
    >>> round(affinity_score(x, 2.0 * x + 1.0).item(), 5)
    1.0
    >>> 0.55 < affinity_score(x, torch.relu(x)).item() < 0.7
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor

from lightning_complexity.functional.linalg import ledoit_wolf_shrinkage_from_sums
from lightning_complexity.functional.ot import SinkhornResult, exact_ot_cost, paired_cost, sinkhorn_ot

__all__ = [
    "COVARIANCE_JITTER",
    "JITTER_OPTIONS",
    "OT_OPTIONS",
    "SHRINKAGE_OPTIONS",
    "affinity_score",
    "affinity_score_from_moments",
    "gaussian_transport_map",
    "paired_moments",
    "signature_summary",
]

SHRINKAGE_OPTIONS = ("none", "ledoit_wolf", "auto")
OT_OPTIONS = ("exact", "sinkhorn", "paired")
JITTER_OPTIONS = ("relative", "absolute")
# Relative (default): ε = 1e-6·tr(cov)/d per covariance. Absolute (the authors' code): ε = 1e-6.
COVARIANCE_JITTER = 1e-6
# Relative rule: an output with tr Sy ≤ 1e-12·tr Sx (before jitter) is a constant map (A = 0, ρ = 1).
_CONSTANT_OUTPUT_RATIO = 1e-12
# Absolute rule (authors): tr Sy ≤ 2e-6·d, jitter included, means the output is constant.
_CONSTANT_TRACE_PER_FEATURE = 2e-6
_CPU_GROUP_BYTES = 16 * 2**20  # float64 (sites, n, d) sample arrays per group on the CPU


def _check_option(name: str, value: object, accepted: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, accepted))}, got {value!r}")
    return value


def _uses_ledoit_wolf(shrinkage: str, n: int, d: int) -> bool:
    """Whether to shrink; ``"auto"`` does when the plain estimate's bias (∝ d/n) is visible."""
    return shrinkage == "ledoit_wolf" or (shrinkage == "auto" and n < 10 * d)


def _covariance_coefficients(
    n: int | Tensor,
    num_features: int,
    sum_squares: Tensor,
    sum_quartic: Tensor,
    gram_frobenius_sq: Tensor,
    ledoit_wolf: bool,
    jitter: str = "relative",
) -> tuple[Tensor, Tensor]:
    """``(α, β)`` with the jittered covariance ``S = α·xcᵀxc + β·I`` (per site).

    Before jitter, plain: ``α = 1/(n − 1)``, ``β = 0``; Ledoit–Wolf (sklearn's, 1/n-normalised):
    ``α = (1 − s)/n``, ``β = s·μ``. The jitter adds ``1e-6·tr(S)/d`` to ``β`` (relative) or
    ``1e-6`` (absolute). Ledoit–Wolf keeps the trace, so both give the same relative jitter.
    """
    n_t = torch.as_tensor(n, dtype=sum_squares.dtype, device=sum_squares.device)
    if ledoit_wolf:
        shrinkage, mu = ledoit_wolf_shrinkage_from_sums(n, num_features, sum_squares, sum_quartic, gram_frobenius_sq)
        alpha, beta = (1.0 - shrinkage) / n_t, shrinkage * mu
    else:
        alpha, beta = (1.0 / (n_t - 1.0)).expand_as(sum_squares), torch.zeros_like(sum_squares)
    if jitter == "absolute":
        return alpha, beta + COVARIANCE_JITTER
    trace_per_feature = (alpha * sum_squares) / num_features + beta
    return alpha, beta + COVARIANCE_JITTER * trace_per_feature


def _eigh(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batched float64 ``eigh`` that never raises: ``(values, vectors, converged)``.

    LAPACK can fail to converge on pathological input; the stack is then redone site by site
    and a failed site gets identity factors and ``converged = False`` (its score becomes NaN).
    """
    converged = torch.ones(matrix.shape[:-2], dtype=torch.bool, device=matrix.device)
    try:
        values, vectors = torch.linalg.eigh(matrix)
        return values, vectors, converged
    except torch.linalg.LinAlgError:
        pass
    flat = matrix.reshape(-1, *matrix.shape[-2:])
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    values_list, vectors_list, ok_list = [], [], []
    for site in flat:
        try:
            site_values, site_vectors = torch.linalg.eigh(site)
            ok_list.append(True)
        except torch.linalg.LinAlgError:
            site_values, site_vectors = torch.ones_like(site[0]), eye
            ok_list.append(False)
        values_list.append(site_values)
        vectors_list.append(site_vectors)
    values = torch.stack(values_list).reshape(matrix.shape[:-1])
    vectors = torch.stack(vectors_list).reshape(matrix.shape)
    converged = torch.tensor(ok_list, device=matrix.device).reshape(matrix.shape[:-2])
    return values, vectors, converged


def _factor_of(cov_y: Tensor) -> tuple[Tensor, Tensor]:
    """A factor ``B`` with ``B Bᵀ = Sy`` per site: Cholesky, or the symmetric root where it fails.

    Cholesky costs a fraction of an ``eigh``; the jittered covariances are positive definite,
    so it only fails when ``λmax / 1e-6`` approaches 1e16. Those sites (one sync to find them)
    get ``Sy^½`` from a float64 ``eigh``. Also returns the ``eigh`` converged mask.
    """
    factor, info = torch.linalg.cholesky_ex(cov_y)
    converged = torch.ones(cov_y.shape[:-2], dtype=torch.bool, device=cov_y.device)
    failed = (info != 0).nonzero().squeeze(-1)
    if failed.numel():
        values, vectors, converged_failed = _eigh(cov_y[failed])
        root = (vectors * values.clamp_min(0.0).sqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)
        factor = factor.clone()
        factor[failed] = 0.5 * (root + root.transpose(-1, -2))
        converged[failed] = converged_failed
    return factor, converged


def _transport_map(cov_x: Tensor, cov_y: Tensor) -> tuple[Tensor, Tensor]:
    """``A = Sy^½ (Sy^½ Sx Sy^½)^-½ Sy^½`` for stacked float64 covariances, and a converged mask.

    Computed as ``A = B (Bᵀ Sx B)^-½ Bᵀ`` for a factor ``B Bᵀ = Sy`` (Cholesky): the same matrix,
    since both are the unique symmetric positive definite solution of ``A Sx A = Sy``, with one
    ``eigh`` instead of two. The inverse root comes from a float64 symmetric ``eigh``;
    exactly-zero (clamped) eigenvalues get 0, a pseudo-inverse root, as ``pinv(hermitian)`` does.
    Checked against the two-``eigh`` form on every reference case (scores agree to 5e-12).
    """
    factor, converged = _factor_of(cov_y)
    middle = factor.transpose(-1, -2) @ cov_x @ factor
    values, vectors, converged_middle = _eigh(0.5 * (middle + middle.transpose(-1, -2)))
    values = values.clamp_min(0.0)
    inverse_fourth_root = torch.where(values > 0, values.clamp_min(torch.finfo(values.dtype).tiny) ** -0.25, 0.0)
    # (Bᵀ Sx B)^-½ = V diag(μ^-½) Vᵀ, so A = K Kᵀ with K = B V diag(μ^-¼): symmetric PSD by construction.
    half = factor @ (vectors * inverse_fourth_root.unsqueeze(-2))
    return half @ half.transpose(-1, -2), converged & converged_middle


def gaussian_transport_map(cov_x: Tensor, cov_y: Tensor) -> Tensor:
    """Linear part of the OT map between Gaussians, ``A = Sy^½ (Sy^½ Sx Sy^½)^-½ Sy^½``.

    Covariances ``(d, d)`` or ``(b, d, d)`` (symmetric PSD, e.g. already jittered) → ``A`` of the
    same shape, float64 on the input's device. Computed as ``B (Bᵀ Sx B)^-½ Bᵀ`` with ``B`` the
    Cholesky factor of ``Sy`` (the same matrix; one symmetric float64 ``eigh``, no ``sqrtm`` or
    ``inv``). ``A`` is symmetric PSD and maps ``N(0, Sx)`` onto ``N(0, Sy)``: ``A Sx A = Sy``. The
    covariances must be positive definite (jittered); no constant-output rule is applied here
    (that is :func:`affinity_score`'s job).

    Example:
        >>> sx = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> sy = torch.diag(torch.tensor([9.0, 1.0], dtype=torch.float64))
        >>> [round(v, 12) for v in gaussian_transport_map(sx, sy).diagonal().tolist()]
        [3.0, 0.5]
    """
    for name, cov in (("cov_x", cov_x), ("cov_y", cov_y)):
        if not isinstance(cov, Tensor) or cov.ndim not in (2, 3) or cov.shape[-1] != cov.shape[-2]:
            shape = tuple(cov.shape) if isinstance(cov, Tensor) else type(cov).__name__
            raise ValueError(f"`{name}` must be a square matrix (d, d) or a stack (b, d, d), got {shape}")
    if cov_x.shape != cov_y.shape:
        raise ValueError(
            f"`cov_x` and `cov_y` must have the same shape, got {tuple(cov_x.shape)} and {tuple(cov_y.shape)}"
        )
    unbatched = cov_x.ndim == 2
    cov_x, cov_y = (cov.to(torch.float64).reshape(-1, *cov.shape[-2:]) for cov in (cov_x, cov_y))
    transport, converged = _transport_map(cov_x, cov_y)
    transport = torch.where(converged[:, None, None], transport, float("nan"))
    return transport[0] if unbatched else transport


def _validated_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Check the activation input/output pair; return ``(b, n, d)`` views (dtype unchanged)."""
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"`{name}` must hold real numbers, got dtype {value.dtype}")
        if value.ndim not in (2, 3):
            raise ValueError(f"`{name}` must have shape (n, d) or (b, n, d), got {tuple(value.shape)}")
    if x.shape != y.shape:
        raise ValueError(
            "`x` and `y` must have the same shape (n, d) or (b, n, d) — one output sample per input "
            f"sample, same width — got x: {tuple(x.shape)} and y: {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"`x` and `y` must be on the same device, got {x.device} and {y.device}")
    unbatched = x.ndim == 2
    return (x.unsqueeze(0), y.unsqueeze(0), True) if unbatched else (x, y, False)


# Largest gap between ot="paired" and the exact score measured on the real-activation fixtures
# (tests/data/real_activations: digits CNN/MLP sites, trained and at initialisation, n = 256).
PAIRED_MEASURED_ERROR = 0.234
_paired_warned = False


def _warn_paired_once() -> None:
    """One warning per process that ``ot="paired"`` is a lower bound, not the score."""
    global _paired_warned
    if _paired_warned:
        return
    _paired_warned = True
    warnings.warn(
        'ot="paired" scores the identity coupling: a lower bound on the affinity score, measured up to '
        f"{PAIRED_MEASURED_ERROR} below the exact score on trained conv layers (docs/metrics.md, "
        '"Approximate transport"); use ot="exact" (or "sinkhorn" on an accelerator) for the score itself',
        UserWarning,
        stacklevel=3,
    )


def _warn_if_uncertified(transported: SinkhornResult, trace_y: Tensor, valid: Tensor) -> None:
    """Warn when Sinkhorn's gap did not close on a site: its score is then only a lower bound.

    The exact ``W2²`` lies in ``[lower_bound, cost]``, so the exact score is at most
    ``(sqrt(cost) − sqrt(lower_bound)) / sqrt(2 tr Sy)`` above the reported one.
    """
    open_ = valid & ~transported.certified
    if not bool(open_.any()):  # one host sync per call
        return
    slack = (transported.cost.sqrt() - transported.lower_bound.clamp_min(0.0).sqrt()) / (2.0 * trace_y).sqrt()
    worst = float(torch.where(open_, slack, 0.0).max())
    warnings.warn(
        f'ot="sinkhorn" did not certify {int(open_.sum())} of {int(valid.sum())} sites within its iteration '
        f"budget: their scores are lower bounds, at most {worst:.2g} below the exact score; use ot=\"exact\"",
        UserWarning,
        stacklevel=4,
    )


def _finite_sites(*tensors: Tensor) -> Tensor:
    """Per-site mask: every entry of every ``(b, ...)`` tensor is finite."""
    mask = torch.ones(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    for tensor in tensors:
        mask &= torch.isfinite(tensor).reshape(tensor.shape[0], -1).all(dim=1)
    return mask


def affinity_score(
    x: Tensor, y: Tensor, *, shrinkage: str = "none", ot: str = "exact", jitter: str = "relative"
) -> Tensor:
    """Affinity score ρ_aff of activation input ``x`` and output ``y``, per site.

    Args:
        x: activation inputs, ``(n, d)`` or a stack of sites ``(b, n, d)``; any real dtype.
        y: activation outputs of the same shape (row ``i`` is the output for input row ``i``).
        shrinkage: ``"none"`` (unbiased covariances), ``"ledoit_wolf"`` (sklearn's Ledoit–Wolf
            estimate for both covariances) or ``"auto"`` (Ledoit–Wolf when ``n < 10·d``); the
            jitter is added in every case. The plain estimate is biased towards 1 by about
            ``0.09·d/n`` for ``n ≥ d`` (ReLU on an isotropic Gaussian); Ledoit–Wolf removes that on isotropic data but
            scores a layer of always-on and dead units (ρ = 1) 0.6–0.8, so ``"none"`` is the
            default (the bias curve in docs/metrics.md).
        ot: how W2² between the transported inputs and the outputs is computed: ``"exact"``
            (assignment problem, the definition), ``"sinkhorn"`` (annealed entropic OT on the
            device, stopped by a primal-dual gap certificate that keeps ρ within 1e-4 of exact;
            measured within 5.4e-6 on the real-activation fixtures; slower than ``"exact"`` on a
            CPU; a site left uncertified warns, see
            :func:`~lightning_complexity.functional.ot.sinkhorn_ot`) or ``"paired"`` (identity
            coupling: W2² ≥ exact, so a lower bound on ρ; exact only where the map already pairs
            each input with its own output's optimal match, measured up to 0.234 below exact on
            a trained conv layer; warns once per process).
        jitter: ``"relative"`` (default, SPEC §1): ``ε = 1e-6·tr(S)/d`` is added to each
            covariance and an output with ``tr Sy ≤ 1e-12·tr Sx`` is constant (``ρ = 1``), so the
            score does not depend on the activations' scale. ``"absolute"``: the authors' code,
            ``ε = 1e-6`` and ``A = 0`` when ``tr Sy ≤ 2e-6·d`` (the reference fixtures' values).

    Returns:
        float64 scores on the input's device: a scalar for ``(n, d)`` input, ``(b,)`` otherwise.
        A site with a non-finite value, or ``n < 2``, scores NaN (nothing is raised for data).

    Raises:
        ValueError: ``x`` and ``y`` differ in shape or device, have a rank other than 2 or 3, or an
            option is not one of the accepted strings.

    When ``d > 2n`` the computation runs, exactly, in the ≤ 2n-dimensional span of the centred
    samples: both covariances are block-diagonal there and on its complement (where they are a
    multiple of ``I``, so ``A`` is one too and never acts on the centred samples); only
    ``tr Sy`` needs the complement's ``(d − 2n)·β_y``.

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> x = torch.randn(4, 256, 16, generator=g)          # 4 sites
        >>> scores = affinity_score(x, torch.tanh(x))
        >>> scores.shape, scores.dtype
        (torch.Size([4]), torch.float64)
    """
    _check_option("shrinkage", shrinkage, SHRINKAGE_OPTIONS)
    _check_option("ot", ot, OT_OPTIONS)
    _check_option("jitter", jitter, JITTER_OPTIONS)
    xb, yb, unbatched = _validated_pair(x, y)
    sites, n, d = xb.shape
    if n < 2 or d < 1 or sites == 0:
        scores = torch.full((sites,), float("nan"), dtype=torch.float64, device=xb.device)
    elif xb.device.type == "cpu":
        # CPU: groups of sites whose float64 sample arrays stay small. One big stack is slower
        # here (measured 1.6 s vs 0.95 s for 16 sites, n = 2048, d = 256): its large temporaries
        # are fresh mmap'd pages on every call. Accelerators get the whole stack at once.
        group = max(1, _CPU_GROUP_BYTES // (8 * n * d))
        scores = torch.cat(
            [_batched_scores(xb[i : i + group], yb[i : i + group], shrinkage=shrinkage, ot=ot, jitter=jitter) for i in range(0, sites, group)]
        )
    else:
        scores = _batched_scores(xb, yb, shrinkage=shrinkage, ot=ot, jitter=jitter)
    return scores[0] if unbatched else scores


def _batched_scores(
    x: Tensor, y: Tensor, *, shrinkage: str, ot: str, jitter: str = "relative", low_rank: bool | None = None
) -> Tensor:
    """Scores of validated ``(b, n, d)`` stacks (any real dtype), ``n ≥ 2``.

    ``low_rank=None`` takes the joint-span path when ``d > 2n``; tests force either path.
    """
    sites, n, d = x.shape
    # Centre in float64 after subtracting the first sample: a constant column then centres to
    # exact zeros (its float64 mean of n equal values can be off by an ulp, which made a constant
    # output of magnitude 1e60 "vary" by 1e44), and a large common offset cancels first.
    x_shifted = x.to(torch.float64) - x[:, :1].to(torch.float64)
    y_shifted = y.to(torch.float64) - y[:, :1].to(torch.float64)
    mean_x = x_shifted.mean(dim=-2, keepdim=True)
    mean_y = y_shifted.mean(dim=-2, keepdim=True)
    x_centred = x_shifted - mean_x
    y_centred = y_shifted - mean_y
    # A NaN or ±inf anywhere in a site makes its column sums non-finite: no full isfinite pass.
    valid = _finite_sites(mean_x, mean_y)

    if low_rank if low_rank is not None else d > 2 * n:
        # Orthonormal basis Q (d × 2n) containing both centred clouds; norms and inner products
        # of the samples are unchanged in it, and the covariances split into Q-block ⊕ β·I.
        stacked = torch.cat([x_centred, y_centred], dim=-2).transpose(-1, -2)
        basis = torch.linalg.qr(stacked.masked_fill(~valid[:, None, None], 0.0)).Q
        x_centred = x_centred @ basis
        y_centred = y_centred @ basis
    width = x_centred.shape[-1]
    use_lw = _uses_ledoit_wolf(shrinkage, n, d)
    eye = torch.eye(width, dtype=torch.float64, device=x.device)

    covariances, traces = [], []
    for centred in (x_centred, y_centred):
        gram = centred.transpose(-1, -2) @ centred
        sum_squares = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        sum_quartic = centred.square().sum(-1).square().sum(-1) if use_lw else sum_squares
        gram_frobenius_sq = gram.square().sum(dim=(-2, -1)) if use_lw else sum_squares
        alpha, beta = _covariance_coefficients(n, d, sum_squares, sum_quartic, gram_frobenius_sq, use_lw, jitter)
        covariances.append(alpha[:, None, None] * gram + beta[:, None, None] * eye)
        traces.append(alpha * sum_squares + beta * d)  # trace of the full d × d covariance
    cov_x, cov_y = covariances
    trace_x, trace_y = traces

    valid &= _finite_sites(cov_x, cov_y)  # also catches finite samples whose squares overflow
    if not bool(valid.all()):  # rare: one host sync to neutralise broken sites before eigh and OT
        broken = ~valid
        cov_x, cov_y = cov_x.clone(), cov_y.clone()
        cov_x[broken], cov_y[broken] = eye, eye
        x_centred[broken], y_centred[broken] = 0.0, 0.0
        trace_x = torch.where(valid, trace_x, 1.0)
        trace_y = torch.where(valid, trace_y, 1.0)
    constant_output = _constant_output(trace_x, trace_y, d, jitter)
    # A constant output's Sy may be exactly 0 (no jitter to add): give the map an identity to
    # factor, its A is replaced by 0 below.
    cov_y = torch.where(constant_output[:, None, None], eye, cov_y)
    transport, converged = _transport_map(cov_x, cov_y)
    valid &= converged
    transport = torch.where(constant_output[:, None, None], 0.0, transport)

    moved = x_centred @ transport  # A symmetric: rows of z − ȳ = A(x_i − x̄)
    # Sites whose map failed (e.g. Sy^½ Sx Sy^½ overflowing near 1e77) must not reach the OT
    # solver with Inf/NaN points: scipy's assignment raises on them. Their score is NaN anyway.
    moved = torch.where(valid[:, None, None], moved, 0.0)
    y_centred = torch.where(valid[:, None, None], y_centred, 0.0)
    if ot == "exact":
        w2_squared = exact_ot_cost(moved, y_centred)
    elif ot == "sinkhorn":
        transported = sinkhorn_ot(moved, y_centred)
        w2_squared = transported.cost
        _warn_if_uncertified(transported, trace_y, valid)
    else:
        _warn_paired_once()
        w2_squared = paired_cost(moved, y_centred)
    return _scores_from_cost(w2_squared, trace_y, constant_output, valid, jitter)


def _constant_output(trace_x: Tensor, trace_y: Tensor, d: int, jitter: str) -> Tensor:
    """Sites whose output is a constant map (``A = 0``), by the rule of the jitter mode.

    Relative: ``tr Sy ≤ 1e-12·tr Sx`` (scale-free; jitter included on both sides, which scales
    both traces by the same ``1 + 1e-6``). Absolute (the authors'): ``tr Sy ≤ 2e-6·d``.
    """
    if jitter == "absolute":
        return trace_y <= _CONSTANT_TRACE_PER_FEATURE * d
    return trace_y <= _CONSTANT_OUTPUT_RATIO * trace_x


def _scores_from_cost(w2_squared: Tensor, trace_y: Tensor, constant_output: Tensor, valid: Tensor, jitter: str) -> Tensor:
    """``ρ = 1 − sqrt(W2² / (2 tr Sy))``; a constant output scores 1 under the relative rule."""
    scores = 1.0 - torch.sqrt(w2_squared / (2.0 * trace_y))
    if jitter == "relative":
        scores = torch.where(constant_output, 1.0, scores)
    return torch.where(valid, scores, float("nan"))


_MOMENT_KEYS = (
    "count",
    "sum_x",
    "sum_y",
    "outer_x",
    "outer_y",
    "cross",
    "sqnorm_weighted_x",
    "sqnorm_weighted_y",
    "quartic_x",
    "quartic_y",
)


def paired_moments(x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Streaming sums from which the ``ot="paired"`` score (plain or Ledoit–Wolf) follows exactly.

    For ``(n, d)`` pairs (or ``(b, n, d)``, giving a leading batch axis on every entry), float64:
    ``count`` = n, ``sum_x`` = Σx, ``outer_x`` = Σxxᵀ, ``cross`` = Σxyᵀ, ``sqnorm_weighted_x`` =
    Σ‖x‖²x and ``quartic_x`` = Σ‖x‖⁴ (the last two only feed Ledoit–Wolf), and the same for ``y``.
    They add across batches and processes, so :func:`affinity_score_from_moments` of the summed
    dicts equals :func:`affinity_score` with ``ot="paired"`` on the concatenated samples.

    Example:
        >>> m = paired_moments(torch.ones(5, 3), torch.zeros(5, 3))
        >>> m["count"].item(), m["sum_x"].tolist(), m["quartic_x"].item()
        (5.0, [5.0, 5.0, 5.0], 45.0)
    """
    xb, yb, unbatched = _validated_pair(x, y)
    xb, yb = xb.to(torch.float64), yb.to(torch.float64)
    x_sqnorm = xb.square().sum(-1)
    y_sqnorm = yb.square().sum(-1)
    moments = {
        "count": torch.full(xb.shape[:1], float(xb.shape[1]), dtype=torch.float64, device=xb.device),
        "sum_x": xb.sum(-2),
        "sum_y": yb.sum(-2),
        "outer_x": xb.transpose(-1, -2) @ xb,
        "outer_y": yb.transpose(-1, -2) @ yb,
        "cross": xb.transpose(-1, -2) @ yb,
        "sqnorm_weighted_x": (x_sqnorm.unsqueeze(-1) * xb).sum(-2),
        "sqnorm_weighted_y": (y_sqnorm.unsqueeze(-1) * yb).sum(-2),
        "quartic_x": x_sqnorm.square().sum(-1),
        "quartic_y": y_sqnorm.square().sum(-1),
    }
    return {key: value[0] for key, value in moments.items()} if unbatched else moments


def _centred_quartic(count: Tensor, total: Tensor, outer: Tensor, sqnorm_weighted: Tensor, quartic: Tensor) -> Tensor:
    """Σ_i ‖x_i − m‖⁴ with m = Σx/n, expanded into raw sums (float64; loses ~‖m‖⁴/var² digits)."""
    mean = total / count.unsqueeze(-1)
    mean_sq = mean.square().sum(-1)
    mean_outer_mean = (mean.unsqueeze(-2) @ outer @ mean.unsqueeze(-1))[..., 0, 0]
    return (
        quartic
        - 4.0 * (mean * sqnorm_weighted).sum(-1)
        + 4.0 * mean_outer_mean
        + 2.0 * mean_sq * outer.diagonal(dim1=-2, dim2=-1).sum(-1)
        - 4.0 * mean_sq * (mean * total).sum(-1)
        + count * mean_sq.square()
    )


def affinity_score_from_moments(
    moments: Mapping[str, Tensor], *, shrinkage: str = "none", jitter: str = "relative"
) -> Tensor:
    """The ``ot="paired"`` affinity score from the sums of :func:`paired_moments`.

    The identity-coupling cost is a quadratic form in the centred sums ``Gx = Σ xc xcᵀ``,
    ``Gy``, ``Gxy = Σ xc ycᵀ``: ``(1/n) Σ_i ‖A xc_i − yc_i‖² = (tr(A² Gx) − 2 tr(A Gxy) + tr Gy)/n``
    (A symmetric), clamped at 0 against round-off. Equal to the sample computation up to the
    cancellation in centring raw sums (negligible for activations with moderate means).

    Args:
        moments: dict with the keys of :func:`paired_moments`, unbatched or with a batch axis.
        shrinkage, jitter: as in :func:`affinity_score`.

    Returns:
        float64 score(s); NaN where ``count < 2`` or a sum is not finite.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(2000, 32, generator=g)
        >>> parts = [paired_moments(x[i::2], torch.relu(x[i::2])) for i in range(2)]
        >>> total = {key: parts[0][key] + parts[1][key] for key in parts[0]}
        >>> streamed = affinity_score_from_moments(total)
        >>> bool(torch.isclose(streamed, affinity_score(x, torch.relu(x), ot="paired"), atol=1e-9))
        True
    """
    _check_option("shrinkage", shrinkage, SHRINKAGE_OPTIONS)
    _check_option("jitter", jitter, JITTER_OPTIONS)
    _warn_paired_once()
    missing = [key for key in _MOMENT_KEYS if key not in moments]
    if missing:
        raise ValueError(f"`moments` lacks {missing}; expected the keys of paired_moments(): {list(_MOMENT_KEYS)}")
    unbatched = moments["count"].ndim == 0
    m = {key: moments[key].to(torch.float64) for key in _MOMENT_KEYS}
    if unbatched:
        m = {key: value.unsqueeze(0) for key, value in m.items()}
    count = m["count"]
    d = m["sum_x"].shape[-1]
    device = count.device
    valid = (count >= 2) & _finite_sites(*m.values())
    m = {key: torch.where(valid.view(-1, *[1] * (value.ndim - 1)), value, 0.0) for key, value in m.items()}
    count = torch.where(valid, count, 2.0)

    def centred_gram(outer: Tensor, left: Tensor, right: Tensor) -> Tensor:
        return outer - left.unsqueeze(-1) * right.unsqueeze(-2) / count[:, None, None]

    gram_x = centred_gram(m["outer_x"], m["sum_x"], m["sum_x"])
    gram_y = centred_gram(m["outer_y"], m["sum_y"], m["sum_y"])
    gram_xy = centred_gram(m["cross"], m["sum_x"], m["sum_y"])
    gram_x = 0.5 * (gram_x + gram_x.transpose(-1, -2))
    gram_y = 0.5 * (gram_y + gram_y.transpose(-1, -2))

    # "auto" decides per site from its own sample count.
    lw_mask = torch.full_like(valid, shrinkage == "ledoit_wolf")
    if shrinkage == "auto":
        lw_mask = count < 10 * d
    eye = torch.eye(d, dtype=torch.float64, device=device)
    covariances, traces = [], []
    for gram, side in ((gram_x, "x"), (gram_y, "y")):
        sum_squares = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        plain = _covariance_coefficients(count, d, sum_squares, sum_squares, sum_squares, False, jitter)
        quartic = _centred_quartic(count, m[f"sum_{side}"], m[f"outer_{side}"], m[f"sqnorm_weighted_{side}"], m[f"quartic_{side}"])
        shrunk = _covariance_coefficients(count, d, sum_squares, quartic, gram.square().sum(dim=(-2, -1)), True, jitter)
        alpha = torch.where(lw_mask, shrunk[0], plain[0])
        beta = torch.where(lw_mask, shrunk[1], plain[1])
        covariances.append(alpha[:, None, None] * gram + beta[:, None, None] * eye)
        traces.append(alpha * sum_squares + beta * d)
    trace_x, trace_y = traces
    constant_output = _constant_output(trace_x, trace_y, d, jitter)
    cov_x, cov_y = covariances
    cov_y = torch.where(constant_output[:, None, None], eye, cov_y)  # may be exactly 0; A = 0 below
    transport, converged = _transport_map(cov_x, cov_y)
    valid &= converged
    transport = torch.where(constant_output[:, None, None], 0.0, transport)

    squared_transport = transport @ transport
    cost = (
        (squared_transport * gram_x).sum(dim=(-2, -1))  # tr(A² Gx); both symmetric
        - 2.0 * (transport * gram_xy).sum(dim=(-2, -1))  # tr(A Gxy) = Σ A_ij Gxy_ij (A symmetric)
        + gram_y.diagonal(dim1=-2, dim2=-1).sum(-1)
    ) / count
    scores = _scores_from_cost(cost.clamp_min(0.0), trace_y, constant_output, valid, jitter)
    return scores[0] if unbatched else scores


def signature_summary(scores: Tensor) -> dict[str, Tensor]:
    """Summaries of a non-linearity signature (per-site scores along the last axis), NaN ignored.

    Returns ``mean``, ``std`` (population, ddof = 0), ``min``, ``max`` and ``max_over_mean``, each
    of shape ``scores.shape[:-1]`` (float64); NaN where a signature has no finite score.

    Example:
        >>> s = signature_summary(torch.tensor([0.5, float("nan"), 1.0]))
        >>> {key: round(value.item(), 4) for key, value in s.items()}
        {'mean': 0.75, 'std': 0.25, 'min': 0.5, 'max': 1.0, 'max_over_mean': 1.3333}
    """
    if not isinstance(scores, Tensor) or scores.ndim < 1:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"`scores` must be a tensor with the sites on its last axis, got {shape}")
    scores = scores.to(torch.float64)
    present = ~torch.isnan(scores)
    count = present.sum(-1)
    mean = torch.nanmean(scores, dim=-1)
    std = torch.nanmean((scores - mean.unsqueeze(-1)).square(), dim=-1).sqrt()
    nan = torch.full_like(mean, float("nan"))
    # amin/amax of an empty or all-NaN row would fail or propagate NaN: mask with ±inf instead.
    minimum = torch.where(present, scores, float("inf")).amin(-1) if scores.shape[-1] else nan
    maximum = torch.where(present, scores, float("-inf")).amax(-1) if scores.shape[-1] else nan
    minimum = torch.where(count > 0, minimum, nan)
    maximum = torch.where(count > 0, maximum, nan)
    return {"mean": mean, "std": std, "min": minimum, "max": maximum, "max_over_mean": maximum / mean}
