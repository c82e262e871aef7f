"""Benchmark: wall time of ``trainer.fit`` with ``ComplexityMonitor()`` at its defaults against without.

Two cases:

* ``digits``: the demo's ``DigitsClassifier`` on ``DigitsDataModule`` (1,437 train / 360 val 8×8
  images; the probe is the whole validation set, 360 rows, 4 activation sites);
* ``cnn``: a CIFAR-style residual CNN (ResNet-20 layout: a stem and 3 stages × 3 basic blocks,
  widths 16/32/64, 19 ReLU sites) on synthetic 32×32 RGB images generated here (10 classes, a smooth
  prototype per class plus noise), sized so that an epoch takes a few seconds on a 2-core CPU.

Both fits of a pair are identical except for the callback: same seed, same data, a
``TensorBoardLogger`` in a fresh temporary folder (so the monitor's figures and custom-scalars layout
are really written, as in normal use), no checkpointing (`--checkpointing`: Lightning's default ModelCheckpoint), no progress bar. The monitor runs at its
defaults: metrics ``affinity``, ``effective_dimension``, ``activation_pattern_entropy``, every
activation module, 1024 probe samples from the validation set, a measurement at the start of fit and
after every epoch, figures, power-law fits and the layer-algebra table. Runs alternate within pairs
(off/on, then on/off, ...) after one discarded warm-up pair; the ratio reported is the median over
pairs of ``t_on / t_off``.

The monitored runs are instrumented (timers around the monitor's own methods and its metrics'
``compute``, a few microseconds per call) to split the overhead into: setup, layer algebra, probe
forward (with the bare forward of the same probe timed separately after fit, hooks removed), metric
computation per metric, scalar logging, figures, power-law fits and the end-of-training figures.
``--profile`` adds one monitored fit per case under cProfile, enabled only while the monitor's hooks
run, and prints where that time goes.

Usage::

    python benchmarks/overhead.py                      # both cases, 5 pairs
    python benchmarks/overhead.py --quick              # smoke run: tiny data, 1 pair, 2 epochs
    python benchmarks/overhead.py --cases cnn --pairs 7 --epochs 5 --train-size 4096
    python benchmarks/overhead.py --pairs 0 --profile  # only the cProfile breakdown

On a shared machine the figures are only meaningful when it is otherwise idle; the load average
before and after the runs is printed with the table.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

import lightning_complexity.functional.ot as ot_module  # noqa: E402
from lightning_complexity import ComplexityMonitor  # noqa: E402
from lightning_complexity.demo import DigitsClassifier, DigitsDataModule  # noqa: E402

# ----------------------------------------------------------------------------- the synthetic CNN


class BasicBlock(nn.Module):
    """conv-bn-relu, conv-bn, + shortcut, relu (two ReLU modules: two activation sites)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResidualCNN(pl.LightningModule):
    """ResNet-20 layout for 32×32 inputs: stem + 3 stages × ``blocks`` basic blocks, 1 + 6·blocks ReLU sites."""

    def __init__(self, width: int = 16, blocks: int = 3, num_classes: int = 10, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, cin = [], width
        for index, cout in enumerate([width, 2 * width, 4 * width]):
            layers = []
            for block in range(blocks):
                layers.append(BasicBlock(cin, cout, 2 if block == 0 and index > 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def synthetic_images(count: int, seed: int, num_classes: int = 10, size: int = 32) -> TensorDataset:
    """Class prototypes (smooth random RGB patterns) plus per-image noise and a random shift."""
    g = torch.Generator().manual_seed(1234)  # the same prototypes for train and val
    coarse = torch.randn(num_classes, 3, 4, 4, generator=g)
    prototypes = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (count,), generator=g)
    images = prototypes[labels] + 0.8 * torch.randn(count, 3, size, size, generator=g)
    shifts = torch.randint(-3, 4, (count, 2), generator=g)
    images = torch.stack([torch.roll(im, tuple(s.tolist()), dims=(1, 2)) for im, s in zip(images, shifts)])
    return TensorDataset(images.contiguous(), labels)


class SyntheticDataModule(pl.LightningDataModule):
    def __init__(self, train: TensorDataset, val: TensorDataset, batch_size: int = 64) -> None:
        super().__init__()
        self.train_set, self.val_set, self.batch_size = train, val, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    description: str
    make_model: Callable[[], pl.LightningModule]
    make_data: Callable[[], pl.LightningDataModule]
    epochs: int
    train_size: int
    val_size: int


def make_cases(args: argparse.Namespace) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    digits_epochs = args.epochs or (2 if args.quick else 8)
    cases["digits"] = Case(
        "digits",
        "demo DigitsClassifier (3 conv + MLP, 4 sites), sklearn digits 8×8",
        DigitsClassifier,
        lambda: DigitsDataModule(seed=0),
        digits_epochs,
        1437,
        360,
    )
    train_size = args.train_size or (256 if args.quick else 1536)
    val_size = args.val_size or (256 if args.quick else 1024)
    train = synthetic_images(train_size, seed=1)
    val = synthetic_images(val_size, seed=2)
    cases["cnn"] = Case(
        "cnn",
        f"ResNet-20-style CNN (widths {args.width}/{2 * args.width}/{4 * args.width}, {3 * args.blocks} blocks, "
        f"{1 + 6 * args.blocks} ReLU sites), synthetic 32×32 RGB",
        lambda: ResidualCNN(width=args.width, blocks=args.blocks),
        lambda: SyntheticDataModule(train, val),
        args.epochs or (2 if args.quick else 5),
        train_size,
        val_size,
    )
    return cases


# ----------------------------------------------------------------------------- instrumentation


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (its batches, with any measurement at the last batch) and of validation."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train.append(time.perf_counter() - self._start)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._vstart = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val.append(time.perf_counter() - self._vstart)


_HOOKS = ("on_fit_start", "on_train_start", "on_train_batch_end", "on_train_epoch_end", "on_validation_epoch_start",
          "on_validation_batch_start", "on_validation_batch_end", "on_validation_end", "on_train_end", "on_fit_end", "teardown")
# Methods of the monitor timed on the training thread.
_PARTS = ("_compute_layer_algebra", "_run_own_pass", "_measure")
# Methods of its measurement pipeline: the job runs in the background thread, publishing on the training thread.
_PIPELINE_PARTS = ("_job", "_values", "_fits", "_figures", "_publish")


class Instrument:
    """Timers around the monitor's hooks, its internal steps and each metric's ``compute``.

    Everything is wrapped on the instance (or, for the assignment solver, on the module for the
    duration of one fit); no library file is touched.
    """

    def __init__(self, monitor: ComplexityMonitor, profiler: cProfile.Profile | None = None) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.profiler = profiler
        for name in _HOOKS:
            setattr(monitor, name, self._wrap(getattr(monitor, name), "hooks", f"hook:{name}", profile=True))
        for name in _PARTS:
            setattr(monitor, name, self._wrap(getattr(monitor, name), name))
        pipeline = monitor._pipeline
        for name in _PIPELINE_PARTS:
            setattr(pipeline, name, self._wrap(getattr(pipeline, name), f"pipeline:{name}"))
        #: the last measurement handed to the background, recomputed alone after fit.
        self.last_measurement: Any = None
        values = pipeline._values

        def keep_last(measurement: Any, *args: Any, **kwargs: Any) -> Any:
            if measurement.failed_keys is None:
                self.last_measurement = measurement
            return values(measurement, *args, **kwargs)

        pipeline._values = keep_last
        for metric in monitor.metrics:
            metric.compute = self._wrap(metric.compute, f"compute:{metric.name}")
        self._patches = [
            # Runs in the OT thread pool: summed solver time over threads, and the number of sites solved.
            (ot_module, "_solve_assignment", self._wrap(ot_module._solve_assignment, "lsa")),
        ]

    def _wrap(self, function: Callable, *keys: str, profile: bool = False) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if profile and self.profiler is not None:
                self.profiler.enable()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                for key in keys:
                    self.times[key] += elapsed
                    self.calls[key] += 1
                if profile and self.profiler is not None:
                    self.profiler.disable()

        return timed

    @contextlib.contextmanager
    def patched(self):
        originals = [(module, name, getattr(module, name)) for module, name, _ in self._patches]
        for module, name, wrapper in self._patches:
            setattr(module, name, wrapper)
        try:
            yield self
        finally:
            for module, name, original in originals:
                setattr(module, name, original)


@dataclass
class RunResult:
    monitored: bool
    wall: float
    train_epochs: list[float]
    val_epochs: list[float]
    measurements: int = 0
    sites: int = 0
    probe_rows: int = 0
    bare_forward: float = float("nan")
    lsa_calls: int = 0
    loop_seconds: float = 0.0
    #: CPU seconds of the whole process (every thread) during the fit.
    cpu: float = 0.0
    #: seconds the end-of-fit power-law figures still took after fit returned (waited for, not in ``wall``).
    figures_after_fit: float = 0.0
    #: CPU seconds of the last measurement's metrics recomputed after fit, alone, on one thread
    #: (the exact-OT solver included): what one measurement costs without any contention.
    alone_cpu: float = float("nan")
    #: per measurement: seconds on the training loop (capture + hand-over) and in the background.
    costs: list[tuple[int, float, float]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)


def bare_probe_forward(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256, repeats: int = 3) -> float:
    """Best time of the probe forward alone (eval, no_grad, no hooks), as the monitor batches it."""
    training = model.training
    model.eval()
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for chunk in inputs.split(batch_size):
                model(chunk)
            best = min(best, time.perf_counter() - start)
    model.train(training)
    return best


def measurement_alone_cpu(monitor: ComplexityMonitor, measurement: Any) -> float:
    """CPU seconds of ``measurement``'s metrics computed again, alone, with one thread (solver included)."""
    from lightning_complexity.functional.ot import solver_threads
    from lightning_complexity.measurement import compute_metrics
    from lightning_complexity.recording import _one_thread  # as the monitor's own jobs run

    if measurement is None:
        return float("nan")
    with _one_thread(), solver_threads(lambda: 1), torch.no_grad():
        start = time.process_time()
        compute_metrics(measurement.captured, monitor.metrics, measurement.sites_of)
        return time.process_time() - start


def parse_monitor_args(text: str | None) -> dict[str, Any]:
    """``"log_figures=False,max_samples=512"`` → keyword arguments (values as Python literals)."""
    import ast

    kwargs: dict[str, Any] = {}
    for item in filter(None, (text or "").split(",")):
        key, _, value = item.partition("=")
        kwargs[key.strip()] = ast.literal_eval(value.strip())
    return kwargs


def run_fit(case: Case, monitored: bool, epochs: int, seed: int = 0, profiler: cProfile.Profile | None = None, monitor_kwargs: dict[str, Any] | None = None, checkpointing: bool = False) -> RunResult:
    pl.seed_everything(seed, verbose=False)
    model = case.make_model()
    data = case.make_data()
    timer = EpochTimer()
    callbacks: list[pl.Callback] = [timer]
    monitor = instrument = None
    if monitored:
        monitor = ComplexityMonitor(**(monitor_kwargs or {}))
        instrument = Instrument(monitor, profiler)
        callbacks.insert(0, monitor)
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=TensorBoardLogger(folder, name="bench"),
            callbacks=callbacks,
            enable_checkpointing=checkpointing,  # Lightning's default ModelCheckpoint, into the temporary folder
            default_root_dir=folder,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=10,
        )
        with instrument.patched() if instrument else contextlib.nullcontext():
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.fit(model, datamodule=data)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            after_fit = time.perf_counter()
            if monitor is not None:  # the next fit must not share the CPU with this one's figures
                monitor.wait_for_figures()
            after_fit = time.perf_counter() - after_fit
    result = RunResult(monitored, wall, timer.train, timer.val, cpu=cpu, figures_after_fit=after_fit)
    if monitor is not None:
        result.measurements = len(monitor.history.steps())
        result.sites = len(monitor.sites.get("affinity", []))
        result.probe_rows = len(monitor._probe) if monitor._probe is not None else 0
        result.times = dict(instrument.times)
        result.lsa_calls = instrument.calls.get("lsa", 0)
        result.loop_seconds = monitor.loop_seconds
        result.costs = list(monitor._pipeline.costs)
        if monitor._probe is not None:
            result.bare_forward = bare_probe_forward(model, monitor._probe.inputs(), monitor.probe_batch_size)
        result.alone_cpu = measurement_alone_cpu(monitor, instrument.last_measurement)
    return result


# ----------------------------------------------------------------------------- reporting


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def breakdown(runs: list[RunResult]) -> list[tuple[str, float, float]]:
    """Median seconds per fit and per measurement of each part of the monitor's time."""
    rows: list[tuple[str, float, float]] = []
    measurements = statistics.median(r.measurements for r in runs) or 1

    def med(function: Callable[[RunResult], float]) -> float:
        return statistics.median(function(r) for r in runs)

    t = lambda r, k: r.times.get(k, 0.0)  # noqa: E731
    parts = [
        ("ON THE TRAINING LOOP (monitor.loop_seconds: every hook, the end-of-fit wait included)", med(lambda r: r.loop_seconds)),
        ("  setup (on_fit_start: probe, hooks)", med(lambda r: t(r, "hook:on_fit_start"))),
        ("  layer algebra (once, at train start)", med(lambda r: t(r, "_compute_layer_algebra"))),
        ("  measurements: capture (own pass, or hooks in the validation pass) + hand-over", med(lambda r: sum(c[1] for c in r.costs))),
        ("    of which own passes (probe forward with capture: start of fit, epochs without validation)", med(lambda r: t(r, "_run_own_pass"))),
        ("    the bare forward of the probe (no hooks), one pass", med(lambda r: r.bare_forward)),
        ("  publishing results (scalars, layout) on the loop", med(lambda r: t(r, "pipeline:_publish"))),
        ("  waiting for the background at fit end", med(lambda r: t(r, "hook:on_fit_end") + t(r, "hook:on_train_end"))),
        ("IN THE BACKGROUND (the measurement jobs)", med(lambda r: t(r, "pipeline:_job"))),
        ("  metrics (compute_metrics)", med(lambda r: t(r, "pipeline:_values"))),
    ]
    metric_keys = sorted({k for r in runs for k in r.times if k.startswith("compute:")})
    parts += [(f"    {k.split(':', 1)[1]}", med(lambda r, k=k: t(r, k))) for k in metric_keys]
    lsa_sites = statistics.median(r.lsa_calls for r in runs)
    parts += [(f"      scipy linear_sum_assignment, summed over threads ({lsa_sites:.0f} sites per fit)", med(lambda r: t(r, "lsa")))]
    parts += [
        ("  power-law fits", med(lambda r: t(r, "pipeline:_fits"))),
        ("  figures", med(lambda r: t(r, "pipeline:_figures"))),
        ("AFTER FIT (not in the fit time): the power-law figures still drawing when fit returned", med(lambda r: r.figures_after_fit)),
    ]
    for label, value in parts:
        rows.append((label, value, value / measurements if value is not None else float("nan")))
    alone = med(lambda r: r.alone_cpu)
    # Not a share of the fit: one measurement's computation without contention, times the measurements.
    rows.append(("ONE MEASUREMENT'S METRICS ALONE (the last one, recomputed after fit, 1 thread: CPU s) × measurements", alone * measurements, alone))
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- profiling

# (label, file suffix, function name): cumulative time of these functions under cProfile.
_PROFILE_TARGETS = [
    ("monitor hooks, total", "callback.py", None),
    ("layer algebra", "callback.py", "_compute_layer_algebra"),
    ("own pass incl. hooks (_run_own_pass)", "callback.py", "_run_own_pass"),
    ("  capture pre-hooks", "capture.py", "pre_hook"),
    ("  capture post-hooks", "capture.py", "post_hook"),
    ("    reduce_to_samples", "capture.py", "reduce_to_samples"),
    ("  collect (torch.cat of buffers)", "capture.py", "collect"),
    ("compute_metrics", "measurement.py", "compute_metrics"),
    ("  affinity_score", "functional/affinity.py", "affinity_score"),
    ("    transport map (cholesky + eigh)", "functional/affinity.py", "_transport_map"),
    ("    exact_ot_cost", "functional/ot.py", "exact_ot_cost"),
    ("      float32 screened assignment", "functional/ot.py", "_screened_assignment"),
    ("      float64 certified assignment", "functional/ot.py", "_certified_assignment"),
    ("      waiting for scipy linear_sum_assignment (worker threads)", "concurrent/futures/_base.py", "result_iterator"),
    ("  covariance_spectrum (cov + eigvalsh)", "functional/dimension.py", "covariance_spectrum"),
    ("  activation_pattern_entropy", "functional/pattern_entropy.py", "activation_pattern_entropy"),
    ("  host transfer + NaN checks (rest of compute_metrics)", None, None),
    ("scalar logging (_log without figures)", "callback.py", "_log"),
    ("  logger.log_metrics", "tensorboard.py", "log_metrics"),
    ("  add_custom_scalars", "writer.py", "add_custom_scalars"),
    ("figures (_log_figures)", "callback.py", "_log_figures"),
    ("  signature_heatmap (build the figure)", "figures.py", "signature_heatmap"),
    ("  add_figure (render to PNG + write)", "writer.py", "add_figure"),
    ("power-law fits (_log_power_laws)", "callback.py", "_log_power_laws"),
    ("  fit_power_law", "powerlaw.py", "fit_power_law"),
    ("  history.curves", "history.py", "curves"),
    ("end of training (power-law figures)", "callback.py", "on_train_end"),
    ("setup (on_fit_start)", "callback.py", "on_fit_start"),
]


def profile_table(profiler: cProfile.Profile, measurements: int) -> tuple[str, str]:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    hook_names = set(_HOOKS)

    def cumulative(suffix: str | None, name: str | None) -> float:
        total = 0.0
        for (file, _, function), (_, _, _, ct, _) in entries.items():
            if suffix is None or not file.replace("\\", "/").endswith(suffix):
                continue
            if name is None:
                if function in hook_names:
                    total += ct
            elif function == name:
                total = max(total, ct)  # one entry per function; max guards against wrappers of the same name
        return total

    values: dict[str, float] = {}
    rows = []
    for label, suffix, name in _PROFILE_TARGETS:
        if suffix is None:
            value = values["compute_metrics"] - values["  affinity_score"] - values["  covariance_spectrum (cov + eigvalsh)"] - values["  activation_pattern_entropy"]
        else:
            value = cumulative(suffix, name)
        if label.startswith("scalar logging"):
            value -= cumulative("callback.py", "_log_figures")
        values[label] = value
        rows.append([label, f"{value:.3f}", f"{value / max(1, measurements):.4f}"])
    table = format_table(["where (cumulative, under cProfile)", "s per fit", "s per measurement"], rows)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    return table, text.getvalue()


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=["digits", "cnn"], default=["digits", "cnn"])
    parser.add_argument("--pairs", type=int, default=None, help="timed (off, on) pairs per case (default 5; --quick: 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default: digits 8, cnn 5; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small synthetic data, 1 pair, 2 epochs")
    parser.add_argument("--train-size", type=int, default=None, help="cnn training images (default 1536)")
    parser.add_argument("--val-size", type=int, default=None, help="cnn validation images (default 1024 = the probe)")
    parser.add_argument("--width", type=int, default=16, help="cnn first-stage width")
    parser.add_argument("--blocks", type=int, default=3, help="cnn basic blocks per stage (sites = 1 + 6·blocks)")
    parser.add_argument("--monitor-args", default=None, help="non-default monitor arguments, e.g. 'log_figures=False,max_samples=512'")
    parser.add_argument("--profile", action="store_true", help="also profile one monitored fit per case with cProfile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default, one per core)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the discarded warm-up pair")
    parser.add_argument("--checkpointing", action="store_true", help="Lightning's default ModelCheckpoint (a checkpoint every epoch, which waits for the monitor's pending measurement)")
    args = parser.parse_args()
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else 5)

    monitor_kwargs = parse_monitor_args(args.monitor_args)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    print(f"# overhead benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), lightning {pl.__version__}")
    print(f"monitor: ComplexityMonitor({', '.join(f'{k}={v!r}' for k, v in monitor_kwargs.items())})")
    print(f"load average at start: {load_average()}", flush=True)
    started = load_average()
    cases = make_cases(args)
    summary_rows, detail = [], []
    for case_name in args.cases:
        case = cases[case_name]
        print(f"\n## {case.name}: {case.description}; {case.epochs} epochs", flush=True)
        if not args.no_warmup and pairs:
            for monitored in (False, True):
                run = run_fit(case, monitored, epochs=1, monitor_kwargs=monitor_kwargs, checkpointing=args.checkpointing)
                print(f"  warm-up {'on ' if monitored else 'off'}: {run.wall:.2f}s", flush=True)
        ratios, on_runs, off_runs = [], [], []
        for pair in range(pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            results = {}
            for monitored in order:
                results[monitored] = run_fit(case, monitored, case.epochs, monitor_kwargs=monitor_kwargs, checkpointing=args.checkpointing)
            off, on = results[False], results[True]
            off_runs.append(off)
            on_runs.append(on)
            ratios.append(on.wall / off.wall)
            print(
                f"  pair {pair + 1}/{pairs} ({'off,on' if order[0] is False else 'on,off'}): off {off.wall:.2f}s on {on.wall:.2f}s "
                f"ratio {ratios[-1]:.3f}  [load {load_average()}]",
                flush=True,
            )
        if pairs:
            on0 = on_runs[0]
            off_train = statistics.median(statistics.mean(r.train_epochs) for r in off_runs)
            off_val = statistics.median(statistics.mean(r.val_epochs) for r in off_runs if r.val_epochs)
            off_wall = statistics.median(r.wall for r in off_runs)
            on_wall = statistics.median(r.wall for r in on_runs)
            per_measurement = (on_wall - off_wall) / on0.measurements
            off_cpu = statistics.median(r.cpu for r in off_runs)
            on_cpu = statistics.median(r.cpu for r in on_runs)
            waits = sorted(c[1] for r in on_runs for c in r.costs)
            loop_wait = statistics.median(waits) if waits else float("nan")
            summary_rows.append([
                case.name,
                str(on0.sites),
                str(on0.probe_rows),
                f"{case.train_size}/{case.val_size}",
                str(case.epochs),
                str(on0.measurements),
                f"{off_train:.2f} + {off_val:.2f}",
                f"{off_wall:.2f}",
                f"{on_wall:.2f}",
                f"**{statistics.median(ratios):.3f}** [{min(ratios):.3f}–{max(ratios):.3f}]",
                f"{per_measurement:.3f}",
                f"{loop_wait:.3f} (max {max(waits) if waits else float('nan'):.3f})",
                f"{off_cpu:.1f} / {on_cpu:.1f}",
            ])
            rows = [[label, f"{value:.3f}" if value is not None else "—", f"{per:.4f}" if value is not None else "—"]
                    for label, value, per in breakdown(on_runs)]
            rows.append(["(fit-time difference on − off, median)", f"{on_wall - off_wall:.3f}", f"{per_measurement:.4f}"])
            detail.append(f"### {case.name}: where the monitor's time goes (median of {len(on_runs)} monitored fits, "
                          f"{on0.measurements} measurements each)\n\n" + format_table(["part", "s per fit", "s per measurement"], rows))
        if args.profile:
            profiler = cProfile.Profile()
            run = run_fit(case, True, case.epochs, profiler=profiler, monitor_kwargs=monitor_kwargs, checkpointing=args.checkpointing)
            table, top = profile_table(profiler, run.measurements)
            detail.append(f"### {case.name}: cProfile of one monitored fit ({run.measurements} measurements, "
                          f"fit {run.wall:.2f}s under the profiler)\n\n{table}\n\n```\n{top.strip()}\n```")

    print("\n# results\n")
    print(f"load average: at start {started}; at end {load_average()}\n")
    if summary_rows:
        print(format_table(
            ["case", "sites", "probe rows", "train/val", "epochs", "measurements", "epoch s (train + val), off",
             "fit s, off", "fit s, on", "ratio on/off median [min–max]", "s per measurement (fit difference)",
             "s the loop waits per measurement, median (max)", "process CPU s, off / on"],
            summary_rows,
        ))
        print()
    for block in detail:
        print(block + "\n")


if __name__ == "__main__":
    main()
