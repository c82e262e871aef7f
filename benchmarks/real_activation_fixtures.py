"""Write the real-activation test fixtures in ``tests/data/real_activations/``.

The activation sites (input and output of every ``nn.ReLU``/``GELU``/``Tanh``) of the small digits
CNN and MLP (``digits_models.py``), trained 20 epochs and untrained, on a seeded subset of 256
digits, stored as float32 in one compressed ``.npz`` per model (keys ``<site>/x`` and
``<site>/y``, read with ``numpy.load(allow_pickle=False)``), plus ``manifest.json`` with each site's
width and its exact affinity score (float64, exact OT, relative jitter, no shrinkage) computed here.
The tests recompute the exact score and compare the approximations (``ot="sinkhorn"``,
``ot="paired"``) with it.

Usage::

    python benchmarks/real_activation_fixtures.py      # about a minute (training)

Example:
    >>> subset(1797, 4)
    tensor([1327, 1587, 1032, 1724])
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits_models  # noqa: E402

from lightning_complexity.functional import affinity_score  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_activations"
SAMPLES = 256


def subset(total: int, n: int) -> torch.Tensor:
    """The seeded subset of digits the fixtures hold (the same on every machine)."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(16))[:n]


def main() -> None:
    torch.set_num_threads(2)
    models = digits_models.train_digits_models(epochs=20, seed=0)
    chosen = subset(models["inputs"].shape[0], SAMPLES)
    manifest = {
        "samples": SAMPLES,
        "source": "benchmarks/real_activation_fixtures.py (digits_models.train_digits_models(epochs=20, seed=0))",
        "train_accuracy": models["accuracy"],
        "torch": torch.__version__,
        "models": {},
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for key in ("cnn", "mlp", "cnn_init", "mlp_init"):
        inputs = (models["inputs"] if key.startswith("cnn") else models["inputs_flat"])[chosen]
        sites = digits_models.capture_sites(models[key], inputs)["activations"]
        arrays, entries = {}, {}
        for site, (x, y) in sites.items():
            x32, y32 = x.to(torch.float32), y.to(torch.float32)
            arrays[f"{site}/x"], arrays[f"{site}/y"] = x32.numpy(), y32.numpy()
            exact = affinity_score(x32.double(), y32.double(), ot="exact").item()
            entries[site] = {"width": int(x.shape[1]), "exact_affinity": exact}
        np.savez_compressed(FIXTURES / f"{key}.npz", **arrays)
        manifest["models"][key] = entries
        print(key, {site: round(entry["exact_affinity"], 4) for site, entry in entries.items()})
    (FIXTURES / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(path.stat().st_size for path in FIXTURES.iterdir())
    print(f"written {FIXTURES} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
