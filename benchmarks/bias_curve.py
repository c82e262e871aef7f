"""Small-sample bias of the affinity score and the effective dimension (issue 16, item 4).

Three cases with an analytic large-n value, d = 128, n = 16 … 4096, several seeds each:

- ``relu_isotropic``: ReLU on N(0, I). ρ → 0.621093 (SPEC §1); the output's covariance is a
  multiple of I, so its effective dimension → d = 128.
- ``relu_anisotropic``: ReLU on N(0, diag(σ²)), variances log-spaced over three decades. ρ →
  0.621093 still (independent coordinates, ReLU positively homogeneous); D_eff → exp H(σ²/Σσ²).
- ``half_dead_linear``: y = x on half the units and 0 on the others (a ReLU layer whose units are
  either always on or dead). A PSD linear map, so ρ = 1 at every n.

for each covariance estimate the affinity score offers (``shrinkage="none"``, ``"ledoit_wolf"``,
``"auto"`` = Ledoit–Wolf when n < 10·d). Then, with ``--real`` (default on), the same comparison on
the activation sites of the small digits CNN and MLP (``digits_models.py``, trained and untrained):
subsamples of n = 32 … 256 against the site's score on all 1797 digits.

Usage::

    python benchmarks/bias_curve.py            # 6 seeds per n, writes the tables and the figure
    python benchmarks/bias_curve.py --seeds 2 --no-real

Output: ``benchmarks/results/bias_curve.md`` and ``docs/bias_curve.png`` (both quoted in
docs/metrics.md).

Example:
    >>> rows = measure("relu_isotropic", sizes=(64,), seeds=1, d=8)
    >>> sorted(rows[0]), rows[0]["n"]
    (['affinity', 'effective_dimension', 'n', 'participation_ratio'], 64)
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning_complexity.functional import affinity_score, effective_dimension, participation_ratio  # noqa: E402

RELU_GAUSSIAN_AFFINITY = 0.621093  # SPEC §1, the large-n limit for independent coordinates
SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SHRINKAGES = ("none", "auto", "ledoit_wolf")
RESULTS = Path(__file__).resolve().parent / "results" / "bias_curve.md"
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "bias_curve.png"
CASES = {
    "relu_isotropic": "ReLU on N(0, I)",
    "relu_anisotropic": "ReLU on N(0, diag σ²), σ² over 3 decades",
    "half_dead_linear": "y = x on half the units, 0 on the rest",
}


def _variances(case: str, d: int) -> torch.Tensor:
    return torch.logspace(0, -3, d, dtype=torch.float64) if case == "relu_anisotropic" else torch.ones(d, dtype=torch.float64)


def sample(case: str, seeds: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of shape ``(seeds, n, d)`` for one case, seeded by ``n``."""
    generator = torch.Generator().manual_seed(n)
    x = torch.randn(seeds, n, d, generator=generator, dtype=torch.float64) * _variances(case, d).sqrt()
    if case == "half_dead_linear":
        return x, x * (torch.arange(d) % 2).to(x.dtype)
    return x, torch.relu(x)


def references(case: str, d: int) -> tuple[float, float]:
    """Large-n affinity score and effective dimension of the output."""
    if case == "half_dead_linear":
        return 1.0, d / 2
    p = _variances(case, d) / _variances(case, d).sum()  # var ReLU(σz) = σ²(1/2 − 1/2π) ∝ σ²
    return RELU_GAUSSIAN_AFFINITY, math.exp(float(-(p * p.log()).sum()))


def measure(case: str, sizes=SIZES, seeds: int = 6, d: int = 128) -> list[dict]:
    """Per n: affinity scores ``{shrinkage: (seeds,)}``, the output's effective dimension and participation ratio."""
    rows = []
    for n in sizes:
        x, y = sample(case, seeds, n, d)
        rows.append({
            "n": n,
            "affinity": {shrinkage: affinity_score(x, y, shrinkage=shrinkage) for shrinkage in SHRINKAGES},
            "effective_dimension": effective_dimension(y),
            "participation_ratio": participation_ratio(y),
        })
    return rows


def _cell(values: torch.Tensor, digits: int = 3) -> str:
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}" if len(values) > 1 else f"{values.mean():.{digits}f}"


def table(rows: list[dict], case: str, d: int) -> list[str]:
    rho, dimension = references(case, d)
    lines = [
        f"### `{case}`: {CASES[case]} (ρ → {rho:g}, D_eff of y → {dimension:.1f})",
        "",
        "| n | n / d | ρ, none | ρ, auto | ρ, ledoit_wolf | bias none | bias auto | bias ledoit_wolf | D_eff of y | participation ratio of y |",
        "|---:|---:|---|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        scores = row["affinity"]
        biases = [f"{float(scores[s].mean()) - rho:+.4f}" for s in SHRINKAGES]
        lines.append(
            f"| {row['n']} | {row['n'] / d:.3g} | " + " | ".join(_cell(scores[s]) for s in SHRINKAGES) + " | "
            + " | ".join(biases) + f" | {_cell(row['effective_dimension'], 1)} | {_cell(row['participation_ratio'], 1)} |"
        )
    return lines + [""]


def real_sites(sizes=(32, 64, 128, 256), draws: int = 8) -> list[str]:
    """Subsampled scores of the digits nets' activation sites against their all-1797-digits value."""
    import digits_models

    models = digits_models.train_digits_models()
    lines = [
        "### Real activation sites: the digits CNN and MLP, trained (20 epochs) and untrained",
        "",
        f"Mean over {draws} random subsets of n digits, minus the site's score on all 1797 digits with shrinkage none "
        "(that reference is itself the none estimate at n/d ≥ 28, so it slightly favours none; the Ledoit–Wolf score "
        "on all 1797 is given beside it). Only n < 10·d is shown: above it auto equals none.",
        "",
        "| model | site | d | ρ(1797), none | ρ(1797), ledoit_wolf | " + " | ".join(f"n = {n}: none / auto" for n in sizes) + " |",
        "|---|---|---:|---:|---:|" + "---|" * len(sizes),
    ]
    closer = {n: [0, 0] for n in sizes}
    worst = {n: [0.0, 0.0] for n in sizes}
    for key in ("cnn", "mlp", "cnn_init", "mlp_init"):
        inputs = models["inputs"] if key.startswith("cnn") else models["inputs_flat"]
        for site, (x, y) in digits_models.capture_sites(models[key], inputs)["activations"].items():
            d = x.shape[1]
            reference = float(affinity_score(x, y))
            cells = []
            for n in sizes:
                if n >= 10 * d:
                    cells.append("–")
                    continue
                generator = torch.Generator().manual_seed(n)
                index = torch.stack([torch.randperm(x.shape[0], generator=generator)[:n] for _ in range(draws)])
                bias = [float(affinity_score(x[index], y[index], shrinkage=s).mean()) - reference for s in ("none", "auto")]
                closer[n][0 if abs(bias[0]) <= abs(bias[1]) else 1] += 1
                worst[n] = [max(worst[n][0], abs(bias[0])), max(worst[n][1], abs(bias[1]))]
                cells.append(f"{bias[0]:+.3f} / {bias[1]:+.3f}")
            lw = float(affinity_score(x, y, shrinkage="ledoit_wolf"))
            lines.append(f"| {key} | {site} | {d} | {reference:.3f} | {lw:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "| n | sites where none is closer / auto is closer | largest \\|bias\\|, none / auto |", "|---:|---|---|"]
    lines += [f"| {n} | {closer[n][0]} / {closer[n][1]} | {worst[n][0]:.3f} / {worst[n][1]:.3f} |" for n in sizes]
    return lines + [""]


def figure(measured: dict[str, list[dict]], d: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=100)
    for panel, case in zip(axes.flat, CASES):
        rows = measured[case]
        sizes = [row["n"] for row in rows]
        for shrinkage, marker in zip(SHRINKAGES, "osd"):
            means = [float(row["affinity"][shrinkage].mean()) for row in rows]
            spreads = [float(row["affinity"][shrinkage].std()) for row in rows]
            panel.errorbar(sizes, means, yerr=spreads, marker=marker, markersize=4, capsize=2, label=f'shrinkage="{shrinkage}"')
        panel.axhline(references(case, d)[0], color="black", linestyle="--", linewidth=1, label=f"large-n value {references(case, d)[0]:g}")
        panel.axvline(10 * d, color="grey", linestyle=":", linewidth=1, label="n = 10·d (auto switches)")
        panel.set(xscale="log", xlabel="samples n", ylabel="affinity score ρ", title=f"{CASES[case]}, d = {d}")
        panel.set_xticks(sizes, [str(n) for n in sizes], fontsize=7)
        panel.minorticks_off()
        panel.legend(fontsize=7)
    panel = axes.flat[3]
    for case, marker in (("relu_isotropic", "o"), ("relu_anisotropic", "s")):
        rows = measured[case]
        sizes = [row["n"] for row in rows]
        line, = panel.plot(sizes, [float(row["effective_dimension"].mean()) for row in rows], marker + "-", markersize=4, label=f"D_eff, {case}")
        panel.axhline(references(case, d)[1], color=line.get_color(), linestyle="--", linewidth=1)
    panel.plot(sizes, [min(n - 1, d) for n in sizes], color="grey", linestyle=":", label="rank bound min(n − 1, d)")
    panel.set(xscale="log", xlabel="samples n", ylabel="effective dimension of y", title="effective dimension (dashed: large-n values)")
    panel.set_xticks(sizes, [str(n) for n in sizes], fontsize=7)
    panel.minorticks_off()
    panel.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the digits nets' sites")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    measured = {case: measure(case, seeds=args.seeds, d=args.d) for case in CASES}
    lines = [
        "# Small-sample bias of the affinity score and the effective dimension (benchmarks/bias_curve.py)",
        "",
        f"d = {args.d}, {args.seeds} seeds per n (mean ± std over seeds), exact OT, relative jitter; "
        f"`auto` = Ledoit–Wolf for n < 10·d = {10 * args.d}. "
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
    ]
    for case in CASES:
        lines += table(measured[case], case, args.d)
    if args.real:
        lines += real_sites()
    lines.append(f"({time.perf_counter() - start:.0f} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    figure(measured, args.d, FIGURE)
    print("\n".join(lines))
    print(f"written {RESULTS} and {FIGURE}")


if __name__ == "__main__":
    main()
