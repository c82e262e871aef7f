"""Shared test fixtures: the reference cases in ../shared/fixtures and small helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

_DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _fixtures_root() -> Path:
    return Path(os.environ.get("LIGHTNING_COMPLEXITY_FIXTURES", _DEFAULT_FIXTURES))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the shared reference cases (``cases.json`` and the ``.npz`` files)."""
    root = _fixtures_root()
    if not (root / "cases.json").is_file():
        pytest.skip(f"reference fixtures not found at {root} (set LIGHTNING_COMPLEXITY_FIXTURES)")
    return root


@pytest.fixture(scope="session")
def fixture_cases(fixtures_dir: Path) -> dict:
    """The parsed ``cases.json``."""
    return json.loads((fixtures_dir / "cases.json").read_text())


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
