"""Gathering captured sites across DDP ranks, so every rank computes what one process would.

Under DDP each rank runs its shard of the probe (rows ``rank, rank + W, rank + 2W, …``). The
captured samples of every site are then all-gathered and put back in probe order, bounded by the
sample budget, so every metric — moment-based or sample-based — is computed on the same samples
as in a single process, and every rank holds the same values. Every collective runs on every
rank, in the same order: first the sites' metadata (one ``all_gather_object``), then one tensor
gather per (site, tensor) that every rank has.

Example (one process: nothing to gather)::

    sites = gather_sites(sites, strategy=trainer.strategy)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_complexity.capture import SiteData

__all__ = ["all_ranks", "gather_sites", "shard_rows", "unshard_rows"]

_FIELDS = ("input", "output", "maps")


def all_ranks(strategy: Any, payload: Any) -> list[Any]:
    """Every rank's ``payload`` (a small picklable object), in rank order: one collective that
    every rank reaches, whatever happened locally, so ranks can agree before any other collective.

    Example (one process)::

        all_ranks(trainer.strategy, None)   # [None]
    """
    world_size = int(getattr(strategy, "world_size", 1))
    if world_size <= 1:
        return [payload]
    import torch.distributed as dist

    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, payload)
    return everyone


def shard_rows(count: int, rank: int, world_size: int) -> slice:
    """The probe rows of ``rank``: every ``world_size``-th row from ``rank``."""
    return slice(rank, count, world_size)


def unshard_rows(gathered: Tensor, count: int, rows_per_input: int = 1) -> Tensor:
    """Interleave ``(W, m, ...)`` shards (padded at their ends to ``m`` rows) back to ``count`` rows.

    With ``rows_per_input > 1`` (positions as samples) rows move in blocks of one input's rows.

    Example:
        >>> x = torch.arange(5)
        >>> shards = torch.stack([torch.cat([x[r::2], torch.zeros(3 - len(x[r::2]), dtype=x.dtype)]) for r in range(2)])
        >>> unshard_rows(shards, 5).tolist()
        [0, 1, 2, 3, 4]
    """
    world_size, rows = gathered.shape[:2]
    blocks = gathered.reshape(world_size, rows // rows_per_input, rows_per_input, *gathered.shape[2:])
    return blocks.transpose(0, 1).reshape(world_size * rows, *gathered.shape[2:])[:count]


def _pad_rows(tensor: Tensor, rows: int) -> Tensor:
    if tensor.shape[0] == rows:
        return tensor
    padding = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, padding])


def gather_sites(sites: dict[str, SiteData], strategy: Any, maps_budget: int = 64) -> dict[str, SiteData]:
    """All-gather every site's samples from every rank (see the module docstring).

    A site may give several sample rows per input (``spatial="positions"``): rows move in blocks
    of one input's. ``maps_budget`` caps the gathered feature maps as in one process.
    """
    world_size = int(getattr(strategy, "world_size", 1))
    if world_size <= 1:
        return sites
    import torch.distributed as dist

    local = {
        name: {
            **{field: None if getattr(data, field) is None else tuple(getattr(data, field).shape) for field in (*_FIELDS, "gate_counts")},
            "gate_samples": data.gate_samples,
            "inputs": data.inputs,
        }
        for name, data in sites.items()
    }
    everyone: list[dict] = [None] * world_size  # type: ignore[list-item]
    dist.all_gather_object(everyone, local)
    # Positions (the 2-D rows) are per input when spatial="positions": gather whatever each rank holds.
    gathered: dict[str, SiteData] = {}
    for name, data in sites.items():
        if not all(name in other for other in everyone):
            continue  # a site some rank did not see cannot be gathered consistently
        merged = SiteData(module=data.module, call=data.call, output_shape=data.output_shape)
        for field in _FIELDS:
            shapes = [other[name][field] for other in everyone]
            if any(shape is None for shape in shapes):
                continue
            rows = max(shape[0] for shape in shapes)
            total = sum(shape[0] for shape in shapes)
            tensor = _pad_rows(getattr(data, field).contiguous(), rows)
            parts = [torch.empty_like(tensor) for _ in range(world_size)]
            dist.all_gather(parts, tensor)
            # Shards hold probe rows rank::W (maps: of their first inputs); interleave them back.
            rows_per_input = max(1, shapes[0][0] // max(1, everyone[0][name]["inputs"])) if field != "maps" else 1
            if field == "maps":
                setattr(merged, field, unshard_rows(torch.stack(parts), total)[:maps_budget])
            else:
                setattr(merged, field, unshard_rows(torch.stack(parts), total, rows_per_input))
        gate_shapes = [other[name]["gate_counts"] for other in everyone]
        if all(shape is not None and shape == gate_shapes[0] for shape in gate_shapes):
            # Gate counts are sums over inputs: the total over ranks is exact.
            counts = torch.cat([data.gate_counts.reshape(-1), data.gate_nonfinite.reshape(1)])
            dist.all_reduce(counts)
            merged.gate_counts, merged.gate_nonfinite = counts[:-1], counts[-1]
            merged.gate_samples = sum(other[name]["gate_samples"] for other in everyone)
        merged.kind, merged.module_type = data.kind, data.module_type
        merged.inputs = sum(other[name]["inputs"] for other in everyone)
        gathered[name] = merged
    return gathered
