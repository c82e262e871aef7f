"""Where a measurement's computation runs: a background thread, so the training loop only pays for the capture.

The training thread captures (hooks copy and reduce) and hands the reduced samples to a
:class:`MeasurementWorker`; it computes the metrics, appends the rows to the history, fits the
power laws and draws the figures, one measurement after the other in submission order, while
training goes on. Whatever reads the results waits for pending work first (:meth:`wait`), so a
checkpoint holds every measurement made before it and the values are those a synchronous run
gives, bit for bit.

The thread is a low-priority, single-threaded consumer: on Linux its scheduling priority is
lowered (nice 10) and its torch intra-op parallelism is one thread, so on a busy CPU it takes the
cycles training leaves idle instead of competing for them. With ``background=False`` every job runs
inline, at submission.

Example:
    >>> worker = MeasurementWorker(background=True)
    >>> future = worker.submit(lambda: 6 * 7)
    >>> worker.wait()
    >>> future.result()
    42
    >>> worker.shutdown()
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["MeasurementWorker"]

_NICE = 10


def _lower_priority() -> None:
    torch.set_num_threads(1)  # per thread (OpenMP): the training thread keeps its own setting
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        except OSError:  # not permitted here: the thread just keeps the default priority
            pass


class MeasurementWorker:
    """Runs jobs in submission order, in one background thread or inline.

    Attributes:
        busy_seconds: total time spent running jobs (in the background or inline).
    """

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self.busy_seconds = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> Future:
        """Schedule ``job``; its exception, if any, is kept in the returned future."""
        timed = self._timed(job)
        if not self.background:
            future: Future = Future()
            try:
                future.set_result(timed())
            except BaseException as error:  # noqa: BLE001 - delivered through the future
                future.set_exception(error)
            return future
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning_complexity", initializer=_lower_priority)
        future = self._pool.submit(timed)
        self._pending.append(future)
        return future

    def _timed(self, job: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            start = time.perf_counter()
            try:
                return job()
            finally:
                with self._lock:
                    self.busy_seconds += time.perf_counter() - start

        return run

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished."""
        self._pending = [f for f in self._pending if not f.done()]
        return len(self._pending)

    def wait(self) -> None:
        """Block until every submitted job has finished (their errors stay in their futures)."""
        for future in list(self._pending):
            future.exception()  # waits; never raises the job's error here
        self._pending.clear()

    def shutdown(self) -> None:
        """Finish pending jobs and stop the thread."""
        self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
