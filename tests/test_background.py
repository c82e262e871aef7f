"""Measurements computed off the training thread: same numbers, nothing lost, costs reported (issue 13)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_complexity import ComplexityMonitor, MetricHistory
from lightning_complexity.schedule import LogSchedule
from lightning_complexity.worker import MeasurementWorker
from toy import ToyRegressor, toy_loaders, trainer


def _fit(tmp_path, monitor, max_epochs=3, model=None, **kwargs):
    pl.seed_everything(0, verbose=False)
    model = model or ToyRegressor()
    train, val = toy_loaders()
    fitted = trainer(tmp_path, [monitor, *kwargs.pop("extra", [])], max_epochs=max_epochs, **kwargs)
    fitted.fit(model, train, val)
    return model, fitted


def test_background_values_equal_synchronous_ones_bit_for_bit(tmp_path) -> None:
    metrics = ["affinity", "effective_dimension", "activation_pattern_entropy", "entropic_complexity", "betti"]
    background = ComplexityMonitor(metrics=metrics, every_n_steps=5, background=True)
    inline = ComplexityMonitor(metrics=metrics, every_n_steps=5, background=False)
    _fit(tmp_path / "a", background)
    _fit(tmp_path / "b", inline)
    assert len(background.history) > 100
    assert background.history == inline.history  # every row, every bit (NaN equal to NaN)
    assert background.history.power_law_fits().equals(inline.history.power_law_fits())


def test_a_checkpoint_holds_the_rows_of_its_epoch(tmp_path) -> None:
    monitor = ComplexityMonitor(metrics="effective_dimension")
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    _fit(tmp_path, monitor, max_epochs=3, extra=[checkpoints], enable_checkpointing=True)
    for epoch, steps in ((0, [0, 8]), (1, [0, 8, 16]), (2, [0, 8, 16, 24])):
        (path,) = (tmp_path / "ckpt").glob(f"epoch={epoch}-*.ckpt")
        state = torch.load(path, weights_only=True)["callbacks"][monitor.state_key]
        assert MetricHistory.from_state_dict(state["history"]).steps() == steps


def test_rows_measured_before_a_crash_are_kept(tmp_path) -> None:
    monitor = ComplexityMonitor(metrics="effective_dimension")
    with pytest.raises(RuntimeError, match="boom"):
        _fit(tmp_path, monitor, model=ToyRegressor(fail_at_step=9))
    assert monitor.history.steps() == [0, 8]


def test_the_monitor_reports_its_own_cost(tmp_path, caplog) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = ComplexityMonitor(metrics="effective_dimension")
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, monitor, logger=logger)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("complexity_meta/loop_seconds", "complexity_meta/background_seconds"):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == monitor.history.steps()
        assert all(e.value >= 0 for e in logged)
    assert all(e.value > 0 for e in events.Scalars("complexity_meta/background_seconds"))
    line = [r.getMessage() for r in caplog.records if "measurements," in r.getMessage()]
    assert len(line) == 1 and line[0].startswith("lightning_complexity: 4 measurements, ") and "% of fit" in line[0]
    assert 0 < monitor.loop_seconds


def test_log_spaced_and_callable_schedules(tmp_path) -> None:
    log = ComplexityMonitor(metrics="effective_dimension", schedule="log", every_n_epochs=None)
    _fit(tmp_path / "log", log, max_epochs=3)  # 24 steps
    assert log.history.steps() == [0, 1, 2, 3, 4, 6, 7, 10, 13, 18, 24]
    assert log.power_law_axis == "step"
    custom = ComplexityMonitor(metrics="effective_dimension", schedule=lambda step: step in (5, 11), every_n_epochs=None, measure_at_start=False)
    _fit(tmp_path / "custom", custom, max_epochs=2)
    assert custom.history.steps() == [5, 11]
    assert LogSchedule(per_decade=2)(10) and not LogSchedule(per_decade=2)(5)


def test_schedule_and_every_n_steps_together_are_refused() -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="`schedule='log'`"):
        ComplexityMonitor(schedule="log", every_n_steps=3)
    with pytest.raises(MisconfigurationException, match="`schedule='often'`"):
        ComplexityMonitor(schedule="often")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_background_on_a_side_cuda_stream_equals_inline(tmp_path) -> None:
    def fit(background: bool) -> MetricHistory:
        monitor = ComplexityMonitor(metrics=["affinity", "effective_dimension", "activation_pattern_entropy"], every_n_steps=4, background=background)
        pl.seed_everything(0, verbose=False)
        train, val = toy_loaders()
        pl.Trainer(max_epochs=2, accelerator="gpu", devices=1, logger=False, callbacks=[monitor], enable_progress_bar=False,
                   enable_checkpointing=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0, deterministic=True).fit(ToyRegressor(dropout=0.0), train, val)
        return monitor.history

    background, inline = fit(True), fit(False)
    assert len(background) > 50 and background == inline


def test_the_worker_runs_jobs_in_order_and_its_thread_ends_when_the_queue_is_empty() -> None:
    worker = MeasurementWorker(background=True)
    release = threading.Event()
    order: list[int] = []

    def job(i: int):
        def run():
            if i == 0:
                release.wait(5)  # the rest queue up behind the first job
            order.append(i)
            if i == 3:
                raise ValueError("job 3 fails")
            return i * i

        return run

    futures = [worker.submit(job(i)) for i in range(6)]
    consumer = worker._thread
    assert consumer is not None and consumer.is_alive() and worker.pending == 6  # one consumer for the whole queue
    release.set()
    worker.wait()
    assert order == list(range(6))
    assert [f.result() for i, f in enumerate(futures) if i != 3] == [0, 1, 4, 16, 25]
    assert isinstance(futures[3].exception(), ValueError)  # kept in its future, the queue went on
    worker.shutdown()
    assert not consumer.is_alive() and worker._thread is None  # no idle thread: libgomp spins again (see worker.py)
    assert worker.submit(lambda: 7).result(timeout=5) == 7  # a new job starts a new consumer
    second = worker._thread
    worker.shutdown()
    assert worker._thread is None and (second is None or not second.is_alive())


def test_the_worker_thread_computes_on_one_torch_thread_and_leaves_the_callers_setting() -> None:
    before = torch.get_num_threads()
    worker = MeasurementWorker(background=True)
    inside = worker.submit(torch.get_num_threads).result(timeout=5)
    worker.shutdown()
    assert inside == 1
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or not hasattr(threading, "get_native_id"), reason="Linux scheduling policies")
def test_the_worker_computes_under_sched_idle_and_normally_while_the_loop_waits() -> None:
    worker = MeasurementWorker(background=True)
    started, release = threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait(5)
        return os.sched_getscheduler(0), worker.loop_waits.is_set()  # 0: the calling thread (Linux)

    future = worker.submit(job)
    started.wait(5)
    policy_before = os.sched_getscheduler(worker._thread_id)
    threading.Timer(0.2, release.set).start()
    worker.wait(urgent=True)  # the job finishes while the loop waits: normal policy
    worker.shutdown()
    if policy_before != os.SCHED_IDLE:
        pytest.skip("SCHED_IDLE not permitted here")
    assert future.result() == (os.SCHED_OTHER, True)
    assert not worker.loop_waits.is_set()  # cleared once the wait is over


def test_a_job_the_loop_waits_for_renders_no_figure_and_builds_none(monkeypatch) -> None:
    """At fit end (or a checkpoint) the training loop waits for the last job: its figures are put
    off until after fit, unbuilt, whatever the live budget; otherwise the budget decides."""
    import lightning_complexity.recording as recording
    from lightning_complexity.history import MetricHistory

    built, rendered = [], []

    class OneFigure:
        name = "one_figure"

        def figures(self, history):
            return {"f": lambda: built.append(len(history)) or object()}

    class Writer:
        def add_figure(self, tag, figure, global_step, close):
            rendered.append((tag, global_step))

    monkeypatch.setattr(recording, "_LIVE_FIGURE_SHARE", math.inf)  # any figure fits the budget
    pipeline = recording.MeasurementPipeline(
        [OneFigure()], MetricHistory(), background=False, log_figures=True, power_law=False,
        power_law_axis=lambda: "epoch", power_law_window=None, warn=lambda key, message: None,
    )
    pipeline._figures([Writer()], step=3, interval=1.0)
    assert rendered == [("complexity_figures/f", 3)] and built == [0] and pipeline.pending_figures == []
    pipeline.worker.loop_waits.set()
    pipeline._figures([Writer()], step=7, interval=1.0)
    assert rendered == [("complexity_figures/f", 3)] and built == [0]  # nothing drawn, nothing built
    (pending,) = pipeline.pending_figures
    assert pending.step == 7 and callable(pending.figure)


def test_run_groups_takes_from_the_back_on_a_helper_only_while_the_loop_waits() -> None:
    import time

    from lightning_complexity.helper_thread import run_groups

    loop_waits = threading.Event()
    ran_on: dict[int, str] = {}

    def task(i):
        def run():
            ran_on[i] = threading.current_thread().name
            time.sleep(0.02)
            return i * i
        return run

    assert run_groups([task(i) for i in range(6)], loop_waits, lambda: contextlib.nullcontext()) == [i * i for i in range(6)]
    assert set(ran_on.values()) == {threading.current_thread().name}  # nobody waits: one thread
    ran_on.clear()
    loop_waits.set()
    assert run_groups([task(i) for i in range(6)], loop_waits, lambda: contextlib.nullcontext()) == [i * i for i in range(6)]
    helper = sorted(i for i, name in ran_on.items() if name == "lightning_complexity-helper")
    assert helper and helper == list(range(6 - len(helper), 6))  # the helper's share is the tail

    def failing():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):  # a task's error comes out as it would inline
        run_groups([task(0), task(1), failing], loop_waits, lambda: contextlib.nullcontext())


def test_a_job_split_over_two_threads_gives_the_values_of_one_thread_bit_for_bit(tmp_path, monkeypatch) -> None:
    """Every job as if the loop always waited (the helper takes groups from the back) against
    inline jobs: the same history, bit for bit."""
    import lightning_complexity.recording as recording

    threads_used: set[str] = set()
    original = recording.run_groups

    def spying(tasks, *args, **kwargs):
        def wrap(task):
            def run():
                threads_used.add(threading.current_thread().name)
                return task()
            return run
        return original([wrap(t) for t in tasks], *args, **kwargs)

    monkeypatch.setattr(recording, "run_groups", spying)
    histories = {}
    for background in (False, True):
        monitor = ComplexityMonitor(background=background, log_figures=False)
        if background:
            monitor._pipeline.worker.loop_waits.set()
            monitor._pipeline.worker.loop_waits.clear = lambda: None  # "the loop always waits"
        _fit(tmp_path / str(background), monitor)
        histories[background] = monitor.history
    assert "lightning_complexity-helper" in threads_used
    assert len(histories[True]) > 0 and histories[True] == histories[False]
