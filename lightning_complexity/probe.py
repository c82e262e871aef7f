"""The probe set: a fixed set of inputs the monitor runs through the model at each measurement.

Measuring every time on the same inputs makes the curves comparable across epochs. The inputs are
drawn once, with their own seeded generator (the global RNG and so the training are untouched), from

* ``"val"``: the validation dataloader (the training one when there is none),
* ``"train"``: the training dataloader,
* a ``DataLoader``, or
* a tensor of model inputs.

From a map-style dataset, ``max_samples`` indices are drawn without replacement and collated with the
loader's ``collate_fn``, so shuffling, epochs and resumes do not change the probe; an iterable
dataset is read from its start.

Example:
    >>> import torch
    >>> probe = ProbeSet(torch.arange(10.0).reshape(10, 1), max_samples=4, batch_size=3)
    >>> [b.shape[0] for b in probe.batches()]
    [3, 1]
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lightning_complexity.errors import bad_argument

__all__ = ["ProbeSet", "default_batch_to_input", "resolve_probe_loader"]

_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "input_ids")


def default_batch_to_input(batch: Any) -> Tensor:
    """The model input inside a batch: the tensor itself, the first item of a tuple/list, or a
    common key of a dict (``x``, ``input``, ``inputs``, ``image``, ``images``, ``pixel_values``, ``input_ids``)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in _INPUT_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
        raise bad_argument("batch_to_input", None, f"a callable extracting the model input from dict batches with keys {sorted(batch)}")
    raise bad_argument("batch_to_input", None, f"a callable extracting the model input from batches of type {type(batch).__name__}")


def _split(inputs: Tensor, batch_size: int) -> list[Tensor]:
    return list(inputs.split(batch_size))


class ProbeSet:
    """Model inputs, at most ``max_samples`` rows, split into forward batches of ``batch_size``.

    Args:
        inputs: the model inputs (first axis = samples).
        max_samples: the sample budget.
        batch_size: rows per probe forward.
    """

    def __init__(self, inputs: Tensor, max_samples: int, batch_size: int = 256) -> None:
        self.inputs = inputs[:max_samples]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device | str) -> ProbeSet:
        """Move the inputs (once) to ``device``."""
        if self.inputs.device != torch.device(device):
            self.inputs = self.inputs.to(device)
        return self

    def batches(self, rows: slice = slice(None)) -> Iterator[Tensor]:
        """The forward batches of the selected rows (all by default; a DDP shard), in a fixed order."""
        return iter(_split(self.inputs[rows], self.batch_size))

    @classmethod
    def from_loader(
        cls,
        loader: DataLoader,
        max_samples: int,
        *,
        seed: int = 0,
        batch_size: int = 256,
        batch_to_input: Callable[[Any], Tensor] = default_batch_to_input,
    ) -> ProbeSet:
        """Draw a fixed probe set from ``loader`` (see the module docstring)."""
        with torch.random.fork_rng(devices=[]):  # iterating a loader draws from the global RNG
            dataset = loader.dataset
            if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__") and len(dataset) > 0:
                count = min(max_samples, len(dataset))
                # random.sample draws `count` indices without materialising a permutation of the
                # whole dataset (randperm of 1e9 items would take 8 GB).
                indices = sorted(random.Random(seed).sample(range(len(dataset)), count))
                collate = loader.collate_fn
                step = max(1, batch_size)
                chunks = [
                    batch_to_input(collate([dataset[i] for i in indices[start : start + step]]))
                    for start in range(0, count, step)
                ]
            else:
                chunks, total = [], 0
                for batch in loader:
                    chunk = batch_to_input(batch)
                    chunks.append(chunk[: max_samples - total])
                    total += chunks[-1].shape[0]
                    if total >= max_samples:
                        break
        if not chunks:
            raise bad_argument("probe", loader, "a dataloader that yields at least one sample")
        return cls(torch.cat([c.detach() for c in chunks]), max_samples, batch_size)


def resolve_probe_loader(trainer: Any, probe: str) -> DataLoader:
    """The dataloader behind ``probe="val"``/``"train"`` for a fit (val falls back to train)."""
    order = ("val", "train") if probe == "val" else ("train",)
    for stage in order:
        loader = _first_loader(_stage_loaders(trainer, stage))
        if loader is not None:
            return loader
    raise bad_argument("probe", probe, "a probe source that exists: this fit has no dataloader for it; pass probe=<DataLoader> or a tensor")


def _stage_loaders(trainer: Any, stage: str) -> Any:
    loop = trainer.fit_loop if stage == "train" else trainer.fit_loop.epoch_loop.val_loop
    source = getattr(loop, "_data_source", None)
    if source is None or source.instance is None or not source.is_defined():
        return None
    return source.dataloader()


def _first_loader(loaders: Any) -> DataLoader | None:
    if isinstance(loaders, DataLoader):
        return loaders
    if isinstance(loaders, (list, tuple)):
        return next((item for item in loaders if isinstance(item, DataLoader)), None)
    if isinstance(loaders, dict):
        return next((item for item in loaders.values() if isinstance(item, DataLoader)), None)
    return None
