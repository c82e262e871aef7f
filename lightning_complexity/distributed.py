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

__all__ = ["gather_sites", "shard_rows", "unshard_rows"]

_FIELDS = ("input", "output", "maps")


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


def gather_sites(sites: dict[str, SiteData], strategy: Any, probe_size: int, maps_budget: int = 64) -> dict[str, SiteData]:
    """All-gather every site's samples from every rank (see the module docstring).

    ``probe_size`` is the number of probe inputs over all ranks (a site may give several sample
    rows per input with ``spatial="positions"``); ``maps_budget`` caps the gathered feature maps as
    in one process.
    """
    world_size = int(getattr(strategy, "world_size", 1))
    if world_size <= 1:
        return sites
    import torch.distributed as dist

    local = {
        name: {field: None if getattr(data, field) is None else tuple(getattr(data, field).shape) for field in _FIELDS}
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
            rank0_inputs = len(range(0, probe_size, world_size))
            rows_per_input = max(1, shapes[0][0] // max(1, rank0_inputs))
            if field == "maps":
                setattr(merged, field, unshard_rows(torch.stack(parts), total)[:maps_budget])
            else:
                setattr(merged, field, unshard_rows(torch.stack(parts), total, rows_per_input))
        gathered[name] = merged
    return gathered
