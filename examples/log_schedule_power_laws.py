"""Log-spaced measurements and the power-law fits of every curve.

Power-law fits want points evenly spread in ln t: `schedule="log"` measures at steps 1, 2, 3, 4,
6, 7, 10, 13, 18, … (dense early, sparse late). `fit.conclusive` says whether an exponent can be
read (enough points, a good fit, an interval that excludes 0).

    python examples/log_schedule_power_laws.py [--epochs 6]
"""

from __future__ import annotations

import argparse

import lightning.pytorch as L

from lightning_complexity import ComplexityMonitor
from lightning_complexity.demo import DigitsClassifier, DigitsDataModule


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    monitor = ComplexityMonitor(metrics=["affinity", "effective_dimension"], schedule="log", every_n_epochs=None)
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[monitor], logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(seed=0))
    print("measured at steps:", monitor.history.steps())
    fits = monitor.history.power_law_fits(by="step")
    print(fits[fits.metric.isin(["affinity", "effective_dimension"])][["metric", "site", "exponent", "r2", "n_points", "conclusive"]].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
