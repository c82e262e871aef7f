"""DDP (gloo, 2 CPU processes): the monitor's history equals the single-process history, and one
failing rank neither hangs the job nor hides its error."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_complexity import MetricHistory

SCRIPT = Path(__file__).parent / "scripts" / "ddp_fit.py"
MOMENT_BASED = {"effective_dimension", "participation_ratio", "effective_dimension_ratio", "activation_pattern_entropy", "samples"}


def _run(out: Path, devices: int, mode: str) -> tuple[MetricHistory, str]:
    # A timeout guards against a hang in a collective.
    completed = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), mode], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return MetricHistory.from_csv(out / f"history_{mode}_{devices}.csv"), completed.stdout


def _measured(history: MetricHistory):
    frame = history.to_dataframe()
    return frame[frame.site != "trainer"].reset_index(drop=True)  # context rows are each rank's own logs


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["tensor", "val"])
def test_two_process_history_equals_single_process(tmp_path, mode) -> None:
    single = _measured(_run(tmp_path, 1, mode)[0])
    ddp = _measured(_run(tmp_path, 2, mode)[0])
    # Same rows (logged once, by rank 0), in the same order.
    assert ddp[["step", "epoch", "metric", "site"]].equals(single[["step", "epoch", "metric", "site"]])
    assert set(ddp["metric"]) >= MOMENT_BASED | {"affinity", "betti_0", "betti_1"}
    moment = ddp["metric"].isin(MOMENT_BASED)
    np.testing.assert_allclose(ddp["value"][moment], single["value"][moment], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ddp["value"][~moment], single["value"][~moment], rtol=1e-4, atol=1e-6)
    # Every measurement ran: at initialisation and after each of the 2 epochs.
    assert sorted(set(ddp["epoch"])) == [0, 1, 2]
    if mode == "val":  # the 128 validation rows, gathered from two shards of 64
        assert (ddp[ddp.metric == "samples"]["value"] == 128).all()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_rank_neither_hangs_nor_hides_its_error(tmp_path) -> None:
    history, printed = _run(tmp_path, 2, "failing")
    frame = _measured(history)
    at_6 = frame[frame.step == 6]
    assert len(at_6) and at_6["value"].isna().all()  # the failed step is visible as NaN rows
    assert frame[frame.step != 6]["value"].notna().all()  # every other measurement went on, on both ranks
    assert "rank 1: RuntimeError: probe bomb on rank 1" in printed  # rank 0 shows rank 1's error
    assert "1 of" in printed and "failed (steps 6)" in printed
    assert not math.isnan(frame[(frame.step == 8) & (frame.metric == "effective_dimension")]["value"].iloc[0])
