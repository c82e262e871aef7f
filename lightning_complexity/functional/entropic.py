"""Entropic complexity of a site's computation [project definition, SPEC §3, revised].

Janik & Witaszczyk describe a complexity of a layer's computation that quantifies its
non-linearity, is "entropic" and depends on a scale; their formula could not be read, so this
module implements **our own** definition and does not claim to reproduce the paper:

1. Split the ``n`` samples into a training part and a held-out part (seeded, shared by all sites;
   :func:`train_holdout_split`).
2. Fit one ridge-regularised affine map ``Y ≈ A·X + b`` on the **full** input (training part).
   ``e(1) = SSE / SST`` of this map on the held-out part (``SST`` around the held-out mean of
   ``Y``) is the *linear deficit*: the fraction of the output's variance no affine map explains.
3. Project the input onto its top ``r`` principal components (fitted on the training part). For
   ``k`` in ``2, 4, …, k_max``: cluster the projected training inputs with k-means (seeded
   k-means++ initialisation, Lloyd iterations, best of ``n_init`` restarts) and fit, per cluster,
   one ridge affine *correction* of the global map's residual from the ``r`` projected
   coordinates. ``e(k)`` is the held-out relative error of global map plus corrections (held-out
   samples take their nearest centroid's correction). ``H(k) = −Σ_c p_c ln p_c`` is the entropy of
   the cluster occupancies over all ``n`` samples (``H(1) = 0``).
4. The *error floor* is ``f = min_k e(k)``, the lowest held-out error any ``k ≤ k_max`` reached.
   ``C_ε = H(k*)`` with ``k*`` the smallest ``k`` whose error is within ``ε`` of the floor,
   ``e(k*) ≤ f + ε`` (``tolerance_mode="floor"``, the default). The value is *censored* (a lower
   bound) when the schedule ran out before the curve settled: ``k*`` is the last ``k`` the
   samples allow and ``e(k*) > ε`` (its last step still gained more than ``ε``).
   ``tolerance_mode="absolute"`` is the first rule: ``k*`` the smallest ``k`` with ``e(k) ≤ ε``,
   and if none reaches ``ε``, ``H(argmin_k e(k))`` flagged censored. Both rules agree whenever
   the floor is 0.

So ``C_ε`` is, in nats, how many equally used affine pieces the map needs to be reproduced to
within ``ε`` of the best piecewise-affine fit: 0 for an affine map at any width (the global map is
exact, whatever ``r``), ``ln 2`` for ``|x|``, ``ln 4`` for a 4-piece zig-zag. (The first definition
fitted the per-cluster maps on the top ``r`` components only, so a linear block on 64-d isotropic
input had ``e(1) ≈ 0.76`` and was reported censored; the global map on the full input removes that.)

Why the tolerance is measured from the floor (our definition, docs/metrics.md): ``e(k)`` is a
held-out error, so it cannot fall below what ``X`` does not determine about ``Y``. On the blocks of
a small trained digits CNN, reduced as the monitor reduces them (conv maps averaged over space),
``e(1)`` is 0.06–0.23, about the same in and out of sample (0.183 and 0.170 for the first block at
n = 1797), and k-nearest-neighbour and extra-trees regressors on the same reduced input do no
better (0.178 and 0.270 there, against min e(k) = 0.167): the spatial mean of a conv block's input does not determine the spatial mean of its
output. No function of the reduced input reaches ``ε = 0.05``, so the absolute rule censored 4–5 of
the 5 blocks for what the reduction discards rather than for non-linearity
(``benchmarks/entropic_defaults.py``). Measured from the floor, ``C_ε`` counts the pieces needed to
explain what the input does determine, and ``floor`` says how much that is.

How to read the values (measured on trained digits CNNs and MLPs, docs/metrics.md):

- ``C_ε`` is a *count of pieces at a resolution*: it says how many pieces are needed to reach
  ``ε``, not how non-linear the map is below that resolution. Compare it only between sites and
  runs with the same ``ε``, ``r``, ``k_max`` and sample count.
- A censored value is a lower bound (no ``k ≤ k_max`` reached ``ε``): read the ``e(k)`` curve
  (``errors``) instead. How fast ``e(k)`` falls with ``k`` is the information; ``e(1)`` alone is
  the linear deficit.
- Read ``C_ε`` beside ``floor``. A floor near 0 means the pieces reproduce the map; a high floor
  means the input (as reduced) determines little of the output, *or* that the rest needs finer
  pieces than ``k_max`` or directions outside the top ``r`` components: the floor is the lowest
  error of these fits, not the noise level. Pure noise ``Y`` scores ``C = 0`` with ``floor ≈ 1``.

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

- The global map sees the full input, so any affine map is exact when the training part has
  more samples than the input has dimensions; for a full-rank input wider than that, no affine
  fit is identifiable and ``e(1)`` measures that sampling deficit. The corrections see only the
  ``r`` projected coordinates: non-linear structure outside the top ``r`` components stays error.
- Each cluster gets at least ``samples_per_coefficient·(r + 1)`` training points on average:
  ``k`` values with ``k·samples_per_coefficient·(r + 1) > n_train`` are skipped, i.e. the ``k``
  schedule is truncated (NaN in ``errors``/``entropies``). Individual clusters may still come
  out smaller after k-means; the ridge keeps their fits defined.
- ``r = min(rank, d_in)``; ``ks`` holds the powers of two up to ``k_max``.
- Data problems never raise: a site with a non-finite value gets NaN; too few samples for even
  ``k = 1`` (``n_train < samples_per_coefficient·(r + 1)`` or fewer than 2 held-out samples)
  gives NaN for every site.
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

__all__ = ["EntropicComplexityResult", "entropic_complexity", "train_holdout_split"]

# Defaults chosen on the blocks of small trained and untrained digits CNNs and MLPs
# (benchmarks/entropic_defaults.py, results in benchmarks/results/entropic_defaults.md):
# - tolerance_mode="floor": the absolute rule censored 4-5 of 5 spatially averaged CNN blocks at
#   every r, samples per coefficient, k_max and ε tried, at a floor that k-NN and extra-trees
#   regressors do not beat; measured from the floor, 0 of 5 are censored at every setting.
# - ε = 0.05: C_ε moved by more than 0.1 nat across 5 split/k-means seeds on 0 of 20 blocks at
#   n = 1024 and 1 of 20 at 1797; at ε = 0.02 on 4 of 20 (by up to 1.4 nats), at 0.01 on 8-9
#   (the absolute rule: 7-11). Smaller ε resolves more pieces but the count follows the seed.
# - r = 8, 5 training points per coefficient: the censored counts were the same for every
#   (r, points) in {4, 8, 16} × {5, 10}; at the monitor's 1024 samples this pair lets the schedule
#   reach k = 16 (r = 16 with 10 points stopped at k = 4). 5 points is safe because e(k) is held
#   out: over-fitting a cluster can only raise e(k), never fake a fit.
# - k_max = 32: reached from 1920 samples on; the floor rule censors only a curve still falling
#   at the last k, which a longer schedule resolves.
DEFAULT_RANK = 8
DEFAULT_K_MAX = 32
DEFAULT_TOLERANCE = 0.05
DEFAULT_SAMPLES_PER_COEFFICIENT = 5
TOLERANCE_MODES = ("floor", "absolute")
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
        linear_deficit: ``e(1)``, held-out relative error of the global affine map, ``(b,)``.
        floor: ``min_k e(k)``, the lowest held-out error over the schedule, ``(b,)``.
        censored: ``(b,)`` bool; True where ``value`` is only a lower bound: the curve was still
            falling by more than ``ε`` at the last usable ``k`` (``"floor"`` mode), or no ``k``
            reached ``ε`` (``"absolute"`` mode, ``value`` = entropy at the lowest error).
        k_selected: ``(b,)`` int64, the ``k`` whose entropy is reported (0 where ``value`` is NaN).
        ks: ``(K,)`` int64, the ``k`` schedule ``1, 2, 4, …, ≤ k_max``.
        errors: ``(b, K)`` held-out relative errors ``e(k)``; NaN for skipped ``k``.
        entropies: ``(b, K)`` occupancy entropies ``H(k)`` in nats; NaN for skipped ``k``.
    """

    value: Tensor
    linear_deficit: Tensor
    floor: Tensor
    censored: Tensor
    k_selected: Tensor
    ks: Tensor
    errors: Tensor
    entropies: Tensor


def train_holdout_split(n: int, holdout: float = 0.25, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The seeded split of :func:`entropic_complexity`: ``(train, held)`` sample indices (int64, CPU).

    ``round(holdout·n)`` samples are held out: the last ones of ``torch.randperm(n)`` drawn from a
    generator seeded with ``seed`` (the same generator then seeds k-means).

    Example:
        >>> train, held = train_holdout_split(8, holdout=0.25, seed=0)
        >>> len(train), len(held), sorted(train.tolist() + held.tolist()) == list(range(8))
        (6, 2, True)
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = n - int(round(holdout * n))
    return order[:n_train], order[n_train:]


def entropic_complexity(
    x: Tensor,
    y: Tensor,
    *,
    rank: int = DEFAULT_RANK,
    k_max: int = DEFAULT_K_MAX,
    tolerance: float = DEFAULT_TOLERANCE,
    tolerance_mode: str = "floor",
    ridge: float = 1e-4,
    holdout: float = 0.25,
    samples_per_coefficient: int = DEFAULT_SAMPLES_PER_COEFFICIENT,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 50,
) -> EntropicComplexityResult:
    """Entropic complexity ``C_ε`` of the map from ``x`` to ``y`` (our definition, SPEC §3).

    Args:
        x: site input, ``(n, d_in)`` or batched ``(b, n, d_in)``.
        y: site output, ``(n, d_out)`` or ``(b, n, d_out)``, same ``b`` and ``n`` as ``x``.
        rank: number ``r`` of input principal components the per-cluster corrections see
            (capped at ``d_in``); the global affine map always sees the full input.
        k_max: largest number of clusters; the schedule is the powers of two up to it.
        tolerance: ``ε``, the held-out relative error a piecewise-affine fit may have above the
            floor (``"floor"`` mode) or in all (``"absolute"``).
        tolerance_mode: ``"floor"`` (default): ``k*`` is the smallest ``k`` with
            ``e(k) ≤ min_j e(j) + ε``; ``"absolute"``: the smallest with ``e(k) ≤ ε``.
        ridge: ridge penalty of every affine fit, as a fraction of its input's mean
            per-coordinate sum of squares (``ridge·tr(XᵀX)/d``, inputs centred); intercepts are
            not penalised. 0 gives plain least squares (minimum-norm where rank-deficient).
        holdout: fraction of samples held out to measure ``e(k)``, in ``(0, 1)``.
        samples_per_coefficient: training points each cluster needs per coefficient of its
            correction (``r`` slopes + intercept); bounds the ``k`` schedule.
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
        >>> result.errors.shape  # 4 sites, k in (1, 2, 4, 8, 16, 32)
        torch.Size([4, 6])
    """
    _check_arguments(rank=rank, k_max=k_max, tolerance=tolerance, tolerance_mode=tolerance_mode, ridge=ridge,
                     holdout=holdout, samples_per_coefficient=samples_per_coefficient, seed=seed,
                     n_init=n_init, max_iter=max_iter)
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
    points_per_cluster = samples_per_coefficient * (r + 1)
    usable = [i for i, k in enumerate(ks.tolist()) if k * points_per_cluster <= n_train]
    if n_holdout >= 2 and d_in > 0 and d_out > 0 and usable and batch > 0:
        # C_ε, e(k) and H(k) do not depend on the scale of x or of y (least squares, PCA,
        # k-means, the relative ridge and SSE/SST are scale-free), so each site is brought to
        # max |value| in [0.5, 1) by an exact power of two: float64 data beyond ~1e154 overflowed
        # the Gram matrix (eigh raised) and data below ~1e-154 underflowed SSE and SST.
        xb, yb = _normalise_scale(xb), _normalise_scale(yb)
        # One reduction per tensor: a float64 sum is finite iff every term is (|inputs| < 1 now).
        finite = xb.sum((1, 2)).isfinite() & yb.sum((1, 2)).isfinite()
        if not bool(finite.all()):
            # Zero out non-finite sites so they cannot break the batched eigh/solve; masked below.
            xb = torch.where(finite[:, None, None], xb, 0.0)
            yb = torch.where(finite[:, None, None], yb, 0.0)

        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator).to(device)  # = train_holdout_split
        train, held = order[:n_train], order[n_train:]
        x_train, x_held = xb[:, train], xb[:, held]
        y_train, y_held = yb[:, train], yb[:, held]

        # e(1): one ridge affine map on the full input; its residual is what clusters correct.
        global_train, global_held = _global_affine_fit(x_train, y_train, x_held, ridge)
        residual_train = y_train - global_train
        sst = (y_held - y_held.mean(1, keepdim=True)).square().sum((1, 2))
        sst = torch.maximum(sst, _SST_FLOOR * y_held.square().sum((1, 2)) + torch.finfo(torch.float64).tiny)
        errors[:, 0] = (y_held - global_held).square().sum((1, 2)) / sst
        entropies[:, 0] = 0.0

        z_train, z_held = _principal_scores(x_train, x_held, r)
        for i in usable[1:]:
            k = int(ks[i])
            uniforms = torch.rand(n_init, k, generator=generator, dtype=torch.float64).to(device)
            centroids, train_labels = _kmeans(z_train, k, uniforms, max_iter)
            correction, held_labels = _piecewise_affine_correction(
                z_train, residual_train, train_labels, z_held, centroids, k, ridge
            )
            errors[:, i] = (y_held - global_held - correction).square().sum((1, 2)) / sst
            entropies[:, i] = _occupancy_entropy(train_labels, held_labels, k)
        errors[~finite] = math.nan
        entropies[~finite] = math.nan

    ks = ks.to(device)
    value, floor, censored, k_selected = _select(errors, entropies, ks, tolerance, tolerance_mode, usable[-1] if usable else 0)
    per_site = {
        "value": value,
        "linear_deficit": errors[:, 0],
        "floor": floor,
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
        "tolerance_mode": (lambda v: isinstance(v, str), lambda v: v in TOLERANCE_MODES, f"one of {TOLERANCE_MODES}"),
        "ridge": (is_real, lambda v: v >= 0, "a finite number ≥ 0"),
        "holdout": (is_real, lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
        "samples_per_coefficient": (is_int, lambda v: v >= 1, "an integer ≥ 1"),
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


def _ridge_solution(gram: Tensor, cross: Tensor, penalty: Tensor) -> Tensor:
    """``(G + λI)⁺ C`` for stacked symmetric PSD ``G`` through a float64 ``eigh``.

    Eigenvalues of ``G + λI`` below ``m·eps·max`` (``m`` the width, as numpy's ``lstsq``) count as
    zero, so ``λ = 0`` gives the minimum-norm least-squares solution even where ``G`` is singular
    (dead input channels), instead of the garbage a plain solve returns there.
    """
    values, vectors = torch.linalg.eigh(0.5 * (gram + gram.transpose(-1, -2)))
    shifted = values.clamp_min(0.0) + penalty.unsqueeze(-1)
    cutoff = gram.shape[-1] * torch.finfo(torch.float64).eps * shifted.amax(-1, keepdim=True)
    inverse = torch.where(shifted > cutoff, 1.0 / torch.where(shifted > cutoff, shifted, 1.0), 0.0)
    return vectors @ (inverse.unsqueeze(-1) * (vectors.transpose(-1, -2) @ cross))


def _global_affine_fit(x_train: Tensor, y_train: Tensor, x_held: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """Ridge affine map ``Y ≈ A·X + b`` on the full input: its predictions on both parts.

    Solved in the smaller of the feature space (``d × d`` Gram) and the sample space (the
    ``n × n`` Gram, ``A = Xᵀ(XXᵀ + λI)⁻¹Y``, the same ridge solution) so wide sites stay cheap.
    The penalty is ``λ = ridge·tr(XcᵀXc)/d`` (centred inputs, intercept unpenalised).
    """
    x_mean, y_mean = x_train.mean(1, keepdim=True), y_train.mean(1, keepdim=True)
    x_centred, y_centred = x_train - x_mean, y_train - y_mean
    n_train, d = x_centred.shape[1:]
    penalty = ridge * x_centred.square().sum((1, 2)) / d
    if d <= n_train:
        slopes = _ridge_solution(x_centred.transpose(1, 2) @ x_centred, x_centred.transpose(1, 2) @ y_centred, penalty)
        fitted_train = x_centred @ slopes
        fitted_held = (x_held - x_mean) @ slopes
    else:
        dual = _ridge_solution(x_centred @ x_centred.transpose(1, 2), y_centred, penalty)
        fitted_train = (x_centred @ x_centred.transpose(1, 2)) @ dual
        fitted_held = ((x_held - x_mean) @ x_centred.transpose(1, 2)) @ dual
    return fitted_train + y_mean, fitted_held + y_mean


def _piecewise_affine_correction(
    z_train: Tensor,
    target_train: Tensor,
    train_labels: Tensor,
    z_held: Tensor,
    centroids: Tensor,
    k: int,
    ridge: float,
) -> tuple[Tensor, Tensor]:
    """One ridge affine map of ``target`` from ``z`` per cluster; its held-out predictions and labels."""
    width = z_train.shape[-1]
    one_hot = torch.nn.functional.one_hot(train_labels, k).to(z_train.dtype)
    counts = one_hot.sum(1)
    occupied = counts > 0
    z_mean = one_hot.transpose(1, 2) @ z_train / counts.clamp_min(1.0).unsqueeze(-1)
    t_mean = one_hot.transpose(1, 2) @ target_train / counts.clamp_min(1.0).unsqueeze(-1)

    # Centring inside each cluster = an unpenalised intercept; block features (b, n, k, r).
    z_centred = z_train - _gather_rows(z_mean, train_labels)
    t_centred = target_train - _gather_rows(t_mean, train_labels)
    blocks = one_hot.unsqueeze(-1) * z_centred.unsqueeze(2)
    gram = torch.einsum("bnci,bncj->bcij", blocks, blocks)
    cross = torch.einsum("bnci,bno->bcio", blocks, t_centred)
    # Ridge relative to the cluster's mean input variance; empty or single-point clusters have
    # zero cross-products, so their slopes are 0 (the pseudo-inverse never divides by 0).
    penalty = ridge * gram.diagonal(dim1=-2, dim2=-1).sum(-1) / width
    slopes = _ridge_solution(gram, cross, penalty)

    # Held-out points go to the nearest centroid that has training points.
    distances = _squared_distances(z_held, centroids).masked_fill(~occupied.unsqueeze(1), math.inf)
    held_labels = distances.argmin(-1)
    held_one_hot = torch.nn.functional.one_hot(held_labels, k).to(z_held.dtype)
    held_blocks = held_one_hot.unsqueeze(-1) * (z_held - _gather_rows(z_mean, held_labels)).unsqueeze(2)
    prediction = held_blocks.flatten(2) @ slopes.flatten(1, 2) + held_one_hot @ t_mean
    return prediction, held_labels


def _occupancy_entropy(train_labels: Tensor, held_labels: Tensor, k: int) -> Tensor:
    """``H = −Σ_c p_c ln p_c`` over the cluster occupancies of all samples (training and held out)."""
    counts = torch.nn.functional.one_hot(train_labels, k).sum(1) + torch.nn.functional.one_hot(held_labels, k).sum(1)
    occupancy = counts.to(torch.float64) / (train_labels.shape[1] + held_labels.shape[1])
    return 0.0 - torch.special.xlogy(occupancy, occupancy).sum(-1)  # 0.0 − avoids −0.0


def _gather_rows(per_cluster: Tensor, labels: Tensor) -> Tensor:
    """``(b, k, m)`` values and ``(b, n)`` labels → ``(b, n, m)``, each sample's cluster row."""
    return torch.gather(per_cluster, 1, labels.unsqueeze(-1).expand(-1, -1, per_cluster.shape[-1]))


def _select(
    errors: Tensor, entropies: Tensor, ks: Tensor, tolerance: float, mode: str, last_usable: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``C_ε``, floor, censored flag and ``k*`` per site from the ``e(k)`` and ``H(k)`` curves.

    ``k*`` is the first ``k`` with ``e ≤ threshold`` (``floor + ε`` or ``ε``); where none qualifies
    (absolute mode only) it is ``argmin e``. NaN entries (skipped ``k``) never qualify.
    ``last_usable`` is the index of the largest ``k`` the samples allowed.
    """
    measured = ~torch.isnan(errors).all(-1)
    finite_errors = torch.nan_to_num(errors, nan=math.inf)
    floor, lowest = finite_errors.min(-1)
    threshold = tolerance + floor if mode == "floor" else torch.full_like(floor, tolerance)
    reached = errors <= threshold.unsqueeze(-1)  # NaN (skipped k) compares False
    any_reached = reached.any(-1)
    index = torch.where(any_reached, reached.to(torch.int64).argmax(-1), lowest)
    value = torch.gather(entropies, -1, index.unsqueeze(-1)).squeeze(-1)
    value = torch.where(measured, value, math.nan)
    floor = torch.where(measured, floor, math.nan)
    if mode == "floor":
        selected_error = torch.gather(finite_errors, -1, index.unsqueeze(-1)).squeeze(-1)
        censored = measured & (index == last_usable) & (selected_error > tolerance)
    else:
        censored = measured & ~any_reached
    k_selected = torch.where(measured, ks[index], 0)
    return value, floor, censored, k_selected
