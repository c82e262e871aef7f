"""Every docstring example in the package runs and prints what it says (the examples are docs a
user copies; one that drifted from the code is a wrong number without a warning)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import lightning_complexity

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(lightning_complexity.__path__, prefix="lightning_complexity.") if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some examples show a documented warning
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (run pytest --doctest-modules {module.__file__})"
