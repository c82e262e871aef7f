"""The GPU path on a real accelerator, in one run of about 8 minutes (issue 15).

On a CUDA machine, from the repository root (nothing installed: ``PYTHONPATH=.``)::

    PYTHONPATH=. python3 benchmarks/gpu_check.py            # writes $OUT/gpu_check.json
    PYTHONPATH=. python3 benchmarks/gpu_check.py --dry-run  # tiny sizes, on the CPU too

1. the whole test suite with CUDA visible (GPU-marked tests included), time-boxed: passed / failed
   / skipped, and the names of failures;
2. timings with CUDA events after warm-up: the exact affinity signature of 50 sites at n = 2048,
   d = 256 (goal < 0.5 s for all 50), checked to 1e-9 against scipy's assignment on the CPU for a
   few sites; the effective dimension of the same 50 sites; Betti numbers of 64 channels × 256
   maps of 32×32; the capture reduction of a ResNet-sized forward (hooks on, against off);
3. the overhead benchmark on a CIFAR-sized residual network (synthetic 32×32 images, 10,240
   training rows, a measurement every epoch, the monitor's defaults): the ratio of fit times with
   and without the monitor (goal ≤ 1.02) and the seconds the training loop waited per measurement;
4. every figure in one JSON file under ``$OUT`` (or ``--out``) and a printed summary.

Every part is guarded: one that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = "unknown"
    try:
        import lightning

        info["lightning"] = lightning.__version__
    except ImportError:
        pass
    return info


# ----------------------------------------------------------------------------- 1. the test suite


def run_tests(timeout: int, dry_run: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--timeout=300"]
    args += ["tests/test_affinity.py", "tests/test_background.py", "-x"] if dry_run else []
    if not dry_run:
        try:
            import xdist  # noqa: F401

            args += ["-n", "8"]  # the device machine has 16 cores
        except ImportError:
            pass
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    try:
        completed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        output, returncode = completed.stdout + completed.stderr, completed.returncode
    except subprocess.TimeoutExpired as error:
        output, returncode = (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else (error.stdout or ""), "timeout"
    counts = {key: int(value) for value, key in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
    return {"returncode": returncode, "seconds": round(time.perf_counter() - start, 1), "counts": counts, "failures": failures, "tail": output[-4000:]}


# ----------------------------------------------------------------------------- 2. kernels


def cuda_time(function, device: torch.device, warmup: int = 2, repeats: int = 3) -> float:
    """Median seconds of ``function()`` (CUDA events on a GPU, wall clock on the CPU)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            function()
            times.append(time.perf_counter() - begin)
    return sorted(times)[len(times) // 2]


def kernels(device: torch.device, dry_run: bool) -> dict[str, Any]:
    from lightning_complexity.functional import affinity_score, betti_numbers, effective_dimension

    sites, n, d = (4, 128, 16) if dry_run else (50, 2048, 256)
    g = torch.Generator(device="cpu").manual_seed(0)
    mixing = torch.randn(sites, d, d, generator=g, dtype=torch.float64) / d**0.5
    x = torch.randn(sites, n, d, generator=g, dtype=torch.float64) @ mixing  # correlated Gaussians
    y = torch.relu(x + 0.1 * torch.randn(sites, n, d, generator=g, dtype=torch.float64))
    xs, ys = x.float().to(device), y.float().to(device)
    result: dict[str, Any] = {"affinity_sites": sites, "affinity_n": n, "affinity_d": d}
    scores = affinity_score(xs, ys)
    result["affinity_exact_seconds_all_sites"] = cuda_time(lambda: affinity_score(xs, ys), device)
    result["affinity_goal_seconds"] = 0.5
    # Exactness: a few sites recomputed on the CPU (scipy's assignment inside) must agree to 1e-9.
    check = min(3, sites)
    reference = affinity_score(x[:check].float(), y[:check].float())
    result["affinity_max_abs_diff_vs_cpu"] = float((scores[:check].cpu() - reference).abs().max())
    result["affinity_exact_to_1e-9"] = result["affinity_max_abs_diff_vs_cpu"] <= 1e-9
    result["effective_dimension_seconds_all_sites"] = cuda_time(lambda: effective_dimension(ys), device)

    channels, maps, side = (4, 8, 16) if dry_run else (64, 256, 32)
    field = torch.randn(maps, channels, side, side, generator=g).to(device)
    field = torch.nn.functional.avg_pool2d(field, 3, 1, 1)  # smooth maps: real components and holes
    result["betti_maps"] = f"{channels} channels x {maps} maps of {side}x{side}"
    result["betti_seconds"] = cuda_time(lambda: betti_numbers(field), device)
    result["betti_b0_mean"] = float(betti_numbers(field)[..., 0].double().mean())

    result.update(capture_reduction(device, dry_run))
    return result


def capture_reduction(device: torch.device, dry_run: bool) -> dict[str, Any]:
    """One ResNet-sized forward with the capture hooks on against off (eval, no_grad)."""
    from overhead import ResidualCNN

    from lightning_complexity.capture import ActivationCapture, SiteNeeds
    from lightning_complexity.sites import select_modules

    model = ResidualCNN(width=16 if dry_run else 64, blocks=1 if dry_run else 3).to(device).eval()
    batch = torch.randn(8 if dry_run else 256, 3, 32, 32, device=device)
    names = select_modules(model, None)
    capture = ActivationCapture(model, dict.fromkeys(names, SiteNeeds(input=True, output=True, gates=True)), sample_budget=4096)

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    def captured() -> None:
        with torch.no_grad(), capture.capturing(), capture.batch(batch_size=batch.shape[0]):
            model(batch)
        capture.collect()

    off = cuda_time(forward, device)
    on = cuda_time(captured, device)
    capture.remove()
    return {"capture_sites": len(names), "capture_batch": int(batch.shape[0]), "forward_seconds": off, "forward_with_capture_seconds": on, "capture_ratio": on / off}


# ----------------------------------------------------------------------------- 3. overhead


def overhead(device: torch.device, dry_run: bool, pairs: int) -> dict[str, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from overhead import ResidualCNN, SyntheticDataModule, synthetic_images

    from lightning_complexity import ComplexityMonitor

    train_rows, val_rows, epochs = (256, 128, 2) if dry_run else (10240, 1024, 5)
    train, val = synthetic_images(train_rows, seed=1), synthetic_images(val_rows, seed=2)
    accelerator = "gpu" if device.type == "cuda" else "cpu"

    def fit(monitored: bool) -> tuple[float, ComplexityMonitor | None]:
        pl.seed_everything(0, verbose=False)
        monitor = ComplexityMonitor() if monitored else None
        with tempfile.TemporaryDirectory() as folder:
            trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=TensorBoardLogger(folder, name="gpu"),
                                 callbacks=[monitor] if monitor else [], enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, log_every_n_steps=20)
            start = time.perf_counter()
            trainer.fit(ResidualCNN(width=16), datamodule=SyntheticDataModule(train, val, batch_size=128))
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start, monitor

    fit(False), fit(True)  # warm-up: cuDNN autotuning, allocator, imports
    ratios, waits, offs, ons = [], [], [], []
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        times = {}
        for monitored in order:
            times[monitored], monitor = fit(monitored)
            if monitor is not None:
                waits += [cost[1] for cost in monitor._pipeline.costs]
                loop = monitor.loop_seconds
        offs.append(times[False])
        ons.append(times[True])
        ratios.append(times[True] / times[False])
    waits.sort()
    return {
        "train_rows": train_rows, "epochs": epochs, "pairs": pairs, "fit_seconds_off": offs, "fit_seconds_on": ons,
        "ratio_median": sorted(ratios)[len(ratios) // 2], "ratios": ratios, "goal_ratio": 1.02,
        "loop_wait_per_measurement_median": waits[len(waits) // 2] if waits else None, "loop_wait_max": waits[-1] if waits else None,
        "loop_seconds_last_fit": loop,
    }


# ----------------------------------------------------------------------------- main


def guarded(results: dict[str, Any], name: str, function, *args) -> None:
    start = time.perf_counter()
    try:
        results[name] = function(*args)
    except Exception as error:  # noqa: BLE001 - one failing part must not hide the others
        results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    results[name + "_wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"[{name}] {time.perf_counter() - start:.1f}s: {json.dumps(results[name], default=str)[:600]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes; runs on the CPU too")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder of gpu_check.json (default $OUT)")
    parser.add_argument("--tests-timeout", type=int, default=240)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "kernels", "overhead"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {"device": device_info(), "dry_run": args.dry_run}
    print(json.dumps(results["device"]), flush=True)
    if "tests" not in args.skip:
        guarded(results, "tests", run_tests, args.tests_timeout, args.dry_run)
    if "kernels" not in args.skip:
        guarded(results, "kernels", kernels, device, args.dry_run)
    if "overhead" not in args.skip:
        guarded(results, "overhead", overhead, device, args.dry_run, 1 if args.dry_run else args.pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
