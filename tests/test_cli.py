"""The console script end to end: the digits demo and the export from a checkpoint."""

from __future__ import annotations

import pytest

from lightning_complexity import MetricHistory
from lightning_complexity.cli import main

pytest.importorskip("sklearn")


def test_demo_writes_tensorboard_logs_and_a_history_for_every_activation(tmp_path, capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["demo", "--out", str(tmp_path / "runs"), "--epochs", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    log_dir = tmp_path / "runs" / "digits" / "version_0"
    assert str(log_dir / "complexity_history.csv") in printed and "tensorboard --logdir" in printed
    history = MetricHistory.from_csv(log_dir / "complexity_history.csv")
    assert MetricHistory.from_parquet(log_dir / "complexity_history.parquet") == history
    sites = ["features.relu1", "features.relu2", "features.relu3", "classifier.act"]
    assert history.sites("effective_dimension") == sites
    for site in sites:
        t, values = history.series("effective_dimension", site)
        assert t.tolist() == [0, 1, 2] and (values > 1).all()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert {f"complexity/effective_dimension/{s}" for s in sites} <= set(events.Tags()["scalars"])


def test_export_reads_the_history_from_a_checkpoint(tmp_path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_complexity import ComplexityMonitor
    from toy import ToyRegressor, toy_loaders, trainer

    monitor = ComplexityMonitor()
    pl.seed_everything(0, verbose=False)
    train, val = toy_loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, [monitor, checkpoint], max_epochs=2, enable_checkpointing=True).fit(ToyRegressor(), train, val)
    out = tmp_path / "history.json"
    assert main(["export", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(out)]) == 0
    assert MetricHistory.from_json(out) == monitor.history


def test_export_errors_are_clear(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path / "missing.ckpt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "holds no Lightning checkpoint" in capsys.readouterr().err
