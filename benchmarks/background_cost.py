"""Benchmark: what one CPU-second of background work costs a training fit on this machine.

The monitor computes its metrics on a low-priority thread (``SCHED_IDLE``, its own OpenMP team so
training's idle threads sleep). Whether that work is free depends on whether the machine really
has idle cycles. This script measures it directly: the cnn case of ``overhead.py`` (no monitor)
is trained while a background thread, set up exactly as the monitor's worker
(:func:`lightning_complexity.worker._lower_priority`), keeps solving 1024×1024 assignment problems
(``scipy.optimize.linear_sum_assignment``, the monitor's main background cost) or runs a small
in-cache matmul loop (no memory traffic). Runs alternate with fits without a background thread.

It reports, per kind of background work, the median fit-time increase and the background thread's
CPU seconds (``time.thread_time`` in the thread), and their ratio: the *fit seconds lost per
background CPU-second*. 0 means the background work is free; 1 means it might as well have run on
the training thread.

Usage::

    python benchmarks/background_cost.py              # 3 rounds, 2-epoch cnn fits
    python benchmarks/background_cost.py --rounds 5 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import overhead  # noqa: E402

from lightning_complexity.worker import _lower_priority  # noqa: E402


def assignment_work(stop: threading.Event, cpu: list[float]) -> None:
    _lower_priority()
    rng = np.random.default_rng(0)
    points = rng.standard_normal((2, 1024, 32))
    cost = ((points[0][:, None, :] - points[1][None, :, :]) ** 2).sum(-1)
    start = time.thread_time()
    while not stop.is_set():
        linear_sum_assignment(cost)
    cpu.append(time.thread_time() - start)


def in_cache_work(stop: threading.Event, cpu: list[float]) -> None:
    _lower_priority()
    torch.set_num_threads(1)
    a = torch.randn(64, 64, dtype=torch.float64)
    start = time.thread_time()
    while not stop.is_set():
        for _ in range(200):
            a @ a
    cpu.append(time.thread_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    case = overhead.make_cases(argparse.Namespace(epochs=args.epochs, quick=False, train_size=None, val_size=None, width=16, blocks=3))["cnn"]
    kinds = {"none": None, "assignment (scipy LSA, 1024²)": assignment_work, "in-cache matmul (64²)": in_cache_work}
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    print(f"# background cost — {case.description}, {args.epochs} epochs, load {overhead.load_average()}", flush=True)
    overhead.run_fit(case, False, 1)  # warm-up
    for round_ in range(args.rounds):
        for kind, work in kinds.items():
            stop, cpu = threading.Event(), []
            thread = threading.Thread(target=work, args=(stop, cpu), daemon=True) if work else None
            if thread:
                thread.start()
            wall = overhead.run_fit(case, False, args.epochs).wall
            stop.set()
            if thread:
                thread.join()
            walls[kind].append(wall)
            cpus[kind].append(cpu[0] if cpu else 0.0)
            print(f"  round {round_ + 1}: {kind}: fit {wall:.2f}s, background CPU {cpus[kind][-1]:.2f}s", flush=True)
    base = statistics.median(walls["none"])
    print(f"\nload average at end: {overhead.load_average()}\n")
    rows = []
    for kind in kinds:
        wall, cpu = statistics.median(walls[kind]), statistics.median(cpus[kind])
        lost = wall - base
        rows.append([kind, f"{wall:.2f}", f"{lost:+.2f}", f"{cpu:.2f}", f"{lost / cpu:.2f}" if cpu else "—"])
    print(overhead.format_table(["background thread", "fit s (median)", "fit s lost", "background CPU s", "fit s lost per background CPU s"], rows))


if __name__ == "__main__":
    main()
