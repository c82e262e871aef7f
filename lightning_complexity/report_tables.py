"""The report's tables: sites by depth, power-law fits with their verdict, final values.

**When a fit is conclusive.** The verdict is :attr:`PowerLawFit.conclusive` (the ``conclusive``
column of :meth:`MetricHistory.power_law_fits`), whose rule is documented in
:mod:`lightning_complexity.powerlaw`: at least 3 residual degrees of freedom (5 points for the
power law, 6 for the offset model), ``R² ≥ 0.5``, and a 95 % interval of the exponent that
excludes 0 (the analytic one and, for the power law, the bootstrap one). :func:`fit_verdicts`
reads that column and adds, for a reader, *why* a fit is not conclusive, by the same thresholds;
a fits table without the column (from an older version) gets the verdict computed here by that
rule. Inconclusive fits are still shown, greyed and flagged: their exponent must not be quoted as
"this layer's metric grows like t^b".

**Folded metrics.** A metric that is another one times a constant at every site
(``effective_dimension_ratio`` = ``effective_dimension`` / width, ``linear_regions_per_neuron``)
has the same exponent and R²; its fits are folded into the parent's (:func:`proportional_to`).

Example:
    >>> import pandas as pd
    >>> fits = pd.DataFrame({"metric": ["a"], "site": ["s"], "exponent": [0.2], "ci_low": [-0.1], "ci_high": [0.5],
    ...                      "r2": [0.11], "n_points": [4], "model": ["power_law"]})
    >>> fit_verdicts(fits)
    [(False, '4 points (needs 5); R² 0.11 < 0.5; 95% interval includes 0')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_complexity.run_contents import FLAG_METRICS, METADATA_METRICS, RunContents
from lightning_complexity.safe_names import records_frame

if TYPE_CHECKING:
    import pandas as pd

    from lightning_complexity.history import MetricHistory

__all__ = [
    "FOLD_CANDIDATES",
    "conclusive_thresholds",
    "final_values_table",
    "fit_verdicts",
    "fits_table",
    "folded_metrics",
    "proportional_to",
    "select_fits",
    "sites_table",
]

#: metrics that may be their parent times a constant per site (checked on the data, never assumed).
FOLD_CANDIDATES = {
    "effective_dimension_ratio": "effective_dimension",
    "linear_regions_per_neuron": "linear_regions",
    "linear_regions_per_unit_length": "linear_regions",
}
_PROPORTIONAL_RTOL = 1e-9


def conclusive_thresholds() -> tuple[int, float]:
    """``(minimum residual degrees of freedom, minimum R²)`` of the conclusive rule, from powerlaw.py."""
    from lightning_complexity import powerlaw

    return int(getattr(powerlaw, "_CONCLUSIVE_MIN_DOF", 3)), float(getattr(powerlaw, "_CONCLUSIVE_MIN_R2", 0.5))


def _excludes_zero(low: Any, high: Any) -> bool:
    return _finite(low) and _finite(high) and (low > 0 or high < 0)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fit_verdicts(fits: pd.DataFrame) -> list[tuple[bool, str]]:
    """For each row of a fits table: ``(conclusive, why not)`` (``why not`` is ``""`` when conclusive).

    The verdict is the table's ``conclusive`` column when it has one (see the module docstring).
    """
    min_dof, min_r2 = conclusive_thresholds()
    has_column = "conclusive" in fits.columns
    verdicts = []
    for row in fits.to_dict(orient="records"):
        model = row.get("model", "power_law")
        parameters = 2 if model == "power_law" else 3
        reasons = []
        n_points = int(row.get("n_points", 0) or 0)
        if not _finite(row.get("exponent")):
            reasons.append(f"no fit ({n_points} usable point{'s' if n_points != 1 else ''}; a fit needs 4)" if n_points < 4 else "no fit (constant or degenerate curve)")
        else:
            if n_points - parameters < min_dof:
                reasons.append(f"{n_points} points (needs {parameters + min_dof})")
            r2 = row.get("r2")
            if not _finite(r2):
                reasons.append("R² undefined (constant curve)")
            elif r2 < min_r2:
                reasons.append(f"R² {r2:.2f} < {min_r2:g}")
            if not _excludes_zero(row.get("ci_low"), row.get("ci_high")):
                reasons.append("95% interval includes 0")
            if model == "power_law" and "boot_low" in row and not _excludes_zero(row.get("boot_low"), row.get("boot_high")) and _excludes_zero(row.get("ci_low"), row.get("ci_high")):
                reasons.append("bootstrap interval includes 0")
        conclusive = bool(row["conclusive"]) if has_column else not reasons
        if not conclusive and not reasons:
            reasons.append("inconclusive by powerlaw.py's rule")
        verdicts.append((conclusive, "" if conclusive else "; ".join(reasons)))
    return verdicts


def proportional_to(history: MetricHistory, child: str, parent: str, by: str = "epoch") -> dict[str, float] | None:
    """Per site, the constant ``k`` with ``child = k · parent`` at every measurement, or None if there is none.

    Example:
        >>> from lightning_complexity import MetricHistory
        >>> h = MetricHistory([(s, s, m, "a", v * (1 + s)) for s in range(3) for m, v in (("d", 8.0), ("d_ratio", 0.5))])
        >>> proportional_to(h, "d_ratio", "d")
        {'a': 0.0625}
    """
    curves = history.curves(by)
    sites = [site for (metric, site) in curves if metric == child]
    if not sites:
        return None
    factors = {}
    for site in sites:
        if (parent, site) not in curves:
            return None
        (t_child, y_child), (t_parent, y_parent) = curves[(child, site)], curves[(parent, site)]
        if not np.array_equal(t_child, t_parent):
            return None
        usable = np.isfinite(y_child) & np.isfinite(y_parent) & (y_parent != 0)
        if usable.sum() < 2 or not np.array_equal(np.isfinite(y_child), np.isfinite(y_parent)):
            return None
        ratios = y_child[usable] / y_parent[usable]
        if not np.allclose(ratios, ratios[0], rtol=_PROPORTIONAL_RTOL, atol=0):
            return None
        factors[site] = float(ratios[0])
    return factors


def folded_metrics(history: MetricHistory, by: str = "epoch") -> dict[str, str]:
    """``{child: parent}`` for every :data:`FOLD_CANDIDATES` pair that is proportional in this history."""
    present = set(history.metrics())
    return {child: parent for child, parent in FOLD_CANDIDATES.items() if child in present and parent in present and proportional_to(history, child, parent, by) is not None}


def sites_table(history: MetricHistory, contents: RunContents) -> pd.DataFrame:
    """One row per real site in forward order: block, depth, site, module type, kind, samples, metrics."""
    metrics_at: dict[str, list[str]] = {}
    for metric in contents.site_metrics:
        for site in history.sites(metric):
            metrics_at.setdefault(site, []).append(metric)
    latest = history.latest()
    records = []
    for depth, site in enumerate(contents.sites):
        samples = next((latest[(m, site.name)] for m in METADATA_METRICS if (m, site.name) in latest), math.nan)
        records.append({
            "block": site.block, "depth": depth, "site": site.name, "module type": site.type or "unknown",
            "kind": site.kind or "unknown", "samples": int(samples) if _finite(samples) else math.nan,
            "metrics": ", ".join(metrics_at.get(site.name, [])),
        })
    return records_frame(records, ["block", "depth", "site", "module type", "kind", "samples", "metrics"])


def select_fits(fits: pd.DataFrame, contents: RunContents, folded: Mapping[str, str]) -> tuple[pd.DataFrame, list[tuple[bool, str]]]:
    """The fits a reader should see, and their verdicts: folded, bookkeeping, flag (0/1 markers) and
    training-context metrics left out; metrics in order of appearance, sites in forward order within each."""
    hidden = {*folded, *METADATA_METRICS, *FLAG_METRICS, *contents.context_keys}
    keep = [m not in hidden for m in fits["metric"]]
    shown = fits[keep]
    site_order = {site.name: index for index, site in enumerate(contents.sites)}
    metric_order = {metric: index for index, metric in enumerate(dict.fromkeys(shown["metric"]))}
    keys = [(metric_order[m], site_order.get(s, len(site_order))) for m, s in zip(shown["metric"], shown["site"])]
    shown = shown.iloc[sorted(range(len(keys)), key=keys.__getitem__)].reset_index(drop=True)
    return shown, fit_verdicts(shown)


def fits_table(shown: pd.DataFrame, verdicts: list[tuple[bool, str]], contents: RunContents) -> pd.DataFrame:
    """:func:`select_fits`' rows for a page: metric, site (with type), exponent b, the 95 %
    interval, the bootstrap one when present, R², points and the verdict (why not, when not)."""
    bootstrap = "boot_low" in shown.columns
    records = []
    for row, (conclusive, why) in zip(shown.to_dict(orient="records"), verdicts):
        record = {"metric": row["metric"], "site": contents.label(row["site"]), "exponent b": row["exponent"],
                  "95% interval": _interval(row.get("ci_low"), row.get("ci_high"))}
        if bootstrap:
            record["bootstrap 95%"] = _interval(row.get("boot_low"), row.get("boot_high"))
        record.update({"R²": row["r2"], "points": int(row["n_points"]), "verdict": "conclusive" if conclusive else f"inconclusive: {why}"})
        records.append(record)
    return records_frame(records, ["metric", "site", "exponent b", "95% interval", *(["bootstrap 95%"] if bootstrap else []), "R²", "points", "verdict"])


def _interval(low: Any, high: Any) -> str:
    if not (_finite(low) and _finite(high)):
        return "–"
    return f"[{low:.3g}, {high:.3g}]"


def final_values_table(history: MetricHistory, contents: RunContents) -> pd.DataFrame:
    """Rows: real sites in forward order; columns: each site-level metric's value at the last measurement."""
    latest = history.latest()
    records = []
    for site in contents.sites:
        record: dict[str, Any] = {"site": site.label}
        for metric in contents.site_metrics:
            record[metric] = latest.get((metric, site.name), math.nan)
        records.append(record)
    return records_frame(records, ["site", *contents.site_metrics])
