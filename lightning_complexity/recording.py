"""From captured samples to history rows, logged scalars and figures — mostly off the training thread.

The monitor hands each measurement to a :class:`MeasurementPipeline` as soon as its samples are
captured (and gathered across ranks). A job on the :class:`~lightning_complexity.worker.MeasurementWorker`
computes the metrics (batched across sites), appends the rows to the history, fits the power laws
and draws the figures; the training thread later *drains* finished jobs — warnings, scalars to the
loggers at the measurement's own step, the custom-scalars layout — which costs microseconds.
Every history write happens in a job, in submission order (failed measurements too), so the
history is the same whether jobs run in the background or inline.

Jobs run with one torch intra-op thread, in the background and inline alike: float reductions then
add up in the same order, and the values of a background run equal those of a synchronous one bit
for bit. The exact-OT solver uses one thread too while training runs beside it, and every core
once the training loop waits for the job (at fit end, before a checkpoint): each assignment is
solved on its own, so this changes nothing in the values. On a GPU they run on a side CUDA stream
that waits for the capture's work.

Example::

    pipeline = MeasurementPipeline(metrics, history, background=True, ...)
    pipeline.submit(trainer, Measurement(step, epoch, captured, sites_of, ...))
    ...
    pipeline.drain(trainer)           # log what is ready
    pipeline.drain(trainer, wait=True)  # before anything reads the history
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lightning_complexity.capture import SiteData
from lightning_complexity.context import CONTEXT_SITE
from lightning_complexity.functional.ot import solver_threads
from lightning_complexity.history import MetricHistory
from lightning_complexity.helper_thread import run_groups
from lightning_complexity.measurement import SiteProblem, compute_metrics, run_in_order
from lightning_complexity.site_metrics import SiteMetric
from lightning_complexity.tensorboard import EPOCH_TAG, FIGURE_PREFIX, custom_scalars_layout, powerlaw_tag, scalar_tag, tensorboard_writers
from lightning_complexity.worker import MeasurementWorker, normal_priority

__all__ = ["LOOP_TAG", "BACKGROUND_TAG", "SAMPLES_METRIC", "Measurement", "MeasurementPipeline", "PendingFigure"]

#: the history metric that says how many samples each site's values rest on.
SAMPLES_METRIC = "samples"
#: seconds the training loop spent on a measurement, and seconds its job took in the background.
LOOP_TAG = "complexity_meta/loop_seconds"
BACKGROUND_TAG = "complexity_meta/background_seconds"

# A figure is rendered during training only while rendering takes at most this share of the time
# between two measurements (matplotlib needs ~0.3 s a figure on a 2-core CPU: every 5th heatmap of
# the digits demo, 0.3 s epochs, would cost 20 % of its fit); otherwise it waits, already built,
# and is rendered at its own step after fit returns (always while the loop waits for the job: at
# fit end, a checkpoint). The estimate starts at 0.3 s; at most 50 wait.
_LIVE_FIGURE_SHARE = 0.05
_FIRST_RENDER_SECONDS = 0.3
_MAX_PENDING_FIGURES = 50


@dataclass
class Measurement:
    """What the training thread hands over: the samples and everything read at capture time."""

    step: int
    epoch: int
    captured: dict[str, SiteData] = field(default_factory=dict)
    sites_of: dict[str, list[str]] = field(default_factory=dict)
    #: values computed on the training thread (network-level metrics need the live model).
    extra_values: dict[tuple[str, str], float] = field(default_factory=dict)
    extra_problems: list[SiteProblem] = field(default_factory=list)
    context: dict[str, float] = field(default_factory=dict)
    loop_seconds: float = 0.0
    #: for a failed measurement: the (metric, site) keys whose rows are NaN.
    failed_keys: list[tuple[str, str]] | None = None


@dataclass
class PendingFigure:
    """A figure not yet rendered: ``tag`` in TensorBoard, the measurement's ``step``, and the
    ``metric`` that drew it (for warnings). ``figure`` is a matplotlib figure or a callable that
    builds it (see :meth:`SiteMetric.figures`): building a figure is pure-Python work that holds
    the GIL, so a figure whose rendering is put off is built only when it is rendered."""

    tag: str
    figure: Any
    step: int
    metric: str

    def drawn(self) -> Any:
        """The matplotlib figure (built now if it was deferred)."""
        if callable(self.figure):
            self.figure = self.figure()
        return self.figure


@dataclass
class _Outcome:
    step: int
    epoch: int
    values: dict[tuple[str, str], float]
    problems: list[SiteProblem]
    fit_scalars: dict[str, float]
    loop_seconds: float
    background_seconds: float
    figure_errors: list[tuple[str, str]]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


class MeasurementPipeline:
    """Computes, records and logs measurements (see the module docstring).

    Args:
        metrics: the monitor's metric objects.
        history: where rows go (replace :attr:`history` only when :meth:`drain` waited).
        background: run jobs on a background thread (else inline).
        log_figures: draw metric figures into TensorBoard writers.
        power_law: fit every curve after each measurement and log the fits.
        power_law_axis: a callable giving ``"epoch"`` or ``"step"``.
        power_law_window: ``(t_min, t_max)`` of the fits, or None.
        warn: ``(key, message)``: warn once per key.
    """

    def __init__(
        self,
        metrics: list[SiteMetric],
        history: MetricHistory,
        *,
        background: bool,
        log_figures: bool,
        power_law: bool,
        power_law_axis: Callable[[], str],
        power_law_window: tuple | None,
        warn: Callable[[Any, str], None],
    ) -> None:
        self.metrics = metrics
        self.history = history
        self.log_figures = log_figures
        self.power_law = power_law
        self.power_law_axis = power_law_axis
        self.power_law_window = power_law_window
        self._warn = warn
        self.worker = MeasurementWorker(background)
        self._futures: list[Any] = []
        self._layout_tags: dict[str, list[str]] = {}
        #: ``(step, loop seconds, background seconds)`` of every finished measurement.
        self.costs: list[tuple[int, float, float]] = []
        #: figures built but not rendered yet (see ``_LIVE_FIGURE_SHARE``), oldest first.
        self.pending_figures: list[PendingFigure] = []
        self._render_seconds = _FIRST_RENDER_SECONDS
        self._last_submit: float | None = None

    def start_fit(self) -> None:
        """Forget the previous fit's costs, its timing and its unrendered figures."""
        self.costs.clear()
        self.pending_figures = []
        self._last_submit = None

    # ------------------------------------------------------------------ training thread
    def submit(self, trainer: Any, measurement: Measurement) -> None:
        """Hand one measurement over; its rows appear once the job ran (see :meth:`drain`)."""
        writers = tensorboard_writers(trainer.loggers) if trainer.is_global_zero and self.log_figures else []
        ready = None
        if any(d.output is not None and d.output.is_cuda for d in measurement.captured.values()):
            ready = torch.cuda.Event()
            ready.record()  # the job's stream waits for the capture's kernels
        now = time.perf_counter()
        interval = None if self._last_submit is None else now - self._last_submit
        self._last_submit = now
        self._futures.append(self.worker.submit(lambda: self._job(measurement, writers, ready, interval)))
        self.drain(trainer)

    def drain(self, trainer: Any, wait: bool = False) -> None:
        """Log every finished measurement, in order; with ``wait``, first finish all of them."""
        if wait:
            self.worker.wait(urgent=True)  # pending jobs may now take every core
        while self._futures and self._futures[0].done():
            future = self._futures.pop(0)
            error = future.exception()
            if error is not None:
                self._warn(("job", type(error).__name__), f"lightning_complexity: a measurement could not be recorded ({type(error).__name__}: {error}).")
                continue
            self._publish(trainer, future.result())

    def close(self) -> None:
        """Stop the worker thread (after finishing its jobs)."""
        self.worker.shutdown()

    # ------------------------------------------------------------------ the job
    def _job(self, measurement: Measurement, writers: list[Any], ready: Any, interval: float | None) -> _Outcome:
        start = time.perf_counter()
        stream = torch.cuda.Stream() if ready is not None else None
        with self._job_settings(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
            if stream is not None:
                stream.wait_event(ready)
            values, problems = self._values(measurement, on_device=stream is not None)
            rows = [(measurement.step, measurement.epoch, metric, site, value) for (metric, site), value in values.items()]
            rows += [(measurement.step, measurement.epoch, key, CONTEXT_SITE, value) for key, value in measurement.context.items()]
            self.history.extend(rows)
            fit_scalars = self._fits() if self.power_law else {}
            figure_errors = self._figures(writers, measurement.step, interval) if writers else []
        return _Outcome(measurement.step, measurement.epoch, values, problems, fit_scalars, measurement.loop_seconds, time.perf_counter() - start, figure_errors)

    @contextlib.contextmanager
    def _job_settings(self) -> Iterator[None]:
        """How a job's thread computes (the worker's, and a helper's): one torch thread, one solver
        thread beside the training and every core while the loop waits for the job, no autograd."""
        cores = lambda: (os.cpu_count() or 1) if self.worker.loop_waits.is_set() else 1  # noqa: E731
        with _one_thread(), solver_threads(cores), torch.no_grad():
            yield

    def _values(self, measurement: Measurement, on_device: bool = False) -> tuple[dict[tuple[str, str], float], list[SiteProblem]]:
        if measurement.failed_keys is not None:
            return dict.fromkeys(measurement.failed_keys, math.nan), []
        result = compute_metrics(measurement.captured, self.metrics, measurement.sites_of, run=self._group_runner(on_device))
        values = dict(result.values)
        values.update(measurement.extra_values)
        watched = dict.fromkeys(s for sites in measurement.sites_of.values() for s in sites)
        values.update({(SAMPLES_METRIC, site): float(measurement.captured[site].samples) for site in watched})
        return values, result.problems + measurement.extra_problems

    def _group_runner(self, on_device: bool) -> Callable[[list[Callable[[], Any]]], list[Any]]:
        """How this job runs its groups: in order, and on a CPU with a background worker, with a
        helper thread while the loop waits (on a GPU the job's kernels are on its own stream, and
        the device is the limit)."""
        if not self.worker.background or on_device or (os.cpu_count() or 1) < 2:
            return run_in_order
        return lambda tasks: run_groups(tasks, self.worker.loop_waits, self._job_settings, on_start=normal_priority)

    def _fits(self) -> dict[str, float]:
        from lightning_complexity.powerlaw import fit_power_laws

        curves = {key: curve for key, curve in self.history.curves(self.power_law_axis()).items() if key[0] != SAMPLES_METRIC}
        scalars: dict[str, float] = {}
        # One batched fit of every curve (they share their epochs): a few array operations per
        # measurement instead of dozens per curve, on a thread that shares the GIL with training.
        for (metric, site), fit in fit_power_laws(curves, window=self.power_law_window).items():  # NaN below SPEC §4's 4 points
            if np.isfinite(fit.exponent):
                scalars[powerlaw_tag(metric, site, "exponent")] = fit.exponent
                scalars[powerlaw_tag(metric, site, "r2")] = fit.r2
                scalars[powerlaw_tag(metric, site, "conclusive")] = float(bool(fit.conclusive))
        return scalars

    def _figures(self, writers: list[Any], step: int, interval: float | None) -> list[tuple[str, str]]:
        """Build this measurement's figures, then render those that fit in the time budget."""
        errors = []
        for metric in self.metrics:
            try:
                for name, figure in metric.figures(self.history).items():
                    self.pending_figures.append(PendingFigure(f"{FIGURE_PREFIX}/{name}", figure, step, metric.name))
            except Exception as error:  # noqa: BLE001 - a figure must never stop training
                errors.append((metric.name, f"{type(error).__name__}: {error}"))
        budget = _LIVE_FIGURE_SHARE * interval if interval is not None else 0.0
        if self.worker.loop_waits.is_set():  # the training loop waits for this job: render after fit
            budget = -math.inf
        while self.pending_figures and (self._render_seconds <= budget or len(self.pending_figures) > _MAX_PENDING_FIGURES):
            pending = self.pending_figures.pop(0)
            start = time.perf_counter()
            try:
                for writer in writers:
                    writer.add_figure(pending.tag, pending.drawn(), global_step=pending.step, close=False)
            except Exception as error:  # noqa: BLE001 - a figure must never stop training
                errors.append((pending.metric, f"{type(error).__name__}: {error}"))
            elapsed = time.perf_counter() - start
            self._render_seconds = elapsed / max(1, len(writers))
            budget -= elapsed
        return errors

    # ------------------------------------------------------------------ back on the training thread
    def _publish(self, trainer: Any, outcome: _Outcome) -> None:
        for problem in outcome.problems:
            self._warn((problem.metric, problem.site), f"lightning_complexity: `{problem.metric}` is NaN at site `{problem.site}` from step {outcome.step}: {problem.reason}. Further problems at this site are not reported.")
        for metric, reason in outcome.figure_errors:
            self._warn((metric, "<figures>"), f"lightning_complexity: figures of `{metric}` failed ({reason}); they are skipped.")
        self.costs.append((outcome.step, outcome.loop_seconds, outcome.background_seconds))
        if not outcome.values:
            return
        scalars = {scalar_tag(metric, site): value for (metric, site), value in outcome.values.items()}
        scalars[EPOCH_TAG] = float(outcome.epoch)  # lets a history be rebuilt from the logs alone
        scalars[LOOP_TAG] = outcome.loop_seconds
        scalars[BACKGROUND_TAG] = outcome.background_seconds
        scalars.update(outcome.fit_scalars)
        try:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=outcome.step)
            self._update_layout(trainer, outcome.values)
        except Exception as error:  # noqa: BLE001 - logging must never break the fit
            self._warn(("logging",), f"lightning_complexity: logging the measurement at step {outcome.step} failed ({type(error).__name__}: {error}); the rows are in the history.")

    def _update_layout(self, trainer: Any, values: dict[tuple[str, str], float]) -> None:
        grown = False
        for metric, site in values:
            tags = self._layout_tags.setdefault(metric, [])
            if site not in tags:
                tags.append(site)
                grown = True
        if grown and trainer.is_global_zero:
            for writer in tensorboard_writers(trainer.loggers):
                writer.add_custom_scalars(custom_scalars_layout(self._layout_tags))
