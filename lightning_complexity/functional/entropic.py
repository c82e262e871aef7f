"""Entropic complexity of a site's computation [project definition, SPEC §3].

Janik & Witaszczyk describe a complexity of a layer's computation that quantifies its
non-linearity, is "entropic" and depends on a scale; their formula could not be read, so this
module implements **our own** definition and does not claim to reproduce the paper:

1. Split the ``n`` samples into a training part and a held-out part (seeded, shared by all sites).
2. Project the input ``X`` onto its top ``r`` principal components (fitted on the training part).
3. For ``k`` in ``1, 2, 4, …, k_max``: cluster the projected training inputs with k-means
   (seeded k-means++ initialisation, Lloyd iterations, best of ``n_init`` restarts), fit one
   ridge-regularised affine map from projected input to ``Y`` per cluster, and measure the
   held-out relative error ``e(k) = SSE / SST`` (``SST`` around the held-out mean of ``Y``).
   ``H(k) = −Σ_c p_c ln p_c`` is the entropy of the cluster occupancies over all ``n`` samples
   (held-out samples are assigned to their nearest centroid).
4. ``C_ε = H(k*)`` with ``k*`` the smallest ``k`` whose ``e(k) ≤ ε``. If no ``k`` reaches ``ε``,
   report ``H(argmin_k e(k))`` and flag the site as censored.

So ``C_ε`` is, in nats, how many equally used affine pieces the map needs to be reproduced to
relative accuracy ``ε``: 0 for an affine map, ``ln 2`` for ``|x|``, ``ln 4`` for a 4-piece zig-zag.
``e(1)`` (``linear_deficit``) is the fraction of held-out output variance that no single affine
map of the projected input explains.

When the result is exactly ``ln k``: the map must be affine on each of ``k`` cells that k-means
actually finds, and the cells must hold equal mass. k-means places its boundaries where it
minimises the within-cluster spread of the *input*, not where the map has kinks, so the kinks
must coincide with those boundaries. For 1-D uniform input, k-means with ``k`` clusters finds
``k`` equal-width (hence equal-mass) intervals, and for symmetric unimodal input 2-means splits
at the centre; tests are built on these facts (``|x|`` and a zig-zag with kinks at the quartiles
of a uniform input). On finite samples the boundaries are off by sampling error (a few
hundredths of the range at n ≈ 2000, growing with ``k``), which costs a few thousandths of a nat
and a held-out error of about 0.01 at ``k = 4``. A function whose kinks are elsewhere needs more
clusters than pieces.

Conventions and limits:

- The affine maps take the ``r`` projected coordinates, not the full input: output variance that
  depends on input directions outside the top ``r`` principal components counts as error. Raise
  ``rank`` for wide sites whose input spectrum is flat.
- Each cluster gets at least ``10·(r + 1)`` training points on average: ``k`` values with
  ``k·10·(r + 1) > n_train`` are skipped, i.e. the ``k`` schedule is truncated (NaN in
  ``errors``/``entropies``). Individual clusters may still come out smaller after k-means; the
  ridge keeps their fits defined.
- ``r = min(rank, d_in)``; ``ks`` holds the powers of two up to ``k_max``.
- Data problems never raise: a site with a non-finite value gets NaN; too few samples for even
  ``k = 1`` (``n_train < 10·(r + 1)`` or fewer than 2 held-out samples) gives NaN for every site.
- Held-out output with (near) zero variance: ``SST`` is floored at ``1e-12·Σ‖y‖²``, so a constant
  output scores ``e = 0`` (it is affine).
- Deterministic for a given ``seed`` and ``n``; a site's result does not depend on the other
  sites in the batch (all random draws are shared across sites).
- Everything runs on the input's device in float64, batched over sites (no per-site loop);
  Python loops run only over ``k`` and Lloyd iterations (each site stops on its own tolerance).

Example:
    >>> import torch
    >>> x = torch.linspace(-1.0, 1.0, 2000).unsqueeze(-1)  # 1-D, uniform, symmetric
    >>> result = entropic_complexity(x, x.abs())
    >>> round(result.value.item(), 2), result.k_selected.item(), bool(result.censored)
    (0.69, 2, False)
    >>> result.linear_deficit.item() > 0.9  # no single affine map fits |x|
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch
from torch import Tensor

from lightning_complexity.functional.dimension import _normalise_scale
from lightning_complexity.functional.linalg import as_batched

__all__ = ["EntropicComplexityResult", "entropic_complexity"]

# Training points per cluster, per fitted coefficient of one output (r slopes + intercept).
_POINTS_PER_COEFFICIENT = 10
# Relative floor on the held-out total sum of squares, so a constant output scores e = 0.
_SST_FLOOR = 1e-12
# Lloyd stops once no centroid moves more than 1e-4 of the data's total standard deviation.
# Tight on purpose: on 1-D uniform data Lloyd creeps towards equal-mass cells (the ln k cases).
_CENTROID_TOLERANCE = 1e-8


@dataclass(frozen=True)
class EntropicComplexityResult:
    """Output of :func:`entropic_complexity`; the leading ``b`` axis is absent for ``(n, d)`` input.

    Attributes:
        value: ``C_ε`` in nats, ``(b,)``; NaN where the site could not be measured.
        linear_deficit: ``e(1)``, held-out relative error of one affine map, ``(b,)``.
        censored: ``(b,)`` bool; True where no ``k`` reached the tolerance and ``value`` is the
            entropy at the ``k`` with the lowest error.
        k_selected: ``(b,)`` int64, the ``k`` whose entropy is reported (0 where ``value`` is NaN).
        ks: ``(K,)`` int64, the ``k`` schedule ``1, 2, 4, …, ≤ k_max``.
        errors: ``(b, K)`` held-out relative errors ``e(k)``; NaN for skipped ``k``.
        entropies: ``(b, K)`` occupancy entropies ``H(k)`` in nats; NaN for skipped ``k``.
    """

    value: Tensor
    linear_deficit: Tensor
    censored: Tensor
    k_selected: Tensor
    ks: Tensor
    errors: Tensor
    entropies: Tensor


def entropic_complexity(
    x: Tensor,
    y: Tensor,
    *,
    rank: int = 16,
    k_max: int = 16,
    tolerance: float = 0.05,
    ridge: float = 1e-4,
    holdout: float = 0.25,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 50,
) -> EntropicComplexityResult:
    """Entropic complexity ``C_ε`` of the map from ``x`` to ``y`` (our definition, SPEC §3).

    Args:
        x: site input, ``(n, d_in)`` or batched ``(b, n, d_in)``.
        y: site output, ``(n, d_out)`` or ``(b, n, d_out)``, same ``b`` and ``n`` as ``x``.
        rank: number ``r`` of input principal components kept (capped at ``d_in``).
        k_max: largest number of clusters; the schedule is the powers of two up to it.
        tolerance: ``ε``, the held-out relative error a piecewise-affine fit must reach.
        ridge: ridge penalty of each cluster's map, as a fraction of that cluster's mean
            per-coordinate input sum of squares (``ridge·tr(Z_cᵀZ_c)/r``); intercepts are not
            penalised. 0 gives plain least squares, unstable when the projected input is
            rank-deficient inside a cluster.
        holdout: fraction of samples held out to measure ``e(k)``, in ``(0, 1)``.
        seed: seed of the split and of the k-means++ initialisations.
        n_init: k-means restarts; the one with the lowest within-cluster sum of squares is kept.
        max_iter: maximum Lloyd iterations per restart.

    Returns:
        An :class:`EntropicComplexityResult` of tensors on the input's device.

    Raises:
        TypeError: ``x`` or ``y`` is not a tensor.
        ValueError: mismatched shapes or devices, or an argument outside its accepted range.

    Example:
        >>> import torch
        >>> x = torch.randn(4, 600, 3, generator=torch.Generator().manual_seed(0))
        >>> y = x @ torch.randn(3, 2, dtype=x.dtype) + 1.0  # affine: one piece suffices
        >>> result = entropic_complexity(x, y)
        >>> result.value.tolist(), result.k_selected.tolist()
        ([0.0, 0.0, 0.0, 0.0], [1, 1, 1, 1])
        >>> result.errors.shape  # 4 sites, k in (1, 2, 4, 8, 16)
        torch.Size([4, 5])
    """
    _check_arguments(rank=rank, k_max=k_max, tolerance=tolerance, ridge=ridge, holdout=holdout,
                     seed=seed, n_init=n_init, max_iter=max_iter)
    xb, added_batch = as_batched(x, "x")
    yb, _ = as_batched(y, "y")
    _check_pair(x, y)

    batch, n, d_in = xb.shape
    d_out = yb.shape[-1]
    device = xb.device
    ks = torch.tensor([2**i for i in range(k_max.bit_length())], dtype=torch.int64)
    errors = torch.full((batch, len(ks)), math.nan, dtype=torch.float64, device=device)
    entropies = torch.full_like(errors, math.nan)

    r = min(rank, d_in)
    n_holdout = int(round(holdout * n))
    n_train = n - n_holdout
    points_per_cluster = _POINTS_PER_COEFFICIENT * (r + 1)
    usable = [i for i, k in enumerate(ks.tolist()) if k * points_per_cluster <= n_train]
    if n_holdout >= 2 and d_in > 0 and d_out > 0 and usable and batch > 0:
        # C_ε, e(k) and H(k) do not depend on the scale of x or of y (PCA, k-means, the relative
        # ridge and SSE/SST are scale-free), so each site is brought to max |value| in [0.5, 1) by
        # an exact power of two: float64 data beyond ~1e154 overflowed the Gram matrix (eigh
        # raised) and data below ~1e-154 underflowed SSE and SST (|x| then scored 0, "affine").
        xb, yb = _normalise_scale(xb), _normalise_scale(yb)
        # One reduction per tensor: a float64 sum is finite iff every term is (|inputs| < 1 now).
        finite = xb.sum((1, 2)).isfinite() & yb.sum((1, 2)).isfinite()
        if not bool(finite.all()):
            # Zero out non-finite sites so they cannot break the batched eigh/solve; masked below.
            xb = torch.where(finite[:, None, None], xb, 0.0)
            yb = torch.where(finite[:, None, None], yb, 0.0)

        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator).to(device)
        train, held = order[:n_train], order[n_train:]
        z_train, z_held = _principal_scores(xb[:, train], xb[:, held], r)
        y_train, y_held = yb[:, train], yb[:, held]

        for i in usable:
            k = int(ks[i])
            uniforms = torch.rand(n_init, k, generator=generator, dtype=torch.float64).to(device)
            centroids, train_labels = _kmeans(z_train, k, uniforms, max_iter)
            errors[:, i], entropies[:, i] = _piecewise_affine_fit(
                z_train, y_train, train_labels, z_held, y_held, centroids, k, ridge
            )
        errors[~finite] = math.nan
        entropies[~finite] = math.nan

    ks = ks.to(device)
    value, censored, k_selected = _select(errors, entropies, ks, tolerance)
    per_site = {
        "value": value,
        "linear_deficit": errors[:, 0],
        "censored": censored,
        "k_selected": k_selected,
        "errors": errors,
        "entropies": entropies,
    }
    if added_batch:
        per_site = {name: tensor[0] for name, tensor in per_site.items()}
    return EntropicComplexityResult(ks=ks, **per_site)


def _check_arguments(**arguments: object) -> None:
    """Raise ``ValueError`` naming the argument, its value and what is accepted."""

    def is_int(value: object) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool)

    def is_real(value: object) -> bool:
        return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)

    rules = {
        "rank": (is_int, lambda v: v >= 1, "an integer ≥ 1"),
        "k_max": (is_int, lambda v: v >= 1, "an integer ≥ 1"),
        "tolerance": (is_real, lambda v: v >= 0, "a finite number ≥ 0"),
        "ridge": (is_real, lambda v: v >= 0, "a finite number ≥ 0"),
        "holdout": (is_real, lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
        "seed": (is_int, lambda v: v >= 0, "an integer ≥ 0"),
        "n_init": (is_int, lambda v: v >= 1, "an integer ≥ 1"),
        "max_iter": (is_int, lambda v: v >= 1, "an integer ≥ 1"),
    }
    for name, value in arguments.items():
        type_ok, range_ok, accepted = rules[name]
        if not (type_ok(value) and range_ok(value)):
            raise ValueError(f"`{name}` must be {accepted}, got {value!r}")


def _check_pair(x: Tensor, y: Tensor) -> None:
    """``x`` and ``y`` must describe the same samples of the same sites on the same device."""
    if x.ndim != y.ndim or x.shape[:-1] != y.shape[:-1]:
        raise ValueError(
            "`x` and `y` must have shapes (n, d_in), (n, d_out) or (b, n, d_in), (b, n, d_out) "
            f"with the same b and n, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"`x` and `y` must be on the same device, got {x.device} and {y.device}")


def _principal_scores(x_train: Tensor, x_held: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Coordinates of both parts on the top ``r`` principal axes of the training part.

    Works in the smaller of the feature space and the sample space, so wide sites (``d ≫ n``)
    cost an ``n × n`` eigendecomposition instead of ``d × d``. Axis order and signs are
    irrelevant downstream (k-means and affine fits are invariant to them).
    """
    mean = x_train.mean(dim=1, keepdim=True)
    centred_train, centred_held = x_train - mean, x_held - mean
    n_train, d = centred_train.shape[1:]
    if d <= n_train:
        gram = centred_train.transpose(1, 2) @ centred_train
        axes = torch.linalg.eigh(0.5 * (gram + gram.transpose(1, 2))).eigenvectors[..., -r:]
    else:
        gram = centred_train @ centred_train.transpose(1, 2)
        values, vectors = torch.linalg.eigh(0.5 * (gram + gram.transpose(1, 2)))
        values, vectors = values[..., -r:], vectors[..., -r:]
        # Right singular vectors from left ones: v = Xᵀu / σ; null directions map to 0.
        inverse_sigma = torch.where(values > 0, values.clamp_min(1e-300).rsqrt(), 0.0)
        axes = (centred_train.transpose(1, 2) @ vectors) * inverse_sigma.unsqueeze(1)
    return centred_train @ axes, centred_held @ axes


def _squared_distances(points: Tensor, centroids: Tensor) -> Tensor:
    """``(B, n, r)`` × ``(B, k, r)`` → ``(B, n, k)`` squared Euclidean distances."""
    squared = points.square().sum(-1, keepdim=True) + _assignment_scores(points, centroids)
    return squared.clamp_min(0.0)


def _assignment_scores(points: Tensor, centroids: Tensor) -> Tensor:
    """``‖c‖² − 2·z·c``: squared distances minus the per-point constant ``‖z‖²`` (same argmin)."""
    return centroids.square().sum(-1).unsqueeze(1) - 2.0 * (points @ centroids.transpose(1, 2))


def _kmeans_plus_plus(points: Tensor, uniforms: Tensor) -> Tensor:
    """k-means++ seeding driven by given uniforms ``(B, k)``; returns centroids ``(B, k, r)``.

    Each new centroid is drawn with probability ∝ squared distance to the nearest chosen one,
    by inverting the cumulative distribution with the supplied uniform.
    """
    batch, n, _ = points.shape
    rows = torch.arange(batch, device=points.device)
    first = (uniforms[:, 0] * n).long().clamp_max(n - 1)
    chosen = [points[rows, first]]
    nearest = (points - chosen[0].unsqueeze(1)).square().sum(-1)
    for j in range(1, uniforms.shape[1]):
        cumulative = nearest.cumsum(-1)
        target = uniforms[:, j : j + 1] * cumulative[:, -1:]
        # right=True picks a point with a positive share; all-zero distances fall to the last point.
        index = torch.searchsorted(cumulative, target, right=True).squeeze(1).clamp_max(n - 1)
        chosen.append(points[rows, index])
        nearest = torch.minimum(nearest, (points - chosen[-1].unsqueeze(1)).square().sum(-1))
    return torch.stack(chosen, dim=1)


def _kmeans(points: Tensor, k: int, uniforms: Tensor, max_iter: int) -> tuple[Tensor, Tensor]:
    """Batched Lloyd k-means, best of ``len(uniforms)`` seeded restarts per site.

    Args:
        points: ``(b, n, r)``.
        uniforms: ``(n_init, k)`` uniforms for the k-means++ seeding, shared by every site so a
            site's clustering does not depend on the rest of the batch.

    Returns:
        Centroids ``(b, k, r)`` and labels ``(b, n)``, each label the nearest centroid.
    """
    n_init = uniforms.shape[0]
    batch, n, width = points.shape
    # Restarts become extra batch entries: (n_init · b, n, r), restart-major.
    stacked = points.unsqueeze(0).expand(n_init, -1, -1, -1).reshape(n_init * batch, n, width)
    centroids = _kmeans_plus_plus(stacked, uniforms.repeat_interleave(batch, dim=0))
    threshold = _CENTROID_TOLERANCE * stacked.var(dim=1).sum(-1)
    active = torch.ones(n_init * batch, dtype=torch.bool, device=points.device)
    for _ in range(max_iter):
        labels = _assignment_scores(stacked, centroids).argmin(-1)
        one_hot = torch.nn.functional.one_hot(labels, k).to(stacked.dtype)
        counts = one_hot.sum(1).unsqueeze(-1)
        means = (one_hot.transpose(1, 2) @ stacked) / counts.clamp_min(1.0)
        # An emptied cluster keeps its centroid.
        updated = torch.where(counts > 0, means, centroids)
        shift = (updated - centroids).square().sum(-1).amax(-1)
        # Each entry stops on its own, so a site's result does not depend on the rest of the batch.
        centroids = torch.where(active[:, None, None], updated, centroids)
        active &= shift > threshold
        if not active.any():
            break
    distances = _squared_distances(stacked, centroids)
    labels = distances.argmin(-1)
    inertia = distances.min(-1).values.sum(-1).reshape(n_init, batch)
    best = inertia.argmin(0)
    sites = torch.arange(batch, device=points.device)
    centroids = centroids.reshape(n_init, batch, k, width)[best, sites]
    labels = labels.reshape(n_init, batch, n)[best, sites]
    return centroids, labels


def _piecewise_affine_fit(
    z_train: Tensor,
    y_train: Tensor,
    train_labels: Tensor,
    z_held: Tensor,
    y_held: Tensor,
    centroids: Tensor,
    k: int,
    ridge: float,
) -> tuple[Tensor, Tensor]:
    """Fit one ridge affine map per cluster; return held-out ``e(k)`` and occupancy entropy ``H(k)``."""
    width = z_train.shape[-1]
    one_hot = torch.nn.functional.one_hot(train_labels, k).to(z_train.dtype)
    counts = one_hot.sum(1)
    occupied = counts > 0
    z_mean = one_hot.transpose(1, 2) @ z_train / counts.clamp_min(1.0).unsqueeze(-1)
    y_mean = one_hot.transpose(1, 2) @ y_train / counts.clamp_min(1.0).unsqueeze(-1)

    # Centring inside each cluster = an unpenalised intercept; block features (b, n, k, r).
    z_centred = z_train - _gather_rows(z_mean, train_labels)
    y_centred = y_train - _gather_rows(y_mean, train_labels)
    blocks = one_hot.unsqueeze(-1) * z_centred.unsqueeze(2)
    gram = torch.einsum("bnci,bncj->bcij", blocks, blocks)
    cross = torch.einsum("bnci,bno->bcio", blocks, y_centred)
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    # Ridge relative to the cluster's mean input variance; the tiny floor keeps empty or
    # single-point clusters solvable (their cross-products are exactly 0, so their slopes are 0).
    scale = ridge * trace / width + torch.finfo(torch.float64).tiny
    eye = torch.eye(width, dtype=gram.dtype, device=gram.device)
    slopes, _ = torch.linalg.solve_ex(gram + scale[..., None, None] * eye, cross)

    # Held-out points go to the nearest centroid that has training points.
    distances = _squared_distances(z_held, centroids).masked_fill(~occupied.unsqueeze(1), math.inf)
    held_labels = distances.argmin(-1)
    held_one_hot = torch.nn.functional.one_hot(held_labels, k).to(z_held.dtype)
    held_blocks = held_one_hot.unsqueeze(-1) * (z_held - _gather_rows(z_mean, held_labels)).unsqueeze(2)
    prediction = held_blocks.flatten(2) @ slopes.flatten(1, 2) + held_one_hot @ y_mean

    sse = (y_held - prediction).square().sum((1, 2))
    sst = (y_held - y_held.mean(1, keepdim=True)).square().sum((1, 2))
    floor = _SST_FLOOR * y_held.square().sum((1, 2)) + torch.finfo(torch.float64).tiny
    error = sse / torch.maximum(sst, floor)

    occupancy = (counts + held_one_hot.sum(1)) / (z_train.shape[1] + z_held.shape[1])
    entropy = 0.0 - torch.special.xlogy(occupancy, occupancy).sum(-1)  # 0.0 − avoids −0.0
    return error, entropy


def _gather_rows(per_cluster: Tensor, labels: Tensor) -> Tensor:
    """``(b, k, m)`` values and ``(b, n)`` labels → ``(b, n, m)``, each sample's cluster row."""
    return torch.gather(per_cluster, 1, labels.unsqueeze(-1).expand(-1, -1, per_cluster.shape[-1]))


def _select(errors: Tensor, entropies: Tensor, ks: Tensor, tolerance: float) -> tuple[Tensor, Tensor, Tensor]:
    """``C_ε`` per site: entropy at the first ``k`` with ``e ≤ ε``, else at ``argmin e`` (censored)."""
    reached = errors <= tolerance  # NaN (skipped k) compares False
    any_reached = reached.any(-1)
    measured = ~torch.isnan(errors).all(-1)
    first_reached = reached.to(torch.int64).argmax(-1)
    lowest = torch.nan_to_num(errors, nan=math.inf).argmin(-1)
    index = torch.where(any_reached, first_reached, lowest)
    value = torch.gather(entropies, -1, index.unsqueeze(-1)).squeeze(-1)
    value = torch.where(measured, value, math.nan)
    censored = measured & ~any_reached
    k_selected = torch.where(measured, ks[index], 0)
    return value, censored, k_selected
