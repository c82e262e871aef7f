"""Does torch's OpenMP team stop busy-waiting while a monitor job is pending? (issue 13)

A loop of small parallel torch ops, each followed by 0.5 ms of serial work on the calling thread,
stands in for training: between two parallel regions GNU OpenMP's idle team threads spin unless
libgomp manages more threads than there are CPUs. The loop runs three times: before any job, while
a :class:`~lightning_complexity.worker.MeasurementWorker` job is pending (the job only sleeps, so
the CPU it frees is the loop's own spinning), and after the worker's thread ended. It reports
process CPU seconds per wall second of each loop: near the number of torch threads when the idle
threads spin, near 1 when they sleep.

    python benchmarks/openmp_spin.py
"""

from __future__ import annotations

import os
import threading
import time

import torch

from lightning_complexity.worker import MeasurementWorker


def loop(ops: int = 2000, serial_seconds: float = 0.0005) -> tuple[float, float]:
    x = torch.empty(1 << 20)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(ops):
        x.add_(1.0)  # one parallel region
        start = time.perf_counter()
        while time.perf_counter() - start < serial_seconds:
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    loop(200)  # warm-up: the team exists
    rows = [("before any job", *loop())]
    worker = MeasurementWorker(background=True)
    release = threading.Event()
    worker.submit(lambda: release.wait(60))
    rows.append(("while a job is pending", *loop()))
    release.set()
    worker.shutdown()
    rows.append(("after the worker's thread ended", *loop()))
    print("| loop | wall s | process CPU s | CPU s per wall s |")
    print("|---|---|---|---|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.3f} | {cpu:.3f} | {cpu / wall:.2f} |")


if __name__ == "__main__":
    main()
