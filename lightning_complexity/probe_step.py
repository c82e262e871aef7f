"""The monitor's own pass: run probe batches through the user's code where no validation pass is due.

``probe_step`` says which code runs a batch:

* ``None`` (default): ``"validation_step"`` when the module defines one; else ``"training_step"``
  (automatic optimisation only; no backward or optimiser step happens, the pass runs under
  ``no_grad``); else ``"forward"``. A tensor probe (model inputs, not batches) uses ``"forward"``.
* ``"validation_step"``, ``"training_step"``: that method of the LightningModule, called with
  ``(batch, batch_idx)`` (and ``dataloader_idx=0`` when it requires one).
* ``"forward"``: ``module(batch_to_input(batch))``; a tuple is spread as positional arguments.
* a callable ``probe_step(module, batch)``: anything, e.g. ``lambda m, b: m.backbone(**b)``.

The batch goes through the same preparation as the trainer's (precision conversion,
``on_before_batch_transfer``, ``transfer_batch_to_device``, ``on_after_batch_transfer``) and runs
under the precision plugin's validation context, inside :func:`~lightning_complexity.isolation.isolated`
(forked RNGs, eval mode, muted logging, restored state).

Example::

    run = ProbeStep.resolve(None, pl_module, batches_are_inputs=False)
    run.name                      # 'validation_step'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl

from lightning_complexity.errors import bad_argument

__all__ = ["PROBE_STEPS", "ProbeStep"]

PROBE_STEPS = ("validation_step", "training_step", "forward")
_ACCEPTED = "None, 'validation_step', 'training_step', 'forward', or a callable (module, batch) -> Any"


def check_probe_step(probe_step: Any) -> Any:
    """Raise for a ``probe_step=`` we do not accept; return it unchanged."""
    if probe_step is None or callable(probe_step) or probe_step in PROBE_STEPS:
        return probe_step
    raise bad_argument("probe_step", probe_step, _ACCEPTED)


def _overridden(method: str, module: pl.LightningModule) -> bool:
    own = getattr(type(module), method, None)
    base = getattr(pl.LightningModule, method, None)
    return own is not None and own is not base


def _wants_dataloader_idx(method: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 and positional[2].default is inspect.Parameter.empty


@dataclass(frozen=True)
class ProbeStep:
    """Which user code runs one probe batch (see the module docstring)."""

    name: str
    function: Callable[[pl.LightningModule, Any, int], Any]

    @classmethod
    def resolve(cls, probe_step: Any, module: pl.LightningModule, *, batches_are_inputs: bool, batch_to_input: Callable[[Any], Any]) -> ProbeStep:
        """The step for ``probe_step=`` on this module; raises when it cannot run there."""
        if callable(probe_step):
            return cls(getattr(probe_step, "__name__", "probe_step"), lambda m, batch, index: probe_step(m, batch))
        name = probe_step
        if name is None:
            if batches_are_inputs:
                name = "forward"
            elif _overridden("validation_step", module):
                name = "validation_step"
            elif _overridden("training_step", module) and module.automatic_optimization:
                name = "training_step"
            else:
                name = "forward"
        if name == "forward":
            if not _overridden("forward", module):
                raise bad_argument("probe_step", probe_step, _ACCEPTED + f" that {type(module).__name__} can run (it defines no forward, validation_step or training_step)")

            def forward(m: pl.LightningModule, batch: Any, index: int) -> Any:
                inputs = batch_to_input(batch)
                return m(*inputs) if isinstance(inputs, tuple) else m(inputs)

            return cls("forward", forward)
        if not _overridden(name, module):
            raise bad_argument("probe_step", probe_step, _ACCEPTED + f" that {type(module).__name__} defines")
        if name == "training_step" and not module.automatic_optimization:
            raise bad_argument("probe_step", probe_step, _ACCEPTED + " (training_step under manual optimisation would step the optimiser)")
        wants_index = _wants_dataloader_idx(getattr(module, name))

        def step(m: pl.LightningModule, batch: Any, index: int) -> Any:
            method = getattr(m, name)
            return method(batch, index, 0) if wants_index else method(batch, index)

        return cls(name, step)
