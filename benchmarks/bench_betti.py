"""Benchmark: ``betti_numbers`` (all maps in one call) against gudhi (one ``CubicalComplex`` per map).

Both run in the same process on the same maps (ReLU of smoothed noise with a random offset per map,
so blobs, holes and specks of all sizes occur) and the results are compared map by map. gudhi is
single-threaded, so torch is pinned to one thread by default for a like-for-like comparison.

Run (with the package installed, e.g. ``pip install -e .``, and gudhi):
    python benchmarks/bench_betti.py                 # 4096 maps of 16×16 and 1024 of 32×32
    python benchmarks/bench_betti.py --threads 2 --cases 256x64

Prints a markdown table; on a shared machine the figures are indicative only.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from lightning_complexity.functional.topology import betti_numbers


def make_maps(count: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, 1, size + 2, size + 2, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(noise, 3, stride=1).squeeze(1)
    offset = torch.empty(count, 1, 1).uniform_(-0.5, 0.5, generator=generator)
    return torch.relu(smooth + offset)


def gudhi_betti(maps: np.ndarray) -> np.ndarray:
    """One gudhi call per map on the binary filtration: 0 on ``{x > 0}``, 1 elsewhere, read at 0."""
    import gudhi

    result = np.empty((len(maps), 2), dtype=np.int64)
    for k, selected in enumerate(maps > 0):
        complex_ = gudhi.CubicalComplex(top_dimensional_cells=np.where(selected, 0.0, 1.0))
        complex_.compute_persistence(homology_coeff_field=2, min_persistence=-1)
        result[k] = complex_.persistent_betti_numbers(0.0, 0.0)[:2]
    return result


def best_time(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["4096x16", "1024x32"], help="COUNTxSIZE, e.g. 4096x16")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (gudhi uses one)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for ours")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gudhi

    print(f"torch {torch.__version__} ({args.threads} thread(s)), gudhi {gudhi.__version__}, {platform.processor() or platform.machine()}\n")
    print("| maps | size | ours, scipy labelling (s) | ours, torch labelling (s) | gudhi, one call per map (s) | speed-up (scipy / torch) | identical |")
    print("|---:|---:|---:|---:|---:|---:|:---:|")
    for case in args.cases:
        count, size = (int(v) for v in case.lower().split("x"))
        maps = make_maps(count, size)
        betti_numbers(maps[:8])  # warm-up: imports and first-call allocations
        t_scipy, ours = best_time(lambda: betti_numbers(maps, backend="scipy"), args.repeats)
        t_torch, ours_torch = best_time(lambda: betti_numbers(maps, backend="torch"), args.repeats)
        t_gudhi, reference = best_time(lambda: gudhi_betti(maps.numpy()), 1)
        identical = np.array_equal(ours.numpy(), reference) and np.array_equal(ours_torch.numpy(), reference)
        print(
            f"| {count} | {size}×{size} | {t_scipy:.3f} | {t_torch:.3f} | {t_gudhi:.3f} "
            f"| {t_gudhi / t_scipy:.0f}× / {t_gudhi / t_torch:.1f}× | {'yes' if identical else 'NO'} |"
        )


if __name__ == "__main__":
    main()
