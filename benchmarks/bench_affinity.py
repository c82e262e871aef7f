"""Benchmark: our batched float64 affinity score against the authors' way of computing it.

The baseline follows the published code's CPU path (qbouniot/AffScoreDeep ``aff_core.rho_aff``),
re-written here: float32 ``torch.cov`` + 1e-6·I, ``scipy.linalg.sqrtm`` and ``scipy.linalg.inv``
for the Gaussian map, float32 ``cdist``², and POT's exact EMD (``ot.emd2``), one site at a time.
Without POT it falls back to ``scipy.optimize.linear_sum_assignment`` on the same float32 cost
and says so in the output. Both run on the same inputs in the same process; ours runs with
``jitter="absolute"``, the authors' jitter, so the scores are comparable (the default relative
jitter differs from it by ~1e-6 on unit-scale data).

Usage::

    python benchmarks/bench_affinity.py              # n = 2048, d ∈ {64, 256, 1024}, 1 and 16 sites
    python benchmarks/bench_affinity.py --quick      # n = 1024, d ∈ {64, 256}, 1 and 4 sites
    python benchmarks/bench_affinity.py --profile    # where our time goes (map, cost matrix, assignment)
    python benchmarks/bench_affinity.py --device cuda --sites 50 --dims 64 128 256 512

Example:
    >>> rows = run_comparison(n=64, dims=[4], site_counts=[2], repeats=1, threads=None, quiet=True)
    >>> rows[0]["max_abs_diff"] < 1e-4
    True
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lightning_complexity.functional.affinity import affinity_score, gaussian_transport_map  # noqa: E402
from lightning_complexity.functional.ot import (  # noqa: E402
    _screened_assignment,
    exact_ot_cost,
    squared_distances,
)

try:
    import ot as pot
except ImportError:  # the baseline then solves the same exact problem with scipy
    pot = None

ACTIVATIONS: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    torch.relu,
    torch.nn.functional.gelu,
    torch.tanh,
    lambda t: torch.nn.functional.leaky_relu(t, 0.01),
    torch.nn.functional.silu,
)


def make_sites(num_sites: int, n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 activation inputs/outputs ``(sites, n, d)``: correlated Gaussians with a decaying
    spectrum and an offset (like real pre-activations), through a mix of activations."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for site in range(num_sites):
        basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        spectrum = torch.logspace(0, -1.5, d, dtype=torch.float64)
        x = torch.randn(n, d, generator=g, dtype=torch.float64) @ (basis * spectrum) @ basis.T + 0.2
        xs.append(x.float())
        ys.append(ACTIVATIONS[site % len(ACTIVATIONS)](x).float())
    return torch.stack(xs), torch.stack(ys)


def baseline_score(x: torch.Tensor, y: torch.Tensor) -> float:
    """One site, the authors' recipe: float32 statistics, sqrtm/inv, float32 cost, exact EMD."""
    inputs, outputs = x.T, y.T  # (d, n), as the authors' code takes them
    d, n = inputs.shape
    cov_x = torch.cov(inputs) + 1e-6 * torch.eye(d)
    cov_y = torch.cov(outputs) + 1e-6 * torch.eye(d)
    if torch.trace(cov_y) > 2e-6 * d:
        root_y = scipy.linalg.sqrtm(cov_y.numpy())
        middle_root = scipy.linalg.sqrtm(root_y @ cov_x.numpy() @ root_y)
        transport = torch.from_numpy(np.real(root_y @ scipy.linalg.inv(middle_root) @ root_y)).float()
    else:
        transport = torch.zeros(d, d)
    moved = transport @ (inputs - inputs.mean(1, keepdim=True)) + outputs.mean(1, keepdim=True)
    cost = torch.cdist(moved.T, outputs.T) ** 2
    if pot is not None:
        weights = torch.ones(n) / n
        w2_squared = float(pot.emd2(weights, weights, cost, numItermax=10_000_000))
    else:
        matrix = cost.double().numpy()
        rows, cols = linear_sum_assignment(matrix)
        w2_squared = float(matrix[rows, cols].mean())
    return 1.0 - float(np.sqrt(w2_squared / (2.0 * float(torch.trace(cov_y)))))


def _timed(function: Callable[[], object], repeats: int, synchronize: Callable[[], None] = lambda: None) -> tuple[float, object]:
    """Best wall time over ``repeats`` runs and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        result = function()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_comparison(
    n: int, dims: list[int], site_counts: list[int], repeats: int, threads: int | None, quiet: bool = False
) -> list[dict]:
    """Time ours and the baseline on the same CPU inputs; one row per (d, sites)."""
    rows = []
    for d in dims:
        for sites in site_counts:
            x, y = make_sites(sites, n, d, seed=d + sites)
            # The baseline is the authors' definition (absolute 1e-6·I jitter): compare like with like.
            ours_time, ours = _timed(lambda: affinity_score(x, y, jitter="absolute"), repeats)
            base_time, base = _timed(lambda: [baseline_score(x[k], y[k]) for k in range(sites)], 1)
            row = {
                "n": n,
                "d": d,
                "sites": sites,
                "baseline_s": base_time,
                "ours_s": ours_time,
                "speedup": base_time / ours_time,
                "max_abs_diff": float((ours - torch.tensor(base, dtype=torch.float64)).abs().max()),
            }
            rows.append(row)
            if not quiet:
                print(
                    f"  n={n} d={d} sites={sites}: baseline {base_time:.3f}s ours {ours_time:.3f}s "
                    f"×{row['speedup']:.1f} |Δ|max {row['max_abs_diff']:.1e}",
                    flush=True,
                )
    return rows


def run_profile(n: int, dims: list[int], sites: int, repeats: int) -> list[dict]:
    """Split our exact score into its stages for a stack of ``sites``."""
    rows = []
    for d in dims:
        x, y = make_sites(sites, n, d, seed=d)
        total, _ = _timed(lambda: affinity_score(x, y), repeats)
        # Covariances, Cholesky + eigh, transport and z; "paired" adds only an O(nd) sum.
        map_time, _ = _timed(lambda: affinity_score(x, y, ot="paired"), repeats)
        xc = x.double() - x.double().mean(1, keepdim=True)
        yc = y.double() - y.double().mean(1, keepdim=True)
        eye = torch.eye(d, dtype=torch.float64)
        transport = gaussian_transport_map(xc.mT @ xc / (n - 1) + 1e-6 * eye, yc.mT @ yc / (n - 1) + 1e-6 * eye)
        moved = xc @ transport
        ot_time, _ = _timed(lambda: exact_ot_cost(moved, yc), repeats)
        settled = int(sum(_screened_assignment(moved[k : k + 1], yc[k : k + 1])[1].item() for k in range(sites)))
        # What the certificate saves: scipy's solver on every site's float64 cost matrix.
        cost = [squared_distances(moved[k : k + 1], yc[k : k + 1])[0].numpy() for k in range(sites)]
        serial, _ = _timed(lambda: [linear_sum_assignment(matrix) for matrix in cost], 1)
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            pooled, _ = _timed(lambda: list(pool.map(linear_sum_assignment, cost)), 1)
        rows.append(
            {"d": d, "sites": sites, "total_s": total, "map_s": map_time, "exact_ot_s": ot_time,
             "settled": f"{settled}/{sites}", "lsa_serial_s": serial, "lsa_pool_s": pooled}
        )
        print(f"  profiled d={d}", flush=True)
    return rows


def run_device(n: int, dims: list[int], sites: int, repeats: int, device: str, modes: list[str]) -> list[dict]:
    """Whole-signature timing on ``device`` for each OT mode (target: 50 sites < 1 s)."""
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for d in dims:
        x, y = make_sites(sites, n, d, seed=d)
        x, y = x.to(device), y.to(device)
        for mode in modes:
            affinity_score(x[:2], y[:2], ot=mode)  # warm-up: kernels, cuSOLVER handles
            elapsed, scores = _timed(lambda: affinity_score(x, y, ot=mode), repeats, synchronize)
            rows.append({"n": n, "d": d, "sites": sites, "ot": mode, "seconds": elapsed, "under_1s": elapsed < 1.0})
            print(f"  {device} d={d} ot={mode}: {elapsed:.3f}s", flush=True)
    return rows


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    body = ["| " + " | ".join(format(row[key], fmt) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1024, d ∈ {64, 256}, 1 and 4 sites")
    parser.add_argument("--n", type=int, default=None, help="samples per site (default 2048)")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="widths d (default 64 256 1024)")
    parser.add_argument("--sites", type=int, nargs="+", default=None, help="stack sizes (default 1 16)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for ours")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads for both sides (default: as configured)")
    parser.add_argument("--profile", action="store_true", help="also split our time into stages")
    parser.add_argument("--device", default="cpu", help="cpu (comparison) or cuda (signature timing)")
    parser.add_argument("--ot", nargs="+", default=["exact", "sinkhorn", "paired"], help="modes for --device cuda")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        try:  # the baseline's scipy/numpy BLAS too, so both sides get the same cores
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads)
        except ImportError:
            print("# threadpoolctl not installed: scipy's BLAS keeps its default thread count")
    n = args.n or (1024 if args.quick else 2048)
    print(
        f"# affinity benchmark: torch {torch.__version__}, scipy {scipy.__version__}, "
        f"POT {getattr(pot, '__version__', 'not installed')}, {platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}"
    )
    if pot is None:
        print("# POT is not installed: the baseline's exact OT uses scipy linear_sum_assignment instead of ot.emd2")

    if args.device != "cpu":
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available on this machine")
        dims = args.dims or [64, 128, 256, 512]
        sites = (args.sites or [50])[0]
        rows = run_device(n, dims, sites, args.repeats, args.device, args.ot)
        print(f"\n### Signature timing on {args.device} ({sites} sites, n = {n})\n")
        print(markdown_table(rows, [("d", "d", "d"), ("ot", "ot", "s"), ("seconds", "time (s)", ".3f"), ("under_1s", "< 1 s", "")]))
        return

    dims = args.dims or ([64, 256] if args.quick else [64, 256, 1024])
    site_counts = args.sites or ([1, 4] if args.quick else [1, 16])
    rows = run_comparison(n, dims, site_counts, args.repeats, args.threads)
    print(f"\n### Affinity score, exact OT, CPU (n = {n}; baseline = authors' recipe, one site at a time)\n")
    print(
        markdown_table(
            rows,
            [("d", "d", "d"), ("sites", "sites", "d"), ("baseline_s", "baseline (s)", ".3f"), ("ours_s", "ours (s)", ".3f"),
             ("speedup", "baseline / ours", ".1f"), ("max_abs_diff", "max abs score diff", ".1e")],
        )
    )
    if args.profile:
        profile = run_profile(n, dims, max(site_counts), args.repeats)
        print(f"\n### Where our time goes ({max(site_counts)} sites, n = {n})\n")
        print(
            markdown_table(
                profile,
                [("d", "d", "d"), ("total_s", "total (s)", ".3f"), ("map_s", "map only: ot=paired (s)", ".3f"),
                 ("exact_ot_s", "exact OT (s)", ".3f"), ("settled", "sites settled by certificate", "s"),
                 ("lsa_serial_s", "scipy LSA on all sites, 1 thread (s)", ".3f"),
                 ("lsa_pool_s", f"scipy LSA, {os.cpu_count()} threads (s)", ".3f")],
            )
        )


if __name__ == "__main__":
    main()
