"""From captured sites to rows: run every metric, batched across sites, with one host transfer.

For each metric, the sites it watches are grouped by shape and each group is computed in one call
on stacked ``(b, n, d)`` tensors. Every value stays on the device until all metrics are done; then
one tensor goes to the host. A site that cannot be computed (too few samples, non-finite
activations, a metric that is undefined there) gets NaN and a :class:`SiteProblem` saying why, so
the caller can warn once per site — a metric never raises out of a measurement.

Example:
    >>> import torch
    >>> from lightning_complexity.capture import SiteData
    >>> from lightning_complexity.site_metrics import EffectiveDimension
    >>> sites = {"relu": SiteData("relu", 0, (3,), output=torch.eye(3, dtype=torch.float64).repeat(5, 1))}
    >>> result = compute_metrics(sites, [EffectiveDimension()], {"effective_dimension": ["relu"]})
    >>> round(result.values[("effective_dimension", "relu")], 6)  # centred rows span 2 dimensions
    2.0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_complexity.capture import SiteData
from lightning_complexity.site_metrics.base import SiteGroup, SiteMetric

__all__ = ["MeasurementResult", "SiteProblem", "compute_metrics"]


@dataclass(frozen=True)
class SiteProblem:
    """Why ``metric`` is NaN at ``site``."""

    metric: str
    site: str
    reason: str


@dataclass
class MeasurementResult:
    """``(metric, site) → value`` in insertion order (sites in forward order), and the problems."""

    values: dict[tuple[str, str], float] = field(default_factory=dict)
    problems: list[SiteProblem] = field(default_factory=list)


def _stack(data: list[SiteData], attribute: str, wanted: bool) -> Tensor | None:
    return torch.stack([getattr(d, attribute) for d in data]) if wanted else None


def run_in_order(tasks: list[Callable[[], Any]]) -> list[Any]:
    """The default way :func:`compute_metrics` runs its groups: one after the other, here."""
    return [task() for task in tasks]


def compute_metrics(
    sites: dict[str, SiteData],
    metrics: list[SiteMetric],
    sites_of: dict[str, list[str]],
    run: Callable[[list[Callable[[], Any]]], list[Any]] = run_in_order,
) -> MeasurementResult:
    """Compute every metric on its sites. ``sites_of[metric.name]`` lists its sites in forward order.

    ``run`` executes the groups' computations (a list of callables, results in the same order):
    they are independent, so a caller may run them on several threads; the values do not depend
    on how (each group is computed the same way wherever it runs).
    """
    keys: list[tuple[str, str]] = []
    pending: list[Tensor] = []
    finite_keys: list[tuple[str, str]] = []
    finite_flags: list[Tensor] = []
    problems: list[SiteProblem] = []
    nan = torch.tensor(float("nan"), dtype=torch.float64)

    # Every metric's groups first, so that all of them can be computed at once.
    plans: list[tuple[SiteMetric, list[str], list[list[str]]]] = []
    for metric in metrics:
        if metric.network_level:
            continue
        names = [s for s in sites_of.get(metric.name, []) if s in sites and metric.applies_to(sites[s])]
        groups: dict[tuple, list[str]] = defaultdict(list)
        for name in names:
            key = metric.group_key(sites[name])
            if key is None:
                problems.append(SiteProblem(metric.name, name, "nothing usable was captured (no floating-point tensor)"))
            elif metric.samples(sites[name]) < metric.min_samples:
                problems.append(SiteProblem(metric.name, name, f"fewer than {metric.min_samples} samples"))
            else:
                groups[key].append(name)
        plans.append((metric, names, list(groups.values())))
    outcomes = iter(run([_group_task(metric, members, sites) for metric, _, planned in plans for members in planned]))

    for metric, names, planned in plans:
        per_site: dict[str, dict[str, Tensor]] = defaultdict(dict)
        for members in planned:
            computed, finite = next(outcomes)
            if isinstance(computed, Exception):  # a failing metric must not stop training
                problems.extend(SiteProblem(metric.name, m, f"{type(computed).__name__}: {computed}") for m in members)
                continue
            for produced, value in computed.items():
                # Non-finite activations make every value of the site undefined, whatever the
                # functional returned from them (gate counts, for one, would count NaN as off).
                value = torch.where(finite.to(value.device), value.to(torch.float64), torch.nan)
                for i, member in enumerate(members):
                    per_site[member][produced] = value[i]
            for i, member in enumerate(members):
                finite_keys.append((metric.name, member))
                finite_flags.append(finite[i])
        for name in names:
            for produced in metric.produces:
                keys.append((produced, name))
                pending.append(per_site.get(name, {}).get(produced, nan))
        ordered = [n for n in names if n in per_site]
        if ordered:
            stacked = {p: torch.stack([per_site[n][p] for n in ordered]) for p in metric.produces}
            try:
                summaries = metric.summarize(ordered, stacked)
            except Exception as error:  # noqa: BLE001 - a failing summary must not lose the per-site values
                problems.append(SiteProblem(metric.name, "<summary>", f"{type(error).__name__}: {error}"))
                summaries = {}
            for key, value in summaries.items():
                keys.append(key)
                pending.append(value)

    # One host transfer for every value and finiteness flag of this measurement.
    device_values = [v.to(torch.float64).reshape(()) for v in pending] + [f.to(torch.float64) for f in finite_flags]
    host = torch.stack([v.to(device_values[0].device) for v in device_values]).cpu().tolist() if device_values else []
    values = dict(zip(keys, host[: len(keys)]))
    non_finite = {key for key, ok in zip(finite_keys, host[len(keys):]) if not ok}
    for metric_name, site in sorted(non_finite):
        problems.append(SiteProblem(metric_name, site, "non-finite (NaN/Inf) activations"))
    reported = {(p.metric, p.site) for p in problems}
    for (produced, site), value in values.items():
        owner = next((m for m in metrics if produced in m.produces), None)
        if owner is not None and value != value and (owner.name, site) not in reported:
            problems.append(SiteProblem(owner.name, site, "the metric is undefined for these activations (e.g. constant output)"))
            reported.add((owner.name, site))
    return MeasurementResult(values, problems)


def _site_group(metric: SiteMetric, members: list[str], sites: dict[str, SiteData]) -> SiteGroup:
    """The stacked tensors ``metric`` needs from ``members`` (only those: other metrics' captures
    may be missing at some of these sites)."""
    data = [sites[m] for m in members]
    needs = metric.needs
    return SiteGroup(
        members,
        _stack(data, "output", needs.output),
        _stack(data, "input", needs.input),
        _stack(data, "maps", needs.maps),
        _stack(data, "gate_counts", needs.gates),
        torch.tensor([d.gate_samples for d in data], dtype=torch.float64, device=data[0].gate_counts.device) if needs.gates else None,
        torch.stack([d.gate_nonfinite for d in data]) if needs.gates else None,
    )


def _group_task(metric: SiteMetric, members: list[str], sites: dict[str, SiteData]) -> Callable[[], tuple[Any, Tensor | None]]:
    """A task computing ``metric`` on one group: ``(values or the exception raised, finite flags)``.
    The stacked tensors live only while the task runs."""

    def task() -> tuple[Any, Tensor | None]:
        group = _site_group(metric, members, sites)
        try:
            return metric.compute(group), _finite_per_site(group)
        except Exception as error:  # noqa: BLE001 - reported per site by the caller
            return error, None

    return task


def _finite_per_site(group: SiteGroup) -> Tensor:
    flags = None
    for tensor in (group.outputs, group.inputs, group.maps):
        if tensor is not None:
            ok = torch.isfinite(tensor).flatten(1).all(dim=1)
            flags = ok if flags is None else flags & ok
    if group.gate_nonfinite is not None:
        ok = group.gate_nonfinite == 0
        flags = ok if flags is None else flags & ok
    assert flags is not None
    return flags
