"""Shared test fixtures: the reference cases in tests/data and small helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

#: the reference cases (a copy of the project's shared fixtures, with their README), kept inside
#: the project so that a clone alone runs them.
FIXTURES_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the reference cases (``cases.json`` and the ``.npz`` files).

    A missing fixture is a failure, not a skip: a suite that silently skips its references proves
    nothing.
    """
    if not (FIXTURES_DIR / "cases.json").is_file():
        pytest.fail(f"reference fixtures missing: {FIXTURES_DIR / 'cases.json'} is not in the checkout")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def fixture_cases(fixtures_dir: Path) -> dict:
    """The parsed ``cases.json``."""
    cases = json.loads((fixtures_dir / "cases.json").read_text())
    missing = [c["file"] for family in cases.values() if isinstance(family, dict) for c in family.get("cases", []) if not (fixtures_dir / c["file"]).is_file()]
    if missing:
        pytest.fail(f"reference fixture files missing from {fixtures_dir}: {missing}")
    return cases


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for a module of many tiny tensor problems.

    On a small shared CPU, multi-threaded tiny kernels spin-wait on busy cores (measured 10-60x
    slower under load: Sinkhorn 7.5 s instead of 0.13 s); results do not depend on the thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
