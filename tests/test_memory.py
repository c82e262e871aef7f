"""Capture memory is bounded by the sample budget, whatever the size of the probe's source (issue 6).

Two measurements:

* exact: an :class:`ActivationCapture` subclass counts the bytes held in its buffers after every
  hook call and the bytes returned by ``collect()``; with a probe 10× larger than ``max_samples``
  (a tensor, a map-style loader, an iterable loader) they must equal, byte for byte, the budget
  ``max_samples × width × 8 bytes`` per captured tensor plus the feature-map budget;
* allocator-level: in a fresh subprocess (so no other test's freed-but-resident heap hides an
  allocation), the peak resident set from the probe draw through the first measurement, read from
  ``/proc/self/status`` after resetting it with ``/proc/self/clear_refs``, must not grow when the
  dataset grows 10× (Linux only; skipped elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import weakref
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import lightning_complexity.callback as callback_module
from lightning_complexity import ComplexityMonitor
from lightning_complexity.capture import ActivationCapture
from lightning_complexity.site_metrics import Affinity, Betti

MAX_SAMPLES = 128
MAPS_BUDGET = 64  # ActivationCapture's default: raw feature maps of the first 64 probe inputs
IN_DIM, WIDTH, CHANNELS, SIDE = 16, 48, 4, 8


class WideNet(pl.LightningModule):
    """Two dense activation sites (width ``WIDTH``) and one conv site with ``SIDE × SIDE`` maps."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(IN_DIM, width), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(width, width), nn.Tanh()
        self.lift = nn.Linear(width, CHANNELS * SIDE * SIDE)
        self.conv, self.act3 = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(CHANNELS, 1)

    def forward(self, x):
        h = self.act2(self.fc2(self.act1(self.fc1(x))))
        maps = self.act3(self.conv(self.lift(h).view(-1, CHANNELS, SIDE, SIDE)))
        return self.head(maps.mean(dim=(2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _budget_bytes(n: int, width: int = WIDTH) -> int:
    """Input and output of every site, n float64 rows each, plus float32 maps of the conv site."""
    per_row = (width + width) * 2 + CHANNELS * 2  # act1 and act2: in + out; act3: in + out (C wide)
    return n * per_row * 8 + min(MAPS_BUDGET, n) * CHANNELS * SIDE * SIDE * 4


class TrackingCapture(ActivationCapture):
    """Counts the bytes its buffers hold after every hook call, and what ``collect()`` returns."""

    instances: list[TrackingCapture] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.peak_held = 0
        self.held_per_capture: list[int] = []  # buffers at the end of each probe, before collect()
        self.collected_per_capture: list[int] = []  # what collect() returned
        self.kept_after_collect: list[int] = []  # bytes of buffered chunks still alive once collect() returned
        self._chunks: dict[int, weakref.ref] = {}
        TrackingCapture.instances.append(self)

    def held(self) -> int:
        return sum(t.nbytes for b in self._buffers.values() for t in (*b.inputs, *b.outputs, *b.maps))

    def _track(self) -> None:
        for buffer in self._buffers.values():
            for chunk in (*buffer.inputs, *buffer.outputs, *buffer.maps):
                self._chunks.setdefault(id(chunk), weakref.ref(chunk))
        self.peak_held = max(self.peak_held, self.held())

    def _keep_input(self, *args) -> None:
        super()._keep_input(*args)
        self._track()

    def _keep_output(self, *args) -> None:
        super()._keep_output(*args)
        self._track()

    def collect(self):
        self.held_per_capture.append(self.held())
        sites = super().collect()
        tensors = [t for s in sites.values() for t in (s.input, s.output, s.maps) if t is not None]
        returned = {id(t) for t in tensors}
        # A chunk that outlives collect() (other than as the returned tensor itself) is memory
        # held twice: the weak references see what is really still alive, not what a list says.
        alive = [ref() for ref in self._chunks.values()]
        self.kept_after_collect.append(sum(t.nbytes for t in alive if t is not None and id(t) not in returned))
        self._chunks.clear()
        self.collected_per_capture.append(sum(t.nbytes for t in tensors))
        return sites


class CountingDataset(Dataset):
    """Map-style data generated on demand; counts the items read."""

    def __init__(self, length: int) -> None:
        self.length, self.reads = length, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        self.reads += 1
        g = torch.Generator().manual_seed(index)
        return torch.randn(IN_DIM, generator=g), torch.zeros(1)


class CountingStream(IterableDataset):
    """An iterable dataset (no length): the probe is read from its start; counts the items read."""

    def __init__(self, length: int) -> None:
        self.length, self.reads = length, 0

    def __iter__(self):
        for index in range(self.length):
            self.reads += 1
            yield torch.randn(IN_DIM, generator=torch.Generator().manual_seed(index)), torch.zeros(1)


def _train_loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(64, IN_DIM, generator=g), torch.randn(64, 1, generator=g)), batch_size=32)


def _fit(tmp_path, monitor, max_epochs: int = 2) -> None:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=str(tmp_path), callbacks=[monitor],
    )
    trainer.fit(WideNet(), _train_loader())


@pytest.fixture
def tracking(monkeypatch) -> list[TrackingCapture]:
    TrackingCapture.instances = []
    monkeypatch.setattr(callback_module, "ActivationCapture", TrackingCapture)
    return TrackingCapture.instances


@pytest.mark.parametrize("spatial", ["mean", "positions"])
@pytest.mark.parametrize("source", ["tensor", "map_loader", "stream_loader"])
def test_capture_holds_exactly_the_budget_for_a_probe_ten_times_larger(tmp_path, tracking, source, spatial) -> None:
    rows = 10 * MAX_SAMPLES
    dataset = None
    if source == "tensor":
        probe = torch.randn(rows, IN_DIM, generator=torch.Generator().manual_seed(1))
    else:
        dataset = CountingDataset(rows) if source == "map_loader" else CountingStream(rows)
        probe = DataLoader(dataset, batch_size=32)
    monitor = ComplexityMonitor(
        metrics=["affinity", "effective_dimension", Betti()], probe=probe, max_samples=MAX_SAMPLES,
        spatial=spatial, probe_batch_size=32, log_figures=False, layer_algebra=False,
    )
    _fit(tmp_path, monitor)
    (capture,) = tracking
    assert monitor.history.steps() == [0, 2, 4]  # three measurements
    budget = _budget_bytes(MAX_SAMPLES)
    # At most the budget at any moment of a capture, exactly the budget at its end, every time:
    # buffers start empty at each measurement and nothing beyond max_samples rows is kept.
    assert capture.peak_held == budget
    assert capture.held_per_capture == [budget] * 3
    assert capture.collected_per_capture == [budget] * 3
    assert monitor._probe is not None and len(monitor._probe) == MAX_SAMPLES
    if isinstance(dataset, CountingDataset):
        assert dataset.reads == MAX_SAMPLES  # indices drawn, never the whole dataset
    elif isinstance(dataset, CountingStream):
        assert dataset.reads <= MAX_SAMPLES + 32  # read from the start, at most one batch too many
    # The values behind those bytes are real: every site was measured at every step.
    frame = monitor.history.to_dataframe()
    assert frame[frame.metric.isin(["affinity", "effective_dimension", "betti_0"])]["value"].notna().all()


def test_buffers_are_released_once_collected(tmp_path, tracking) -> None:
    probe = torch.randn(10 * MAX_SAMPLES, IN_DIM, generator=torch.Generator().manual_seed(3))
    monitor = ComplexityMonitor(metrics=["effective_dimension"], probe=probe, max_samples=MAX_SAMPLES, probe_batch_size=32, log_figures=False, layer_algebra=False)
    _fit(tmp_path, monitor, max_epochs=1)
    (capture,) = tracking
    assert capture.collected_per_capture == [MAX_SAMPLES * (WIDTH + WIDTH + CHANNELS) * 8] * 2
    assert capture.kept_after_collect == [0, 0]  # no buffered chunk survives its concatenation


def test_positions_of_big_maps_are_subsampled_to_the_budget(tmp_path, tracking) -> None:
    """Four probe inputs, 64 positions each: 16 positions per input are kept, 64 rows in all."""
    probe = torch.randn(4, IN_DIM, generator=torch.Generator().manual_seed(2))
    monitor = ComplexityMonitor(metrics=["effective_dimension"], layers="act3", probe=probe, max_samples=64, spatial="positions", layer_algebra=False, log_figures=False)
    _fit(tmp_path, monitor, max_epochs=1)
    (capture,) = tracking
    assert capture.collected_per_capture == [64 * CHANNELS * 8] * 2  # output only, 64 rows of C float64
    assert capture.peak_held == 64 * CHANNELS * 8


# --- allocator-level: peak resident memory in a fresh process -------------------------------------------

_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_rss_worker(rows: int, max_samples: int, width: int) -> None:
    """Run in a subprocess: print the peak RSS growth from the probe draw to the first measurement."""

    def status(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    class Reset(pl.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:  # runs before the monitor's (list order)
            _CLEAR_REFS.write_text("5")  # peak RSS := current RSS
            self.base = status("VmRSS")

    class Read(pl.Callback):
        def __init__(self, reset: Reset) -> None:
            self.reset = reset

        def on_train_start(self, trainer, pl_module) -> None:  # after the monitor's first measurement
            self.growth = status("VmHWM") - self.reset.base

    g = torch.Generator().manual_seed(0)
    probe = DataLoader(TensorDataset(torch.randn(rows, IN_DIM, generator=g), torch.zeros(rows, 1)), batch_size=256)
    # Affinity with the paired coupling: its workspace is O(n·d + d²), so what grows is the capture
    # (exact OT would add n × n cost matrices, bounded separately by ot.py's chunking).
    def fit(probe, callbacks) -> ComplexityMonitor:
        metrics = [Affinity(ot="paired"), "effective_dimension", Betti()]
        monitor = ComplexityMonitor(metrics=metrics, probe=probe, max_samples=max_samples, layer_algebra=False, log_figures=False)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callbacks[0], monitor, *callbacks[1:]])
        pl.seed_everything(0, verbose=False)
        trainer.fit(WideNet(width), _train_loader())
        return monitor

    # Warm-up fit on a tiny probe: loads what a measurement imports lazily (scipy.stats for the
    # power-law fits, LAPACK, ...), whose pages would otherwise count as growth.
    fit(torch.randn(8, IN_DIM), [pl.Callback()])
    reset = Reset()
    read = Read(reset)
    monitor = fit(probe, [reset, read])
    print(json.dumps({"growth": read.growth, "steps": monitor.history.steps()}))


def _in_fresh_process(call: str) -> dict:
    """Run ``test_memory.<call>`` in a new interpreter and return the JSON it prints last."""
    env = dict(os.environ)
    # Big blocks straight from mmap, returned on free: resident memory then tracks live tensors
    # instead of glibc's dynamic thresholds (which keep up to tens of MB of freed heap around).
    env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", f"import test_memory; test_memory.{call}"], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_rss_growth(rows: int, max_samples: int, width: int) -> int:
    result = _in_fresh_process(f"_peak_rss_worker({rows}, {max_samples}, {width})")
    assert result["steps"][0] == 0  # the measurement at the start of fit ran
    return int(result["growth"])


needs_clear_refs = pytest.mark.skipif(not (_CLEAR_REFS.exists() and os.access(_CLEAR_REFS, os.W_OK)), reason="needs Linux /proc/self/clear_refs")


@needs_clear_refs
def test_peak_resident_memory_of_a_measurement_does_not_grow_with_the_dataset() -> None:
    max_samples, width = 1024, 256
    budget = _budget_bytes(max_samples, width)  # ≈ 8.5 MB of captured samples
    small = _peak_rss_growth(max_samples, max_samples, width)
    large = _peak_rss_growth(10 * max_samples, max_samples, width)
    # Capturing the whole 10× dataset would add ≥ 9 × budget ≈ 73 MB.
    assert large <= small + budget, (small, large, budget)
    # In absolute terms (measured ≈ 5.8 budgets before the buffers were freed on collect): the
    # concatenated samples plus float64 working copies of the stacked samples in the metrics.
    assert large <= 8 * budget, (large, budget)


def _probe_draw_worker(length: int, max_samples: int) -> None:
    """Run in a subprocess: peak RSS growth of drawing a probe from a lazy map-style dataset."""
    from lightning_complexity.probe import ProbeSet

    def status(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    ProbeSet.from_loader(DataLoader(CountingDataset(10 * max_samples), batch_size=256), max_samples).batches  # warm-up
    dataset = CountingDataset(length)
    _CLEAR_REFS.write_text("5")
    base = status("VmRSS")
    probe = ProbeSet.from_loader(DataLoader(dataset, batch_size=256), max_samples)
    probe.batches  # built on first use
    print(json.dumps({"growth": status("VmHWM") - base, "rows": len(probe), "reads": dataset.reads}))


@needs_clear_refs
def test_drawing_the_probe_from_a_huge_map_style_dataset_is_bounded_by_the_budget() -> None:
    length, max_samples = 20_000_000, 1024
    result = _in_fresh_process(f"_probe_draw_worker({length}, {max_samples})")
    assert result["rows"] == max_samples and result["reads"] == max_samples
    probe_bytes = max_samples * IN_DIM * 4
    assert result["growth"] <= 64 * probe_bytes + 8 * 2**20, result  # today: ≈ 160 MB of permutation
