"""Reading a monitor's history back from where a run left it (a Lightning checkpoint).

Example::

    from lightning_complexity.export import load_history
    history = load_history("runs/digits/version_0/checkpoints/epoch=4-step=115.ckpt")
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_complexity.history import MetricHistory

__all__ = ["load_history"]


def load_history(path: str | Path) -> MetricHistory:
    """The :class:`MetricHistory` stored by ``ComplexityMonitor`` in a checkpoint file.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file holds no monitor state.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        checkpoints = sorted(path.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not checkpoints:
            raise ValueError(f"{path} holds no Lightning checkpoint (*.ckpt)")
        path = checkpoints[-1]
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    for key, state in states.items():
        if key.startswith("ComplexityMonitor") and isinstance(state, dict) and "history" in state:
            return MetricHistory.from_state_dict(state["history"])
    raise ValueError(f"{path} holds no ComplexityMonitor state (was the monitor attached during that fit?)")
