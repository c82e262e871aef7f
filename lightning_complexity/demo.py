"""The demo: a small CNN on scikit-learn's bundled digits, trained with the monitor on.

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships inside scikit-learn (1,797 8×8
grey images of the digits 0–9). A few epochs take well under a minute on a laptop CPU.

Example::

    from lightning_complexity.demo import run_demo
    result = run_demo("runs", epochs=8)
    print(result.history_path, result.log_dir)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DemoResult", "DigitsClassifier", "DigitsDataModule", "demo_metrics", "run_demo"]


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn's digits as ``(N, 1, 8, 8)`` float tensors in [0, 1]; 80/20 split, fixed seed."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("the demo needs scikit-learn: pip install 'lightning_complexity[demo]'") from error
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        split = int(0.8 * len(labels))
        self.train_set = TensorDataset(images[order[:split]], labels[order[:split]])
        self.val_set = TensorDataset(images[order[split:]], labels[order[split:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Two batches of 180: the probe takes whole validation batches within its budget, so the
        # default max_samples=360 measures on the whole validation set (batches of 256 would leave
        # one batch, possibly the short one of 104).
        return DataLoader(self.val_set, batch_size=180)


class DigitsClassifier(pl.LightningModule):
    """Three conv blocks with ReLU, global pooling, and a GELU MLP head: four activation sites."""

    def __init__(self, width: int = 32, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, width // 2, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(width // 2, width, 3, padding=1),
                relu2=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(2),
                conv3=nn.Conv2d(width, 2 * width, 3, padding=1),
                relu3=nn.ReLU(),
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(fc1=nn.Linear(2 * width, 2 * width), act=nn.GELU(), fc2=nn.Linear(2 * width, 10))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def _step(self, batch: Any, stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = nn.functional.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/accuracy", accuracy, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def demo_metrics() -> list:
    """Every metric family, with linear regions kept cheap (4 segments, sampled: the head has a GELU)."""
    from lightning_complexity.site_metrics import Betti, EntropicComplexity, LinearRegions

    return ["affinity", "effective_dimension", "activation_pattern_entropy", EntropicComplexity(), Betti(), LinearRegions(num_segments=4, num_samples=256)]


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the monitor it used."""

    log_dir: Path
    history_path: Path
    monitor: Any
    val_accuracy: float


def run_demo(out: str | Path = "runs", epochs: int = 8, max_samples: int = 360, seed: int = 0, metrics: Any = None, quiet: bool = False) -> DemoResult:
    """Train the digits CNN with the monitor on; write TensorBoard logs and the exported history."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_complexity import ComplexityMonitor
    from lightning_complexity.export import write_table

    pl.seed_everything(seed, verbose=False)
    out = Path(out)
    logger = TensorBoardLogger(save_dir=str(out), name="digits")
    monitor = ComplexityMonitor(metrics=demo_metrics() if metrics is None else metrics, max_samples=max_samples, every_n_epochs=1)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=[monitor],
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        log_every_n_steps=5,
        deterministic=True,
    )
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(seed=seed))
    log_dir = Path(logger.log_dir)
    history_path = monitor.export(log_dir / "complexity_history.csv")
    monitor.history.to_parquet(log_dir / "complexity_history.parquet")
    write_table(monitor.history.power_law_fits(), log_dir / "complexity_power_laws.csv")  # atomic, spreadsheet-safe
    if monitor.layer_algebra is not None:
        write_table(monitor.layer_algebra.to_dataframe(), log_dir / "complexity_layer_algebra.csv")
    accuracy = float(trainer.callback_metrics.get("val/accuracy", torch.tensor(float("nan"))))
    return DemoResult(log_dir=log_dir, history_path=history_path, monitor=monitor, val_accuracy=accuracy)
