"""Small CNN and MLP trained briefly on scikit-learn's digits, and their captured sites.

Shared by the measurements behind issue 16 (``entropic_defaults.py``, ``ot_accuracy.py``) and by
the script that writes the real-activation test fixtures (``tests/data/real_activations``). Every
run is seeded, so the captured tensors are the same on every machine with the same library
versions (bit-identical only on the same CPU kind: float32 training is not).

The hooks here are this script's own (a forward pre-hook and a forward hook per module), not the
monitor's capture, so the measurements do not depend on it. Reduction follows SPEC §0's default:
``(N, C, H, W)`` tensors are averaged over space to ``(N, C)``.

Two kinds of sites:

- *activation sites* (every ``nn.ReLU``/``GELU``/``Tanh``): the activation's input and output,
  what the affinity score sees;
- *blocks* (every module with an activation module as a direct child, as
  ``site_metrics.entropic.blocks_with_activations`` selects): the block's input and output, what
  the entropic complexity sees.

Example:
    >>> models = train_digits_models(epochs=1)
    >>> sites = capture_sites(models["mlp"], models["inputs_flat"][:64])
    >>> sorted(sites["activations"])[:2], sites["activations"]["b1.act"][0].shape
    (['b1.act', 'b2.act'], torch.Size([64, 64]))
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

__all__ = ["capture_sites", "digits_data", "make_cnn", "make_mlp", "train_digits_models"]

_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Tanh)


def digits_data() -> tuple[Tensor, Tensor]:
    """The 1797 digits as float32 images ``(N, 1, 8, 8)`` in [0, 1] and int64 labels."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.int64)


def _block(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class DigitsCNN(nn.Module):
    """Four conv blocks and one dense block on 8 × 8 images; blocks are named ``c1 … c4, fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = _block(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.c2 = _block(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.c3 = _block(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.c4 = _block(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = _block(nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU())
        self.out = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.fc(self.c4(self.c3(self.c2(self.c1(x))))))


class DigitsMLP(nn.Module):
    """Five dense blocks 64 → 64 → 32 → 16 → 4 → 16 (ReLU, GELU, ReLU, Tanh, ReLU) and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        widths = [64, 64, 32, 16, 4, 16]
        activations = [nn.ReLU, nn.GELU, nn.ReLU, nn.Tanh, nn.ReLU]
        for i, activation in enumerate(activations):
            block = nn.Sequential()
            block.add_module("linear", nn.Linear(widths[i], widths[i + 1]))
            block.add_module("act", activation())
            self.add_module(f"b{i + 1}", block)
        self.out = nn.Linear(widths[-1], 10)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, 6):
            x = getattr(self, f"b{i}")(x)
        return self.out(x)


def make_cnn(seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN()


def make_mlp(seed: int = 0) -> DigitsMLP:
    torch.manual_seed(seed)
    return DigitsMLP()


def _train(model: nn.Module, inputs: Tensor, labels: Tensor, epochs: int, seed: int) -> float:
    """Adam, batch 64, seeded shuffling; returns the training accuracy at the end."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(inputs.shape[0], generator=generator)
        for start in range(0, inputs.shape[0], 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimiser.step()
    with torch.no_grad():
        return float((model(inputs).argmax(-1) == labels).float().mean())


def train_digits_models(epochs: int = 20, seed: int = 0) -> dict:
    """Seeded CNN and MLP trained ``epochs`` epochs on all 1797 digits, plus untrained twins.

    Returns a dict with ``cnn``, ``mlp`` (trained), ``cnn_init``, ``mlp_init`` (same seeds,
    untrained), ``inputs`` ``(1797, 1, 8, 8)``, ``inputs_flat`` ``(1797, 64)`` and ``accuracy``.
    """
    images, labels = digits_data()
    flat = images.flatten(1)
    cnn, mlp = make_cnn(seed), make_mlp(seed)
    accuracy = {"cnn": _train(cnn, images, labels, epochs, seed), "mlp": _train(mlp, flat, labels, epochs, seed)}
    return {
        "cnn": cnn.eval(),
        "mlp": mlp.eval(),
        "cnn_init": make_cnn(seed).eval(),
        "mlp_init": make_mlp(seed).eval(),
        "inputs": images,
        "inputs_flat": flat,
        "accuracy": accuracy,
    }


def _reduce(tensor: Tensor) -> Tensor:
    """SPEC §0 default: ``(N, C, H, W)`` → mean over space ``(N, C)``; ``(N, C)`` as is; float64."""
    tensor = tensor.detach().to(torch.float64)
    return tensor.mean(dim=(2, 3)) if tensor.ndim == 4 else tensor.reshape(tensor.shape[0], -1)


def capture_sites(model: nn.Module, inputs: Tensor) -> dict[str, dict[str, tuple[Tensor, Tensor]]]:
    """Inputs and outputs of every activation module and every block, reduced to ``(n, d)``.

    Returns ``{"activations": {name: (x, y)}, "blocks": {name: (x, y)}}`` in float64.
    """
    kept: dict[str, dict[str, tuple[Tensor, Tensor]]] = {"activations": {}, "blocks": {}}
    handles = []

    def hook(kind: str, name: str):
        def keep(module: nn.Module, args: tuple, output: Tensor) -> None:
            kept[kind][name] = (_reduce(args[0]), _reduce(output))

        return keep

    for name, module in model.named_modules():
        if isinstance(module, _ACTIVATIONS):
            handles.append(module.register_forward_hook(hook("activations", name)))
        elif name and any(isinstance(child, _ACTIVATIONS) for child in module.children()):
            handles.append(module.register_forward_hook(hook("blocks", name)))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return kept
