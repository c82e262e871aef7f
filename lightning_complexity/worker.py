"""Where a measurement's computation runs: a background thread, so the training loop only pays for the capture.

The training thread captures (hooks copy and reduce) and hands the reduced samples to a
:class:`MeasurementWorker`; it computes the metrics, appends the rows to the history, fits the
power laws and draws the figures, one measurement after the other in submission order, while
training goes on. Whatever reads the results waits for pending work first (:meth:`wait`), so a
checkpoint holds every measurement made before it and the values are those a synchronous run
gives, bit for bit.

The thread is a low-priority, single-threaded consumer: on Linux it runs under ``SCHED_IDLE`` (else
at nice 10) and its torch intra-op parallelism is one thread, so on a busy CPU it takes the
cycles training leaves idle instead of competing for them. It lives only while jobs are queued,
and while it lives GNU OpenMP's idle threads sleep instead of spinning (see
:func:`_tell_openmp_cores_are_shared`), so those idle cycles are really idle. With
``background=False`` every job runs inline, at submission.

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
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

__all__ = ["MeasurementWorker", "normal_priority"]

_NICE = 10


def _tell_openmp_cores_are_shared() -> None:
    """Give this thread a two-thread OpenMP team of its own, so GNU OpenMP stops busy-waiting.

    The idle threads of torch's OpenMP team (libgomp, in torch's Linux wheels) spin about 300,000
    times before they sleep, unless libgomp manages more threads than the process has CPUs; then
    they spin about 1,000 times. Our job beside training is exactly that oversubscription, but
    libgomp counts only its own threads, so on a CPU that training keeps busy the job got almost
    nothing but the cores' spinning (measured: a 2-core machine, 8 CPU-s of spinning per cnn fit).
    One parallel region started here adds a team thread to libgomp's count; the team lives as
    long as this thread, which ends when the queue is empty, so training spins again as before
    once no job is pending. Elsewhere (another OpenMP runtime, fewer torch threads than cores)
    this is one small parallel fill and changes nothing.
    """
    torch.set_num_threads(2)
    torch.empty(1 << 16).fill_(0.0)  # above torch's grain size (32,768): one parallel region
    torch.set_num_threads(1)


def _set_idle(native_id: int, idle: bool) -> bool:
    """Put one thread under ``SCHED_IDLE`` or back under the normal policy; False if not possible."""
    try:
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        os.sched_setscheduler(native_id, policy, os.sched_param(0))
        return True
    except (AttributeError, OSError):  # not Linux, or not permitted
        return False


def normal_priority() -> None:
    """This thread under the normal scheduling policy (a helper the worker started inherits
    ``SCHED_IDLE``; it runs only while the loop waits, when the worker itself is raised too)."""
    if hasattr(threading, "get_native_id"):
        _set_idle(threading.get_native_id(), False)


def _lower_priority() -> None:
    if (os.cpu_count() or 1) > 1:
        _tell_openmp_cores_are_shared()
    torch.set_num_threads(1)  # per thread (OpenMP): the training thread keeps its own setting
    if not hasattr(threading, "get_native_id"):
        return
    # SCHED_IDLE: a training thread that wakes takes the core at once. Under nice 10 the kernel
    # (EEVDF) may let the job finish its slice first, and every parallel region of training then
    # waits for its late thread (cnn, 2 cores: 28.3/29.0 s against 31.0/36.4 s per monitored fit).
    if _set_idle(threading.get_native_id(), True):
        return
    try:  # a lower nice value instead
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
    except (AttributeError, OSError):  # not permitted here: the thread keeps the default priority
        pass


class MeasurementWorker:
    """Runs jobs in submission order, in one background thread or inline.

    Attributes:
        busy_seconds: total time spent running jobs (in the background or inline).
        loop_waits: set while a caller waits with ``urgent=True``; jobs may then use every core.
    """

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self.busy_seconds = 0.0
        self._queue: deque[tuple[Future, Callable[[], Any]]] = deque()
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None  # the consumer's native id, while it runs
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.loop_waits = threading.Event()

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
        future = Future()
        with self._lock:
            self._queue.append((future, timed))
            if self._thread is None:  # the consumer ends when the queue is empty: start one
                self._thread = threading.Thread(target=self._consume, name="lightning_complexity")
                self._thread.start()
        self._pending.append(future)
        return future

    def _consume(self) -> None:
        _lower_priority()
        with self._lock:
            self._thread_id = threading.get_native_id() if hasattr(threading, "get_native_id") else None
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = self._thread_id = None
                    return
                future, job = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as error:  # noqa: BLE001 - delivered through the future
                future.set_exception(error)

    def _timed(self, job: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            start = time.perf_counter()
            try:
                return job()
            finally:
                self.busy_seconds += time.perf_counter() - start  # one consumer at a time

        return run

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished."""
        self._pending = [f for f in self._pending if not f.done()]
        return len(self._pending)

    def wait(self, urgent: bool = False) -> None:
        """Block until every submitted job has finished (their errors stay in their futures).

        ``urgent``: the caller (the training loop) does nothing meanwhile, so the jobs run under
        the normal scheduling policy until they are done (under ``SCHED_IDLE`` any other busy
        process on the machine would starve them, and the loop with them), and
        :attr:`loop_waits` tells them they may use every core.
        """
        if urgent:
            self.loop_waits.set()
        raised = urgent and self._set_consumer_idle(False)
        try:
            for future in list(self._pending):
                future.exception()  # waits; never raises the job's error here
            self._pending.clear()
        finally:
            if raised:
                self._set_consumer_idle(True)
            if urgent:
                self.loop_waits.clear()

    def _set_consumer_idle(self, idle: bool) -> bool:
        # Under the lock the consumer cannot exit, so its native id cannot be reused meanwhile.
        with self._lock:
            return self._thread_id is not None and _set_idle(self._thread_id, idle)

    def shutdown(self) -> None:
        """Finish pending jobs; the thread then ends by itself."""
        self.wait()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
