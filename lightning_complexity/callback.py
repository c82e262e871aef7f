"""ComplexityMonitor: the Lightning glue — schedule, probe forward, history, logging, state.

The maths lives in :mod:`lightning_complexity.functional` and :mod:`lightning_complexity.site_metrics`;
the hooks in :mod:`lightning_complexity.capture`; this file only decides *when* to measure and
where the numbers go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_complexity.capture import ActivationCapture, SiteNeeds
from lightning_complexity.distributed import gather_sites, shard_rows
from lightning_complexity.errors import bad_argument
from lightning_complexity.history import MetricHistory
from lightning_complexity.measurement import SiteProblem, compute_metrics
from lightning_complexity.modes import evaluation_mode
from lightning_complexity.probe import ProbeSet, default_batch_to_input, resolve_probe_loader
from lightning_complexity.site_metrics import SiteMetric, resolve_metrics
from lightning_complexity.sites import LayerSpec, describe_available, select_modules, validate_layer_spec
from lightning_complexity.tensorboard import EPOCH_TAG, FIGURE_PREFIX, PREFIX, custom_scalars_layout, scalar_tag, tensorboard_writers

__all__ = ["ComplexityMonitor"]

_EXPORT_SUFFIXES = (".csv", ".json", ".parquet")


def _check_schedule(argument: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_argument(argument, value, "None or an int >= 0 (0 or None switches it off)")
    return value or None


class ComplexityMonitor(Callback):
    r"""Measure how non-linear, high-dimensional and complex each layer is while the model trains.

    At the start of fit (before the first step, so curves start at initialisation) and then on its
    schedule, the monitor runs a fixed probe set through the model in eval mode under ``no_grad``,
    captures every watched site with forward hooks (registered once, removed at teardown or when
    fit fails), computes its metrics batched across sites in float64, appends rows to
    :attr:`history`, and logs them to every attached logger.

    Args:
        metrics: metric names or :class:`~lightning_complexity.site_metrics.SiteMetric` objects
            (default: ``["affinity", "effective_dimension"]``).
        layers: which modules to watch: ``None`` (every activation module), a glob on dotted module
            names, a module type, a callable ``(name, module) -> bool``, or a list of these.
        probe: ``"val"`` (default; the train loader when there is no validation one), ``"train"``,
            a ``DataLoader``, or a tensor of model inputs.
        max_samples: the probe's sample budget (rows per site for every metric).
        every_n_epochs: measure after every n-th epoch (``None``/0: off).
        every_n_steps: measure every n optimizer steps (``None``/0: off).
        measure_at_start: measure once before the first training step.
        spatial: ``"mean"`` averages conv maps/sequences over positions; ``"positions"`` makes every
            position a sample (subsampled to the budget).
        channel_dim: the feature axis of captured tensors (default: 1 for conv maps, -1 for sequences;
            pass -1 for channels-last models).
        probe_batch_size: rows per probe forward.
        batch_to_input: extracts the model input from a dataloader batch (default: the tensor, the
            first item of a tuple, or a common dict key).
        seed: seed of the probe draw.
        export_path: if given, the history is written there at the end of fit (``.csv``, ``.json``
            or ``.parquet``).
        log_figures: draw each metric's figures (e.g. the signature heatmap) into TensorBoard at
            every measurement, and log-log power-law plots at the end of training.
        power_law: fit ``y ≈ a·t^b`` to every curve with at least 4 points (t = completed epochs,
            or steps when only ``every_n_steps`` is set) after each measurement and log
            ``powerlaw/<metric>/<site>/exponent`` and ``.../r2``; the full table is
            :meth:`MetricHistory.power_law_fits`.
        power_law_window: ``(t_min, t_max)`` of the fits (default: all points).
        layer_algebra: compute the data-free per-layer table (parameters, MACs, sizes, receptive
            field, intrinsic power, layer complexity; SPEC §7) once at the start of fit, log it as
            TensorBoard text and keep it in :attr:`layer_algebra` and the checkpoint.

    Raises:
        MisconfigurationException: for a bad argument (the message names it, the value, and what is
            accepted), or when ``layers`` matches no module (the message lists the modules).

    Example::

        from lightning_complexity import ComplexityMonitor
        monitor = ComplexityMonitor(every_n_epochs=1, max_samples=512)
        trainer = L.Trainer(callbacks=[monitor], logger=TensorBoardLogger("runs"))
        trainer.fit(model, datamodule)
        monitor.history.to_dataframe()      # step, epoch, metric, site, value

    Logged metrics:
        ``complexity/<metric>/<site>`` for every metric the configured families produce (by default
        ``affinity``, ``effective_dimension``, ``participation_ratio``, ``effective_dimension_ratio``,
        and the signature summaries ``affinity_signature`` at sites ``mean``, ``std``, ``min``,
        ``max``, ``max_over_mean``), at the trainer's global step; ``complexity_meta/epoch`` holds the
        completed epochs of each measurement. The ``epoch`` column of the history counts *completed* epochs (0 is
        the measurement at initialisation). With TensorBoard, one custom-scalars layout shows each
        metric's sites in one chart.
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
        batch_to_input: Callable[[Any], Tensor] | None = None,
        seed: int = 0,
        export_path: str | Path | None = None,
        log_figures: bool = True,
        power_law: bool = True,
        power_law_window: tuple[float | None, float | None] | None = None,
        layer_algebra: bool = True,
    ) -> None:
        self.metrics = resolve_metrics(metrics)
        validate_layer_spec(layers)
        self.layers = layers
        if not (probe in ("val", "train") or isinstance(probe, (DataLoader, Tensor))):
            raise bad_argument("probe", probe, "'val', 'train', a torch DataLoader, or a tensor of model inputs")
        if isinstance(probe, Tensor) and probe.ndim < 1:
            raise bad_argument("probe", probe, "a tensor of model inputs with a sample axis first")
        self.probe = probe
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise bad_argument("max_samples", max_samples, "an int >= 2")
        self.max_samples = max_samples
        self.every_n_epochs = _check_schedule("every_n_epochs", every_n_epochs)
        self.every_n_steps = _check_schedule("every_n_steps", every_n_steps)
        self.measure_at_start = bool(measure_at_start)
        if not (self.every_n_epochs or self.every_n_steps or self.measure_at_start):
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
        #: the static per-layer table (SPEC §7) computed at the start of fit, or None.
        self.layer_algebra: Any = None

        self.history = MetricHistory()
        #: metric name → the sites it watched at the last measurement, in forward order.
        self.sites: dict[str, list[str]] = {}
        self._modules_of: dict[str, set[str]] = {}
        self._capture: ActivationCapture | None = None
        self._probe: ProbeSet | None = None
        self._measured_steps: set[int] = set()
        self._warned: set[tuple[str, str]] = set()
        self._layout_tags: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ state
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(metrics=[m.name for m in self.metrics], every_n_epochs=self.every_n_epochs, every_n_steps=self.every_n_steps)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"version": 1, "history": self.history.state_dict()}
        if self.layer_algebra is not None:
            state["layer_algebra"] = self.layer_algebra.to_dataframe().to_dict(orient="list")
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = MetricHistory.from_state_dict(state_dict["history"])
        self._measured_steps = set(self.history.steps())

    # ------------------------------------------------------------------ setup / teardown
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        needs: dict[str, SiteNeeds] = {}
        for metric in self.metrics:
            if metric.network_level:
                continue
            spec = metric.layers if metric.layers is not None else self.layers
            modules = select_modules(pl_module, spec)
            if not modules:
                argument = "layers" if metric.layers is None else f"{type(metric).__name__}(layers=...)"
                what = "every activation module (none found)" if spec is None else repr(spec)
                raise MisconfigurationException(
                    f"`{argument}` selects no module for metric {metric.name!r} ({what}). "
                    f"Available modules: {describe_available(pl_module)}"
                )
            self._modules_of[metric.name] = set(modules)
            for name in modules:
                needs[name] = needs.get(name, SiteNeeds(output=False)) | metric.needs
        self._remove_hooks()
        self._capture = ActivationCapture(pl_module, needs, spatial=self.spatial, channel_dim=self.channel_dim, positions_per_sample=self._positions_per_sample())
        if isinstance(self.probe, Tensor):
            self._probe = ProbeSet(self.probe, self.max_samples, self.probe_batch_size)
        else:
            loader = self.probe if isinstance(self.probe, DataLoader) else resolve_probe_loader(trainer, self.probe)
            self._probe = ProbeSet.from_loader(loader, self.max_samples, seed=self.seed, batch_size=self.probe_batch_size, batch_to_input=self.batch_to_input)
        self._probe.to(pl_module.device)

    def _positions_per_sample(self) -> int | None:
        return None if self.spatial == "mean" else max(1, self.max_samples // max(1, self._probe_rows()))

    def _probe_rows(self) -> int:
        return int(self.probe.shape[0]) if isinstance(self.probe, Tensor) else self.max_samples

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.export_path is not None and trainer.is_global_zero:
            self.export(self.export_path)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    # ------------------------------------------------------------------ schedule
    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.compute_layer_algebra and self.layer_algebra is None:
            self._compute_layer_algebra(trainer, pl_module)
        if self.measure_at_start:
            self._measure(trainer, pl_module, epoch=trainer.current_epoch)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        last = self._is_last_batch(trainer, batch_idx)
        epoch = trainer.current_epoch + int(last)
        step_due = self.every_n_steps is not None and trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0
        # Measure at the epoch's last batch, before validation and any epoch-end checkpoint, so a
        # checkpoint written at this epoch's end already holds this epoch's rows.
        epoch_due = last and self._epoch_due(epoch)
        if step_due or epoch_due:
            self._measure(trainer, pl_module, epoch=epoch)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Fallback for loaders whose last batch could not be recognised (iterable datasets).
        if self._epoch_due(trainer.current_epoch + 1):
            self._measure(trainer, pl_module, epoch=trainer.current_epoch + 1)

    def _compute_layer_algebra(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import warnings

        from lightning_complexity.layer_algebra import layer_algebra

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.layer_algebra = layer_algebra(pl_module, self._convert_input(trainer, self._probe.inputs[:1]))
            if caught:
                self._warn_once(("layer_algebra", "network"), f"lightning_complexity: layer algebra: {caught[0].message}")
        except Exception as error:  # noqa: BLE001 - a static table must never stop training
            self._warn_once(("layer_algebra", "network"), f"lightning_complexity: the layer-algebra table could not be computed ({type(error).__name__}: {error}).")
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

    # ------------------------------------------------------------------ measuring
    def measure_now(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure immediately (outside the schedule), e.g. from a custom hook."""
        self._measure(trainer, pl_module, epoch=trainer.current_epoch)

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        step = trainer.global_step
        if step in self._measured_steps or self._capture is None or self._probe is None:
            return
        self._measured_steps.add(step)
        try:
            captured = self._run_probe(trainer, pl_module)
            self.sites = {
                m.name: [s for s, data in captured.items() if data.module in self._modules_of[m.name] and m.applies_to(data)]
                for m in self.metrics
                if not m.network_level
            }
            result = compute_metrics(captured, self.metrics, self.sites)
            self._compute_network_metrics(pl_module, result)
        except Exception as error:  # noqa: BLE001 - the monitor must never break the fit it watches
            self._warn_once(("*", "measurement"), f"lightning_complexity: measurement at step {step} failed and was skipped ({type(error).__name__}: {error}).")
            return
        for problem in result.problems + [SiteProblem("capture", s, r) for s, r in self._capture.errors.items()]:
            self._warn_once((problem.metric, problem.site), f"lightning_complexity: `{problem.metric}` is NaN at site `{problem.site}` from step {step}: {problem.reason}. Further problems at this site are not reported.")
        self.history.extend((step, epoch, metric, site, value) for (metric, site), value in result.values.items())
        self._log(trainer, step, epoch, result.values)
        if self.power_law:
            self._log_power_laws(trainer, step)

    @property
    def power_law_axis(self) -> str:
        """The time axis of the fits: ``"epoch"``, or ``"step"`` when only steps are scheduled."""
        return "epoch" if self.every_n_epochs or not self.every_n_steps else "step"

    def _log_power_laws(self, trainer: pl.Trainer, step: int) -> None:
        from lightning_complexity.powerlaw import fit_power_law

        scalars = {}
        for (metric, site), (t, y) in self.history.curves(self.power_law_axis).items():
            fit = fit_power_law(t, y, window=self.power_law_window)  # NaN below SPEC §4's 4 points
            if np.isfinite(fit.exponent):
                scalars[f"powerlaw/{metric}/{site}/exponent"] = fit.exponent
                scalars[f"powerlaw/{metric}/{site}/r2"] = fit.r2
        for logger in trainer.loggers if scalars else []:
            logger.log_metrics(scalars, step=step)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writers = tensorboard_writers(trainer.loggers) if trainer.is_global_zero else []
        if not (writers and self.log_figures and self.power_law):
            return
        from lightning_complexity.figures import power_law_figure

        fits = self.history.power_law_fits(self.power_law_axis, self.power_law_window)
        drawable = set(fits.loc[np.isfinite(fits["exponent"]), "metric"])  # metrics with at least one fit
        for metric in [m for m in self.history.metrics() if m in drawable]:
            try:
                figure = power_law_figure(self.history, metric, self.power_law_axis, self.power_law_window)
                for writer in writers:
                    writer.add_figure(f"{FIGURE_PREFIX}/powerlaw/{metric}", figure, global_step=trainer.global_step, close=False)
            except Exception as error:  # noqa: BLE001 - a figure must never stop training
                self._warn_once((metric, "<powerlaw figure>"), f"lightning_complexity: the power-law figure of `{metric}` failed ({type(error).__name__}: {error}).")

    def _compute_network_metrics(self, pl_module: pl.LightningModule, result: Any) -> None:
        for metric in (m for m in self.metrics if m.network_level):
            try:
                values = metric.compute_network(pl_module, self._probe.inputs)
                host = torch.stack([values[name].to(torch.float64).reshape(()).cpu() for name in metric.produces]).tolist()
            except Exception as error:  # noqa: BLE001 - a failing metric must not stop training
                host = [float("nan")] * len(metric.produces)
                result.problems.append(SiteProblem(metric.name, metric.site, f"{type(error).__name__}: {error}"))
            result.values.update({(name, metric.site): value for name, value in zip(metric.produces, host)})

    def _run_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        assert self._capture is not None and self._probe is not None
        forward_context = getattr(trainer.precision_plugin, "forward_context", contextlib.nullcontext)
        world_size, rank = trainer.world_size, trainer.global_rank
        with evaluation_mode(pl_module), self._capture.capturing(), forward_context():
            # Under DDP each rank runs its shard of the probe; the samples are gathered below.
            for inputs in self._probe.to(pl_module.device).batches(shard_rows(len(self._probe), rank, world_size)):
                self._capture.new_forward()
                pl_module(self._convert_input(trainer, inputs))
        captured = self._capture.collect()
        return gather_sites(captured, trainer.strategy, len(self._probe), self._capture.maps_budget)

    @staticmethod
    def _convert_input(trainer: pl.Trainer, inputs: Tensor) -> Tensor:
        # Under "64-true", "bf16-true" or "16-true" the model's dtype changed: cast the probe the
        # way Lightning casts training batches.
        return trainer.precision_plugin.convert_input(inputs)

    def _warn_once(self, key: tuple[str, str], message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    # ------------------------------------------------------------------ logging
    def _log(self, trainer: pl.Trainer, step: int, epoch: int, values: dict[tuple[str, str], float]) -> None:
        if not values:
            return
        scalars = {scalar_tag(metric, site): value for (metric, site), value in values.items()}
        scalars[EPOCH_TAG] = float(epoch)  # lets a history be rebuilt from the logs alone
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        grown = False
        for metric, site in values:
            tags = self._layout_tags.setdefault(metric, [])
            if site not in tags:
                tags.append(site)
                grown = True
        writers = tensorboard_writers(trainer.loggers) if trainer.is_global_zero else []
        for writer in writers if grown else []:
            writer.add_custom_scalars(custom_scalars_layout(self._layout_tags))
        if writers and self.log_figures:
            self._log_figures(writers, step)

    def _log_figures(self, writers: list[Any], step: int) -> None:
        for metric in self.metrics:
            try:
                figures = metric.figures(self.history)
                for name, figure in figures.items():
                    for writer in writers:
                        writer.add_figure(f"{FIGURE_PREFIX}/{name}", figure, global_step=step, close=False)
            except Exception as error:  # noqa: BLE001 - a figure must never stop training
                self._warn_once((metric.name, "<figures>"), f"lightning_complexity: figures of `{metric.name}` failed ({type(error).__name__}: {error}); they are skipped.")

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path) -> Path:
        """Write :attr:`history` to ``path`` (format from the suffix: ``.csv``, ``.json``, ``.parquet``)."""
        path = Path(path)
        writers = {".csv": self.history.to_csv, ".json": self.history.to_json, ".parquet": self.history.to_parquet}
        if path.suffix not in writers:
            raise bad_argument("path", str(path), f"a path ending in one of {tuple(writers)}")
        return writers[path.suffix](path)
