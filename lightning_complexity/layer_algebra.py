"""Layer algebra: static per-layer metrics read from the architecture and one example input (SPEC §7).

[project] This project's own definitions, after Badias & Banerjee (arXiv 2107.01081); they do not
claim to reproduce that paper. Computed once per fit, independent of the data:

* ``parameters``: the layer's parameters, each counted once (at the first call that uses it).
* ``macs``: multiply-accumulates per sample. Linear: ``out elements × in_features``; ConvNd:
  ``out elements × in_channels/groups × kernel volume``; ConvTransposeNd: ``in elements ×
  out_channels/groups × kernel volume``; Bilinear: ``out elements × in1 × in2``; normalisation
  layers: one per output element (their scale and shift). Everything else counts 0 (activations,
  pooling and additions are no multiply-accumulates).
* ``input_size``, ``output_size``: tensor elements per sample (input: summed over the tensor
  arguments; output: the first output tensor, so max-pool indices or RNN states do not count).
* ``intrinsic_power = log2(output_size / input_size)``: < 0 compresses, > 0 expands.
* ``receptive_field``: per spatial axis, how many input pixels one output element can see,
  ``r_out = r_in + (k_eff − 1)·j_in`` with ``j`` the product of strides (the *jump*) and
  ``k_eff = dilation·(k − 1) + 1``; branches that merge take the largest. ``None`` once the spatial
  layout is gone (flatten, linear, global statistics) or cannot be followed.
* ``layer_complexity``: log2 of an upper bound on the factor by which the layer can multiply the
  number of linear regions of the network. Inside one region of everything before it, the layer's
  input is an affine function of the network input on a set of dimension at most ``d`` (the
  ``input_dim_bound``: the network input size, capped by every narrower tensor on the way, since
  an affine or piecewise-linear map never raises dimension). A layer whose pieces are separated by
  ``N`` hyperplanes in that space cuts it into at most ``Σ_{j=0}^{min(d, N)} C(N, j)`` pieces
  (Zaslavsky's bound for hyperplane arrangements, as used by Serra et al. 2018). ``N`` = one
  hyperplane per unit for ReLU/LeakyReLU/PReLU/RReLU/Threshold, two for Hardtanh/ReLU6/
  Hardsigmoid/Hardshrink/Softshrink, and
  ``windows × k(k − 1)/2`` pairwise comparisons for max-pooling over ``k`` elements. Affine layers
  give 0; other non-linear layers (GELU, Tanh, Softmax, LayerNorm, …) have no linear regions and
  give NaN.
* ``cumulative_complexity``: the sum of ``layer_complexity`` over the layer and every layer it
  depends on; ``depth``: weight layers (Linear, Conv, ConvTranspose, Bilinear) on the longest path
  from the input up to and including the layer.

Composition (``totals``): parameters and MACs add. Region-multiplication bounds add in series, and
they add over parallel branches too (two partitions overlaid have at most the product of their
cell counts), so the network's complexity is the sum over all layers feeding its output (NaN if
any is NaN). Intrinsic powers telescope along a chain and a concatenation adds branch sizes while a
residual sum keeps one, so the network's power is ``log2(output size / input size)``. Depth takes
the longest path; receptive fields take the largest branch.

Structure: the graph (branches, residual sums, concatenations, functional calls such as ``F.relu``
or ``x + y``) comes from ``torch.fx.symbolic_trace``, with every module that has no children as a
leaf. If tracing fails (data-dependent control flow), forward hooks on the leaf modules record the
layers in call order instead; sizes, parameters and MACs stay exact, but a tensor made outside a
module (a residual sum, a concatenation) is taken to continue the latest layer's output (a *series
assumption*), so receptive fields, dimension bounds and depth can be off for branching networks;
``totals.structure`` says which path was used. Functional parametric calls (``F.conv2d`` with a
weight attribute) are not rows; their parameters still count in ``totals.parameters``. The example
forward runs in eval mode under ``no_grad`` (training flags restored after); hooks already on the
model see it. Modules on the ``meta`` device work (nothing is computed, shapes are enough).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2))
    >>> table = layer_algebra(net, torch.zeros(1, 1, 8, 8))
    >>> [(r.name, r.parameters, r.macs, r.receptive_field) for r in table.rows][:3]
    [('0', 40, 1296, (3, 3)), ('1', 0, 0, (3, 3)), ('2', 0, 0, (4, 4))]
    >>> table.totals.parameters, table.totals.depth
    (114, 2)
"""


from __future__ import annotations

import dataclasses
import math
import operator
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from lightning_complexity.modes import evaluation_mode
from lightning_complexity.nesting import tensor_leaves

__all__ = ["LayerAlgebra", "LayerAlgebraTotals", "LayerRow", "layer_algebra", "region_multiplier_log2"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, *_CONVS, *_CONV_TRANSPOSES)
_NORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm,
)  # fmt: skip
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_ADAPTIVE_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_ONE_KINK = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Threshold)
_TWO_KINKS = (nn.Hardtanh, nn.Hardsigmoid, nn.Hardshrink, nn.Softshrink)  # ReLU6 is a Hardtanh
_AFFINE = (
    *_WEIGHT_LAYERS, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, *_AVG_POOLS, *_ADAPTIVE_AVG_POOLS,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
# Layers that act on each spatial position separately: the receptive field passes through.
_POSITIONWISE = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Identity, nn.LocalResponseNorm,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
)  # fmt: skip
_NOT_POSITIONWISE_ACTIVATIONS = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.MultiheadAttention, nn.GLU)

# Functional calls that get a row, by the module they behave like, with their positional arguments.
_FUNCTIONAL_MODULES: dict[Any, tuple[type[nn.Module], tuple[str, ...]]] = {
    F.relu: (nn.ReLU, ()), torch.relu: (nn.ReLU, ()), "relu": (nn.ReLU, ()),
    F.leaky_relu: (nn.LeakyReLU, ("negative_slope",)), F.prelu: (nn.PReLU, ()),
    F.relu6: (nn.ReLU6, ()), F.hardtanh: (nn.Hardtanh, ("min_val", "max_val")), F.hardsigmoid: (nn.Hardsigmoid, ()),
    F.gelu: (nn.GELU, ()), F.silu: (nn.SiLU, ()), F.elu: (nn.ELU, ()), F.softplus: (nn.Softplus, ()),
    torch.tanh: (nn.Tanh, ()), "tanh": (nn.Tanh, ()), torch.sigmoid: (nn.Sigmoid, ()), "sigmoid": (nn.Sigmoid, ()),
    F.max_pool1d: (nn.MaxPool1d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    F.avg_pool1d: (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode")),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
    F.adaptive_max_pool2d: (nn.AdaptiveMaxPool2d, ("output_size",)),
}  # fmt: skip
_EXACT_SUM_UP_TO = 4096  # above it, sum the binomials in log space (lgamma), relative error ~1e-13
_MODULE_ARGUMENTS = {
    "negative_slope", "min_val", "max_val", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "output_size",
}  # fmt: skip


@dataclass(frozen=True)
class LayerRow:
    """One call of one leaf layer (see the module docstring for every definition).

    ``name`` is the dotted module name, with ``#k`` for its k-th extra call, or the fx node name of
    a functional call; ``units`` is the number of separating hyperplanes ``N`` of the bound (0 for
    affine layers).
    """

    name: str
    type: str
    parameters: int
    macs: int
    input_size: int
    output_size: int
    intrinsic_power: float
    receptive_field: tuple[int, ...] | None
    jump: tuple[float, ...] | None
    units: int
    input_dim_bound: int
    layer_complexity: float
    cumulative_complexity: float
    depth: int


@dataclass(frozen=True)
class LayerAlgebraTotals:
    """Network-level composition of the rows (see the module docstring)."""

    parameters: int  # unique parameters of the model
    parameters_in_layers: int  # in the rows; less when parameters are used outside leaf modules
    macs: int
    input_size: int
    output_size: int
    intrinsic_power: float
    layer_complexity: float
    depth: int
    receptive_field: tuple[int, ...] | None  # the largest among the rows
    structure: str  # "torch.fx", "forward hooks (series assumption)" or "single module"


@dataclass(frozen=True)
class LayerAlgebra:
    """Per-layer table and network totals; :func:`layer_algebra` builds it."""

    rows: list[LayerRow]
    totals: LayerAlgebraTotals

    def to_dataframe(self) -> Any:
        """One row per layer call (pandas); receptive field and jump as text such as ``"7×7"``.

        Example:
            >>> table = layer_algebra(torch.nn.Linear(3, 2), torch.zeros(1, 3))
            >>> list(table.to_dataframe()[["name", "parameters", "macs"]].itertuples(index=False))
            [Pandas(name='', parameters=8, macs=6)]
        """
        import pandas as pd

        records = [asdict(row) for row in self.rows]
        for record in records:
            record["receptive_field"] = _shape_text(record["receptive_field"])
            record["jump"] = _shape_text(record["jump"])
        return pd.DataFrame.from_records(records, columns=[f.name for f in fields(LayerRow)])

    def to_markdown(self, max_rows: int | None = None) -> str:
        """Markdown table (for TensorBoard's text plugin), totals last; ``max_rows`` cuts long tables.

        Example:
            >>> print(layer_algebra(torch.nn.Linear(3, 2), torch.zeros(1, 3)).to_markdown().splitlines()[2])
            | (root) | Linear | 8 | 6 | 3 | 2 | -0.58 | – | 0.00 | 1 |
        """
        header = "| layer | type | parameters | MACs | in | out | power | receptive field | complexity | depth |"
        lines = [header, "|" + "---|" * 10]
        shown = self.rows if max_rows is None else self.rows[:max_rows]
        for r in shown:
            lines.append(_markdown_line(r.name or "(root)", r.type, r, r.layer_complexity))
        if len(shown) < len(self.rows):
            lines.append(f"| … {len(self.rows) - len(shown)} more | | | | | | | | | |")
        t = self.totals
        lines.append(_markdown_line("**total**", t.structure, t, t.layer_complexity))
        return "\n".join(lines)


def _markdown_line(name: str, kind: str, r: LayerRow | LayerAlgebraTotals, complexity: float) -> str:
    return (
        f"| {name} | {kind} | {r.parameters:,} | {r.macs:,} | {r.input_size:,} | {r.output_size:,} "
        f"| {r.intrinsic_power:.2f} | {_shape_text(r.receptive_field) or '–'} | {_number_text(complexity)} | {r.depth} |"
    )


def _shape_text(shape: Sequence[float] | None) -> str | None:
    if shape is None:
        return None
    return "×".join(str(int(v)) if float(v).is_integer() else f"{v:.3g}" for v in shape)


def _number_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.2f}"


# --- the region-multiplication bound -----------------------------------------------------------------------

def region_multiplier_log2(hyperplanes: int, dimension: int) -> float:
    """``log2 Σ_{j=0}^{min(d, N)} C(N, j)``: most pieces ``N`` hyperplanes cut a ``d``-dimensional space into.

    Example:
        >>> region_multiplier_log2(4, 2) == math.log2(1 + 4 + 6)
        True
        >>> region_multiplier_log2(10, 50)  # d ≥ N: every sign pattern, 2^N
        10.0
    """
    if hyperplanes <= 0:
        return 0.0
    if dimension >= hyperplanes:
        return float(hyperplanes)
    if dimension <= _EXACT_SUM_UP_TO:  # exact integers: C(N, j+1) = C(N, j)·(N − j)/(j + 1)
        term = total = 1
        for j in range(dimension):
            term = term * (hyperplanes - j) // (j + 1)
            total += term
        return math.log2(total)
    j = torch.arange(dimension + 1, dtype=torch.float64)
    n = torch.tensor(float(hyperplanes), dtype=torch.float64)
    log_terms = torch.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    return float(torch.logsumexp(log_terms, 0)) / math.log(2.0)


# --- what flows along the graph ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Flow:
    """What is known about one tensor: its receptive field and dimension bound, and where it came from."""

    spatial_shape: tuple[int, ...] | None  # trailing axes that still index input positions
    receptive_field: tuple[int, ...] | None
    jump: tuple[float, ...] | None
    dim_bound: int
    ancestors: frozenset[int]  # row indices this tensor depends on
    depth: int


def _per_sample(tensors: list[Tensor], batch: int) -> int:
    return sum(t.numel() for t in tensors) // max(batch, 1)


def _merge(flows: list[_Flow], output: Tensor | None, spatial_rank: int, batch: int, input_dim: int) -> _Flow:
    """A tensor computed from several (``x + y``, ``cat``) or from one by an untracked function."""
    flows = [f for f in flows if f is not None]
    if not flows:
        return _Flow(None, None, None, 0, frozenset(), 0)
    size = output.numel() // max(batch, 1) if output is not None else input_dim
    spatial = _spatial_shape(output, spatial_rank)
    known = [f for f in flows if f.receptive_field is not None]
    keeps_layout = spatial is not None and bool(known) and all(f.spatial_shape == spatial for f in known)
    return _Flow(
        spatial_shape=spatial,
        receptive_field=tuple(max(v) for v in zip(*(f.receptive_field for f in known))) if keeps_layout else None,
        jump=tuple(max(v) for v in zip(*(f.jump for f in known))) if keeps_layout else None,
        dim_bound=min(sum(f.dim_bound for f in flows), size, input_dim),
        ancestors=frozenset().union(*(f.ancestors for f in flows)),
        depth=max(f.depth for f in flows),
    )


def _spatial_shape(tensor: Tensor | None, spatial_rank: int) -> tuple[int, ...] | None:
    """The trailing spatial axes, when the tensor still has the input's (N, C, *spatial) layout."""
    if tensor is None or spatial_rank == 0 or tensor.ndim != spatial_rank + 2:
        return None
    return tuple(tensor.shape[2:])


def _window(
    module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[list[float], list[float]] | None:
    """Effective kernel extent (in input elements) and stride per spatial axis; ``None`` if no window."""
    rank = len(in_shape)

    def per_axis(value: Any) -> list[int]:
        return list(value) if isinstance(value, (tuple, list)) else [value] * rank

    if isinstance(module, _CONVS + _MAX_POOLS):
        kernel, dilation = per_axis(module.kernel_size), per_axis(module.dilation)
        stride = per_axis(module.stride or module.kernel_size)
        return [d * (k - 1) + 1 for k, d in zip(kernel, dilation)], [float(s) for s in stride]
    if isinstance(module, _AVG_POOLS):
        kernel, stride = per_axis(module.kernel_size), per_axis(module.stride or module.kernel_size)
        return [float(k) for k in kernel], [float(s) for s in stride]
    if isinstance(module, _CONV_TRANSPOSES):
        kernel, stride, dilation = per_axis(module.kernel_size), per_axis(module.stride), per_axis(module.dilation)
        # Each output element sees ceil(k_eff / s) consecutive inputs; the jump shrinks by s.
        extents = [math.ceil((d * (k - 1) + 1) / s) for k, d, s in zip(kernel, dilation, stride)]
        return extents, [1.0 / s for s in stride]
    if isinstance(module, _ADAPTIVE_AVG_POOLS + _ADAPTIVE_MAX_POOLS):
        extents, strides = [], []
        for size, out in zip(in_shape, out_shape):
            widest = max(math.ceil((i + 1) * size / out) - (i * size) // out for i in range(out))
            extents.append(float(widest))
            strides.append(size / out)
        return extents, strides
    return None


def _hyperplanes(module: nn.Module, in_elements: int, out_elements: int, window_elements: int) -> int | None:
    """``N`` of the region bound; 0 for affine layers, ``None`` for non-piecewise-linear ones."""
    if isinstance(module, _ONE_KINK):
        return in_elements
    if isinstance(module, _TWO_KINKS):
        return 2 * in_elements
    if isinstance(module, _MAX_POOLS + _ADAPTIVE_MAX_POOLS):
        return out_elements * window_elements * (window_elements - 1) // 2
    if isinstance(module, _AFFINE):
        return 0
    return None


def _macs(module: nn.Module, inputs: list[Tensor], output: Tensor | None, batch: int) -> int:
    out_elements = output.numel() // max(batch, 1) if output is not None else 0
    if isinstance(module, nn.Linear):
        return out_elements * module.in_features
    if isinstance(module, nn.Bilinear):
        return out_elements * module.in1_features * module.in2_features
    if isinstance(module, _CONVS):
        return out_elements * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _CONV_TRANSPOSES):
        in_elements = inputs[0].numel() // max(batch, 1) if inputs else 0
        return in_elements * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _NORMS):
        return out_elements
    return 0


class _Builder:
    """Turns layer calls, in execution order, into rows and flows."""

    def __init__(self, model: nn.Module, batch: int, input_dim: int, spatial_rank: int) -> None:
        self.model, self.batch, self.input_dim, self.spatial_rank = model, batch, input_dim, spatial_rank
        self.rows: list[LayerRow] = []
        self.calls: dict[str, int] = {}
        self.counted: set[int] = set()  # parameters already in a row (shared weights count once)

    def merge(self, flows: list[_Flow], output: Tensor | None) -> _Flow:
        return _merge(flows, output, self.spatial_rank, self.batch, self.input_dim)

    def input_flow(self, tensor: Tensor) -> _Flow:
        spatial = _spatial_shape(tensor, self.spatial_rank)
        return _Flow(
            spatial, (1,) * self.spatial_rank if spatial else None, (1.0,) * self.spatial_rank if spatial else None,
            min(tensor.numel() // max(self.batch, 1), self.input_dim), frozenset(), 0,
        )  # fmt: skip

    def layer(
        self, name: str, module: nn.Module, type_name: str, inputs: list[Tensor], in_flows: list[_Flow], output: Any,
        *, functional: bool = False,
    ) -> _Flow:
        out_tensors = tensor_leaves(output)
        first_out = out_tensors[0] if out_tensors else None
        in_flow = self.merge(in_flows, inputs[0] if inputs else None)
        in_size, out_size = _per_sample(inputs, self.batch), _per_sample(out_tensors[:1], self.batch)
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        row_name = name if call == 0 else f"{name}#{call}"
        parameters = 0
        if not functional:  # a functional call's stand-in module owns no parameters of the model
            for p in module.parameters():
                if id(p) not in self.counted:
                    self.counted.add(id(p))
                    parameters += p.numel()

        receptive_field, jump = self._receptive_field(module, inputs, in_flow, first_out)
        spatial = _spatial_shape(first_out, self.spatial_rank) if receptive_field is not None else None
        window = None
        if inputs and first_out is not None and inputs[0].ndim == first_out.ndim:
            window = _window(module, tuple(inputs[0].shape[2:]), tuple(first_out.shape[2:]))
        window_elements = int(math.prod(window[0])) if window else 1
        hyperplanes = _hyperplanes(module, in_size, out_size, window_elements)
        d = in_flow.dim_bound
        complexity = math.nan if hyperplanes is None else region_multiplier_log2(hyperplanes, d)
        index = len(self.rows)
        ancestors = in_flow.ancestors | {index}
        depth = in_flow.depth + int(isinstance(module, _WEIGHT_LAYERS))
        cumulative = sum(self.rows[i].layer_complexity for i in in_flow.ancestors) + complexity
        self.rows.append(
            LayerRow(
                name=row_name, type=type_name, parameters=parameters, macs=_macs(module, inputs, first_out, self.batch),
                input_size=in_size, output_size=out_size,
                intrinsic_power=math.log2(out_size / in_size) if in_size and out_size else math.nan,
                receptive_field=receptive_field, jump=jump, units=hyperplanes or 0, input_dim_bound=d,
                layer_complexity=complexity, cumulative_complexity=cumulative, depth=depth,
            )
        )  # fmt: skip
        return _Flow(spatial, receptive_field, jump, min(d, out_size, self.input_dim), ancestors, depth)

    def _receptive_field(
        self, module: nn.Module, inputs: list[Tensor], flow: _Flow, output: Tensor | None
    ) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
        if flow.receptive_field is None or output is None or not inputs:
            return None, None
        if _spatial_shape(output, self.spatial_rank) is None or _spatial_shape(inputs[0], self.spatial_rank) is None:
            return None, None
        window = _window(module, tuple(inputs[0].shape[2:]), tuple(output.shape[2:]))
        if window is not None:
            extents, strides = window
            rf = tuple(math.ceil(r + (k - 1) * j - 1e-9) for r, k, j in zip(flow.receptive_field, extents, flow.jump))
            return rf, tuple(j * s for j, s in zip(flow.jump, strides))
        activation = type(module).__module__ == "torch.nn.modules.activation"
        activation = activation and not isinstance(module, _NOT_POSITIONWISE_ACTIVATIONS)
        if (activation or isinstance(module, _POSITIONWISE)) and output.shape[2:] == inputs[0].shape[2:]:
            return flow.receptive_field, flow.jump
        return None, None

    def totals(self, inputs: list[Tensor], output: Any, output_flow: _Flow, structure: str) -> LayerAlgebraTotals:
        out_size = _per_sample(tensor_leaves(output), self.batch)
        in_size = _per_sample(inputs, self.batch)
        fields_ = [r.receptive_field for r in self.rows if r.receptive_field is not None]
        return LayerAlgebraTotals(
            parameters=sum(p.numel() for p in self.model.parameters()),
            parameters_in_layers=sum(r.parameters for r in self.rows),
            macs=sum(r.macs for r in self.rows),
            input_size=in_size,
            output_size=out_size,
            intrinsic_power=math.log2(out_size / in_size) if in_size and out_size else math.nan,
            layer_complexity=sum(self.rows[i].layer_complexity for i in output_flow.ancestors),
            depth=output_flow.depth,
            receptive_field=max(fields_, key=math.prod) if fields_ else None,
            structure=structure,
        )


# --- graph from torch.fx ------------------------------------------------------------------------------------

class _LeafTracer(fx.Tracer):
    """Keeps every module without children as one call (custom leaves too), not traced through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(m.children(), None) is None or super().is_leaf_module(m, module_qualified_name)


def _functional_module(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> nn.Module | None:
    key = target if not isinstance(target, str) else target
    try:
        entry = _FUNCTIONAL_MODULES.get(key)
    except TypeError:  # unhashable target
        return None
    if entry is None:
        return None
    module_type, names = entry
    options = {k: v for k, v in zip(names, args[1:]) if v is not None}
    options.update({k: v for k, v in kwargs.items() if k in _MODULE_ARGUMENTS and v is not None})
    try:
        return module_type(**options)
    except TypeError:
        return None


def _run_fx(model: nn.Module, graph: fx.Graph, example: tuple[Tensor, ...], builder: _Builder) -> LayerAlgebraTotals:
    module = fx.GraphModule(model, graph)
    flows: dict[fx.Node, _Flow] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node: fx.Node) -> Any:
            result = super().run_node(node)
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            inputs = [a for a in args if isinstance(a, Tensor)] + [v for v in kwargs.values() if isinstance(v, Tensor)]
            in_flows = [flows[n] for n in node.all_input_nodes if n in flows]
            first = (tensor_leaves(result) or [None])[0]
            if node.op == "placeholder":
                flows[node] = builder.input_flow(result) if isinstance(result, Tensor) else None
            elif node.op == "call_module":
                leaf = self.fetch_attr(node.target)
                flows[node] = builder.layer(str(node.target), leaf, type(leaf).__name__, inputs, in_flows, result)
            elif node.op in ("call_function", "call_method"):
                stand_in = _functional_module(node.target, args, kwargs)
                if stand_in is not None and inputs:
                    type_name = getattr(node.target, "__name__", str(node.target))
                    flows[node] = builder.layer(
                        node.name, stand_in, type_name, inputs[:1], in_flows[:1], result, functional=True
                    )
                elif node.target is operator.getitem and in_flows and not isinstance(result, Tensor):
                    flows[node] = in_flows[0]  # a tuple element that is no tensor: keep what is known
                else:
                    flows[node] = builder.merge(in_flows, first)
            elif node.op == "output":
                flows[node] = builder.merge(in_flows, first)
            return result

    output = Recorder(module).run(*example)
    output_node = next(n for n in reversed(graph.nodes) if n.op == "output")
    return builder.totals(list(example), output, flows[output_node], "torch.fx")


# --- fallback: forward hooks in call order --------------------------------------------------------------------

def _run_hooks(model: nn.Module, example: tuple[Tensor, ...], builder: _Builder) -> LayerAlgebraTotals:
    known: dict[int, tuple[Tensor, _Flow]] = {id(t): (t, builder.input_flow(t)) for t in example}
    latest: list[_Flow] = [known[id(example[0])][1]]
    names = {m: name for name, m in model.named_modules()}

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        inputs = [a for a in args if isinstance(a, Tensor)]
        # A tensor no hook has seen was made outside a module: assume it continues the latest output.
        in_flows = [known[id(t)][1] if id(t) in known else latest[-1] for t in inputs]
        flow = builder.layer(names[module], module, type(module).__name__, inputs, in_flows, output)
        for t in tensor_leaves(output):
            known[id(t)] = (t, flow)  # keeping t alive keeps its id unique
        latest.append(flow)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        output = model(*example)
    finally:
        for handle in handles:
            handle.remove()
    out_flows = [known[id(t)][1] if id(t) in known else latest[-1] for t in tensor_leaves(output)]
    flow = builder.merge(out_flows, None)
    return builder.totals(list(example), output, flow, "forward hooks (series assumption)")


def layer_algebra(model: nn.Module, example_input: Tensor | tuple[Tensor, ...], *, use_fx: bool = True) -> LayerAlgebra:
    """Static per-layer table of ``model`` from one forward pass of ``example_input``.

    Args:
        model: any ``nn.Module`` (a ``LightningModule`` too); on the ``meta`` device is fine.
        example_input: one input batch (axis 0 is the batch), or a tuple of positional inputs.
            A batch of one sample is enough; all sizes are per sample. The spatial layout that
            receptive fields follow is that of the first input, ``(N, C, *spatial)``.
        use_fx: ``False`` skips ``torch.fx`` and uses forward hooks directly.

    Returns:
        :class:`LayerAlgebra` with ``rows`` (one per leaf-layer call, in execution order) and
        ``totals``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> table = layer_algebra(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), torch.zeros(1, 2))
        >>> [round(r.layer_complexity, 4) for r in table.rows]  # ReLU: log2(C(4,0) + C(4,1) + C(4,2))
        [0.0, 3.4594, 0.0]
        >>> table.totals.macs, table.totals.parameters, table.totals.depth
        (12, 17, 2)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    example = (example_input,) if isinstance(example_input, Tensor) else tuple(example_input)
    if not example or not all(isinstance(t, Tensor) for t in example) or example[0].ndim < 1:
        raise ValueError("`example_input` must be a tensor with a batch axis, or a non-empty tuple of tensors")
    batch = example[0].shape[0]
    input_dim = sum(t.numel() for t in example) // max(batch, 1)
    spatial_rank = max(example[0].ndim - 2, 0)

    with evaluation_mode(model):
        if next(model.children(), None) is None:  # a single layer: nothing to trace
            builder = _Builder(model, batch, input_dim, spatial_rank)
            totals = _run_hooks(model, example, builder)
            return LayerAlgebra(builder.rows, dataclasses.replace(totals, structure="single module"))
        if use_fx:
            try:
                graph = _LeafTracer().trace(model)
            except Exception as error:  # noqa: BLE001 - any tracing failure falls back to hooks
                warnings.warn(
                    f"layer_algebra: torch.fx could not trace {type(model).__name__} "
                    f"({type(error).__name__}: {error}); using forward hooks, which assume layers run in series "
                    "(receptive fields, dimension bounds and depth can be off for branching networks)",
                    stacklevel=2,
                )
            else:
                builder = _Builder(model, batch, input_dim, spatial_rank)
                return LayerAlgebra(builder.rows, _run_fx(model, graph, example, builder))
        builder = _Builder(model, batch, input_dim, spatial_rank)
        return LayerAlgebra(builder.rows, _run_hooks(model, example, builder))
