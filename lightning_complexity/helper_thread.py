"""A second thread for a measurement job while the training loop waits for it.

A job normally runs on the worker's single low-priority thread beside training. When the loop
stops to wait for it (fit end, a checkpoint, ``history``), every core is free, and a job is a list
of independent group computations (one per metric and group of same-shaped sites, see
:func:`~lightning_complexity.measurement.compute_metrics`). :func:`run_groups` runs them in order
on the calling thread and, while the loop waits, lets one helper thread take them from the other
end. Each group is computed exactly as it would be alone (one intra-op thread either way), so the
values do not depend on which thread ran it, or on when the loop began to wait.

Example:
    >>> import threading
    >>> loop_waits = threading.Event()
    >>> run_groups([lambda: 1, lambda: 2, lambda: 3], loop_waits, contextlib.nullcontext)
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["run_groups"]

# How often an idle helper looks whether the loop has started waiting.
_POLL_SECONDS = 0.005


def run_groups(
    tasks: list[Callable[[], Any]],
    loop_waits: threading.Event,
    context: Callable[[], contextlib.AbstractContextManager],
    on_start: Callable[[], None] = lambda: None,
) -> list[Any]:
    """``[task() for task in tasks]``, with a helper thread joining in while ``loop_waits`` is set.

    The calling thread takes tasks from the front; the helper, only while the loop waits, from the
    back. ``context()`` is entered on the helper (the job's thread settings: one torch thread, the
    solver threads, ``no_grad``); ``on_start`` runs on it first (its scheduling policy).
    """
    if len(tasks) < 2:
        return [task() for task in tasks]
    results: list[Any] = [None] * len(tasks)
    bounds = [0, len(tasks)]  # [next from the front, one past the next from the back]
    lock = threading.Lock()
    done = threading.Event()
    failures: list[BaseException] = []

    def take(front: bool) -> int | None:
        with lock:
            if bounds[0] >= bounds[1]:
                return None
            if front:
                bounds[0] += 1
                return bounds[0] - 1
            bounds[1] -= 1
            return bounds[1]

    def helper() -> None:
        on_start()
        with context():
            while not done.is_set():
                if not loop_waits.wait(_POLL_SECONDS):
                    continue
                index = take(front=False)
                if index is None:
                    return
                try:
                    results[index] = tasks[index]()
                except BaseException as error:  # noqa: BLE001 - raised on the calling thread, as inline
                    failures.append(error)
                    return

    thread = threading.Thread(target=helper, name="lightning_complexity-helper", daemon=True)
    thread.start()
    try:
        while (index := take(front=True)) is not None:
            results[index] = tasks[index]()
    finally:
        done.set()
        thread.join()  # a task it began finishes first
    if failures:
        raise failures[0]
    return results
