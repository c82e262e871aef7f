"""The affinity score per activation site and the network's non-linearity signature (SPEC §1).

Each activation site's input and output (reduced to ``(n, d)`` samples) give one ρ_aff; sites of
equal shape are scored in one batched call. The signature — the scores in forward order — is
summarised each measurement as network-level rows ``affinity_signature`` with sites ``mean``,
``std``, ``min``, ``max``, ``max_over_mean``; TensorBoard also gets a heatmap of the signature
over time (sites × measurements).

Example:
    >>> import torch
    >>> from lightning_complexity.site_metrics.base import SiteGroup
    >>> x = torch.randn(2, 512, 8, dtype=torch.float64)
    >>> values = Affinity().compute(SiteGroup(["a", "b"], outputs=torch.relu(x), inputs=x))
    >>> values["affinity"].shape
    torch.Size([2])
"""

from __future__ import annotations

import functools

from typing import Any

from torch import Tensor

from lightning_complexity.capture import SiteData, SiteNeeds
from lightning_complexity.errors import bad_argument
from lightning_complexity.functional.affinity import (
    JITTER_OPTIONS,
    OT_OPTIONS,
    SHRINKAGE_OPTIONS,
    affinity_score,
    signature_summary,
)
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric
from lightning_complexity.sites import LayerSpec

__all__ = ["Affinity"]


class Affinity(SiteMetric):
    """``affinity`` per site (1 = affine, lower = more non-linear) and the signature summaries.

    Args:
        layers: modules to score (default: the monitor's selection, every activation module).
            Only modules whose input and output have the same width can be scored.
        shrinkage: ``"none"`` (default), ``"ledoit_wolf"`` or ``"auto"`` (Ledoit–Wolf when
            n < 10·d). Ledoit–Wolf removes the plain estimate's small-sample bias on isotropic
            activations but breaks layers with dead units (docs/metrics.md, the bias curve).
        ot: ``"exact"`` (default, the definition), ``"sinkhorn"`` or ``"paired"``.
        jitter: ``"relative"`` (default: the score does not depend on the activations' scale) or
            ``"absolute"`` (the authors' code: 1e-6·I, so small activations score too high).
        figure_every_n: draw the signature heatmap at every n-th measurement (0: never). Drawing
            costs ~0.1 s, a tenth of a default measurement, so it is not redrawn every time.
    """

    name = "affinity"
    produces = ("affinity",)
    needs = SiteNeeds(input=True, output=True)
    summary_metric = "affinity_signature"

    def __init__(
        self,
        layers: LayerSpec = None,
        shrinkage: str = "none",
        ot: str = "exact",
        figure_every_n: int = 5,
        jitter: str = "relative",
    ) -> None:
        super().__init__(layers)
        if isinstance(figure_every_n, bool) or not isinstance(figure_every_n, int) or figure_every_n < 0:
            raise bad_argument("Affinity(figure_every_n=...)", figure_every_n, "an int >= 0")
        self.figure_every_n = figure_every_n
        self._measurements = 0
        if shrinkage not in SHRINKAGE_OPTIONS:
            raise bad_argument("Affinity(shrinkage=...)", shrinkage, f"one of {SHRINKAGE_OPTIONS}")
        if ot not in OT_OPTIONS:
            raise bad_argument("Affinity(ot=...)", ot, f"one of {OT_OPTIONS}")
        if jitter not in JITTER_OPTIONS:
            raise bad_argument("Affinity(jitter=...)", jitter, f"one of {JITTER_OPTIONS}")
        self.shrinkage = shrinkage
        self.ot = ot
        self.jitter = jitter

    def group_key(self, data: SiteData) -> tuple | None:
        key = super().group_key(data)
        if key is None or data.input.shape != data.output.shape:
            return None  # the Gaussian OT map needs equal widths (an element-wise activation)
        return key

    def compute(self, group: SiteGroup) -> dict[str, Tensor]:
        scores = affinity_score(group.inputs, group.outputs, shrinkage=self.shrinkage, ot=self.ot, jitter=self.jitter)
        return {"affinity": scores}

    def summarize(self, sites: list[str], values: dict[str, Tensor]) -> dict[tuple[str, str], Tensor]:
        return {(self.summary_metric, stat): value for stat, value in signature_summary(values["affinity"]).items()}

    def figures(self, history: Any) -> dict[str, Any]:
        self._measurements += 1
        if self.figure_every_n <= 0 or (self._measurements - 1) % self.figure_every_n:
            return {}
        from lightning_complexity.figures import signature_heatmap

        # Built when rendered (often after fit): from the rows measured so far, not the final ones.
        return {"affinity_signature": functools.partial(signature_heatmap, history.snapshot(), "affinity")}

    def __repr__(self) -> str:
        return f"Affinity(layers={self.layers!r}, shrinkage={self.shrinkage!r}, ot={self.ot!r}, jitter={self.jitter!r})"
