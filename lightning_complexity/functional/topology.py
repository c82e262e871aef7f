"""Betti numbers of thresholded 2-D feature maps, and their decay through depth (SPEC §5, [project]).

After Suresh et al. (arXiv 2311.04592), who track the cubical homology of a network's
representations layer by layer; the per-map counts, the summaries and their names are this
project's own definitions.

For every 2-D map the set ``{x > threshold}`` (strict) is read as a cubical complex in which each
selected pixel is a closed unit square (the "T-construction", gudhi's ``CubicalComplex`` default).
Consequences: selected pixels that touch only at a corner are connected (8-connectivity), a hole
is a bounded 4-connected component of unselected pixels, and unselected pixels that reach the
image border never form a hole.

* ``b0`` = number of connected components, from a connected-component labelling;
* ``χ = V − E + F`` of the complex (vertices, edges and squares of the selected closed pixels),
  counted for all maps at once with pooling;
* ``b1 = b0 − χ`` (exact for subsets of the plane: ``χ = b0 − b1`` and ``b2 = 0``).

Two labelling backends give identical results: ``"scipy"`` (``scipy.ndimage.label`` on the host;
the default for CPU tensors, where it is the faster one) and ``"torch"`` (label propagation over
3×3 neighbourhoods with hooking and pointer jumping; runs where the tensor lives, the default for
accelerator tensors, so device tensors never leave their device).

Example:
    >>> import torch
    >>> ring = torch.zeros(5, 5)
    >>> ring[1:4, 1:4] = 1.0
    >>> ring[2, 2] = 0.0
    >>> betti_numbers(ring).tolist()
    [1, 1]
    >>> blobs = torch.zeros(1, 2, 6, 6)
    >>> blobs[..., 0:2, 0:2] = 1.0
    >>> blobs[..., 4:6, 4:6] = 1.0
    >>> betti_numbers(blobs).tolist()
    [[[2, 0], [2, 0]]]
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BettiDepthSummary",
    "active_fraction",
    "betti_depth_decay",
    "betti_numbers",
    "connected_components",
    "euler_characteristic",
]

Backend = Literal["auto", "scipy", "torch"]

# 3×3×3 structuring element with only the middle slice set: 8-connectivity inside each map and
# none across the stacked maps, so one ``ndimage.label`` call labels every map.
_PER_MAP_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_PER_MAP_8_CONNECTIVITY[1] = True


def _as_maps(maps: Tensor) -> Tensor:
    if not isinstance(maps, Tensor):
        raise TypeError(f"`maps` must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim < 2:
        raise ValueError(f"`maps` must have shape (..., H, W), got {tuple(maps.shape)}")
    if maps.is_complex():
        raise TypeError(f"`maps` must be real-valued, got dtype {maps.dtype}")
    return maps


def _foreground(maps: Tensor, threshold: float) -> Tensor:
    """Bool ``(B, H, W)`` of ``maps > threshold`` with every leading axis folded into ``B``."""
    num_maps = int(np.prod(maps.shape[:-2], dtype=np.int64))
    return (maps > threshold).reshape(num_maps, *maps.shape[-2:])


def euler_characteristic(foreground: Tensor) -> Tensor:
    """Euler characteristic ``V − E + F`` (int64 ``(B,)``) of each bool map ``(B, H, W)``, T-construction.

    A lattice vertex or edge belongs to the complex when at least one selected pixel has it on its
    boundary; plain boolean shifts mark those cells on any device.

    Example:
        >>> euler_characteristic(torch.ones(1, 3, 3, dtype=torch.bool)).tolist()  # a filled square
        [1]
    """
    # A vertex or edge is in the complex when any selected pixel around it is: OR over the
    # 2×2 (vertex) or 2×1 / 1×2 (edge) pixels next to it, with a zero border added first.
    padded = F.pad(foreground, (1, 1, 1, 1))
    around_horizontal_edge = padded[:, :-1, :] | padded[:, 1:, :]  # (B, H+1, W+2)
    vertices = around_horizontal_edge[:, :, :-1] | around_horizontal_edge[:, :, 1:]
    horizontal_edges = around_horizontal_edge[:, :, 1:-1]
    vertical_edges = padded[:, 1:-1, :-1] | padded[:, 1:-1, 1:]
    count = lambda cells: cells.flatten(1).sum(1)  # noqa: E731
    return count(vertices) - count(horizontal_edges) - count(vertical_edges) + count(foreground)


def _components_scipy(foreground: Tensor) -> Tensor:
    from scipy import ndimage

    mask = foreground.detach().cpu().numpy()
    labels, _ = ndimage.label(mask, structure=_PER_MAP_8_CONNECTIVITY)
    flat = labels.reshape(len(labels), -1)
    # scipy numbers components in raster order, so each map holds one contiguous block of labels,
    # after the blocks of the maps before it. That makes the count a difference of running
    # maxima; the check below proves the layout (the blocks then tile 1..n), else count slowly.
    last = np.maximum.accumulate(flat.max(1))
    before = np.concatenate(([0], last[:-1]))
    first = np.where(flat > 0, flat, np.iinfo(flat.dtype).max).min(1)
    nonempty = last > before
    if np.array_equal(first[nonempty], before[nonempty] + 1):
        counts = last - before
    else:
        map_of_label = np.zeros(last[-1] + 1, dtype=np.int64)
        map_of_label[flat] = np.arange(len(flat))[:, None]
        counts = np.bincount(map_of_label[1:], minlength=len(flat))
    return torch.from_numpy(counts.astype(np.int64)).to(foreground.device)


def _neighbourhood_max(labels: Tensor) -> Tensor:
    """Maximum over each pixel's 3×3 neighbourhood of ``(B, H, W)`` labels (separable shifts).

    ``max_pool2d`` would do the same but is ~8× slower on CPU and lacks integer support.
    """
    padded = F.pad(labels, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _components_torch(foreground: Tensor) -> Tensor:
    """Component count by label propagation with hooking and pointer jumping, all in torch.

    ``parent[p]`` is the 1-based index of a pixel in p's component with ``parent[p] ≥ p``
    (0 off the set). Each round hooks every pixel's representative onto the largest label in
    the pixel's neighbourhood, then compresses the pointer chains; labels only grow and stay
    inside their component, so the fixed point gives every pixel the largest index of its
    component, and each component has exactly one pixel that is its own parent. Hooking the
    representatives (not just the pixels) merges whole trees at once, so the number of rounds
    grows with the logarithm of the component diameter, not with the diameter itself.
    """
    batch, height, width = foreground.shape
    pixels = height * width
    selected = foreground.reshape(batch, pixels)
    own_index = torch.arange(1, pixels + 1, device=foreground.device).expand(batch, pixels)
    parent = torch.where(selected, own_index, 0)
    while True:
        neighbour_max = _neighbourhood_max(parent.view(batch, height, width)).view(batch, pixels)
        neighbour_max = torch.where(selected, neighbour_max, 0)
        hooked = parent.scatter_reduce(1, (parent - 1).clamp_min(0), neighbour_max, reduce="amax")
        hooked = torch.maximum(hooked, neighbour_max)
        while True:  # pointer jumping until every pixel points at its current root
            jumped = torch.where(selected, torch.gather(hooked, 1, (hooked - 1).clamp_min(0)), 0)
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            return (selected & (parent == own_index)).sum(1)
        parent = hooked


def connected_components(foreground: Tensor, backend: Backend = "auto") -> Tensor:
    """Number of 8-connected components (int64 ``(B,)``) of each bool map ``(B, H, W)``.

    ``backend="auto"`` uses scipy for CPU tensors and the torch propagation elsewhere.

    Example:
        >>> diagonal = torch.eye(4, dtype=torch.bool).unsqueeze(0)
        >>> connected_components(diagonal).tolist(), connected_components(diagonal, "torch").tolist()
        ([1], [1])
    """
    if backend not in ("auto", "scipy", "torch"):
        raise ValueError(f"`backend={backend!r}` is not accepted: expected 'auto', 'scipy' or 'torch'")
    if foreground.numel() == 0:
        return torch.zeros(foreground.shape[0], dtype=torch.int64, device=foreground.device)
    if backend == "scipy" or (backend == "auto" and foreground.device.type == "cpu"):
        return _components_scipy(foreground)
    return _components_torch(foreground)


def betti_numbers(maps: Tensor, threshold: float = 0.0, *, backend: Backend = "auto") -> Tensor:
    """Betti numbers ``(b0, b1)`` of ``{maps > threshold}`` for every 2-D map, T-construction.

    Args:
        maps: real tensor ``(..., H, W)``; every trailing ``H × W`` slice is one map (e.g. a batch
            of activations ``(N, C, H, W)``). NaN pixels are not selected.
        threshold: pixels strictly above it are selected (exact zeros are out at the default 0).
        backend: connected-component labelling, see :func:`connected_components`.

    Returns:
        int64 tensor ``(..., 2)`` on ``maps``' device: ``[..., 0]`` = b0, ``[..., 1]`` = b1.

    Example:
        >>> figure_eight = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1]])
        >>> betti_numbers(figure_eight).tolist()
        [1, 2]
    """
    maps = _as_maps(maps)
    foreground = _foreground(maps, threshold)
    b0 = connected_components(foreground, backend)
    b1 = b0 - euler_characteristic(foreground)
    return torch.stack((b0, b1), dim=-1).reshape(*maps.shape[:-2], 2)


def active_fraction(maps: Tensor, threshold: float = 0.0) -> Tensor:
    """Fraction of pixels above ``threshold`` in every 2-D map: float64 ``(...)`` for maps ``(..., H, W)``.

    Example:
        >>> active_fraction(torch.tensor([[1.0, 0.0], [2.0, -1.0]])).item()
        0.5
    """
    maps = _as_maps(maps)
    selected = (maps > threshold).flatten(-2).sum(-1)
    return selected.to(torch.float64) / max(maps.shape[-2] * maps.shape[-1], 1)


class BettiDepthSummary(NamedTuple):
    """How the topology of the feature maps changes with depth (see :func:`betti_depth_decay`)."""

    decay_rate: Tensor
    normalised_area: Tensor


def betti_depth_decay(per_site_mean_betti_sum: Tensor) -> BettiDepthSummary:
    """Slope and normalised area of ``ln(mean b0 + mean b1)`` against normalised depth (SPEC §5).

    Definitions (this project's): the ``L`` sites are given in forward order, site ``i`` sits at
    normalised depth ``u_i = i / (L − 1)`` in ``[0, 1]``, and ``y_i = ln s_i`` with ``s_i`` the
    site's mean ``b0 + b1`` per map. Only sites with finite ``s_i > 0`` (``ln`` defined) are used.

    * ``decay_rate``: least-squares slope of ``y`` on ``u``. It is **negative when the topology
      simplifies with depth**; −1 means the Betti sum shrinks by a factor ``e`` from the first to
      the last site. NaN with fewer than two usable sites.
    * ``normalised_area``: trapezoidal area under ``y(u)`` over the usable sites divided by the
      depth they span (the whole ``[0, 1]`` when every site is usable): the mean log Betti sum
      along depth, comparable between networks of different depth. NaN with fewer than two
      usable sites.

    Args:
        per_site_mean_betti_sum: ``(L,)``, or ``(..., L)`` for several curves at once.

    Returns:
        ``BettiDepthSummary(decay_rate, normalised_area)``, float64 tensors of shape ``(...)``.

    Example:
        >>> s = torch.exp(-2.0 * torch.linspace(0, 1, 5, dtype=torch.float64))  # ln s = −2u
        >>> summary = betti_depth_decay(s)
        >>> round(summary.decay_rate.item(), 6), round(summary.normalised_area.item(), 6)
        (-2.0, -1.0)
    """
    s = per_site_mean_betti_sum
    if not isinstance(s, Tensor):
        raise TypeError(f"`per_site_mean_betti_sum` must be a torch.Tensor, got {type(s).__name__}")
    if s.ndim < 1:
        raise ValueError(f"`per_site_mean_betti_sum` must have shape (L,) or (..., L), got {tuple(s.shape)}")
    s = s.to(torch.float64)
    num_sites = s.shape[-1]
    usable = torch.isfinite(s) & (s > 0)
    y = torch.where(usable, torch.log(torch.where(usable, s, 1.0)), 0.0)
    u = torch.arange(num_sites, dtype=torch.float64, device=s.device) / max(num_sites - 1, 1)
    u = u.expand_as(s)
    weight = usable.to(torch.float64)
    count = weight.sum(-1)
    enough = count >= 2

    safe_count = count.clamp_min(1.0)
    u_mean = (weight * u).sum(-1, keepdim=True) / safe_count.unsqueeze(-1)
    y_mean = (weight * y).sum(-1, keepdim=True) / safe_count.unsqueeze(-1)
    spread = (weight * (u - u_mean) ** 2).sum(-1)
    slope = (weight * (u - u_mean) * (y - y_mean)).sum(-1) / torch.where(enough, spread, 1.0)

    # Trapezoids between consecutive usable sites: pair each usable site with the previous one.
    index = torch.arange(num_sites, device=s.device).expand_as(s)
    last_usable = torch.where(usable, index, -1).cummax(-1).values
    previous = torch.cat((torch.full_like(last_usable[..., :1], -1), last_usable[..., :-1]), dim=-1)
    has_previous = usable & (previous >= 0)
    prev_index = previous.clamp_min(0)
    u_prev, y_prev = u.gather(-1, prev_index), y.gather(-1, prev_index)
    area = torch.where(has_previous, 0.5 * (u - u_prev) * (y + y_prev), 0.0).sum(-1)
    first_u = torch.where(usable, u, torch.inf).amin(-1)
    last_u = torch.where(usable, u, -torch.inf).amax(-1)
    span = torch.where(enough, last_u - first_u, 1.0)

    nan = torch.tensor(torch.nan, dtype=torch.float64, device=s.device)
    return BettiDepthSummary(torch.where(enough, slope, nan), torch.where(enough, area / span, nan))
