"""Forward hooks that copy and reduce what each watched site sees, one *site* per call.

A site is one call of one module (or of one functional activation, see
:mod:`lightning_complexity.functional_capture`) during a forward pass: the first call of
``layer1.relu`` is the site ``layer1.relu``, the second ``layer1.relu#1`` (SPEC §0). Hooks are
registered once and stay inert (one attribute check) until a batch is being captured, so training
forwards pay almost nothing and ``torch.compile`` sees the hooks from the start.

The caller says what each captured forward holds (:meth:`ActivationCapture.batch`): how many
inputs (so the sample axis of every tensor can be found, :mod:`lightning_complexity.reduction`),
the global index of its first input, and how many of its inputs to keep. Hooks only copy and
reduce — nothing is computed in them:

* inputs are copied in a *pre*-hook, before an in-place activation (``ReLU(inplace=True)``) can
  overwrite them; the module is never run a second time;
* every tensor is reduced to ``(n, d)`` float64 samples, at most ``sample_budget`` rows per site;
* sites that want them keep raw 2-D feature maps (Betti numbers) of a bounded number of inputs,
  and streaming counts of how often each unit's input is positive (activation-pattern entropy).

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    >>> capture = ActivationCapture(model, {"1": SiteNeeds(input=True, output=True)})
    >>> with capture.capturing(), capture.batch(batch_size=8):
    ...     _ = model(torch.randn(8, 3))
    >>> data = capture.collect()
    >>> data["1"].output.shape, bool((data["1"].input < 0).any())
    (torch.Size([8, 4]), True)
    >>> capture.remove()
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_complexity.functional_capture import FunctionalActivationMode
from lightning_complexity.nesting import tensor_leaves
from lightning_complexity.reduction import SampleLayout, Spatial, find_sample_axis, gate_counts, kept_inputs, mean_samples, position_samples, reduce_to_samples
from lightning_complexity.sites import named_modules

__all__ = ["ActivationCapture", "SiteData", "SiteNeeds", "reduce_to_samples", "site_name"]


@dataclass(frozen=True)
class SiteNeeds:
    """What to keep of a site's calls: its input, its output, raw feature maps, input gate counts."""

    input: bool = False
    output: bool = True
    maps: bool = False
    gates: bool = False

    def __or__(self, other: SiteNeeds) -> SiteNeeds:
        return SiteNeeds(self.input or other.input, self.output or other.output, self.maps or other.maps, self.gates or other.gates)


@dataclass
class SiteData:
    """What one site produced over the captured inputs.

    ``input`` and ``output`` are float64 ``(n, d)`` samples; ``maps`` raw ``(N, C, H, W)`` output
    feature maps of the first inputs (sites that asked for them, 4-D outputs only); ``gate_counts``
    how many of the ``gate_samples`` inputs had each unit's input ``> 0`` (a unit is a feature at
    a position: ``C·H·W`` units for a conv map, or ``C`` when the positions varied between
    batches, then counted over positions too, ``gate_samples`` being inputs × positions);
    ``output_shape`` the per-input shape of the raw output; ``kind`` ``"module"`` or
    ``"functional"``; ``module_type`` the class (or function) name.
    """

    module: str
    call: int
    output_shape: tuple[int, ...] = ()
    input: Tensor | None = None
    output: Tensor | None = None
    maps: Tensor | None = None
    gate_counts: Tensor | None = None
    gate_samples: int = 0
    gate_nonfinite: Tensor | None = None
    kind: str = "module"
    module_type: str = ""
    #: inputs the samples came from (rows per input > 1 with ``spatial="positions"``).
    inputs: int = 0

    @property
    def samples(self) -> int:
        """Rows of the reduced samples (0 when none were kept)."""
        for tensor in (self.output, self.input):
            if tensor is not None:
                return int(tensor.shape[0])
        return 0 if self.maps is None else int(self.maps.shape[0])

    @property
    def width(self) -> int | None:
        """Features per sample of the output (else the input), or None."""
        for tensor in (self.output, self.input):
            if tensor is not None:
                return int(tensor.shape[-1])
        return None


def site_name(module: str, call: int) -> str:
    """``module`` for the first call, ``module#k`` for the k-th extra call."""
    return module if call == 0 else f"{module}#{call}"


def _first_tensor(value: Any) -> Tensor | None:
    leaves = tensor_leaves(value)
    return leaves[0] if leaves else None


@dataclass
class _Gates:
    units: Tensor | None = None      # (P·C,) counts while every batch had the same positions
    nonfinite: Tensor | None = None  # how many values were NaN/Inf (then the counts mean nothing)
    channels: Tensor | None = None   # (C,) counts over positions too
    inputs: int = 0
    positions: int = 0               # inputs × positions
    varied: bool = False

    def add(self, units: Tensor, channels: Tensor, inputs: int, positions: int, nonfinite: Tensor) -> None:
        if self.units is not None and self.units.shape != units.shape:
            self.varied = True
        self.units = units if self.units is None else (self.units if self.varied else self.units + units)
        self.channels = channels if self.channels is None else self.channels + channels
        self.nonfinite = nonfinite if self.nonfinite is None else self.nonfinite + nonfinite
        self.inputs += inputs
        self.positions += positions


@dataclass
class _Buffers:
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    maps: list[Tensor] = field(default_factory=list)
    input_rows: int = 0
    output_rows: int = 0
    input_inputs: int = 0
    output_inputs: int = 0
    maps_kept: int = 0
    output_shape: tuple[int, ...] = ()
    gates: _Gates = field(default_factory=_Gates)
    kind: str = "module"
    module_type: str = ""


@dataclass
class _Batch:
    size: int | None = None
    first_input: int = 0
    keep: int | None = None


class ActivationCapture:
    """Hooks on the watched modules of ``model`` (and, optionally, its functional activations).

    Args:
        model: the network.
        needs: module name (as :func:`~lightning_complexity.sites.named_modules` names it) →
            :class:`SiteNeeds`.
        spatial, channel_dim: how tensors with positions are reduced
            (:func:`~lightning_complexity.reduction.reduce_to_samples`).
        positions_per_sample: with ``spatial="positions"``, positions kept per input.
        sample_budget: at most this many sample rows per site and capture (None: no cap).
        maps_budget: with ``SiteNeeds(maps=True)``, how many inputs' feature maps to keep.
        functional: ``site name -> SiteNeeds or None`` for functional activation sites
            (``"block.relu()"``); None captures none.
    """

    def __init__(
        self,
        model: nn.Module,
        needs: dict[str, SiteNeeds],
        *,
        spatial: Spatial = "mean",
        channel_dim: int | None = None,
        positions_per_sample: int | None = None,
        sample_budget: int | None = None,
        maps_budget: int = 64,
        functional: Callable[[str], SiteNeeds | None] | None = None,
    ) -> None:
        modules = dict(named_modules(model))
        missing = [name for name in needs if name not in modules]
        if missing:
            raise ValueError(f"no module named {missing} in the model")
        self.model = model
        self.needs = dict(needs)
        self.spatial: Spatial = spatial
        self.channel_dim = channel_dim
        self.positions_per_sample = positions_per_sample
        self.sample_budget = sample_budget
        self.maps_budget = maps_budget
        self._functional = functional
        self._functional_needs: dict[str, SiteNeeds | None] = {}
        self._batch_first = _batch_first_hints(model)
        self._types = {name: type(module).__name__ for name, module in modules.items()}
        self._active = False
        self._only_batches = False
        #: seconds spent copying and reducing in the hooks during the current capture.
        self.hook_seconds = 0.0
        self._batch: _Batch | None = None
        self._mode: FunctionalActivationMode | None = None
        self._calls: dict[str, int] = defaultdict(int)
        self._pending_call: dict[str, list[int]] = defaultdict(list)
        self._buffers: dict[tuple[str, int], _Buffers] = {}
        self._layouts: dict[str, SampleLayout] = {}
        self._errors: dict[str, str] = {}
        #: site → (shape, batch size, chosen axis) where several axes had the batch size.
        self.ambiguous: dict[str, tuple[tuple[int, ...], int, int]] = {}
        self._handles: list[RemovableHandle] = []
        for name, want in self.needs.items():
            module = modules[name]
            self._handles.append(module.register_forward_pre_hook(self._make_pre_hook(name, want)))
            self._handles.append(module.register_forward_hook(self._make_post_hook(name, want)))

    # ------------------------------------------------------------------ lifecycle
    @property
    def attached(self) -> bool:
        """Whether hooks are still registered."""
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook and leave any batch in progress; safe to call twice."""
        self.end_batch()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = False

    @contextlib.contextmanager
    def capturing(self, resume: bool = False) -> Iterator[None]:
        """A capture: the batches inside the block are recorded; buffers start empty, or with
        ``resume`` keep what an earlier capture left uncollected (its samples come first)."""
        self.begin_capture(resume=resume)
        try:
            yield
        finally:
            self.end_capture()

    def begin_capture(self, only_batches: bool = False, resume: bool = False) -> None:
        """Start a capture (for hook-driven callers; :meth:`capturing` is the block form).

        With ``only_batches``, forwards outside :meth:`batch` are not recorded (a validation pass
        whose other batches run between the chosen ones). With ``resume``, the buffers, errors
        and hook seconds of the last capture are kept and the new batches are appended.
        """
        if not resume:
            self._buffers.clear()
            self._errors.clear()
            self.hook_seconds = 0.0
        self._only_batches = only_batches
        self._active = True

    def end_capture(self) -> None:
        """Stop capturing; the buffers stay until :meth:`collect`."""
        self.end_batch()
        self._active = False

    @contextlib.contextmanager
    def batch(self, batch_size: int | None = None, first_input: int = 0, keep: int | None = None) -> Iterator[None]:
        """One captured forward of ``batch_size`` inputs, the first being the ``first_input``-th of
        the capture; only its first ``keep`` inputs are kept (all by default)."""
        self.begin_batch(batch_size, first_input, keep)
        try:
            yield
        finally:
            self.end_batch()

    def begin_batch(self, batch_size: int | None = None, first_input: int = 0, keep: int | None = None) -> None:
        """Start one captured forward (see :meth:`batch`); call indices (``#k``) restart."""
        self.end_batch()
        self._batch = _Batch(batch_size, first_input, keep)
        self._calls.clear()
        self._pending_call.clear()
        if self._functional is not None and self._active:
            self._mode = FunctionalActivationMode(self.model, self._observe_functional)
            self._mode.__enter__()

    def end_batch(self) -> None:
        """End the captured forward in progress, if any."""
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
        self._batch = None

    def new_forward(self, batch_size: int | None = None) -> None:
        """Mark the start of a forward of ``batch_size`` inputs (the batch ends at the next one)."""
        self.begin_batch(batch_size)

    @property
    def errors(self) -> dict[str, str]:
        """Sites whose hook failed during the last capture, with the reason."""
        return dict(self._errors)

    # ------------------------------------------------------------------ hooks
    def _recording(self) -> bool:
        # Inside a capture, a forward outside any batch() is one of unknown size (sample axis 0).
        return self._active and (self._batch is not None or not self._only_batches)

    def _make_pre_hook(self, name: str, want: SiteNeeds):
        def pre_hook(module: nn.Module, args: tuple) -> None:
            if not self._recording():
                return
            call = self._start_call(name, "module", self._types.get(name, ""))
            if want.input or want.gates:
                self._guarded(name, call, self._keep_input, _first_tensor(args), want)

        return pre_hook

    def _make_post_hook(self, name: str, want: SiteNeeds):
        def post_hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._recording() or not self._pending_call[name]:
                return
            call = self._pending_call[name].pop()
            self._guarded(name, call, self._keep_output, _first_tensor(output), want)

        return post_hook

    def _observe_functional(self, site: str, tensor: Tensor, function: Any) -> Callable[[Any], None] | None:
        if not self._recording():
            return None
        if site not in self._functional_needs:
            self._functional_needs[site] = self._functional(site) if self._functional else None
        want = self._functional_needs[site]
        if want is None:
            return None
        call = self._start_call(site, "functional", getattr(function, "__name__", str(function)))
        if want.input or want.gates:
            self._guarded(site, call, self._keep_input, tensor, want)

        def after(output: Any) -> None:
            if self._pending_call[site]:
                self._guarded(site, self._pending_call[site].pop(), self._keep_output, _first_tensor(output), want)

        return after

    def _start_call(self, name: str, kind: str, module_type: str) -> int:
        call = self._calls[name]
        self._calls[name] = call + 1
        self._pending_call[name].append(call)
        buffer = self._buffer(name, call)  # created in call order: sites come out in forward order
        buffer.kind, buffer.module_type = kind, module_type
        return call

    def _guarded(self, name: str, call: int, keep, *args) -> None:
        # A hook must never break the forward it watches: record the failure, report it later.
        start = time.perf_counter()
        try:
            keep(name, call, *args)
        except Exception as error:  # noqa: BLE001
            self._errors.setdefault(site_name(name, call), f"{type(error).__name__}: {error}")
        finally:
            self.hook_seconds += time.perf_counter() - start

    def _buffer(self, name: str, call: int) -> _Buffers:
        return self._buffers.setdefault((name, call), _Buffers())

    def _layout(self, name: str, call: int, tensor: Tensor) -> SampleLayout:
        site = site_name(name, call)
        batch = self._batch
        size = None if batch is None else batch.size
        found = find_sample_axis(tuple(tensor.shape), size, batch_first=self._hint(name))
        if found is None:
            raise ValueError(f"no axis of its {tuple(tensor.shape)} tensor carries the batch of {size} inputs")
        if found.ambiguous:
            known = self._layouts.get(site)
            if known is not None and known.split == found.split:
                return known  # an earlier batch of another size settled it
            self.ambiguous.setdefault(site, (tuple(tensor.shape), int(size or 0), found.axis))
        else:
            self._layouts[site] = found
            self.ambiguous.pop(site, None)
        return found

    def _hint(self, name: str) -> bool | None:
        # A functional site "block.relu()" takes the hint of the module that called it, "block".
        module = name[:-2].rpartition(".")[0] if name.endswith("()") else name
        return self._batch_first.get(module)

    def _keep(self) -> int | None:
        return None if self._batch is None else self._batch.keep

    def _room(self, rows_kept: int, inputs: int, positions: int) -> int:
        """How many of ``inputs`` inputs fit in the sample budget."""
        if self.sample_budget is None:
            return inputs
        per_input = 1 if self.spatial == "mean" else min(positions, self.positions_per_sample or positions)
        return max(0, min(inputs, (self.sample_budget - rows_kept) // max(1, per_input)))

    def _samples(self, tensor: Tensor, layout: SampleLayout, rows_kept: int) -> tuple[Tensor, int] | None:
        """The float64 sample rows of the inputs that still fit in the budget, and how many inputs."""
        x, axis = kept_inputs(tensor, layout, self._keep())
        positions = x.numel() // max(1, x.shape[axis] * (x.shape[-1] if x.ndim > 1 else 1))
        room = self._room(rows_kept, int(x.shape[axis]), max(1, positions))
        if room == 0:
            return None
        channel_dim = self.channel_dim if layout.split == 1 else None
        if self.spatial == "mean":
            return mean_samples(x, SampleLayout(axis), channel_dim, room), room
        first = 0 if self._batch is None else self._batch.first_input
        return position_samples(x, SampleLayout(axis), channel_dim, room, self.positions_per_sample, first), room

    def _keep_input(self, name: str, call: int, tensor: Tensor | None, want: SiteNeeds) -> None:
        if tensor is None or not tensor.is_floating_point():
            return
        buffer = self._buffer(name, call)
        layout = self._layout(name, call, tensor)
        kept = self._samples(tensor, layout, buffer.input_rows) if want.input else None
        if kept is not None:
            buffer.inputs.append(kept[0])
            buffer.input_rows += kept[0].shape[0]
            buffer.input_inputs += kept[1]
        if want.gates:
            # Where the input means of every kept input exist, a NaN/Inf shows in them: no extra pass.
            counted, axis = kept_inputs(tensor, layout, self._keep())
            means_cover = kept is not None and self.spatial == "mean" and kept[1] == counted.shape[axis]
            counts = gate_counts(tensor, layout, self.channel_dim, self._keep(), check_finite=not means_cover)
            if means_cover:
                counts = (*counts[:4], (~torch.isfinite(kept[0])).any().to(torch.int64))
            buffer.gates.add(*counts)

    def _keep_output(self, name: str, call: int, tensor: Tensor | None, want: SiteNeeds) -> None:
        if tensor is None or not tensor.is_floating_point():
            return
        buffer = self._buffer(name, call)
        layout = self._layout(name, call, tensor)
        shape = list(tensor.shape)
        del shape[layout.axis]
        buffer.output_shape = tuple(shape) if layout.split == 1 else (layout.split, *tensor.shape[1:])
        if want.output:
            kept = self._samples(tensor, layout, buffer.output_rows)
            if kept is not None:
                buffer.outputs.append(kept[0])
                buffer.output_rows += kept[0].shape[0]
                buffer.output_inputs += kept[1]
        if want.maps and tensor.ndim == 4 and layout.split == 1 and buffer.maps_kept < self.maps_budget:
            maps, axis = kept_inputs(tensor, layout, self._keep())
            maps = maps.movedim(axis, 0)
            take = maps[: self.maps_budget - buffer.maps_kept].to(torch.float32, copy=True)
            buffer.maps.append(take)
            buffer.maps_kept += take.shape[0]

    # ------------------------------------------------------------------ results
    def collect(self) -> dict[str, SiteData]:
        """Concatenate the buffers of the last capture into one :class:`SiteData` per site.

        Sites are in forward order (the order of their first call).
        """
        sites: dict[str, SiteData] = {}
        buffers, self._buffers = self._buffers, {}  # the chunks are freed once concatenated
        for (name, call), buffer in buffers.items():
            gates = buffer.gates
            if gates.varied:
                counts, total = gates.channels, gates.positions
            else:
                counts, total = gates.units, gates.inputs
            sites[site_name(name, call)] = SiteData(
                module=name,
                call=call,
                output_shape=buffer.output_shape,
                input=torch.cat(buffer.inputs) if buffer.inputs else None,
                output=torch.cat(buffer.outputs) if buffer.outputs else None,
                maps=torch.cat(buffer.maps) if buffer.maps else None,
                gate_counts=counts,
                gate_samples=total,
                gate_nonfinite=gates.nonfinite,
                kind=buffer.kind,
                module_type=buffer.module_type,
                inputs=buffer.output_inputs or buffer.input_inputs,
            )
        return sites


def _batch_first_hints(model: nn.Module) -> dict[str, bool]:
    """Module name → whether its tensors are batch-first, where the model says so.

    A module's own ``batch_first`` flag, else that of a direct child (``nn.TransformerEncoderLayer``
    keeps it on its ``self_attn``), else that of its nearest ancestor with a hint.
    """
    modules = named_modules(model)
    hints: dict[str, bool] = {}
    for name, module in modules:
        flags = [getattr(m, "batch_first", None) for m in (module, *module.children())]
        flag = next((f for f in flags if isinstance(f, bool)), None)
        if flag is not None:
            hints[name] = flag
    for name, _ in modules:
        parent = name
        while parent and parent not in hints:
            parent = parent.rpartition(".")[0]
        if parent in hints:
            hints[name] = hints[parent]
    return hints
