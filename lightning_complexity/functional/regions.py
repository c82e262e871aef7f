"""Linear (activation) regions of a piecewise-linear network crossed by a segment (SPEC §6, [project]).

After Hanin & Rolnick (2019) and Esaki et al. (arXiv 2009.11479); the counting procedure and the
normalisations are this project's own. The segment ``x(t) = x0 + t·(x1 − x0)``, ``t ∈ [0, 1]``,
crosses a sequence of *activation regions*: maximal intervals on which the activation pattern
(which side of each breakpoint every ReLU-like unit is on, which input every max-pool window
selects) stays the same. The network is affine on each region, so the count measures how finely
the network cuts the input space along that direction.

``method="exact"`` walks from boundary to boundary. Inside a region every pre-activation is affine
in ``t``, so one forward pass with forward-mode AD (tangent ``x1 − x0``) gives each unit's value and
slope; the nearest ``t`` at which any unit reaches a breakpoint (or any max-pool competitor
overtakes its window's maximum) is the next boundary. The walk steps a tiny ``step`` past it and
repeats. All segments walk together in one batch. Regions narrower than ``step`` (in ``t``) can be
missed; boundaries closer than ``step`` to either end of the segment are ignored.

``method="sampled"`` evaluates the pattern at ``num_samples`` evenly spaced interior points and
counts changes between neighbours: a lower bound on the exact count (up to regions narrower than
the exact walk's ``step``), usable with any network. Smooth activations (GELU, SiLU, Tanh, …) have
no regions; in sampled mode the sign of their input stands in for a pattern (a surrogate).

Exact mode accepts networks whose leaf modules are affine (``Linear``, ``Conv*``, ``ConvTranspose*``,
``BatchNorm*`` in eval mode, pooling by averaging, padding, ``Flatten``, ``Dropout`` in eval mode, …)
or piecewise linear (``ReLU``, ``LeakyReLU``, ``PReLU``, ``RReLU``, ``Hardtanh``, ``ReLU6``,
``MaxPool1d``, ``MaxPool2d``), composed by any container or custom ``forward`` (residual sums,
concatenations). A non-linearity written as a function inside ``forward`` (``F.relu``) is invisible
to the module hooks; the walk detects that the output is not affine between the boundaries it found
and raises, naming ``method="sampled"`` as the way out.

The model is evaluated in eval mode under ``no_grad`` and handed back exactly as it came (training
flags, parameters, gradients). By default the computation runs in float64 on float64 copies of the
parameters (through ``torch.func.functional_call``; the module itself is not cast). Forward hooks
already registered on the model (for instance activation capture) see these forward passes.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0)
    ...     _ = net[0].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))  # kinks at x = −1, 0, 1
    >>> result = count_linear_regions(net, torch.tensor([[-2.0]]), torch.tensor([[2.0]]))
    >>> result.counts.tolist(), result.per_unit_length.tolist(), result.per_neuron.tolist()
    ([4], [1.0], [1.3333333333333333])
    >>> [round(t, 6) for t in result.boundaries[0].tolist()]
    [0.25, 0.5, 0.75]
"""


from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lightning_complexity.modes import evaluation_mode
from lightning_complexity.nesting import tensor_leaves

__all__ = ["LinearRegionCount", "count_linear_regions"]

Method = Literal["exact", "sampled"]

# Leaf modules that are affine in their input (in eval mode): they never start a new region.
AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)  # fmt: skip

_SAMPLE_OFFSET = (math.sqrt(5.0) - 1.0) / 2.0
_EMPTY_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # an empty Sequential is the identity
# Piecewise-linear elementwise units, by their breakpoints (ReLU6 is a Hardtanh).
_ELEMENTWISE_KINKS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Hardtanh)
_MAX_POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d)
# Activations without regions; sampled mode uses the sign of their input as a surrogate pattern.
_NOT_ACTIVATIONS = (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.GLU)


@dataclass(frozen=True)
class LinearRegionCount:
    """Regions crossed by each of ``S`` segments.

    Attributes:
        counts: int64 ``(S,)``, number of activation regions met on ``t ∈ [0, 1]`` (≥ 1).
        lengths: float64 ``(S,)``, ``‖x1 − x0‖`` over all input elements.
        per_unit_length: float64 ``(S,)``, ``counts / lengths`` (NaN for zero-length segments).
        per_neuron: float64 ``(S,)``, ``counts / num_units`` (NaN without piecewise-linear units).
        num_units: piecewise-linear units per input: elements entering each ReLU-like module
            call plus windows of each max-pool call (plus surrogate units in sampled mode).
        method: ``"exact"`` or ``"sampled"``.
        boundaries: exact mode: for each segment, float64 ``t`` of the boundaries crossed, in
            increasing order (``counts − 1`` of them); ``None`` in sampled mode.
    """

    counts: Tensor
    lengths: Tensor
    per_unit_length: Tensor
    per_neuron: Tensor
    num_units: int
    method: str
    boundaries: tuple[Tensor, ...] | None = None

    @property
    def mean_count(self) -> float:
        """Mean number of regions over the segments."""
        return float(self.counts.double().mean())

    @property
    def mean_per_unit_length(self) -> float:
        """Mean regions per unit length over the segments (NaN ones skipped)."""
        return float(self.per_unit_length.nanmean())

    @property
    def mean_per_neuron(self) -> float:
        """Mean regions per piecewise-linear unit over the segments."""
        return float(self.per_neuron.nanmean())


# --- what one call of a non-linear module contributes ------------------------------------------------

@dataclass
class _Call:
    module: nn.Module
    value: Tensor  # the module's input, (S, ...)
    slope: Tensor | None  # d value / dt (exact mode), same shape


def _breakpoints(module: nn.Module) -> tuple[float, ...]:
    if isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))
    return (0.0,)


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _pool_windows(module: nn.Module, value: Tensor, fill: float) -> Tensor:
    """Every max-pool window as ``(S, C, window elements, windows)``, padded with ``fill``."""
    settings = [module.kernel_size, module.stride, module.padding, module.dilation]
    if isinstance(module, nn.MaxPool1d):  # as a 2-D pool over a height of one
        value = value.unsqueeze(-2)
        kernel, stride, padding, dilation = ((default, *_tuple(v, 1)) for v, default in zip(settings, (1, 1, 0, 1)))
    else:
        kernel, stride, padding, dilation = (_tuple(v, 2) for v in settings)
    if value.ndim != 4:
        raise ValueError(f"{type(module).__name__} inside the model must see batched input, got {tuple(value.shape)}")
    pads = []
    for size, k, s, p, d in zip(value.shape[-2:], kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        numerator = size + 2 * p - span
        out = (-(-numerator // s) if module.ceil_mode else numerator // s) + 1
        if module.ceil_mode and (out - 1) * s >= size + p:  # PyTorch drops a window starting in the right padding
            out -= 1
        extra = max(0, (out - 1) * s + span - (size + 2 * p))
        pads.append((p, p + extra))
    padded = F.pad(value, (*pads[1], *pads[0]), value=fill)
    if dilation == (1, 1):
        # A strided view: F.unfold (im2col) takes seconds on float64 CPU tensors of this size.
        windows = padded.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])  # (S, C, oh, ow, kh, kw)
        return windows.flatten(4).flatten(2, 3).transpose(2, 3)
    columns = F.unfold(padded, kernel, dilation=dilation, stride=stride)
    return columns.view(value.shape[0], value.shape[1], kernel[0] * kernel[1], -1)


def _unit_count(call: _Call) -> int:
    if isinstance(call.module, _MAX_POOLS):
        windows = _pool_windows(call.module, call.value[:1], -math.inf)
        return windows.shape[1] * windows.shape[3]
    return call.value[0].numel()


def _pattern(call: _Call) -> Tensor:
    """Activation pattern ``(S, units)``: breakpoint side, selected window element, or sign."""
    if isinstance(call.module, _MAX_POOLS):
        return _pool_windows(call.module, call.value, -math.inf).argmax(2).flatten(1)
    value = call.value.flatten(1)
    if isinstance(call.module, _ELEMENTWISE_KINKS):
        return sum((value > b).to(torch.int8) for b in _breakpoints(call.module))
    return (value > 0).to(torch.int8)


def _next_crossing(call: _Call, min_step: float) -> Tensor:
    """Smallest ``Δt > min_step`` at which the pattern of this call changes, ``(S,)`` (inf if never)."""
    slope = torch.zeros_like(call.value) if call.slope is None else call.slope
    if isinstance(call.module, _MAX_POOLS):
        values = _pool_windows(call.module, call.value, -math.inf)
        slopes = _pool_windows(call.module, slope, 0.0)
        selected = values.argmax(2, keepdim=True)
        gap = values.gather(2, selected) - values  # ≥ 0; +inf for padding
        closing = slopes - slopes.gather(2, selected)  # a competitor overtakes where this is > 0
        steps = torch.where(closing > 0, gap / torch.where(closing > 0, closing, 1.0), math.inf)
    else:
        value, slope = call.value.flatten(1), slope.flatten(1)
        moving = slope != 0
        safe_slope = torch.where(moving, slope, 1.0)
        breakpoints = _breakpoints(call.module)
        steps = torch.stack([torch.where(moving, (b - value) / safe_slope, math.inf) for b in breakpoints], dim=1)
    steps = torch.where(steps > min_step, steps, math.inf)
    return steps.flatten(1).amin(1) if steps[0].numel() else torch.full_like(steps.flatten(1)[:, 0], math.inf)


# --- running the model --------------------------------------------------------------------------------

def _non_linear_modules(
    model: nn.Module, method: Method, affine_modules: tuple[type[nn.Module], ...]
) -> list[nn.Module]:
    """The modules whose calls define the activation pattern; (exact) reject unknown leaves."""
    tracked = []
    for name, module in model.named_modules():
        if isinstance(module, _ELEMENTWISE_KINKS + _MAX_POOLS):
            tracked.append(module)
        elif next(module.children(), None) is not None:
            continue  # containers: their leaves are checked
        elif method == "exact" and not isinstance(module, AFFINE_MODULES + _EMPTY_CONTAINERS + affine_modules):
            raise ValueError(
                f"count_linear_regions(method='exact') cannot handle module '{name}' ({type(module).__name__}): "
                "exact counting needs leaf modules that are affine (Linear, Conv, BatchNorm, AvgPool, Flatten, "
                "Dropout, ...) or piecewise linear (ReLU, LeakyReLU, PReLU, RReLU, Hardtanh, ReLU6, MaxPool1d, "
                "MaxPool2d); pass its type in `affine_modules` if it is affine, else use method='sampled'"
            )
        elif method == "sampled" and type(module).__module__ == "torch.nn.modules.activation":
            if not isinstance(module, _NOT_ACTIVATIONS):
                tracked.append(module)
    return tracked


@contextmanager
def _recording(modules: list[nn.Module], with_slopes: bool) -> Iterator[list[_Call]]:
    """Record the input of every call of ``modules`` (copied: in-place ReLUs overwrite it)."""
    calls: list[_Call] = []

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        value, slope = fwAD.unpack_dual(args[0]) if with_slopes else (args[0], None)
        calls.append(_Call(module, value.detach().clone(), None if slope is None else slope.detach().clone()))

    handles = [m.register_forward_pre_hook(record) for m in dict.fromkeys(modules)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


class _Runner:
    """Calls the model in the requested dtype without casting the module itself."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None) -> None:
        self.model = model
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        floating = [t for t in state.values() if t.is_floating_point()]
        self.dtype = dtype or (floating[0].dtype if floating else torch.get_default_dtype())
        self.state = None
        if any(t.dtype != self.dtype for t in floating):
            self.state = {k: t.to(self.dtype) if t.is_floating_point() else t for k, t in state.items()}

    def __call__(self, x: Tensor) -> Any:
        if self.state is None:
            return self.model(x)
        return functional_call(self.model, self.state, (x,))


def _flat_output(output: Any, with_slopes: bool) -> tuple[Tensor, Tensor]:
    """Model output leaves as one ``(S, elements)`` tensor, and their slopes (zeros without slopes)."""
    leaves = tensor_leaves(output)
    if with_slopes:
        pairs = [fwAD.unpack_dual(leaf) for leaf in leaves]
    else:
        pairs = [(leaf, None) for leaf in leaves]
    values = [p.flatten(1) for p, _ in pairs]
    slopes = [torch.zeros_like(p) if g is None else g.flatten(1) for p, g in zip(values, (g for _, g in pairs))]
    if not values:
        raise TypeError(f"count_linear_regions needs a model whose output holds tensors, got {type(output).__name__}")
    return torch.cat(values, 1), torch.cat(slopes, 1)


def _check_affine(
    previous: tuple[Tensor, Tensor, Tensor], now: tuple[Tensor, Tensor, Tensor], step: float, rtol: float
) -> None:
    """Raise if the output moved non-affinely between two probe points (a hidden non-linearity).

    From ``t_a`` with value ``y_a`` and slope ``g_a``, an affine piece predicts ``y_a + (t_b − t_a)·g_a``
    at ``t_b``; crossing a found boundary ``step`` before ``t_b`` adds at most ``step·(|g_a| + |g_b|)``.
    """
    (t_a, y_a, g_a), (t_b, y_b, g_b) = previous, now
    if y_a.shape[1] == 0:
        return
    dt = (t_b - t_a).unsqueeze(1)
    predicted = y_a + dt * g_a
    scale = y_a.abs() + y_b.abs() + (dt * g_a).abs() + y_b.abs().amax(1, keepdim=True)
    allowed = step * (g_a.abs() + g_b.abs()) + rtol * scale
    if not bool(((predicted - y_b).abs() <= allowed).all()):
        raise RuntimeError(
            "count_linear_regions(method='exact'): the network output is not affine between the region "
            "boundaries found from its modules, so it has a non-linearity that is not a supported module "
            "(e.g. F.relu or torch.max inside forward); use method='sampled'"
        )


def _segments(x0: Tensor, x1: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(x0, Tensor) or not isinstance(x1, Tensor):
        raise TypeError(f"`x0` and `x1` must be torch.Tensors, got {type(x0).__name__} and {type(x1).__name__}")
    if x0.shape != x1.shape or x0.ndim < 2:
        raise ValueError(
            "`x0` and `x1` must have the same shape (S, *input_shape) with one segment per row, "
            f"got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    start, end = x0.detach().to(dtype), x1.detach().to(dtype)
    direction = end - start
    return start, direction, direction.flatten(1).norm(dim=1).to(torch.float64)


def _along(start: Tensor, direction: Tensor, t: Tensor) -> Tensor:
    return start + t.to(start.dtype).view(-1, *[1] * (start.ndim - 1)) * direction


def _walk_exact(
    runner: _Runner, modules: list[nn.Module], start: Tensor, direction: Tensor, step: float, max_steps: int
) -> tuple[Tensor, list[list[float]], int]:
    num_segments, device = start.shape[0], start.device
    rtol = 100.0 * math.sqrt(torch.finfo(runner.dtype).eps)
    t = torch.full((num_segments,), step, dtype=torch.float64, device=device)
    boundaries: list[list[float]] = [[] for _ in range(num_segments)]
    walking = torch.arange(num_segments, device=device)
    last: tuple[Tensor, Tensor, Tensor] | None = None  # per segment: t, output and its slope at the last probe
    num_units = 0

    def probe(index: Tensor, at: Tensor) -> tuple[list[_Call], Tensor, Tensor]:
        with fwAD.dual_level(), _recording(modules, with_slopes=True) as calls:
            output = runner(fwAD.make_dual(_along(start[index], direction[index], at), direction[index]))
            values, slopes = _flat_output(output, with_slopes=True)
        return calls, values.to(torch.float64), slopes.to(torch.float64)

    for iteration in range(max_steps + 1):
        calls, values, slopes = probe(walking, t[walking])
        if last is None:
            num_units = sum(_unit_count(c) for c in calls)
            width = values.shape[1]
            last = (t.clone(), values.new_zeros(num_segments, width), values.new_zeros(num_segments, width))
        else:
            _check_affine(tuple(v[walking] for v in last), (t[walking], values, slopes), step, rtol)
        last[0][walking], last[1][walking], last[2][walking] = t[walking], values, slopes
        if not calls:
            break
        distance = torch.stack([_next_crossing(c, step / 2) for c in calls]).amin(0).to(torch.float64)
        boundary = t[walking] + distance
        crossing = boundary < 1.0 - step
        for segment, at in zip(walking[crossing].tolist(), boundary[crossing].tolist()):
            boundaries[segment].append(at)
        t[walking[crossing]] = boundary[crossing] + step
        walking = walking[crossing]
        if walking.numel() == 0:
            break
        if iteration == max_steps:
            raise RuntimeError(f"count_linear_regions: more than max_steps={max_steps} regions on a segment")
    # The last region of every segment must be affine all the way to t = 1 as well.
    everyone = torch.arange(num_segments, device=device)
    ends = torch.ones(num_segments, dtype=torch.float64, device=device)
    _, values, slopes = probe(everyone, ends)
    _check_affine(last, (ends, values, slopes), step, rtol)
    counts = torch.tensor([len(b) + 1 for b in boundaries], dtype=torch.int64, device=device)
    return counts, boundaries, num_units


def _count_sampled(
    runner: _Runner, modules: list[nn.Module], start: Tensor, direction: Tensor, num_samples: int, batch_size: int
) -> tuple[Tensor, int]:
    num_segments = start.shape[0]
    # Interior points offset by the golden ratio's fraction rather than 1/2: a sample exactly on a
    # boundary (the ends, dyadic points of symmetric nets) sees a third pattern and counts twice.
    t_all = (torch.arange(num_samples, dtype=torch.float64, device=start.device) + _SAMPLE_OFFSET) / num_samples
    chunk = max(1, batch_size // num_segments)
    changes = torch.zeros(num_segments, dtype=torch.int64, device=start.device)
    previous: Tensor | None = None
    num_units = 0
    for first in range(0, num_samples, chunk):
        t = t_all[first : first + chunk]
        repeat = len(t)  # segment-major: all points of segment 0, then of segment 1, ...
        starts, directions = start.repeat_interleave(repeat, 0), direction.repeat_interleave(repeat, 0)
        points = _along(starts, directions, t.repeat(num_segments))
        with _recording(modules, with_slopes=False) as calls:
            runner(points)
        if not calls:
            break
        if first == 0:
            num_units = sum(_unit_count(c) for c in calls)
        pattern = torch.cat([_pattern(c).to(torch.int64) for c in calls], 1).view(num_segments, len(t), -1)
        if previous is not None:
            pattern = torch.cat((previous, pattern), 1)
        changes += (pattern[:, 1:] != pattern[:, :-1]).any(2).sum(1)
        previous = pattern[:, -1:]
    return changes + 1, num_units


def count_linear_regions(
    model: nn.Module,
    x0: Tensor,
    x1: Tensor,
    *,
    method: Method = "exact",
    num_samples: int = 4096,
    batch_size: int = 4096,
    dtype: torch.dtype | None = torch.float64,
    step: float | None = None,
    max_steps: int = 100_000,
    affine_modules: tuple[type[nn.Module], ...] = (),
) -> LinearRegionCount:
    """Count the activation regions crossed by the segments ``x0[s] → x1[s]``.

    Args:
        model: a network; see the module docstring for what ``method="exact"`` accepts.
        x0, x1: segment ends, ``(S, *input_shape)``: row ``s`` is one segment, fed to the model as a
            batch (so ``x0[:1]`` for a single segment).
        method: ``"exact"`` (walk boundary to boundary) or ``"sampled"`` (lower bound).
        num_samples: sampled mode: evenly spaced points per segment.
        batch_size: sampled mode: model inputs per forward pass.
        dtype: floating dtype to compute in (float64 default: boundaries of deep nets need it);
            ``None`` keeps the model's dtype.
        step: exact mode: how far past a boundary (in ``t``) the next probe goes; default
            ``1e-9`` in float64, ``1e-5`` otherwise.
        max_steps: exact mode: give up (RuntimeError) beyond this many regions on a segment.
        affine_modules: exact mode: further leaf module types to accept as affine in their input
            (a wrong claim is caught by the affinity check and raises).

    Returns:
        :class:`LinearRegionCount` with per-segment counts and normalisations.

    Raises:
        ValueError: bad arguments, or (exact) a leaf module that is neither affine nor piecewise linear.
        RuntimeError: (exact) the output is not affine between boundaries, or ``max_steps`` exceeded.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> x0, x1 = torch.randn(5, 4), torch.randn(5, 4)
        >>> exact = count_linear_regions(net, x0, x1)
        >>> sampled = count_linear_regions(net, x0, x1, method="sampled", num_samples=256)
        >>> bool((exact.counts >= sampled.counts).all()), exact.num_units
        (True, 32)
    """
    if method not in ("exact", "sampled"):
        raise ValueError(f"`method={method!r}` is not accepted: expected 'exact' or 'sampled'")
    if num_samples < 1 or batch_size < 1 or max_steps < 1:
        raise ValueError(
            f"`num_samples`, `batch_size` and `max_steps` must be >= 1, got {num_samples}, {batch_size}, {max_steps}"
        )
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"`dtype={dtype}` is not accepted: expected a floating dtype or None")
    modules = _non_linear_modules(model, method, tuple(affine_modules))
    runner = _Runner(model, dtype)
    start, direction, lengths = _segments(x0, x1, runner.dtype)
    if step is None:
        step = 1e-9 if runner.dtype == torch.float64 else 1e-5
    if not 0 < step < 0.5:
        raise ValueError(f"`step={step}` is not accepted: expected 0 < step < 0.5")

    boundaries: tuple[Tensor, ...] | None = None
    with evaluation_mode(model), warnings.catch_warnings():
        # torch scripts its forward-AD decompositions on first use and warns that jit is deprecated.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script`", category=DeprecationWarning)
        if method == "exact":
            counts, found, num_units = _walk_exact(runner, modules, start, direction, step, max_steps)
            boundaries = tuple(torch.tensor(b, dtype=torch.float64, device=start.device) for b in found)
        else:
            counts, num_units = _count_sampled(runner, modules, start, direction, num_samples, batch_size)

    float_counts = counts.to(torch.float64)
    nan = torch.tensor(math.nan, dtype=torch.float64, device=counts.device)
    lengths = lengths.to(counts.device)
    return LinearRegionCount(
        counts=counts,
        lengths=lengths,
        per_unit_length=torch.where(lengths > 0, float_counts / torch.where(lengths > 0, lengths, 1.0), nan),
        per_neuron=float_counts / num_units if num_units else torch.full_like(float_counts, math.nan),
        num_units=num_units,
        method=method,
        boundaries=boundaries,
    )
