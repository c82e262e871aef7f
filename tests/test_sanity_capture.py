"""The start-of-fit measurement reuses the batches of Lightning's sanity check.

The sanity check runs the first validation batches with the initial weights, exactly what the
monitor's own pass at step 0 would run for the same probe batches; the own pass then runs only
the probe batches the sanity check did not reach. The values must be those of a fit without a
sanity check, bit for bit.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from lightning_complexity import ComplexityMonitor
from tests.toy import ToyRegressor, toy_loaders


class CountingRegressor(ToyRegressor):
    """Counts the validation batches that run before the first training batch."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.before_training = 0
        self._training_started = False

    def on_train_batch_start(self, batch, batch_idx):
        self._training_started = True

    def validation_step(self, batch, batch_idx):
        if not self._training_started:
            self.before_training += 1
        return super().validation_step(batch, batch_idx)


def fit(tmp_path, sanity_steps: int, **monitor_kwargs) -> tuple[ComplexityMonitor, CountingRegressor]:
    pl.seed_everything(0, verbose=False)
    monitor = ComplexityMonitor(max_samples=128, log_figures=False, power_law=False, layer_algebra=False, **monitor_kwargs)
    model = CountingRegressor()
    train, val = toy_loaders()  # 128 validation rows in 2 batches of 64: the probe is both
    val = type(val)(val.dataset, batch_size=32)  # 4 batches of 32
    pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[monitor], enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
               num_sanity_val_steps=sanity_steps, deterministic=True).fit(model, train, val)
    return monitor, model


@pytest.mark.parametrize("sanity_steps", [2, -1])
def test_the_start_of_fit_measurement_equals_one_without_sanity_check(tmp_path, sanity_steps) -> None:
    reference, plain = fit(tmp_path, 0)
    monitor, counted = fit(tmp_path, sanity_steps)
    assert plain.before_training == 4  # the own pass over the 4 probe batches
    # The sanity check's batches are not run again: 2 + the 2 others, or all 4 and no own pass.
    assert counted.before_training == 4
    assert monitor.history.steps() == reference.history.steps() == [0, 8]
    assert len(monitor.history) > 10 and monitor.history == reference.history


def test_without_a_start_measurement_the_sanity_check_leaves_no_samples_behind(tmp_path) -> None:
    reference, _ = fit(tmp_path, 0, measure_at_start=False)
    monitor, counted = fit(tmp_path, 2, measure_at_start=False)
    assert counted.before_training == 2  # only the sanity check
    assert monitor.history.steps() == [8]
    assert monitor.history == reference.history
