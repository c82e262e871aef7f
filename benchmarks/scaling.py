"""Benchmark: cost of one capture + compute per metric against n (samples), d (width) and sites.

Times the monitor's building blocks directly on synthetic activations, no Trainer:

* **capture**: ``reduce_to_samples`` of one conv activation ``(n, d, H, W)`` float32 to float64
  ``(n, d)`` samples (what each capture hook does per tensor), next to two cheaper equivalents
  (``mean(dim=(2, 3), dtype=float64)``, and a float32 mean cast to float64);
* **compute**: each site metric's ``compute`` on a stacked group of ``sites`` sites, as
  ``compute_metrics`` calls it — ``Affinity`` (exact OT), ``EffectiveDimension``, ``PatternEntropy``
  and the opt-in ``EntropicComplexity`` and ``Betti`` (on 64 feature maps of 16×16 per site, the
  capture's map budget, so independent of n);
* **affinity stages**: centring + the two ``d × d`` Gram matrices (O(b·n·d²)), the Gaussian transport
  map (Cholesky + one ``eigh``, O(b·d³)), moving the inputs (O(b·n·d²)), and the exact OT cost
  (float32 screening matmul O(b·n²·d), float64 certificate, and ``scipy``'s
  ``linear_sum_assignment``, O(n³) per site, only for the sites the certificates do not settle), with
  the number of sites that needed the O(n³) solver.

Synthetic site: pre-activations ``x`` Gaussian with a decaying spectrum (condition number ~30) and a
0.2 offset, output ``relu(x)``. Sweeps go one axis at a time around n = 1024, d = 64, 8 sites (the
monitor's default probe and a mid-size conv width); times are the best of a few runs after a
warm-up. Writes log-log plots to ``benchmarks/results/`` and prints markdown tables.

Usage::

    python benchmarks/scaling.py              # full sweeps (a few minutes on 2 cores)
    python benchmarks/scaling.py --quick      # tiny grid, smoke test
    python benchmarks/scaling.py --threads 1  # pin torch to one thread
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lightning_complexity.functional.ot as ot_module  # noqa: E402
from lightning_complexity.capture import reduce_to_samples  # noqa: E402
from lightning_complexity.functional.affinity import _transport_map  # noqa: E402
from lightning_complexity.functional.dimension import effective_dimension  # noqa: E402
from lightning_complexity.functional.linalg import covariance  # noqa: E402
from lightning_complexity.functional.ot import exact_ot_cost  # noqa: E402
from lightning_complexity.site_metrics import Affinity, Betti, EffectiveDimension, EntropicComplexity, PatternEntropy  # noqa: E402
from lightning_complexity.site_metrics.base import SiteGroup  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASE = {"n": 1024, "d": 64, "sites": 8, "rank": 2}
MAP_SIZE = 16  # Betti: 64 maps of 16×16 per channel per site (the capture's maps budget is 64 inputs)
MAPS_PER_SITE = 64


# ----------------------------------------------------------------------------- data


def make_group(sites: int, n: int, d: int, rank: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sites, n, d)`` float64 pre-activations and their ReLU.

    A rank-``rank`` Gaussian signal spread over all ``d`` units (unit variance per unit) plus 0.1
    isotropic noise. With ``rank = 2`` the ReLU output's effective dimension is about 4, as measured
    on the spatially averaged sites of the benchmark CNN (2–6 at every width, 16 to 64): real
    activations are far from isotropic, and that decides how often the exact OT needs its O(n³)
    solver (see the ``rank`` sweep).
    """
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(sites, rank, d, generator=g, dtype=torch.float64) / rank**0.5
    x = torch.randn(sites, n, rank, generator=g, dtype=torch.float64) @ mixing
    x = x + 0.1 * torch.randn(sites, n, d, generator=g, dtype=torch.float64)
    return x, torch.relu(x)


def make_maps(sites: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(sites * MAPS_PER_SITE, d, MAP_SIZE + 2, MAP_SIZE + 2, generator=g)
    smooth = torch.nn.functional.avg_pool2d(noise, 3, stride=1)
    return torch.relu(smooth).reshape(sites, MAPS_PER_SITE, d, MAP_SIZE, MAP_SIZE)


# ----------------------------------------------------------------------------- timing


def best_time(function: Callable[[], object], min_total: float = 0.4, max_repeats: int = 5) -> float:
    """Best wall time of ``function`` after one warm-up call; a call over 2 s is timed once."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    if first > 2.0:
        return first
    best, spent, repeats = float("inf"), 0.0, 0
    while repeats < max_repeats and (repeats == 0 or spent < min_total):
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return best


class LsaCounter:
    """Counts (and times) the sites handed to scipy's O(n³) ``linear_sum_assignment``."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._solve = ot_module._solve_assignment

    def __enter__(self) -> LsaCounter:
        def solve(cost):
            start = time.perf_counter()
            try:
                return self._solve(cost)
            finally:
                self.count += 1
                self.seconds += time.perf_counter() - start

        ot_module._solve_assignment = solve
        return self

    def __exit__(self, *exc: object) -> None:
        ot_module._solve_assignment = self._solve


def time_with_lsa(function: Callable[[], object], max_repeats: int = 5) -> tuple[float, float, float]:
    """``(best seconds, LSA sites per call, LSA solver seconds per call)`` of ``function``."""
    calls = [0]

    def counted() -> object:
        calls[0] += 1
        return function()

    with LsaCounter() as counter:
        seconds = best_time(counted, max_repeats=max_repeats)
    return seconds, counter.count / calls[0], counter.seconds / calls[0]


# ----------------------------------------------------------------------------- measurements


def time_metrics(n: int, d: int, sites: int, rank: int = 2, entropic: bool = True, betti: bool = True) -> dict[str, float]:
    """Seconds per ``compute`` call of each metric on one stacked group, plus the affinity stages."""
    x, y = make_group(sites, n, d, rank=rank, seed=n + d + sites + rank)
    group = SiteGroup([f"s{i}" for i in range(sites)], outputs=y, inputs=x)
    row: dict[str, float] = {}
    row["affinity"], row["sites needing LSA"], _ = time_with_lsa(lambda: Affinity().compute(group))
    row["affinity (paired OT)"] = best_time(lambda: Affinity(ot="paired").compute(group))
    row["effective_dimension"] = best_time(lambda: EffectiveDimension().compute(group))
    row["activation_pattern_entropy"] = best_time(lambda: PatternEntropy().compute(group))
    if entropic:
        metric = EntropicComplexity()
        row["entropic_complexity"] = best_time(lambda: metric.compute(group)) if n >= metric.min_samples else float("nan")
    if betti:
        maps = make_maps(sites, d, seed=d + sites)
        row["betti (64 maps 16×16 per channel)"] = best_time(lambda: Betti().compute(SiteGroup(group.sites, maps=maps)))

    # Affinity stages on the same data (the same operations as functional.affinity._batched_scores).
    xc = x - x.mean(dim=-2, keepdim=True)
    yc = y - y.mean(dim=-2, keepdim=True)
    eye = torch.eye(d, dtype=torch.float64)
    row["aff: covariances O(b·n·d²)"] = best_time(lambda: (xc.transpose(-1, -2) @ xc, yc.transpose(-1, -2) @ yc))
    cov_x = xc.transpose(-1, -2) @ xc / (n - 1) + 1e-6 * eye
    cov_y = yc.transpose(-1, -2) @ yc / (n - 1) + 1e-6 * eye
    row["aff: transport map (chol + eigh) O(b·d³)"] = best_time(lambda: _transport_map(cov_x, cov_y))
    transport, _ = _transport_map(cov_x, cov_y)
    row["aff: move inputs O(b·n·d²)"] = best_time(lambda: xc @ transport)
    moved = xc @ transport
    ot_time, _, lsa_time = time_with_lsa(lambda: exact_ot_cost(moved, yc))
    row["aff: exact OT (screen O(b·n²·d) + LSA O(n³))"] = ot_time
    row["aff: of which LSA (solver time, summed over threads)"] = lsa_time
    row["effective dimension of the outputs"] = float(effective_dimension(y).median())
    return row


def time_lsa(n: int, rank: int = 2) -> dict[str, float]:
    """Exact OT of one site (ReLU, output effective dimension ~4) against n: the O(n³) solver."""
    x, y = make_group(1, n, BASE["d"], rank=rank, seed=n)
    xc, yc = x - x.mean(dim=-2, keepdim=True), y - y.mean(dim=-2, keepdim=True)
    cov_x = covariance(x) + 1e-6 * torch.eye(BASE["d"], dtype=torch.float64)
    cov_y = covariance(y) + 1e-6 * torch.eye(BASE["d"], dtype=torch.float64)
    moved = xc @ _transport_map(cov_x, cov_y)[0]
    seconds, solved, lsa = time_with_lsa(lambda: exact_ot_cost(moved, yc), max_repeats=3)
    return {"exact OT, 1 site": seconds, "of which LSA": lsa, "sites needing LSA": solved}


def chunked_mean(act: torch.Tensor, budget: int = 1 << 20) -> torch.Tensor:
    """The proposed reduction: float64 means over slices of rows of ~``budget`` bytes of float64."""
    x = act.movedim(1, -1).reshape(act.shape[0], -1, act.shape[1])
    rows = max(1, budget // (8 * x[0].numel()))
    return torch.cat([part.to(torch.float64).mean(dim=1) for part in x.split(rows)])


def time_capture(n: int, d: int, hw: int) -> dict[str, float]:
    """One capture reduction of an ``(n, d, hw, hw)`` float32 conv activation, three ways."""
    g = torch.Generator().manual_seed(0)
    act = torch.randn(n, d, hw, hw, generator=g)
    current = reduce_to_samples(act)
    return {
        "reduce_to_samples (current)": best_time(lambda: reduce_to_samples(act)),
        "float64 in 1 MiB row slices (proposed)": best_time(lambda: chunked_mean(act)),
        "float32 mean, then float64": best_time(lambda: act.mean(dim=(2, 3)).to(torch.float64)),
        "max |Δ| slices vs current": float((chunked_mean(act) - current).abs().max()),
        "max |Δ| float32 mean vs current": float((act.mean(dim=(2, 3)).to(torch.float64) - current).abs().max()),
    }


def time_bookkeeping(measurements: int, sites: int = 19) -> dict[str, float]:
    """Per-measurement work that grows with the history: the signature heatmap, its PNG, the fits.

    A history of ``measurements`` default-metric measurements of ``sites`` sites (affinity, its 5
    signature summaries, 3 effective-dimension metrics, pattern entropy: 5·sites + 5 rows each), as
    the monitor holds it before drawing and fitting after its latest measurement.
    """
    import tempfile
    from types import SimpleNamespace

    from torch.utils.tensorboard import SummaryWriter

    from lightning_complexity import ComplexityMonitor, MetricHistory
    from lightning_complexity.figures import signature_heatmap

    g = torch.Generator().manual_seed(0)
    rows = []
    for m in range(measurements):
        step, epoch = 10 * m, m
        for k in range(sites):
            site = f"stage{k // 6}.block{k % 6}.relu"
            base = 0.6 + 0.01 * k + 0.3 * (1 + m) ** -0.5
            rows.append((step, epoch, "affinity", site, base + 0.01 * float(torch.rand(1, generator=g))))
        for stat in ("mean", "std", "min", "max", "max_over_mean"):
            rows.append((step, epoch, "affinity_signature", stat, 0.7))
        for metric in ("effective_dimension", "participation_ratio", "effective_dimension_ratio", "activation_pattern_entropy"):
            for k in range(sites):
                rows.append((step, epoch, metric, f"stage{k // 6}.block{k % 6}.relu", 1.0 + (1 + m) ** 0.3 + 0.01 * k))
    monitor = ComplexityMonitor()
    monitor.history = MetricHistory(rows)
    trainer = SimpleNamespace(loggers=[])
    result = {"rows": float(len(rows))}
    result["signature_heatmap (build)"] = best_time(lambda: signature_heatmap(monitor.history, "affinity"), max_repeats=3)
    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder)
        result["heatmap build + add_figure (PNG)"] = best_time(
            lambda: writer.add_figure("f", signature_heatmap(monitor.history, "affinity"), global_step=0), max_repeats=3
        )
        writer.close()
    result["power-law fits (all curves)"] = best_time(lambda: monitor._log_power_laws(trainer, 0), max_repeats=3)
    return result


def time_real_cnn(n: int = 1024) -> dict[str, float]:
    """Capture + compute on real activations: the benchmark CNN of ``overhead.py`` at initialisation.

    19 ReLU sites (7 of width 16, 6 of 32, 6 of 64), ``n`` synthetic 32×32 probe images in batches
    of 256, every site's input and output captured as the default metrics need them.
    """
    import lightning_complexity.capture as capture_module
    from lightning_complexity.capture import ActivationCapture, SiteNeeds
    from lightning_complexity.measurement import compute_metrics
    from lightning_complexity.sites import select_modules

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from overhead import ResidualCNN, chunked_reduce_to_samples, synthetic_images

    torch.manual_seed(0)
    model = ResidualCNN().eval()
    images = synthetic_images(n, seed=2).tensors[0]
    capture = ActivationCapture(model, {name: SiteNeeds(input=True, output=True) for name in select_modules(model, None)})

    def forward() -> None:
        with torch.no_grad():
            for chunk in images.split(256):
                capture.new_forward()
                model(chunk)

    def captured() -> dict:
        with capture.capturing():
            forward()
        return capture.collect()

    row = {"bare probe forward": best_time(forward, max_repeats=3)}
    row["probe forward + capture (current)"] = best_time(captured, max_repeats=3)
    original = capture_module.reduce_to_samples
    capture_module.reduce_to_samples = chunked_reduce_to_samples
    try:
        row["probe forward + capture (1 MiB slices)"] = best_time(captured, max_repeats=3)
    finally:
        capture_module.reduce_to_samples = original
    sites = captured()
    for metric in (Affinity(), EffectiveDimension(), PatternEntropy()):
        seconds, solved, lsa = time_with_lsa(lambda: compute_metrics(sites, [metric], {metric.name: list(sites)}), max_repeats=3)
        row[metric.name] = seconds
        if metric.name == "affinity":
            row["sites needing LSA"], row["of which LSA (solver time, summed over threads)"] = solved, lsa
    capture.remove()
    return row


# ----------------------------------------------------------------------------- output


def fmt(value: float) -> str:
    if value != value:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def plot(axis: str, values: list[int], rows: list[dict[str, float]], keys: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=90, layout="constrained")
    axes = figure.add_subplot()
    for key in keys:
        ys = [row.get(key, float("nan")) for row in rows]
        points = [(v, t) for v, t in zip(values, ys) if t == t and t > 0]
        if points:
            axes.plot(*zip(*points), "o-", markersize=3, linewidth=1.2, label=key)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel(axis)
    axes.set_ylabel("seconds per call")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=6, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


METRIC_KEYS = [
    "affinity",
    "affinity (paired OT)",
    "effective_dimension",
    "activation_pattern_entropy",
    "entropic_complexity",
    "betti (64 maps 16×16 per channel)",
]
STAGE_KEYS = [
    "aff: covariances O(b·n·d²)",
    "aff: transport map (chol + eigh) O(b·d³)",
    "aff: move inputs O(b·n·d²)",
    "aff: exact OT (screen O(b·n²·d) + LSA O(n³))",
    "aff: of which LSA (solver time, summed over threads)",
    "sites needing LSA",
    "effective dimension of the outputs",
]


def sweep(axis: str, values: list[int], quiet: bool) -> list[dict[str, float]]:
    rows = []
    for value in values:
        point = dict(BASE, **{axis: value})
        start = time.perf_counter()
        rows.append(time_metrics(point["n"], point["d"], point["sites"], rank=point["rank"]))
        if not quiet:
            print(f"  {axis}={value}: affinity {fmt(rows[-1]['affinity'])} "
                  f"(LSA sites {rows[-1]['sites needing LSA']:.0f}/{point['sites']}) [{time.perf_counter() - start:.1f}s]", flush=True)
    return rows


def markdown(first: str, points: list, rows: list[dict[str, float]], keys: list[str]) -> str:
    lines = [f"| {first} | " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in range(len(keys) + 1)) + "|"]
    for point, row in zip(points, rows):
        cells = []
        for key in keys:
            value = row.get(key, float("nan"))
            if key in ("sites needing LSA", "rows"):
                cells.append(f"{value:.0f}")
            elif key.startswith("effective dimension"):
                cells.append(f"{value:.1f}")
            elif "Δ" in key:
                cells.append(f"{value:.1e}")
            else:
                cells.append(fmt(value))
        lines.append(f"| {point} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny grid, no plots unless --plots")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--plots", action="store_true", help="write plots also with --quick")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the PNG plots")
    sections = ["n", "d", "sites", "rank", "lsa", "real", "capture", "bookkeeping"]
    parser.add_argument("--only", nargs="+", choices=sections, default=sections, help="run only these sections (sweeps: n, d, sites, rank)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    print(f"# scaling benchmark — {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average at start {load}")
    print(f"base point: n = {BASE['n']}, d = {BASE['d']}, sites = {BASE['sites']} (one stacked group), signal rank {BASE['rank']}; "
          "times are seconds per compute call for the whole group\n", flush=True)

    if args.quick:
        axes_values = {"n": [256, 1024], "d": [16, 64], "sites": [1, 8], "rank": [2, 32]}
        capture_points = [(256, 16, 32), (256, 64, 8)]
        lsa_points = [256, 1024]
        book_points = [5, 20]
    else:
        axes_values = {
            "n": [128, 256, 512, 1024, 2048],
            "d": [8, 16, 32, 64, 128, 256, 512, 1024],
            "sites": [1, 2, 4, 8, 16, 32, 64],
            "rank": [1, 2, 4, 8, 16, 32, 64],
        }
        capture_points = [(1024, 16, 32), (1024, 32, 16), (1024, 64, 8), (1024, 256, 4), (256, 64, 8), (4096, 64, 8)]
        lsa_points = [256, 512, 1024, 2048, 4096]
        book_points = [5, 10, 25, 50, 100, 200]

    axes_values = {axis: values for axis, values in axes_values.items() if axis in args.only}
    results = {}
    for axis, values in axes_values.items():
        print(f"## sweep over {axis}", flush=True)
        results[axis] = sweep(axis, values, quiet=False)

    print("\n## exact OT of one site vs n (the O(n³) solver)", flush=True)
    lsa_rows = []
    for n in lsa_points if "lsa" in args.only else []:
        lsa_rows.append(time_lsa(n))
        print(f"  n={n}: {fmt(lsa_rows[-1]['exact OT, 1 site'])}", flush=True)

    print("\n## real activations: the overhead benchmark's CNN at initialisation", flush=True)
    real = time_real_cnn(256 if args.quick else 1024) if "real" in args.only else None

    print("\n## capture: one conv activation (n, d, H, W) float32 → (n, d) float64", flush=True)
    capture_rows = [time_capture(n, d, hw) for n, d, hw in capture_points] if "capture" in args.only else []

    print("\n## bookkeeping vs measurements so far", flush=True)
    book_rows = [time_bookkeeping(m) for m in book_points] if "bookkeeping" in args.only else []

    load_end = " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"\n# results (load average at end {load_end})\n")
    for axis, values in axes_values.items():
        fixed = ", ".join(f"{k} = {v}" for k, v in BASE.items() if k != axis)
        print(f"### metrics vs {axis} ({fixed}); seconds per compute call of the stacked group\n")
        print(markdown(axis, values, results[axis], [k for k in METRIC_KEYS if any(k in r for r in results[axis])]))
        print(f"\n### affinity stages vs {axis} ({fixed})\n")
        print(markdown(axis, values, results[axis], STAGE_KEYS))
        print()
    if real is not None:
        print(f"### real activations: ResNet-20-style CNN at initialisation, 19 ReLU sites, {256 if args.quick else 1024} probe images\n")
        print(markdown("probe rows", [256 if args.quick else 1024], [real], list(real)))
        print()
    if lsa_rows:
        print(f"### exact OT of one site vs n (d = {BASE['d']}, rank {BASE['rank']})\n")
        print(markdown("n", lsa_points, lsa_rows, list(lsa_rows[0])))
        print()
    if capture_rows:
        print("### capture (per tensor; a site needing input and output reduces two)\n")
        print(markdown("n, d, H×W", [f"{n}, {d}, {hw}×{hw}" for n, d, hw in capture_points], capture_rows, list(capture_rows[0])))
        print()
    if book_rows:
        book_keys = ["rows", "signature_heatmap (build)", "heatmap build + add_figure (PNG)", "power-law fits (all curves)"]
        print("### per-measurement bookkeeping vs measurements so far (19 sites, default metrics)\n")
        print(markdown("measurements", book_points, book_rows, book_keys))

    if not args.quick or args.plots:
        for axis, values in axes_values.items():
            fixed = ", ".join(f"{k} = {v}" for k, v in BASE.items() if k != axis)
            plot(axis, values, results[axis], METRIC_KEYS, f"metric compute vs {axis} ({fixed})", args.out / f"scaling_metrics_{axis}.png")
            plot(axis, values, results[axis], ["affinity"] + STAGE_KEYS[:5], f"affinity stages vs {axis} ({fixed})", args.out / f"scaling_affinity_{axis}.png")
        if lsa_rows:
            plot("n", lsa_points, lsa_rows, ["exact OT, 1 site", "of which LSA"], f"exact OT of one site vs n (d = {BASE['d']}, rank {BASE['rank']})", args.out / "scaling_ot_n.png")
        print(f"\nplots written to {args.out}/scaling_*.png")


if __name__ == "__main__":
    main()
