"""Configuration errors that name the argument, the value and what is accepted."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities.exceptions import MisconfigurationException

__all__ = ["bad_argument"]


def bad_argument(argument: str, value: Any, accepted: str) -> MisconfigurationException:
    """Build the error raised for a bad constructor or setup argument.

    Example:
        >>> str(bad_argument("every_n_epochs", -1, "an int >= 0"))
        '`every_n_epochs=-1` is not accepted: expected an int >= 0.'
    """
    return MisconfigurationException(f"`{argument}={value!r}` is not accepted: expected {accepted}.")
