"""The interface between the monitor and a metric family: :class:`SiteMetric`.

A site metric says what it needs captured (:class:`~lightning_complexity.capture.SiteNeeds`),
which modules it watches (``layers``; ``None`` = the monitor's selection), and computes its values
for a *group* of sites of equal shape at once (:class:`SiteGroup`, stacked ``(b, n, d)`` tensors),
so one call covers many layers. It may add network-level rows (``summarize``), e.g. the
non-linearity signature's mean over sites.

Example:
    >>> import torch
    >>> class MeanActivation(SiteMetric):
    ...     name = "mean_activation"
    ...     produces = ("mean_activation",)
    ...     def compute(self, group):
    ...         return {"mean_activation": group.outputs.mean(dim=(1, 2))}
    >>> group = SiteGroup(sites=["a", "b"], outputs=torch.ones(2, 4, 3, dtype=torch.float64))
    >>> MeanActivation().compute(group)["mean_activation"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from lightning_complexity.capture import SiteData, SiteNeeds
from lightning_complexity.sites import LayerSpec, validate_layer_spec

__all__ = ["SiteGroup", "SiteMetric"]


@dataclass
class SiteGroup:
    """Sites of equal shape, stacked: ``outputs``/``inputs`` ``(b, n, d)``, ``maps`` ``(b, N, C, H, W)``,
    ``gate_counts`` ``(b, units)`` with ``gate_samples`` ``(b,)`` (how many inputs were counted) and
    ``gate_nonfinite`` ``(b,)`` (NaN/Inf values seen while counting)."""

    sites: list[str]
    outputs: Tensor | None = None
    inputs: Tensor | None = None
    maps: Tensor | None = None
    gate_counts: Tensor | None = None
    gate_samples: Tensor | None = None
    gate_nonfinite: Tensor | None = None


class SiteMetric(ABC):
    """Base class of the metrics the :class:`~lightning_complexity.ComplexityMonitor` computes.

    Subclasses set ``name`` (what users pass in ``metrics=``), ``produces`` (the metric names that
    appear in the history) and ``needs``, and implement :meth:`compute`.

    Args:
        layers: which modules this metric watches; ``None`` uses the monitor's ``layers=``.
    """

    name: ClassVar[str]
    produces: ClassVar[tuple[str, ...]]
    needs: ClassVar[SiteNeeds] = SiteNeeds(output=True)
    min_samples: ClassVar[int] = 2
    #: computed from the model and the probe inputs (``compute_network``), not from captured sites.
    network_level: ClassVar[bool] = False

    def __init__(self, layers: LayerSpec = None) -> None:
        validate_layer_spec(layers, argument=f"{type(self).__name__}(layers=...)")
        self.layers = layers

    def applies_to(self, data: SiteData) -> bool:
        """Whether the metric is defined for this kind of site at all (others are skipped silently)."""
        return True

    def group_key(self, data: SiteData) -> tuple | None:
        """Sites with equal keys are computed together; ``None`` means the site cannot be computed."""
        key = []
        if self.needs.output:
            if data.output is None:
                return None
            key.append(tuple(data.output.shape))
        if self.needs.input:
            if data.input is None or data.output is None or data.input.shape[0] != data.output.shape[0]:
                return None
            key.append(tuple(data.input.shape))
        if self.needs.maps:
            if data.maps is None:
                return None
            key.append(tuple(data.maps.shape))
        if self.needs.gates:
            if data.gate_counts is None:
                return None
            key.append(tuple(data.gate_counts.shape))
        return tuple(key)

    def samples(self, data: SiteData) -> int:
        """How many samples the site has for this metric."""
        if self.needs.gates and not (self.needs.output or self.needs.input or self.needs.maps):
            return data.gate_samples
        tensor = data.output if data.output is not None else data.input if data.input is not None else data.maps
        return 0 if tensor is None else int(tensor.shape[0])

    @abstractmethod
    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        """Values for every site of ``group``: each produced name → a ``(b,)`` tensor.

        While the training loop waits for a measurement, two groups (of this or another metric)
        may be computed at once on two threads: keep per-call state local, or key it by site.
        """

    def summarize(self, sites: list[str], values: dict[str, Tensor]) -> dict[tuple[str, str], Tensor]:
        """Network-level rows from the per-site values (sites in forward order); none by default."""
        return {}

    def figures(self, history: Any) -> dict[str, Any]:
        """Matplotlib figures to log to TensorBoard after a measurement (name → figure); none by default.

        A value may instead be a callable without arguments that builds the figure: the monitor
        then builds it only when it renders it (during training within a small time budget, the
        rest after fit). It must not depend on state that later measurements change (pass it a
        ``history.snapshot()``, not the live history).
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers!r})"
