"""The figures of a finished fit that are drawn after ``trainer.fit`` has returned.

Once training ends, one log-log figure per metric shows every site's curve and its power-law fit
(:func:`~lightning_complexity.figures.power_law_figure`). Rendering them takes matplotlib about half
a second each (six metrics: ~3 s on a 2-core CPU, as long as a whole fit of the digits demo), and
nothing in the fit needs them, so they are drawn by a background thread from a copy of the
finished history while the caller goes on, together with the figures built during training whose
rendering was put off (see ``recording._LIVE_FIGURE_SHARE``), each at its own step. They are
written by a writer of their own into each TensorBoard run folder (an extra
``events.out.tfevents.*`` file that TensorBoard reads with the others), so the logger may close its
writer in the meantime. Python finishes the job before the
interpreter exits; :meth:`EndOfFitFigures.wait` waits for it explicitly (tests, notebooks that read
the event files at once).

Example::

    figures = EndOfFitFigures(background=True)
    figures.submit(history_copy, ["runs/version_0"], axis="epoch", window=None, step=120, warn=warn, deferred=[])
    figures.wait()   # the figures are in runs/version_0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from lightning_complexity.history import MetricHistory
from lightning_complexity.recording import SAMPLES_METRIC, PendingFigure
from lightning_complexity.safe_names import printable
from lightning_complexity.tensorboard import FIGURE_PREFIX
from lightning_complexity.worker import MeasurementWorker

__all__ = ["EndOfFitFigures"]

class EndOfFitFigures:
    """Draws and writes the end-of-fit figures of finished fits, one fit after the other.

    Args:
        background: draw in a background thread (the default); False draws at :meth:`submit`.
    """

    def __init__(self, background: bool = True) -> None:
        self._worker = MeasurementWorker(background=background)

    def submit(
        self,
        history: MetricHistory | None,
        log_dirs: Sequence[str],
        *,
        axis: str,
        window: tuple | None,
        step: int,
        warn: Callable[[Any, str], None],
        deferred: Sequence[PendingFigure] = (),
    ) -> Future:
        """Schedule the power-law figures of ``history`` (a copy the caller no longer changes; None:
        none) and the ``deferred`` figures built during training, each at its own step."""
        return self._worker.submit(lambda: self._draw(history, list(log_dirs), axis, window, step, warn, list(deferred)))

    def wait(self) -> None:
        """Block until every submitted fit's figures are written."""
        self._worker.wait()

    @property
    def pending(self) -> int:
        """Fits whose figures are still being drawn."""
        return self._worker.pending

    def _draw(self, history: MetricHistory | None, log_dirs: list[str], axis: str, window: tuple | None, step: int, warn: Callable[[Any, str], None], deferred: list[PendingFigure]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        try:
            figures = list(deferred) + (self._power_law_figures(history, axis, window, step, warn) if history is not None else [])
            for log_dir in log_dirs:
                writer = SummaryWriter(log_dir=log_dir, filename_suffix=".end_of_fit_figures")
                try:
                    for pending in figures:
                        try:
                            writer.add_figure(pending.tag, pending.drawn(), global_step=pending.step, close=False)
                        except Exception as error:  # noqa: BLE001 - one bad figure must not cost the others
                            warn((pending.metric, "<figures>"), f"lightning_complexity: the figure {pending.tag} failed ({type(error).__name__}: {error}).")
                finally:
                    writer.close()
        except Exception as error:  # noqa: BLE001 - nothing after training may fail the caller
            warn(("end-of-fit figures",), f"lightning_complexity: the end-of-fit figures failed ({type(error).__name__}: {error}).")

    @staticmethod
    def _power_law_figures(history: MetricHistory, axis: str, window: tuple | None, step: int, warn: Callable[[Any, str], None]) -> list[PendingFigure]:
        from lightning_complexity.figures import power_law_figure

        fits = history.power_law_fits(axis, window)
        drawable = set(fits.loc[np.isfinite(fits["exponent"].to_numpy(dtype=float)), "metric"])  # at least one fit
        figures = []
        for metric in [m for m in history.metrics() if m in drawable and m != SAMPLES_METRIC]:
            try:
                figures.append(PendingFigure(f"{FIGURE_PREFIX}/powerlaw/{printable(metric)}", power_law_figure(history, metric, axis, window), step, metric))
            except Exception as error:  # noqa: BLE001 - one bad figure must not cost the others
                warn((metric, "<powerlaw figure>"), f"lightning_complexity: the power-law figure of `{metric}` failed ({type(error).__name__}: {error}).")
        return figures
