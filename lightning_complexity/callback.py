"""ComplexityMonitor: the Lightning glue — when to measure, where the samples come from, where the numbers go.

The maths lives in :mod:`lightning_complexity.functional` and :mod:`lightning_complexity.site_metrics`,
the hooks in :mod:`lightning_complexity.capture`, the probe in :mod:`lightning_complexity.probe`;
this file decides *when* to measure, feeds the capture from the trainer's validation pass or the
monitor's own pass, and records and logs the rows.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_complexity.capture import ActivationCapture, SiteData, SiteNeeds
from lightning_complexity.context import check_context_metrics, context_values
from lightning_complexity.distributed import all_ranks, gather_sites
from lightning_complexity.end_figures import EndOfFitFigures
from lightning_complexity.errors import bad_argument
from lightning_complexity.history import MetricHistory
from lightning_complexity.isolation import isolated
from lightning_complexity.measurement import SiteProblem
from lightning_complexity.probe import ProbeSet, default_batch_to_input, resolve_probe_loader
from lightning_complexity.probe_step import ProbeStep, check_probe_step
from lightning_complexity.site_metrics import SiteMetric, resolve_metrics
from lightning_complexity.sites import LayerSpec, admits_functional, describe_available, resolve_layer_spec, select_modules
from lightning_complexity.recording import SAMPLES_METRIC, Measurement, MeasurementPipeline
from lightning_complexity.schedule import EveryNSteps, resolve_schedule
from lightning_complexity.tensorboard import PREFIX, SITES_TAG, tensorboard_writers

__all__ = ["ComplexityMonitor"]

_EXPORT_SUFFIXES = (".csv", ".json", ".parquet")
_STATE_PREFIX = "ComplexityMonitor"


def _check_schedule(argument: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_argument(argument, value, "None or an int >= 0 (0 or None switches it off)")
    return value or None


def _on_training_loop(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the hook's wall time to the monitor's account of what it costs the training loop."""

    @functools.wraps(hook)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self._loop_seconds += time.perf_counter() - start

    return timed


class ComplexityMonitor(Callback):
    r"""Measure how non-linear, high-dimensional and complex each layer is while the model trains.

    At the start of fit (so curves start at initialisation) and then on its schedule, the monitor
    captures every watched *site* — each call of an activation module, and of a functional
    activation (``F.relu``, ``torch.tanh``, …) inside a module — on a fixed probe set, computes
    its metrics batched across sites in float64, appends rows to :attr:`history` and logs them.

    Where the samples come from: with ``probe="val"`` (default), an epoch's measurement is
    captured *inside the trainer's own validation pass* — the hooks are live for a fixed, seeded
    set of validation batches (at most ``max_samples`` inputs, spread over the validation set, the
    same at every measurement) — so whatever ``validation_step`` does runs the model: no
    ``forward`` needed, any batch structure, no extra forward pass. Where no validation pass is
    due (the start of fit, ``every_n_steps``, epochs that ``check_val_every_n_epoch`` skips, no
    validation loader, an explicit probe ``DataLoader`` or tensor), the monitor runs its own pass
    over the same probe batches through the user's code (``probe_step``: ``validation_step`` by
    default) with every RNG forked, logging muted and modes and metric states restored, so
    training stays bit-identical. At the start of fit, the probe batches that Lightning's sanity
    check runs (same weights, same inputs) are captured there, and the own pass runs only the rest.

    Args:
        metrics: metric names or :class:`~lightning_complexity.site_metrics.SiteMetric` objects
            (default: ``["affinity", "effective_dimension", "activation_pattern_entropy"]``).
        layers: which modules to watch: ``None`` (every activation module by the rule of
            :func:`~lightning_complexity.sites.is_activation`, and functional activations), a glob
            on dotted names (functional sites are named ``"<module>.<function>()"``), a module type
            or its class path (``"torch.nn.ReLU"``), a callable ``(name, module) -> bool``, or a
            list of these.
        probe: ``"val"`` (default; the training loader when there is no validation one), ``"train"``,
            a ``DataLoader``, or a tensor of model inputs.
        max_samples: the probe's budget of inputs (and of sample rows per site).
        every_n_epochs: measure after every n-th epoch (``None``/0: off).
        every_n_steps: measure every n optimizer steps (``None``/0: off).
        measure_at_start: measure once before the first training step of a fresh fit.
        spatial: ``"mean"`` averages conv maps/sequences over positions; ``"positions"`` makes
            positions samples (spread evenly over every map, within the budget).
        channel_dim: the feature axis of captured tensors whose *shape* is channels-last
            (``(N, H, W, C)``: pass -1). Default: 1 for conv maps, the last axis of sequences; a
            ``channels_last`` memory format needs nothing.
        probe_batch_size: inputs per batch of the monitor's own pass when it draws the probe itself.
        probe_step: the user code the monitor's own pass runs: ``None`` (``validation_step``,
            else ``training_step``, else ``forward``), one of those names, or a callable
            ``(module, batch) -> Any`` (see :mod:`lightning_complexity.probe_step`).
        batch_to_input: with ``probe_step="forward"``, extracts the model input from a batch
            (default: the tensor, the first item of a tuple, or a common dict key); a tuple is
            spread as positional arguments.
        seed: seed of the probe draw.
        export_path: if given, the history is written there at the end of fit (``.csv``, ``.json``
            or ``.parquet``); a failing write warns and never fails the fit.
        log_figures: draw each metric's figures into TensorBoard, and log-log power-law plots at
            the end of training.
        power_law: fit ``y ≈ a·t^b`` to every curve with at least 4 points after each measurement
            and log ``powerlaw/<metric>/<site>/exponent``, ``.../r2`` and ``.../conclusive``.
        power_law_window: ``(t_min, t_max)`` of the fits (default: all points).
        layer_algebra: compute the data-free per-layer table (SPEC §7) once at the start of fit.
        context_metrics: record the trainer's logged scalars (``trainer.callback_metrics``) at
            each measurement as rows at site ``trainer``: ``True`` (all), ``False``, or a list of
            keys or globs.
        functional_activations: capture functional activations called inside modules.

    Raises:
        MisconfigurationException: for a bad argument (the message names it, the value, and what is
            accepted), or when an explicit ``layers`` matches no module (the message lists them).

    Example::

        from lightning_complexity import ComplexityMonitor
        monitor = ComplexityMonitor(every_n_epochs=1, max_samples=512)
        trainer = L.Trainer(callbacks=[monitor], logger=TensorBoardLogger("runs"))
        trainer.fit(model, datamodule)
        monitor.history.to_dataframe()      # step, epoch, metric, site, value

    Logged metrics:
        ``complexity/<metric>/<site>`` for every metric the configured families produce (by default
        ``affinity``, ``effective_dimension``, ``participation_ratio``, ``effective_dimension_ratio``,
        ``activation_pattern_entropy``, the signature summaries ``affinity_signature`` at sites
        ``mean``, ``std``, ``min``, ``max``, ``max_over_mean``) and ``samples`` (how many samples
        each site's values rest on), at the trainer's global step; ``complexity_meta/epoch`` holds
        the completed epochs of each measurement and ``complexity_meta/sites`` (text) each site's
        module, type and depth. The history's ``epoch`` column counts *completed* epochs (0 is the
        measurement at initialisation); it also holds the context rows (site ``trainer``).
    """

    def __init__(
        self,
        metrics: str | SiteMetric | Sequence[str | SiteMetric] | None = None,
        layers: LayerSpec = None,
        probe: str | DataLoader | Tensor = "val",
        max_samples: int = 1024,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        measure_at_start: bool = True,
        spatial: str = "mean",
        channel_dim: int | None = None,
        probe_batch_size: int = 256,
        probe_step: str | Callable[[pl.LightningModule, Any], Any] | None = None,
        batch_to_input: Callable[[Any], Any] | None = None,
        seed: int = 0,
        export_path: str | Path | None = None,
        log_figures: bool = True,
        power_law: bool = True,
        power_law_window: tuple[float | None, float | None] | None = None,
        layer_algebra: bool = True,
        context_metrics: bool | Sequence[str] | None = True,
        functional_activations: bool = True,
        schedule: str | Callable[[int], bool] | None = None,
        background: bool = True,
    ) -> None:
        self.metrics = resolve_metrics(metrics)
        self.layers = resolve_layer_spec(layers)
        if not (isinstance(probe, str) and probe in ("val", "train") or isinstance(probe, (DataLoader, Tensor))):
            raise bad_argument("probe", probe, "'val', 'train', a torch DataLoader, or a tensor of model inputs")
        if isinstance(probe, Tensor) and probe.ndim < 1:
            raise bad_argument("probe", probe, "a tensor of model inputs with a sample axis first")
        self.probe = probe
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise bad_argument("max_samples", max_samples, "an int >= 2")
        self.max_samples = max_samples
        self.every_n_epochs = _check_schedule("every_n_epochs", every_n_epochs)
        self.every_n_steps = _check_schedule("every_n_steps", every_n_steps)
        self.schedule = resolve_schedule(schedule)
        if self.schedule is not None and self.every_n_steps is not None:
            raise bad_argument("schedule", schedule, "None when every_n_steps is given (both decide the steps to measure at)")
        self._step_due = self.schedule or (EveryNSteps(self.every_n_steps) if self.every_n_steps else None)
        self.measure_at_start = bool(measure_at_start)
        if not (self.every_n_epochs or self._step_due or self.measure_at_start):
            raise bad_argument("every_n_epochs", every_n_epochs, "a schedule that measures something: every_n_epochs, every_n_steps or measure_at_start")
        if spatial not in ("mean", "positions"):
            raise bad_argument("spatial", spatial, "'mean' or 'positions'")
        self.spatial = spatial
        if channel_dim is not None and (isinstance(channel_dim, bool) or not isinstance(channel_dim, int)):
            raise bad_argument("channel_dim", channel_dim, "None or an int axis")
        self.channel_dim = channel_dim
        if isinstance(probe_batch_size, bool) or not isinstance(probe_batch_size, int) or probe_batch_size < 1:
            raise bad_argument("probe_batch_size", probe_batch_size, "an int >= 1")
        self.probe_batch_size = probe_batch_size
        self.probe_step = check_probe_step(probe_step)
        if batch_to_input is not None and not callable(batch_to_input):
            raise bad_argument("batch_to_input", batch_to_input, "None or a callable batch -> model input")
        self.batch_to_input = batch_to_input or default_batch_to_input
        self.seed = int(seed)
        if export_path is not None and Path(export_path).suffix not in _EXPORT_SUFFIXES:
            raise bad_argument("export_path", export_path, f"None or a path ending in one of {_EXPORT_SUFFIXES}")
        self.export_path = None if export_path is None else Path(export_path)
        self.log_figures = bool(log_figures)
        self.power_law = bool(power_law)
        if power_law_window is not None and not (isinstance(power_law_window, (tuple, list)) and len(power_law_window) == 2):
            raise bad_argument("power_law_window", power_law_window, "None or a (t_min, t_max) pair (either may be None)")
        self.power_law_window = None if power_law_window is None else tuple(power_law_window)
        self.compute_layer_algebra = bool(layer_algebra)
        self.context_metrics = check_context_metrics(context_metrics)
        self.functional_activations = bool(functional_activations)
        #: the static per-layer table (SPEC §7) computed at the start of fit, or None.
        self.layer_algebra: Any = None

        self._history = MetricHistory()
        self.background = bool(background)
        self._pipeline = MeasurementPipeline(
            self.metrics,
            self._history,
            background=self.background,
            log_figures=self.log_figures,
            power_law=self.power_law,
            power_law_axis=lambda: self.power_law_axis,
            power_law_window=self.power_law_window,
            warn=self._warn_once,
        )
        self._end_figures = EndOfFitFigures(background=self.background)
        self._trainer: pl.Trainer | None = None
        self._loop_seconds = 0.0
        self._fit_started = 0.0
        #: histories of earlier fits with this monitor (a new Trainer starts a new history).
        self.previous_histories: list[MetricHistory] = []
        #: metric name → the sites it watched at the last measurement, in forward order.
        self.sites: dict[str, list[str]] = {}
        #: site → ``{"module", "type", "kind", "depth"}``: what each site is, in forward order.
        self.site_info: dict[str, dict[str, Any]] = {}
        #: ``(step, reason)`` of every measurement that failed (its rows are NaN).
        self.failures: list[tuple[int, str]] = []
        self._modules_of: dict[str, set[str]] = {}
        self._capture: ActivationCapture | None = None
        self._probe: ProbeSet | None = None
        self._step: ProbeStep | None = None
        self._measured_steps: set[int] = set()
        self._warned: set[Any] = set()
        self._last_keys: list[tuple[str, str]] = []
        self._pending_epoch: int | None = None
        self._capturing_validation = False
        self._seen_validation_batches = 0
        #: probe batches the sanity check captured for the start-of-fit measurement (a prefix of the probe).
        self._sanity_batches = 0
        self._sanity_seconds = 0.0
        self._measurements = 0
        self._loaded_state = False

    # ------------------------------------------------------------------ state
    @property
    def history(self) -> MetricHistory:
        """Every measurement so far (waits for measurements still being computed)."""
        self._drain(self._trainer, wait=True)
        return self._history

    @history.setter
    def history(self, history: MetricHistory) -> None:
        self._pipeline.drain(self._trainer, wait=True) if self._trainer is not None else self._pipeline.worker.wait()
        self._history = history
        self._pipeline.history = history

    def _drain(self, trainer: pl.Trainer | None, wait: bool = False) -> None:
        if trainer is None:
            if wait:
                self._pipeline.worker.wait()
            return
        self._pipeline.drain(trainer, wait=wait)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(metrics=[m.name for m in self.metrics], every_n_epochs=self.every_n_epochs, every_n_steps=self.every_n_steps)

    @override
    def state_dict(self) -> dict[str, Any]:
        # A checkpoint holds every measurement made before it: wait for the ones still computing.
        state: dict[str, Any] = {
            "version": 2,
            "history": self.history.state_dict(),
            "sites": dict(self.site_info),
            "failures": [list(f) for f in self.failures],
            "previous_histories": [h.state_dict() for h in self.previous_histories],
        }
        if self.layer_algebra is not None:
            state["layer_algebra"] = self.layer_algebra.to_dataframe().to_dict(orient="list")
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = MetricHistory.from_state_dict(state_dict["history"])
        self.site_info = dict(state_dict.get("sites", {}))
        self.failures = [(int(s), str(r)) for s, r in state_dict.get("failures", [])]
        self.previous_histories = [MetricHistory.from_state_dict(h) for h in state_dict.get("previous_histories", [])]
        self._measured_steps = set(self.history.steps())
        self._loaded_state = True

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lightning finds our state by state_key, which depends on metrics= and the schedule: a
        # resume with other settings would silently drop the history. Find it by class instead.
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        candidates = [key for key in states if isinstance(key, str) and key.startswith(_STATE_PREFIX) and isinstance(states[key], dict) and "history" in states[key]]
        if len(candidates) == 1:
            self.load_state_dict(states[candidates[0]])
            rank_zero_warn(
                f"lightning_complexity: the checkpoint's monitor state was saved under other settings ({candidates[0]}); "
                f"its history ({len(self.history)} rows) is kept and continued with the current settings ({self.state_key})."
            )
        elif len(candidates) > 1:
            rank_zero_warn(
                f"lightning_complexity: the checkpoint holds several monitor states ({candidates}) and none matches this "
                f"monitor's settings ({self.state_key}); none is loaded, so this monitor's history starts empty."
            )

    # ------------------------------------------------------------------ setup / teardown
    @override
    @_on_training_loop
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        self._fit_started = time.perf_counter()
        self._loop_seconds = 0.0
        self._pipeline.start_fit()
        self._start_history(trainer)
        self._remove_hooks()
        self._probe = self._build_probe(trainer)
        self._prepare_capture(pl_module)
        self._step = ProbeStep.resolve(self.probe_step, pl_module, batches_are_inputs=isinstance(self.probe, Tensor), batch_to_input=self.batch_to_input)
        self._pending_epoch = None
        self._capturing_validation = False
        self._sanity_batches = 0

    def _start_history(self, trainer: pl.Trainer) -> None:
        resumed = self._loaded_state or trainer.ckpt_path is not None
        self._loaded_state = False
        if not resumed and len(self.history) and trainer.global_step <= max(self._history.steps()):
            # A new Trainer (pretrain, then fine-tune): its steps start again, so it gets its own history.
            self.previous_histories.append(self.history)
            self.history = MetricHistory()
            self.failures = []
            rank_zero_warn(
                "lightning_complexity: this monitor is used for a new fit; its history starts empty and the previous "
                f"fit's {len(self.previous_histories[-1])} rows are in `monitor.previous_histories[-1]`."
            )
        self._measured_steps = set(self.history.steps())

    def _metric_spec(self, metric: SiteMetric) -> LayerSpec:
        return metric.layers if metric.layers is not None else self.layers

    def _prepare_capture(self, pl_module: pl.LightningModule) -> None:
        needs: dict[str, SiteNeeds] = {}
        self._modules_of = {}
        for metric in self.metrics:
            if metric.network_level:
                continue
            spec = self._metric_spec(metric)
            modules = select_modules(pl_module, spec)
            if not modules and spec is not None:
                argument = "layers" if metric.layers is None else f"{type(metric).__name__}(layers=...)"
                if metric.layers is not None and _is_default_spec(metric):
                    self._warn_once(("no blocks", metric.name), f"lightning_complexity: `{metric.name}` finds no module to watch in {type(pl_module).__name__} by its default rule and is skipped; pass `{argument}`.")
                elif not (self._functional_allowed(metric) and _names_functional_sites(spec)):
                    raise MisconfigurationException(
                        f"`{argument}={spec!r}` selects no module for metric {metric.name!r}. Available modules: {describe_available(pl_module)}"
                    )
            self._modules_of[metric.name] = set(modules)
            for name in modules:
                needs[name] = needs.get(name, SiteNeeds(output=False)) | metric.needs
        functional = self._functional_needs if self.functional_activations and any(self._functional_allowed(m) for m in self.metrics) else None
        self._capture = ActivationCapture(
            pl_module,
            needs,
            spatial=self.spatial,
            channel_dim=self.channel_dim,
            positions_per_sample=self._positions_per_sample(),
            sample_budget=self.max_samples,
            functional=functional,
        )

    def _functional_allowed(self, metric: SiteMetric) -> bool:
        return self.functional_activations and not metric.network_level and metric.layers is None

    def _functional_needs(self, site: str) -> SiteNeeds | None:
        wanted = [m.needs for m in self.metrics if self._functional_allowed(m) and admits_functional(self.layers, site)]
        if not wanted:
            return None
        combined = SiteNeeds(output=False)
        for need in wanted:
            combined = combined | need
        return combined

    def _site_watched(self, metric: SiteMetric, data: SiteData) -> bool:
        if data.kind == "functional":
            return self._functional_allowed(metric) and admits_functional(self.layers, data.module)
        return data.module in self._modules_of.get(metric.name, ())

    def _positions_per_sample(self) -> int | None:
        # The budget of sample rows shared evenly by the probe's inputs (at least one position each).
        if self.spatial == "mean":
            return None
        return max(1, self.max_samples // max(1, len(self._probe)))

    def _build_probe(self, trainer: pl.Trainer) -> ProbeSet:
        rank, world_size = trainer.global_rank, trainer.world_size
        if isinstance(self.probe, Tensor):
            return ProbeSet.from_tensor(self.probe, self.max_samples, self.probe_batch_size, rank, world_size)
        if isinstance(self.probe, DataLoader):
            return ProbeSet.from_loader(self.probe, self.max_samples, seed=self.seed, batch_size=self.probe_batch_size, rank=rank, world_size=world_size)
        loader, stage = resolve_probe_loader(trainer, self.probe)
        if loader is None:
            raise bad_argument("probe", self.probe, "a probe source that exists: this fit has no dataloader for it; pass probe=<DataLoader> or a tensor")
        probe = ProbeSet.from_loader(
            loader,
            self.max_samples,
            seed=self.seed,
            batch_size=self.probe_batch_size,
            rank=rank,
            world_size=world_size,
            validation=stage == "val",
            limit_batches=trainer.limit_val_batches if stage == "val" else None,
        )
        if stage == "val" and not probe.validation_batches:
            self._warn_once(("probe", "shuffled"), "lightning_complexity: the validation loader does not read its dataset in order (shuffled or a custom sampler), so its batches differ between epochs; the monitor draws a fixed probe from the validation set and runs its own pass at every measurement.")
        return probe

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        self._drain(trainer, wait=True)
        self._loop_seconds += time.perf_counter() - start
        self._report_cost(trainer)
        if self.failures:
            steps = ", ".join(str(step) for step, _ in self.failures[:20]) + (" …" if len(self.failures) > 20 else "")
            rank_zero_warn(f"lightning_complexity: {len(self.failures)} of {self._measurements} measurements of this fit failed (steps {steps}); their rows are NaN.")
        if self.export_path is not None and trainer.is_global_zero:
            try:
                self.export(self.export_path)
            except Exception as error:  # noqa: BLE001 - a failed export must not fail a finished fit
                rank_zero_warn(f"lightning_complexity: the history could not be written to {self.export_path} ({type(error).__name__}: {error}); it is still in `monitor.history`.")

    def _report_cost(self, trainer: pl.Trainer) -> None:
        fit_seconds = max(1e-9, time.perf_counter() - self._fit_started)
        background = sum(cost[2] for cost in self._pipeline.costs)
        rank_zero_info(
            f"lightning_complexity: {self._measurements} measurements, {self._loop_seconds:.2f} s on the training loop = "
            f"{100 * self._loop_seconds / fit_seconds:.1f} % of fit ({fit_seconds:.1f} s), {background:.2f} s of computation "
            f"{'in the background' if self.background else 'inline'}."
        )

    @property
    def loop_seconds(self) -> float:
        """Seconds the training loop spent in the monitor during the last fit (setup, capture,
        logging, figures, and waiting for pending measurements at the end)."""
        return self._loop_seconds

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()
        self._drain(trainer, wait=True)
        self._pipeline.close()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        try:  # keep what was measured before the failure: a checkpoint or the user may read it
            self._drain(trainer, wait=True)
        except Exception:  # noqa: BLE001 - the user's exception is the one that matters
            pass

    def _remove_hooks(self) -> None:
        self._capturing_validation = False
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    # ------------------------------------------------------------------ schedule
    @override
    @_on_training_loop
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.compute_layer_algebra and self.layer_algebra is None:
            self._compute_layer_algebra(trainer, pl_module)
        sanity, self._sanity_batches = self._sanity_batches, 0
        if self.measure_at_start and trainer.global_step == 0:
            # The batches the sanity check already ran (same weights, same inputs) are not run again.
            self._measure(trainer, pl_module, trainer.current_epoch, lambda: self._run_own_pass(trainer, pl_module, skip=sanity), loop_seconds=self._sanity_seconds if sanity else 0.0)
        elif sanity and self._capture is not None:
            self._capture.collect()  # nothing measures at this step: drop the sanity check's samples

    @override
    @_on_training_loop
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._drain(trainer)  # log what the background finished
        last = self._is_last_batch(trainer, batch_idx)
        if self._step_due is not None and trainer.global_step > 0 and self._step_due(trainer.global_step):
            self._measure_own_pass(trainer, pl_module, epoch=trainer.current_epoch + int(last))
        if last and self._epoch_due(trainer.current_epoch + 1):
            # The epoch's measurement waits for the validation pass that follows this batch; if
            # none runs, on_train_epoch_end makes it with the monitor's own pass (same weights).
            self._pending_epoch = trainer.current_epoch + 1

    @override
    @_on_training_loop
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._capture is None or self._probe is None or not self._probe.validation_batches:
            return
        if trainer.sanity_checking:
            if not self._sanity_check_counts(trainer):
                return
        elif self._pending_epoch is None or self.global_step_measured(trainer):
            return
        self._capture.begin_capture(only_batches=True)
        self._capturing_validation = True
        self._seen_validation_batches = 0

    @override
    @_on_training_loop
    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._capturing_validation or dataloader_idx != 0 or self._capture is None:
            return
        chosen = self._probe.validation_batches.get(batch_idx)
        if chosen is not None:
            if trainer.sanity_checking and self._seen_validation_batches != list(self._probe.validation_batches).index(batch_idx):
                return  # the start-of-fit measurement takes only a prefix of the probe from the sanity check
            self._capture.begin_batch(chosen.size, chosen.first_input, chosen.keep)
            self._seen_validation_batches += 1

    @override
    @_on_training_loop
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._capturing_validation and self._capture is not None:
            self._capture.end_batch()

    @override
    @_on_training_loop
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: the epoch's validation metrics are in
        # callback_metrics by now, and checkpoint callbacks (which run after us) save after it.
        if not self._capturing_validation or self._capture is None:
            return
        self._capturing_validation = False
        self._capture.end_capture()
        if trainer.sanity_checking:
            # Kept for on_train_start, whose own pass runs only the probe batches not seen here.
            self._sanity_batches, self._sanity_seconds = self._seen_validation_batches, self._capture.hook_seconds
            return
        epoch, self._pending_epoch = self._pending_epoch, None
        seen = self._seen_validation_batches
        self._measure(trainer, pl_module, epoch, lambda: self._collect_validation(seen), loop_seconds=self._capture.hook_seconds)

    def _sanity_check_counts(self, trainer: pl.Trainer) -> bool:
        """Whether the sanity check's batches can stand in for the start-of-fit pass over the probe."""
        return self.measure_at_start and trainer.global_step == 0 and not self.global_step_measured(trainer)

    def _collect_validation(self, seen: int) -> dict[str, SiteData]:
        if seen == 0:
            raise RuntimeError("none of the probe's validation batches ran in this validation pass (was limit_val_batches changed?)")
        return self._capture.collect()

    @override
    @_on_training_loop
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        completed = trainer.current_epoch + int(self._epoch_completed(trainer))
        due = self._pending_epoch if self._pending_epoch is not None else (completed if completed > trainer.current_epoch and self._epoch_due(completed) else None)
        self._pending_epoch = None
        if due is not None:
            self._measure_own_pass(trainer, pl_module, epoch=due)

    def global_step_measured(self, trainer: pl.Trainer) -> bool:
        """Whether the current global step already has a measurement."""
        return trainer.global_step in self._measured_steps

    def _compute_layer_algebra(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_complexity.layer_algebra import layer_algebra

        try:
            sample = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(self._probe.inputs(self.batch_to_input, limit=1)))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.layer_algebra = layer_algebra(pl_module, sample)
            if caught:
                self._warn_once(("layer_algebra", "network"), f"lightning_complexity: layer algebra: {caught[0].message}")
        except Exception as error:  # noqa: BLE001 - a static table must never stop training
            self._warn_once(("layer_algebra", "network"), f"lightning_complexity: the layer-algebra table (data-free, traced from `forward(tensor)`) could not be computed for {type(pl_module).__name__} ({type(error).__name__}: {str(error).splitlines()[0]}); pass layer_algebra=False to skip it.")
            return
        if trainer.is_global_zero:
            for writer in tensorboard_writers(trainer.loggers):
                writer.add_text(f"{PREFIX}/layer_algebra", self.layer_algebra.to_markdown(max_rows=200), global_step=trainer.global_step)

    def _epoch_due(self, completed_epochs: int) -> bool:
        return self.every_n_epochs is not None and completed_epochs > 0 and completed_epochs % self.every_n_epochs == 0

    @staticmethod
    def _is_last_batch(trainer: pl.Trainer, batch_idx: int) -> bool:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        total = trainer.num_training_batches
        return bool(progress.is_last_batch) or (total != float("inf") and batch_idx + 1 >= total)

    @staticmethod
    def _epoch_completed(trainer: pl.Trainer) -> bool:
        """Whether the epoch ending now ran all its batches (not cut short by ``max_steps``)."""
        progress = trainer.fit_loop.epoch_loop.batch_progress
        total = trainer.num_training_batches
        return bool(progress.is_last_batch) or (total != float("inf") and progress.current.ready >= total)

    # ------------------------------------------------------------------ measuring
    def measure_now(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure immediately (outside the schedule), e.g. from a custom hook."""
        self._measure_own_pass(trainer, pl_module, epoch=trainer.current_epoch)

    def _measure_own_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        self._measure(trainer, pl_module, epoch, lambda: self._run_own_pass(trainer, pl_module))

    def _run_own_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, skip: int = 0) -> dict[str, SiteData]:
        """Capture the probe with the monitor's own pass; with ``skip``, the capture already holds
        the first ``skip`` probe batches (from the sanity check) and only the others run."""
        assert self._capture is not None and self._probe is not None and self._step is not None
        precision = trainer.precision_plugin
        batches = self._probe.batches
        if skip >= len(batches):
            return self._capture.collect()
        with isolated(pl_module), self._capture.capturing(resume=skip > 0):
            for index, batch in enumerate(batches):
                if index < skip:
                    continue
                data = precision.convert_input(batch.data)
                if hasattr(pl_module, "_on_before_batch_transfer"):
                    data = pl_module._on_before_batch_transfer(data, dataloader_idx=0)
                data = trainer.strategy.batch_to_device(data, dataloader_idx=0)
                with precision.val_step_context(), self._capture.batch(batch.size, batch.first_input, batch.keep):
                    self._step.function(pl_module, data, index)
        return self._capture.collect()

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, capture: Callable[[], dict[str, SiteData]], loop_seconds: float = 0.0) -> None:
        step = trainer.global_step
        if step in self._measured_steps or self._capture is None or self._probe is None:
            return
        start = time.perf_counter()
        self._measured_steps.add(step)
        self._measurements += 1
        local_error = None
        captured: dict[str, SiteData] = {}
        try:
            captured = capture()
        except Exception as error:  # noqa: BLE001 - the monitor must never break the fit it watches
            local_error = f"{type(error).__name__}: {error}"
        # Every rank reaches this one collective, whatever happened locally; then all go on or all skip.
        reports = all_ranks(trainer.strategy, (local_error, self._capture.errors if self._capture else {}, dict(self._capture.ambiguous)))
        failed = [(rank, error) for rank, (error, _, _) in enumerate(reports) if error is not None]
        if failed:
            self._record_failure(trainer, step, epoch, failed, loop_seconds + time.perf_counter() - start)
            return
        try:
            captured = gather_sites(captured, trainer.strategy, self._capture.maps_budget)
            self.sites = {m.name: [s for s, d in captured.items() if self._site_watched(m, d) and m.applies_to(d)] for m in self.metrics if not m.network_level}
            extra_values, extra_problems = self._compute_network_metrics(trainer, pl_module)
        except Exception as error:  # noqa: BLE001 - the monitor must never break the fit it watches
            self._record_failure(trainer, step, epoch, [(trainer.global_rank, f"{type(error).__name__}: {error}")], loop_seconds + time.perf_counter() - start)
            return
        self._report_capture(reports, captured, pl_module)
        watched = dict.fromkeys(s for sites in self.sites.values() for s in sites)
        self._update_site_info(trainer, captured, watched)
        self._last_keys = [(p, s) for m in self.metrics if not m.network_level for s in self.sites.get(m.name, []) for p in m.produces]
        self._last_keys += [(SAMPLES_METRIC, s) for s in watched] + list(extra_values)
        measurement = Measurement(
            step, epoch, captured, self.sites, extra_values, extra_problems, context_values(trainer.callback_metrics, self.context_metrics)
        )
        measurement.loop_seconds = loop_seconds + time.perf_counter() - start
        self._pipeline.submit(trainer, measurement)

    def _report_capture(self, reports: list[tuple], captured: dict[str, SiteData], pl_module: pl.LightningModule) -> None:
        world = len(reports)
        for rank, (_, errors, ambiguous) in enumerate(reports):
            where = f" on rank {rank}" if world > 1 else ""
            for site, reason in errors.items():
                self._warn_once(("capture", site), f"lightning_complexity: the hook at site `{site}` failed{where}: {reason}; the site's metrics are NaN or missing.")
            for site, (shape, size, axis) in ambiguous.items():
                self._warn_once(("axis", site), f"lightning_complexity: at site `{site}` several axes of the {shape} tensor have the batch size {size}{where}; axis {axis} was taken as the sample axis (set batch_first on the module, or use a probe batch size that differs from the other sizes).")
        if not captured:
            self._warn_once(("no sites",), f"lightning_complexity: found no site to measure in {type(pl_module).__name__} (no activation module or functional activation ran in the measured pass); only network-level metrics are recorded. Pass `layers=` to choose modules: {describe_available(pl_module, limit=20)}")
        for site, data in captured.items():
            width = data.width
            if width is not None and 0 < data.samples < width:
                self._warn_once(("few samples", site), f"lightning_complexity: site `{site}` has {data.samples} samples for {width} features; its affinity and effective dimension are biased there (effective dimension is at most the sample count). Raise max_samples, or see docs/metrics.md.")

    def _update_site_info(self, trainer: pl.Trainer, captured: dict[str, SiteData], watched: dict[str, None]) -> None:
        info = {site: {"module": captured[site].module, "type": captured[site].module_type, "kind": captured[site].kind, "depth": depth} for depth, site in enumerate(s for s in captured if s in watched)}
        if info == self.site_info:
            return
        self.site_info = info
        if trainer.is_global_zero:
            for writer in tensorboard_writers(trainer.loggers):
                writer.add_text(SITES_TAG, json.dumps(info), global_step=trainer.global_step)

    def _record_failure(self, trainer: pl.Trainer, step: int, epoch: int, failed: list[tuple[int, str]], loop_seconds: float) -> None:
        world = trainer.world_size
        reason = "; ".join(f"rank {rank}: {error}" if world > 1 else error for rank, error in failed)
        self.failures.append((step, reason))
        self._warn_once(("failure", reason), f"lightning_complexity: measurement at step {step} failed and its rows are NaN ({reason}).")
        keys = self._last_keys or [(produced, site) for m in self.metrics if not m.network_level for site in sorted(self._modules_of.get(m.name, ())) for produced in m.produces]
        context = context_values(trainer.callback_metrics, self.context_metrics)
        self._pipeline.submit(trainer, Measurement(step, epoch, context=context, loop_seconds=loop_seconds, failed_keys=keys))

    @property
    def power_law_axis(self) -> str:
        """The time axis of the fits: ``"epoch"``, or ``"step"`` when only steps are scheduled."""
        return "epoch" if self.every_n_epochs or not (self.every_n_steps or self.schedule) else "step"

    @override
    @_on_training_loop
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drain(trainer, wait=True)
        deferred, self._pipeline.pending_figures = self._pipeline.pending_figures, []
        writers = tensorboard_writers(trainer.loggers) if trainer.is_global_zero else []
        power_laws = self.log_figures and self.power_law and len(self._history) > 0
        if not writers or not (deferred or power_laws):
            return
        # Drawn after fit returns, from a copy: training is over and nothing in the fit needs them.
        self._end_figures.submit(
            MetricHistory(self._history.rows) if power_laws else None,
            [writer.log_dir for writer in writers],
            axis=self.power_law_axis,
            window=self.power_law_window,
            step=trainer.global_step,
            warn=self._warn_once,
            deferred=deferred,
        )

    def wait_for_figures(self) -> None:
        """Block until the figures of finished fits are written to TensorBoard.

        The power-law figures, and figures whose rendering would have cost more than 5 % of the
        time between measurements (the heatmaps of short epochs), are drawn in the background after
        ``trainer.fit`` returns (``background=True``), each at its own step; Python also waits for
        them before it exits. Call this before reading the event files.

        Example::

            trainer.fit(model)
            monitor.wait_for_figures()
        """
        self._end_figures.wait()

    def _compute_network_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[dict[tuple[str, str], float], list[SiteProblem]]:
        """Network-level metrics need the live model, so they run here, on the training thread."""
        values: dict[tuple[str, str], float] = {}
        problems: list[SiteProblem] = []
        network = [m for m in self.metrics if m.network_level]
        if not network:
            return values, problems
        try:
            inputs = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(self._probe.inputs(self.batch_to_input)))
        except Exception as error:  # noqa: BLE001 - e.g. dict batches without batch_to_input
            inputs, reason = None, f"{type(error).__name__}: {error}"
        for metric in network:
            try:
                if inputs is None:
                    raise RuntimeError(f"the probe gives no tensor of model inputs ({reason}); pass batch_to_input=")
                with isolated(pl_module):
                    computed = metric.compute_network(pl_module, inputs)
                host = torch.stack([computed[name].to(torch.float64).reshape(()).cpu() for name in metric.produces]).tolist()
            except Exception as error:  # noqa: BLE001 - a failing metric must not stop training
                host = [float("nan")] * len(metric.produces)
                problems.append(SiteProblem(metric.name, metric.site, f"{type(error).__name__}: {error}"))
            values.update({(name, metric.site): value for name, value in zip(metric.produces, host)})
        return values, problems

    def _warn_once(self, key: Any, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path) -> Path:
        """Write :attr:`history` to ``path`` (format from the suffix: ``.csv``, ``.json``, ``.parquet``)."""
        path = Path(path)
        writers = {".csv": self.history.to_csv, ".json": self.history.to_json, ".parquet": self.history.to_parquet}
        if path.suffix not in writers:
            raise bad_argument("path", str(path), f"a path ending in one of {tuple(writers)}")
        return writers[path.suffix](path)


def _is_default_spec(metric: SiteMetric) -> bool:
    """Whether the metric's own ``layers`` is its class default (a rule, not the user's choice)."""
    import inspect

    default = inspect.signature(type(metric).__init__).parameters.get("layers")
    return default is not None and default.default is metric.layers


def _names_functional_sites(spec: LayerSpec) -> bool:
    """Whether a layer spec has a glob that can match functional sites (``"*.relu()"``)."""
    entries = spec if isinstance(spec, list) else [spec]
    return any(isinstance(entry, str) and "()" in entry for entry in entries)
