"""Switch the monitor on from the environment, without touching the training code.

Lightning's ``Trainer`` calls every factory registered under the entry-point group
``lightning.pytorch.callbacks_factory`` when it is built and appends the callbacks they return
(``lightning/pytorch/trainer/connectors/callback_connector.py``). This package registers
:func:`callbacks_from_environment` there (``pyproject.toml``). It returns **no callback** unless
the user opts in, so installing the package changes nobody's training:

* ``LIGHTNING_COMPLEXITY=1`` (or ``true``, ``yes``, ``on``) adds a
  :class:`~lightning_complexity.ComplexityMonitor` with its defaults to every Trainer built in
  that process. Unset, empty, ``0``, ``false``, ``no`` or ``off`` add nothing; any other value
  adds nothing and warns.
* ``LIGHTNING_COMPLEXITY_METRICS=affinity,effective_dimension`` — comma-separated metric names
  (default: the monitor's defaults). An unknown name raises an error naming the variable.
* ``LIGHTNING_COMPLEXITY_EXPORT=path/history.parquet`` — write the history there at the end of
  fit (``.csv``, ``.json`` or ``.parquet``).

Do not also add a ``ComplexityMonitor`` in code with the same metrics: Lightning refuses two
stateful callbacks with the same state key.

Example::

    $ LIGHTNING_COMPLEXITY=1 LIGHTNING_COMPLEXITY_METRICS=affinity,effective_dimension python train.py
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["ENABLE_VARIABLE", "ENTRY_POINT_GROUP", "EXPORT_VARIABLE", "METRICS_VARIABLE", "callbacks_from_environment"]

#: the entry-point group Lightning reads callback factories from.
ENTRY_POINT_GROUP = "lightning.pytorch.callbacks_factory"
ENABLE_VARIABLE = "LIGHTNING_COMPLEXITY"
METRICS_VARIABLE = "LIGHTNING_COMPLEXITY_METRICS"
EXPORT_VARIABLE = "LIGHTNING_COMPLEXITY_EXPORT"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})


def callbacks_from_environment(environ: Mapping[str, str] | None = None) -> list[Any]:
    """The callbacks the environment asks for: ``[ComplexityMonitor(...)]`` when opted in, else ``[]``.

    Args:
        environ: the variables to read (default: ``os.environ``).

    Raises:
        MisconfigurationException: ``LIGHTNING_COMPLEXITY_METRICS`` names an unknown metric, or
            ``LIGHTNING_COMPLEXITY_EXPORT`` has a suffix other than ``.csv``, ``.json``,
            ``.parquet`` (the message names the variable and its value).

    Example:
        >>> [type(c).__name__ for c in callbacks_from_environment({"LIGHTNING_COMPLEXITY": "1"})]
        ['ComplexityMonitor']
        >>> callbacks_from_environment({"LIGHTNING_COMPLEXITY": "0"})
        []
    """
    environ = os.environ if environ is None else environ
    switch = environ.get(ENABLE_VARIABLE, "").strip().lower()
    if switch in _OFF:
        return []
    if switch not in _ON:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"lightning_complexity: {ENABLE_VARIABLE}={environ[ENABLE_VARIABLE]!r} is not understood, so the monitor stays off; use 1/true/yes/on to switch it on, or 0/false/no/off.")
        return []

    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lightning_complexity.callback import ComplexityMonitor

    arguments: dict[str, Any] = {}
    metrics = [name.strip() for name in environ.get(METRICS_VARIABLE, "").split(",") if name.strip()]
    if metrics:
        arguments["metrics"] = metrics
    export = environ.get(EXPORT_VARIABLE, "").strip()
    if export:
        arguments["export_path"] = export
    try:
        return [ComplexityMonitor(**arguments)]
    except MisconfigurationException as error:
        given = ", ".join(f"{name}={environ.get(name, '')!r}" for name in (METRICS_VARIABLE, EXPORT_VARIABLE) if environ.get(name, "").strip())
        raise MisconfigurationException(f"lightning_complexity from the environment ({given}): {error}") from error
