"""Fit the toy model with the monitor, in one process or under DDP; rank 0 writes the history.

Run as a script (Lightning's DDP launcher re-runs this file for the other rank):
    python tests/scripts/ddp_fit.py OUT_DIR DEVICES MODE

MODE: ``tensor`` (a tensor probe of 101 rows: uneven shards), ``val`` (the default probe: captured
inside the validation pass, each rank its shard), ``failing`` (the monitor's own pass raises on
rank 1 at step 6 only: the ranks must agree and go on, not hang).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_complexity import ComplexityMonitor  # noqa: E402
from lightning_complexity.site_metrics import Betti  # noqa: E402
from test_monitor import TinyCNN  # noqa: E402
from toy import toy_loaders  # noqa: E402


def failing_on_rank_one(module: pl.LightningModule, batch) -> None:
    if module.global_rank == 1 and module.global_step == 6:
        raise RuntimeError("probe bomb on rank 1")
    module.validation_step(batch, 0)


def main(out_dir: str, devices: int, mode: str) -> None:
    pl.seed_everything(0, verbose=False)
    model = TinyCNN()
    # Frozen weights (lr = 0): DDP and one process then hold the very same model at every
    # measurement, so any difference in the history is the monitor's. (With learning, the float
    # summation order of the gradient all-reduce makes the weights drift apart by ~1e-7, which a
    # tiny network amplifies to ~1e-3 in two epochs: a property of DDP, not of the monitor.)
    model.lr = 0.0
    train, val = toy_loaders(batch_size=64 // devices)
    options: dict = {"probe": "val"}
    if mode == "tensor":
        options = {"probe": torch.randn(101, 6, generator=torch.Generator().manual_seed(7))}  # odd: uneven shards
    elif mode == "failing":
        options = {"probe": "val", "every_n_steps": 3, "probe_step": failing_on_rank_one}
    monitor = ComplexityMonitor(
        metrics=["affinity", "effective_dimension", "activation_pattern_entropy", Betti()],
        every_n_epochs=1,
        layer_algebra=False,
        **options,
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    if trainer.is_global_zero:
        monitor.history.to_csv(Path(out_dir) / f"history_{mode}_{devices}.csv")
        for message in caught:
            if str(message.message).startswith("lightning_complexity"):
                print("WARNING:", message.message)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
