"""A zoo of LightningModules in the styles real users write, and an independent reference.

Each style is fitted with ``ComplexityMonitor()`` at its defaults; the tests then compare the
monitor's last measurement with :func:`reference_values`, computed from raw activations that
hooks written here (not the package's) collect on the same validation rows with the final weights.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_complexity import ComplexityMonitor
from lightning_complexity.functional import activation_pattern_entropy, affinity_score, effective_dimension

# ---------------------------------------------------------------------------- data


def regression_data(n: int, features: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, :1] * x[:, 1:2]).tanh() + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class DictDataset(Dataset):
    """Items are dicts, as HuggingFace-style pipelines yield them."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        x, y = self.base[index]
        return {"features": x, "target": y}


def sequence_data(n: int, tokens: int = 6, width: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, tokens, width, generator=g)
    return TensorDataset(x, x.mean(dim=(1, 2), keepdim=False).unsqueeze(1))


def image_data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    return TensorDataset(x, x.mean(dim=(1, 2, 3)).unsqueeze(1))


def token_data(n: int, tokens: int = 12, vocab: int = 50, seed: int = 0) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, tokens), generator=g)
    lengths = torch.randint(tokens // 2, tokens + 1, (n,), generator=g)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    labels = (ids[:, 0] % 2).long()
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]


# ---------------------------------------------------------------------------- fitting


def fit(model: pl.LightningModule, train: Any, val: Any, tmp_path, *, monitor: ComplexityMonitor | None = None, max_epochs: int = 2, batch_size: int = 32, **trainer_kwargs) -> tuple[ComplexityMonitor, list[str]]:
    """Fit with a monitor at its defaults; returns it and the monitor's warnings."""
    pl.seed_everything(0, verbose=False)
    monitor = monitor or ComplexityMonitor()
    train_loader = train if isinstance(train, DataLoader) else DataLoader(train, batch_size=batch_size, shuffle=True)
    val_loader = val if isinstance(val, DataLoader) or val is None else DataLoader(val, batch_size=batch_size)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train_loader, val_loader)
    return monitor, [str(w.message) for w in caught if str(w.message).startswith("lightning_complexity")]


def latest(monitor: ComplexityMonitor) -> dict[tuple[str, str], float]:
    last = monitor.history.steps()[-1]
    return {(r.metric, r.site): r.value for r in monitor.history if r.step == last}


# ---------------------------------------------------------------------------- the reference


def reference_values(pre: Tensor, post: Tensor) -> dict[str, float]:
    """SPEC values of one site from its raw input and output, samples on axis 0 and features on
    axis ``-1`` for sequences / ``1`` for maps (the test moves them there itself)."""
    pre, post = pre.double(), post.double()
    if pre.ndim == 4:  # (N, C, H, W): units are channels at positions; features are channels
        pre_mean, post_mean = pre.mean(dim=(2, 3)), post.mean(dim=(2, 3))
    elif pre.ndim == 3:  # (N, T, D)
        pre_mean, post_mean = pre.mean(dim=1), post.mean(dim=1)
    else:
        pre_mean, post_mean = pre, post
    return {
        "affinity": affinity_score(pre_mean, post_mean).item(),
        "effective_dimension": effective_dimension(post_mean).item(),
        "activation_pattern_entropy": activation_pattern_entropy(pre.reshape(pre.shape[0], -1)).item(),
    }


class RawHooks:
    """Test-side hooks: the raw input and output of some modules, over several forwards.

    ``move`` turns each captured tensor into samples-first layout (e.g. ``lambda t: t.transpose(0, 1)``
    for sequence-first tensors).
    """

    def __init__(self, modules: dict[str, nn.Module], move: Callable[[Tensor], Tensor] = lambda t: t) -> None:
        self.seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in modules}
        self.handles = [m.register_forward_hook(self._hook(name, move), with_kwargs=False) for name, m in modules.items()]
        self._pre = {}
        self.handles += [m.register_forward_pre_hook(self._pre_hook(name, move)) for name, m in modules.items()]

    def _pre_hook(self, name, move):
        def hook(module, args):
            self._pre[name] = move(args[0]).detach().clone()

        return hook

    def _hook(self, name, move):
        def hook(module, args, output):
            self.seen[name].append((self._pre.pop(name), move(output).detach().clone()))

        return hook

    def values(self) -> dict[str, dict[str, float]]:
        result = {}
        for name, pairs in self.seen.items():
            pre = torch.cat([p for p, _ in pairs])
            post = torch.cat([q for _, q in pairs])
            result[name] = reference_values(pre, post)
        return result

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def assert_matches(monitor: ComplexityMonitor, expected: dict[str, dict[str, float]], rel: float = 1e-6, abs_: float = 1e-9) -> None:
    """Every expected (site, metric) value equals the monitor's last measurement."""
    got = latest(monitor)
    for site, values in expected.items():
        for metric, value in values.items():
            assert (metric, site) in got, f"{metric} missing at {site}; sites: {sorted({s for _, s in got})}"
            measured = got[(metric, site)]
            assert math.isfinite(measured), (metric, site, measured)
            assert abs(measured - value) <= max(abs_, rel * abs(value)), (metric, site, measured, value)


# ---------------------------------------------------------------------------- styles


class _Regression(pl.LightningModule):
    """Steps through ``forward``; the styles below override what they do differently."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))


class NoForward(_Regression):
    """The most common Lightning style: no forward, the steps call ``self.net``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))


class DictBatches(NoForward):
    """Dict batches, keys no default extraction knows."""

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.net(batch["features"]), batch["target"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self.net(batch["features"]), batch["target"]))


class TwoInputs(NoForward):
    """``forward(x, mask)``: two model inputs."""

    def forward(self, x, mask):
        return self.net(x * mask)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x, (x > -1.5).float()), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x, (x > -1.5).float()), y))


class FunctionalReLU(_Regression):
    """Activations written as ``F.relu`` and ``x.relu()`` inside forward: no activation module."""

    def __init__(self) -> None:
        super().__init__()
        reference = mlp()
        self.fc1, self.fc2, self.fc3 = reference[0], reference[2], reference[4]

    def forward(self, x):
        return self.fc3(self.fc2(F.relu(self.fc1(x))).relu())


class MyReLU(nn.ReLU):
    """A subclass of a torch activation."""


class Swish(nn.Module):
    """A user-written parameter-free activation module."""

    def forward(self, x):
        return x * torch.sigmoid(x)


class CustomActivations(NoForward):
    """MyReLU(nn.ReLU), a user Swish, HuggingFace's GELUActivation and nn.Mish in one model."""

    def __init__(self) -> None:
        super().__init__()
        from transformers.activations import GELUActivation

        torch.manual_seed(2)
        self.net = nn.Sequential(
            nn.Linear(8, 16), MyReLU(), nn.Linear(16, 16), Swish(), nn.Linear(16, 16), GELUActivation(), nn.Linear(16, 16), nn.Mish(), nn.Linear(16, 1)
        )


class SequenceModel(_Regression):
    """``nn.TransformerEncoder`` with its default functional ReLU, sequence-first or batch-first."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 1)
        self.batch_first = batch_first

    def forward(self, x):  # x: (N, T, D) from the loader
        h = self.encoder(x if self.batch_first else x.transpose(0, 1))
        h = h if self.batch_first else h.transpose(0, 1)
        return self.head(h.mean(dim=1))


class SmallCNN(_Regression):
    """A CNN, optionally in channels-last memory format."""

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 1)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).mean(dim=(2, 3)))


class HuggingFaceClassifier(pl.LightningModule):
    """A transformers model from a tiny config (random weights): dict batches, no forward."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(5)
        if kind == "bert":
            from transformers import BertConfig, BertForSequenceClassification

            config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, max_position_embeddings=32, num_labels=2)
            self.model = BertForSequenceClassification(config)
        else:
            from transformers import GPT2Config, GPT2ForSequenceClassification

            config = GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=32, num_labels=2, pad_token_id=0)
            self.model = GPT2ForSequenceClassification(config)

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.model(**batch).loss)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)
