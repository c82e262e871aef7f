"""Small models and data for the monitor's integration tests (fast on a 2-core CPU)."""

from __future__ import annotations

from collections import OrderedDict

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ToyRegressor(pl.LightningModule):
    """MLP with a reused in-place ReLU (two sites), a Tanh, and dropout (to prove the RNG is untouched)."""

    def __init__(self, width: int = 16, fail_at_step: int | None = None, dropout: float = 0.1, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            OrderedDict(fc1=nn.Linear(6, width), act=nn.Tanh(), drop=nn.Dropout(dropout), fc2=nn.Linear(width, width))
        )
        self.relu = nn.ReLU(inplace=True)
        self.fc3 = nn.Linear(width, width)
        self.head = nn.Linear(width, 1)
        self.fail_at_step = fail_at_step

    def forward(self, x):
        h = self.relu(self.net(x))
        return self.head(self.relu(self.fc3(h)))

    def training_step(self, batch, batch_idx):
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def toy_data(n: int = 256, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, :1] * x[:, 1:2]).tanh() + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def toy_loaders(shuffle: bool = False, batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(toy_data(256, 0), batch_size=batch_size, shuffle=shuffle),
        DataLoader(toy_data(128, 1), batch_size=64),
    )


def trainer(tmp_path, callbacks, max_epochs: int = 3, logger=False, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        deterministic=True,
        **kwargs,
    )
