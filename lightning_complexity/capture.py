"""Forward hooks that copy and reduce what each watched module sees, one *site* per call.

A site is one call of one module during a forward pass: the first call of ``layer1.relu`` is the site
``layer1.relu``, the second ``layer1.relu#1`` (SPEC §0). Hooks are registered once and stay inert
(one attribute check) until :meth:`ActivationCapture.capturing` switches them on, so training
forwards pay almost nothing and ``torch.compile`` sees the hooks from the start.

Hooks only copy and reduce — nothing is computed in them:

* inputs are copied in a *pre*-hook, before an in-place activation (``ReLU(inplace=True)``) can
  overwrite them; the module is never run a second time;
* every tensor is reduced to ``(n, d)`` samples (:func:`reduce_to_samples`) in float64;
* sites that want raw 2-D feature maps (Betti numbers) keep a bounded number of samples of them.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    >>> capture = ActivationCapture(model, {"1": SiteNeeds(input=True, output=True)})
    >>> with capture.capturing():
    ...     _ = model(torch.randn(8, 3))
    >>> data = capture.collect()
    >>> data["1"].output.shape, bool((data["1"].input < 0).any())
    (torch.Size([8, 4]), True)
    >>> capture.remove()
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["ActivationCapture", "SiteData", "SiteNeeds", "reduce_to_samples", "site_name"]

Spatial = Literal["mean", "positions"]


@dataclass(frozen=True)
class SiteNeeds:
    """What to keep of a module's calls: its input, its output, and raw feature maps."""

    input: bool = False
    output: bool = True
    maps: bool = False

    def __or__(self, other: SiteNeeds) -> SiteNeeds:
        return SiteNeeds(self.input or other.input, self.output or other.output, self.maps or other.maps)


@dataclass
class SiteData:
    """What one site produced over the probe set.

    ``input`` and ``output`` are float64 ``(n, d)`` samples; ``maps`` holds raw ``(N, C, H, W)``
    output feature maps of the first samples (only for sites that asked for them and whose output is
    4-D); ``output_shape`` is the per-sample shape of the raw output.
    """

    module: str
    call: int
    output_shape: tuple[int, ...] = ()
    input: Tensor | None = None
    output: Tensor | None = None
    maps: Tensor | None = None


def site_name(module: str, call: int) -> str:
    """``module`` for the first call, ``module#k`` for the k-th extra call."""
    return module if call == 0 else f"{module}#{call}"


def reduce_to_samples(
    tensor: Tensor,
    *,
    spatial: Spatial = "mean",
    channel_dim: int | None = None,
    positions_per_sample: int | None = None,
) -> Tensor:
    """Reduce a captured activation to float64 samples ``(n, d)`` (SPEC §0).

    The feature axis is ``channel_dim`` (default: 1 for 4-D/5-D conv maps, the last axis for 3-D
    sequences). Every other non-batch axis is averaged (``spatial="mean"``) or turned into samples
    (``spatial="positions"``, keeping ``positions_per_sample`` evenly spaced positions per input).

    Example:
        >>> reduce_to_samples(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3])
        >>> reduce_to_samples(torch.ones(2, 5, 8), spatial="positions").shape
        torch.Size([10, 8])
    """
    x = tensor.detach()
    # Every path copies (copy=True): an in-place activation must not overwrite what was kept.
    if x.ndim == 1:
        return x.to(torch.float64, copy=True).unsqueeze(1)
    if x.ndim == 2:
        return x.to(torch.float64, copy=True)
    if channel_dim is None:
        channel_dim = -1 if x.ndim == 3 else 1
    x = x.movedim(channel_dim, -1)
    x = x.reshape(x.shape[0], -1, x.shape[-1])  # (N, positions, C)
    if spatial == "mean":
        if x.device.type != "cpu":
            return x.to(torch.float64).mean(dim=1)
        # On the CPU, slice by slice (~1 MiB of float64 each): the same float64 means as converting
        # the whole activation at once, without allocating and paging in a fresh multi-MB buffer on
        # every hook call (measured 3.7x less capture time in benchmarks/overhead.py's CNN).
        rows = max(1, (1 << 20) // (8 * max(1, x.shape[1] * x.shape[2])))
        return torch.cat([part.to(torch.float64).mean(dim=1) for part in x.split(rows)])
    if positions_per_sample is not None and positions_per_sample < x.shape[1]:
        index = torch.linspace(0, x.shape[1] - 1, positions_per_sample, device=x.device).round().long()
        x = x[:, index]
    return x.to(torch.float64, copy=True).reshape(-1, x.shape[-1])


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, Tensor):
                return item
    return None


@dataclass
class _Buffers:
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    maps: list[Tensor] = field(default_factory=list)
    maps_kept: int = 0
    output_shape: tuple[int, ...] = ()


class ActivationCapture:
    """Hooks on the watched modules of ``model``; buffers of reduced samples per site.

    Args:
        model: the network.
        needs: module name → :class:`SiteNeeds`.
        spatial, channel_dim: how tensors with positions are reduced (:func:`reduce_to_samples`).
        positions_per_sample: with ``spatial="positions"``, positions kept per input.
        maps_budget: with ``SiteNeeds(maps=True)``, how many inputs' feature maps to keep.
    """

    def __init__(
        self,
        model: nn.Module,
        needs: dict[str, SiteNeeds],
        *,
        spatial: Spatial = "mean",
        channel_dim: int | None = None,
        positions_per_sample: int | None = None,
        maps_budget: int = 64,
    ) -> None:
        modules = dict(model.named_modules())
        missing = [name for name in needs if name not in modules]
        if missing:
            raise ValueError(f"no module named {missing} in the model")
        self.needs = dict(needs)
        self.spatial: Spatial = spatial
        self.channel_dim = channel_dim
        self.positions_per_sample = positions_per_sample
        self.maps_budget = maps_budget
        self._active = False
        self._calls: dict[str, int] = defaultdict(int)
        self._pending_call: dict[str, list[int]] = defaultdict(list)
        self._buffers: dict[tuple[str, int], _Buffers] = {}
        self._errors: dict[str, str] = {}
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
        """Remove every hook; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = False

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Switch the hooks on for the forwards inside the block; buffers start empty."""
        self._buffers.clear()
        self._errors.clear()
        self._active = True
        try:
            yield
        finally:
            self._active = False
            self._calls.clear()
            self._pending_call.clear()

    def new_forward(self) -> None:
        """Mark the start of a forward pass: call indices (``#k``) count within one forward."""
        self._calls.clear()
        self._pending_call.clear()

    @property
    def errors(self) -> dict[str, str]:
        """Sites whose hook failed during the last capture, with the reason."""
        return dict(self._errors)

    # ------------------------------------------------------------------ hooks
    def _make_pre_hook(self, name: str, want: SiteNeeds):
        def pre_hook(module: nn.Module, args: tuple) -> None:
            if not self._active:
                return
            call = self._calls[name]
            self._calls[name] = call + 1
            self._pending_call[name].append(call)
            self._buffer(name, call)  # created in call order: sites come out in forward order
            if want.input:
                self._guarded(name, call, self._keep_input, args)

        return pre_hook

    def _make_post_hook(self, name: str, want: SiteNeeds):
        def post_hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._active or not self._pending_call[name]:
                return
            call = self._pending_call[name].pop()
            self._guarded(name, call, self._keep_output, output, want)

        return post_hook

    def _guarded(self, name: str, call: int, keep, *args) -> None:
        # A hook must never break the forward it watches: record the failure, report it later.
        try:
            keep(name, call, *args)
        except Exception as error:  # noqa: BLE001
            self._errors.setdefault(site_name(name, call), f"{type(error).__name__}: {error}")

    def _buffer(self, name: str, call: int) -> _Buffers:
        return self._buffers.setdefault((name, call), _Buffers())

    def _reduce(self, tensor: Tensor) -> Tensor:
        return reduce_to_samples(
            tensor, spatial=self.spatial, channel_dim=self.channel_dim, positions_per_sample=self.positions_per_sample
        )

    def _keep_input(self, name: str, call: int, args: tuple) -> None:
        tensor = _first_tensor(args)
        if tensor is not None and tensor.is_floating_point():
            self._buffer(name, call).inputs.append(self._reduce(tensor))

    def _keep_output(self, name: str, call: int, output: Any, want: SiteNeeds) -> None:
        tensor = _first_tensor(output)
        if tensor is None or not tensor.is_floating_point():
            return
        buffer = self._buffer(name, call)
        buffer.output_shape = tuple(tensor.shape[1:])
        if want.output:
            buffer.outputs.append(self._reduce(tensor))
        if want.maps and tensor.ndim == 4 and buffer.maps_kept < self.maps_budget:
            take = tensor.detach()[: self.maps_budget - buffer.maps_kept].to(torch.float32, copy=True)
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
            sites[site_name(name, call)] = SiteData(
                module=name,
                call=call,
                output_shape=buffer.output_shape,
                input=torch.cat(buffer.inputs) if buffer.inputs else None,
                output=torch.cat(buffer.outputs) if buffer.outputs else None,
                maps=torch.cat(buffer.maps) if buffer.maps else None,
            )
        return sites
