"""DDP (gloo, 2 CPU processes): the monitor's history equals the single-process history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_complexity import MetricHistory

SCRIPT = Path(__file__).parent / "scripts" / "ddp_fit.py"
MOMENT_BASED = {"effective_dimension", "participation_ratio", "effective_dimension_ratio", "activation_pattern_entropy"}


def _run(out: Path, devices: int) -> MetricHistory:
    # A timeout guards against a hang in a collective.
    completed = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return MetricHistory.from_csv(out / f"history_{devices}.csv")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_process_history_equals_single_process(tmp_path) -> None:
    single = _run(tmp_path, 1).to_dataframe()
    ddp = _run(tmp_path, 2).to_dataframe()
    # Same rows (logged once, by rank 0), in the same order.
    assert ddp[["step", "epoch", "metric", "site"]].equals(single[["step", "epoch", "metric", "site"]])
    assert set(ddp["metric"]) >= MOMENT_BASED | {"affinity", "betti_0", "betti_1"}
    moment = ddp["metric"].isin(MOMENT_BASED)
    np.testing.assert_allclose(ddp["value"][moment], single["value"][moment], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ddp["value"][~moment], single["value"][~moment], rtol=1e-4, atol=1e-6)
    # Every measurement ran: at initialisation and after each of the 2 epochs.
    assert sorted(set(ddp["epoch"])) == [0, 1, 2]
