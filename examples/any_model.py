"""A LightningModule as people write it: no forward, dict batches, functional activations.

The monitor needs none of `forward`, tensor batches or `torch.nn` activation modules: an epoch's
measurement is captured inside the trainer's own validation pass, and `F.gelu` inside a module is
a site like any activation module.

    python examples/any_model.py [--epochs 3]
"""

from __future__ import annotations

import argparse

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_complexity import ComplexityMonitor


class Pairs(Dataset):
    """Dict items: two inputs and a target."""

    def __init__(self, count: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(count, 16, generator=g)
        self.mask = (torch.rand(count, 16, generator=g) > 0.2).float()
        self.y = (self.x * self.mask).sum(1, keepdim=True).tanh()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "mask": self.mask[index], "y": self.y[index]}


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + F.gelu(self.fc(h))  # a functional activation: site "net.1.gelu()"


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), Block(32), Block(32), nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self.net(batch["x"] * batch["mask"]), batch["y"])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self.net(batch["x"] * batch["mask"]), batch["y"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    monitor = ComplexityMonitor()
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[monitor], logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(Regressor(), DataLoader(Pairs(512, 0), batch_size=64, shuffle=True), DataLoader(Pairs(256, 1), batch_size=64))
    frame = monitor.history.to_dataframe()
    print("sites:", monitor.sites["affinity"])
    print(frame[frame.metric == "affinity"].pivot(index="epoch", columns="site", values="value").round(4))


if __name__ == "__main__":
    main()
