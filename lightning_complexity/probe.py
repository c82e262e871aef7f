"""The probe set: the fixed inputs every measurement sees, so the curves are comparable over time.

A probe is a list of *batches* in the structure the user's code expects (a tensor, a tuple, a
dict…), at most ``max_samples`` inputs in all, the same at every measurement:

* ``"val"`` with a validation loader that reads its dataset in order (the usual
  ``shuffle=False``; Lightning's ``DistributedSampler`` under DDP): a seeded choice of whole
  validation *batches*, spread over the validation set (one from each of ``k`` equal strata).
  When validation runs anyway, the monitor captures those batches in the trainer's own pass
  (:attr:`ProbeSet.validation_batches`); where it does not, it builds exactly the same batches
  from the dataset (indices from the loader's sampler, the loader's ``collate_fn``) for its own
  pass. Under DDP each rank holds its share of every chosen batch, as Lightning's sampler gives it.
* otherwise (a shuffled validation loader, ``"train"``, a ``DataLoader``): ``max_samples``
  dataset indices drawn once with a seeded generator (the global RNG is untouched) and collated
  in batches of ``batch_size``; an iterable dataset is read from its start. Under DDP, rank ``r``
  takes the rows ``r, r + W, …``.
* a tensor of model inputs: its first ``max_samples`` rows.

Example:
    >>> import torch
    >>> probe = ProbeSet.from_tensor(torch.arange(10.0).reshape(10, 1), max_samples=4, batch_size=3)
    >>> [b.size for b in probe.batches], probe.rows
    ([3, 1], 4)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from lightning_complexity.errors import bad_argument
from lightning_complexity.isolation import forked_rngs
from lightning_complexity.nesting import tensor_leaves

__all__ = ["ProbeBatch", "ProbeSet", "batch_size_of", "default_batch_to_input", "resolve_probe_loader"]

_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "input_ids")


def default_batch_to_input(batch: Any) -> Any:
    """The model input inside a batch, for ``probe_step="forward"``: the tensor itself, the first
    item of a tuple/list, or a common key of a dict (``x``, ``input``, ``inputs``, ``image``,
    ``images``, ``pixel_values``, ``input_ids``)."""
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


def batch_size_of(batch: Any) -> int | None:
    """How many inputs a batch holds: the most common leading size of its tensors (None if none).

    Example:
        >>> batch_size_of({"input_ids": torch.zeros(4, 9), "mask": torch.zeros(4, 9), "labels": torch.zeros(4)})
        4
    """
    sizes = [leaf.shape[0] for leaf in tensor_leaves(batch) if leaf.ndim >= 1]
    if not sizes:
        return None
    return max(dict.fromkeys(sizes), key=sizes.count)  # ties: the first tensor's


@dataclass
class ProbeBatch:
    """One probe batch: ``data`` in the user's structure (on the CPU until used), ``size`` inputs,
    ``first_input`` its position in the probe, and ``keep`` how many of its inputs count."""

    data: Any
    size: int | None
    first_input: int = 0
    keep: int | None = None

    @property
    def kept(self) -> int:
        return (self.size or 0) if self.keep is None else min(self.keep, self.size or self.keep)


@dataclass(frozen=True)
class ValidationBatch:
    """A chosen batch of the validation loader: its index, inputs on this rank, and how many count."""

    index: int
    size: int
    first_input: int
    keep: int | None = None


class ProbeSet:
    """The probe of a fit (see the module docstring).

    Attributes:
        rows: inputs in the probe over all ranks.
        validation_batches: chosen batch index → :class:`ValidationBatch` when the probe is a set
            of batches of the validation loader (captured in the trainer's own pass), else empty.
        source: ``"validation batches"``, ``"dataset draw"``, ``"loader start"`` or ``"tensor"``.
    """

    def __init__(
        self,
        rows: int,
        source: str,
        *,
        batches: Sequence[ProbeBatch] | None = None,
        build: Callable[[], list[ProbeBatch]] | None = None,
        validation_batches: dict[int, ValidationBatch] | None = None,
    ) -> None:
        self.rows = rows
        self.source = source
        self.validation_batches = dict(validation_batches or {})
        self._batches = list(batches) if batches is not None else None
        self._build = build

    @property
    def batches(self) -> list[ProbeBatch]:
        """This rank's batches for the monitor's own pass (built from the dataset on first use)."""
        if self._batches is None:
            assert self._build is not None
            with forked_rngs():  # datasets may augment with the global generators
                self._batches = self._build()
        return self._batches

    def __len__(self) -> int:
        return self.rows

    def inputs(self, batch_to_input: Callable[[Any], Any] = default_batch_to_input, limit: int | None = None) -> Tensor:
        """The model inputs of the probe as one tensor (for network-level metrics and layer algebra)."""
        parts, total = [], 0
        for batch in self.batches:
            part = batch_to_input(batch.data)
            if not isinstance(part, Tensor):
                raise TypeError(f"batch_to_input returned {type(part).__name__}, not a tensor of model inputs")
            parts.append(part[: batch.kept])
            total += parts[-1].shape[0]
            if limit is not None and total >= limit:
                break
        inputs = torch.cat(parts)
        return inputs if limit is None else inputs[:limit]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tensor(cls, inputs: Tensor, max_samples: int, batch_size: int = 256, rank: int = 0, world_size: int = 1) -> ProbeSet:
        """The first ``max_samples`` rows of a tensor of model inputs (rank ``r`` takes ``r::W``)."""
        rows = inputs[:max_samples].detach()
        shard = rows[rank::world_size]
        batches = [ProbeBatch(part, int(part.shape[0]), start * world_size + rank) for start, part in _chunks(shard, batch_size)]
        return cls(int(rows.shape[0]), "tensor", batches=batches)

    @classmethod
    def from_loader(
        cls,
        loader: DataLoader,
        max_samples: int,
        *,
        seed: int = 0,
        batch_size: int = 256,
        rank: int = 0,
        world_size: int = 1,
        validation: bool = False,
        limit_batches: int | float | None = None,
    ) -> ProbeSet:
        """The probe drawn from ``loader``; ``validation=True`` tries whole validation batches first."""
        dataset = loader.dataset
        map_style = not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__")
        if map_style and len(dataset) == 0:
            raise bad_argument("probe", loader, "a dataloader that yields at least one sample")
        if validation and map_style and _reads_in_order(loader):
            return cls._validation_batches(loader, max_samples, seed, rank, world_size, limit_batches)
        if map_style:
            return cls._dataset_draw(loader, max_samples, seed, batch_size, rank, world_size)
        return cls._loader_start(loader, max_samples, rank, world_size)

    @classmethod
    def _validation_batches(cls, loader: DataLoader, max_samples: int, seed: int, rank: int, world_size: int, limit_batches: int | float | None) -> ProbeSet:
        dataset, per_batch = loader.dataset, int(loader.batch_sampler.batch_size)
        indices = _rank_indices(len(dataset), rank, world_size)
        lists = list(BatchSampler(indices, per_batch, bool(loader.drop_last)))
        available = _limited(len(lists), limit_batches)
        if available == 0:
            return cls._dataset_draw(loader, max_samples, seed, per_batch, rank, world_size)
        wanted = max(1, min(available, max_samples // (per_batch * world_size)))
        chosen = _strata_choice(available, wanted, seed)
        keep = None
        if per_batch * world_size > max_samples:  # one batch is already over the budget
            keep = max(1, math.ceil(max_samples / world_size))
        chosen_batches: dict[int, ValidationBatch] = {}
        first = 0
        for index in chosen:
            size = len(lists[index])
            chosen_batches[index] = ValidationBatch(index, size, first * world_size + rank, keep)
            first += size if keep is None else min(size, keep)
        rows = min(max_samples, sum(min(len(lists[i]), keep or len(lists[i])) for i in chosen) * world_size)

        def build() -> list[ProbeBatch]:
            collate = loader.collate_fn
            return [
                ProbeBatch(collate([dataset[i] for i in lists[b.index]]), b.size, b.first_input, b.keep)
                for b in chosen_batches.values()
            ]

        return cls(rows, "validation batches", build=build, validation_batches=chosen_batches)

    @classmethod
    def _dataset_draw(cls, loader: DataLoader, max_samples: int, seed: int, batch_size: int, rank: int, world_size: int) -> ProbeSet:
        dataset = loader.dataset
        count = min(max_samples, len(dataset))
        # random.sample draws `count` indices without materialising a permutation of the whole
        # dataset (randperm of 1e9 items would take 8 GB); its own generator leaves the global one alone.
        indices = sorted(random.Random(seed).sample(range(len(dataset)), count))
        shard = indices[rank::world_size]

        def build() -> list[ProbeBatch]:
            collate = loader.collate_fn
            return [
                ProbeBatch(collate([dataset[i] for i in part]), len(part), start * world_size + rank)
                for start, part in _chunks(shard, max(1, batch_size))
            ]

        return cls(count, "dataset draw", build=build)

    @classmethod
    def _loader_start(cls, loader: DataLoader, max_samples: int, rank: int, world_size: int) -> ProbeSet:
        batches, total = [], 0
        with forked_rngs():  # iterating a loader draws from the global generators
            for index, data in enumerate(loader):
                size = batch_size_of(data)
                if size is None or index % world_size != rank:
                    continue
                keep = min(size, max(0, math.ceil(max_samples / world_size) - total))
                batches.append(ProbeBatch(data, size, total * world_size + rank, keep if keep < size else None))
                total += keep
                if total * world_size >= max_samples:
                    break
        if not batches:
            raise bad_argument("probe", loader, "a dataloader that yields at least one batch with tensors")
        return cls(min(max_samples, total * world_size), "loader start", batches=batches)


def _chunks(items: Any, size: int) -> Iterator[tuple[int, Any]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def _reads_in_order(loader: DataLoader) -> bool:
    """Whether the loader reads its dataset in index order in plain batches (so batch ``b`` is the
    same every epoch and can be rebuilt from the dataset)."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if type(batch_sampler) is not BatchSampler or not isinstance(batch_sampler.batch_size, int):
        return False
    if isinstance(sampler, DistributedSampler):
        return not sampler.shuffle
    return type(sampler) is SequentialSampler


def _rank_indices(count: int, rank: int, world_size: int) -> list[int]:
    """The dataset indices rank ``rank`` reads in order, as ``DistributedSampler(shuffle=False)``
    gives them (padded at the end by repeating the first indices)."""
    if world_size <= 1:
        return list(range(count))
    per_rank = math.ceil(count / world_size)
    padded = list(range(count)) + list(range(per_rank * world_size - count))
    return padded[rank : per_rank * world_size : world_size]


def _limited(batches: int, limit: int | float | None) -> int:
    """Batches left after the trainer's ``limit_val_batches``."""
    if limit is None:
        return batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(batches, limit)
    return min(batches, int(batches * float(limit)))


def _strata_choice(available: int, wanted: int, seed: int) -> list[int]:
    """One index from each of ``wanted`` equal strata of ``range(available)``, seeded.

    Example:
        >>> _strata_choice(10, 3, seed=0)
        [1, 4, 6]
    """
    rng = random.Random(seed)
    chosen = []
    for stratum in range(wanted):
        low = stratum * available // wanted
        high = max(low + 1, (stratum + 1) * available // wanted)
        chosen.append(rng.randrange(low, high))
    return chosen


def resolve_probe_loader(trainer: Any, probe: str) -> tuple[DataLoader | None, str]:
    """The dataloader behind ``probe="val"``/``"train"`` and the stage it came from (val falls back
    to train); ``(None, "")`` when the fit has none."""
    order = ("val", "train") if probe == "val" else ("train",)
    for stage in order:
        loader = _first_loader(_stage_loaders(trainer, stage))
        if loader is not None:
            return loader, stage
    return None, ""


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
