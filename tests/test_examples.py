"""The examples run as a new user would run them, and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> str:
    completed = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_any_model_example_measures_the_functional_sites() -> None:
    out = _run("any_model.py", "--epochs", "2")
    assert "sites: ['net.1.gelu()', 'net.2.gelu()']" in out


@pytest.mark.slow
def test_tiny_bert_example_measures_every_activation() -> None:
    pytest.importorskip("transformers")
    out = _run("huggingface_tiny_bert.py", "--epochs", "1")
    assert out.count("(GELUActivation): affinity") == 2 and "(Tanh): affinity" in out


@pytest.mark.slow
def test_log_schedule_example_prints_fits() -> None:
    out = _run("log_schedule_power_laws.py", "--epochs", "2")
    assert "measured at steps: [0, 1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, 42]" in out
    assert "conclusive" in out
