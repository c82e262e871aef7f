"""Power-law fits of a metric's evolution, ``y(t) ≈ a·t^b`` [SPEC §4].

The default model is least squares of ``ln y`` on ``ln t``: exponent ``b`` (the slope), prefactor
``a`` (``exp`` of the intercept), ``R²`` of the log-log fit, the standard error of ``b`` and its
95% confidence interval from Student's t with ``n − 2`` degrees of freedom (exact when the noise
is log-normal, i.e. Gaussian around the line in log-log space).

The optional offset model ``y = c + a·t^b`` is for curves that saturate at ``c``. It is fitted on
the ``y`` scale with :func:`scipy.optimize.curve_fit`, initialised by profiling ``b`` over a grid
(for fixed ``b`` the model is linear in ``c`` and ``a``) that includes the log-log estimate. Its
``R²`` is on the ``y`` scale, and its interval uses ``n − 3`` degrees of freedom. A failed or
unidentifiable fit (no convergence, or a covariance of ``b`` that cannot be estimated, as for a
constant series) returns NaN values, never an exception.

Only points with finite ``t > 0`` and ``y > 0`` inside the window count (for both models), and a
fit needs at least 4 of them; otherwise every value is NaN and ``n_points`` says how many there
were. Always report ``r2`` next to ``exponent``: real training curves are noisy.

Example:
    >>> t = [1, 2, 4, 8, 16]
    >>> fit = fit_power_law(t, [3.0 * x**-0.5 for x in t])
    >>> round(fit.exponent, 6), round(fit.prefactor, 6), round(fit.r2, 6), fit.n_points
    (-0.5, 3.0, 1.0, 5)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats
import torch

__all__ = ["PowerLawFit", "fit_power_law"]

_MIN_POINTS = 4
_CONFIDENCE = 0.95
# Exponents tried to initialise the offset model; curve_fit may leave this range.
_EXPONENT_GRID = np.linspace(-4.0, 4.0, 161)


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`; every value is a plain Python number.

    Attributes:
        exponent: ``b`` in ``y = c + a·t^b``.
        prefactor: ``a``.
        r2: coefficient of determination (of ``ln y`` for the power law, of ``y`` for the offset
            model); NaN when the fitted values do not vary.
        stderr: standard error of ``b``.
        ci_low: lower end of the 95% confidence interval of ``b``.
        ci_high: upper end of the 95% confidence interval of ``b``.
        n_points: number of usable points (finite, ``t > 0``, ``y > 0``, inside the window).
        offset: ``c``; exactly 0 for the plain power law.
        model: ``"power_law"`` or ``"offset_power_law"``.
    """

    exponent: float
    prefactor: float
    r2: float
    stderr: float
    ci_low: float
    ci_high: float
    n_points: int
    offset: float = 0.0
    model: str = "power_law"

    def predict(self, t: Any) -> np.ndarray:
        """``c + a·t^b`` at the given times, as a float64 array.

        Example:
            >>> PowerLawFit(-1.0, 2.0, 1.0, 0.0, -1.0, -1.0, 4).predict([1.0, 2.0]).tolist()
            [2.0, 1.0]
        """
        times = _as_float_array(t, "t")
        return self.offset + self.prefactor * times**self.exponent

    def to_dict(self) -> dict[str, float | int | str]:
        """The fields as a flat dict, for export next to a metric history.

        Example:
            >>> sorted(PowerLawFit(-1.0, 2.0, 1.0, 0.0, -1.0, -1.0, 4).to_dict())[:3]
            ['ci_high', 'ci_low', 'exponent']
        """
        return dataclasses.asdict(self)


def fit_power_law(
    t: Any,
    y: Any,
    *,
    window: tuple[float | None, float | None] | None = None,
    offset: bool = False,
) -> PowerLawFit:
    """Fit ``y ≈ a·t^b`` (or ``y ≈ c + a·t^b`` with ``offset=True``) to a series.

    Args:
        t: times (epochs or steps), a 1-D list, NumPy array or torch tensor.
        y: values at those times, same length as ``t``.
        window: ``(t_min, t_max)``, inclusive; either end may be None (unbounded). None: all.
        offset: fit the saturating model ``y = c + a·t^b`` instead of the plain power law.

    Returns:
        A :class:`PowerLawFit`; NaN values when fewer than 4 points are usable or the fit fails.

    Raises:
        ValueError: ``t``/``y`` are not 1-D numeric of equal length, or ``window`` is malformed.

    Example:
        >>> import numpy as np
        >>> t = np.arange(1, 51)
        >>> fit = fit_power_law(t, 2.0 + 5.0 * t**-0.7, offset=True)
        >>> round(fit.offset, 4), round(fit.prefactor, 4), round(fit.exponent, 4)
        (2.0, 5.0, -0.7)
        >>> fit_power_law([1, 2, 3], [1, 2, 3]).n_points  # too few points: NaN fit
        3
    """
    times = _as_float_array(t, "t")
    values = _as_float_array(y, "y")
    if times.shape != values.shape:
        raise ValueError(f"`t` and `y` must have the same length, got {times.size} and {values.size}")
    if not isinstance(offset, bool):
        raise ValueError(f"`offset` must be True or False, got {offset!r}")
    low, high = _check_window(window)

    with np.errstate(invalid="ignore"):
        usable = np.isfinite(times) & np.isfinite(values) & (times > 0) & (values > 0)
        usable &= (times >= low) & (times <= high)
    times, values = times[usable], values[usable]
    model = "offset_power_law" if offset else "power_law"
    if times.size < _MIN_POINTS:
        return _failed(times.size, model)
    return _fit_offset(times, values) if offset else _fit_log_log(times, values)


def _as_float_array(values: Any, name: str) -> np.ndarray:
    """A 1-D float64 NumPy copy of a list, array or (any-device) tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be a 1-D sequence of numbers, got {type(values).__name__}: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {array.shape}")
    return array


def _check_window(window: Any) -> tuple[float, float]:
    """``(low, high)`` bounds from ``window``, unbounded ends as ±inf."""
    if window is None:
        return -math.inf, math.inf
    accepted = "None or a pair (t_min, t_max) of numbers or None with t_min <= t_max"
    if not isinstance(window, Sequence) or isinstance(window, str) or len(window) != 2:
        raise ValueError(f"`window` must be {accepted}, got {window!r}")
    bounds = []
    for bound, unbounded in zip(window, (-math.inf, math.inf)):
        if bound is None:
            bounds.append(unbounded)
        elif isinstance(bound, Real) and not isinstance(bound, bool) and not math.isnan(bound):
            bounds.append(float(bound))
        else:
            raise ValueError(f"`window` must be {accepted}, got {window!r}")
    if bounds[0] > bounds[1]:
        raise ValueError(f"`window` must be {accepted}, got {window!r}")
    return bounds[0], bounds[1]


def _failed(n_points: int, model: str) -> PowerLawFit:
    """An all-NaN fit that still reports how many usable points there were."""
    nan = math.nan
    offset = 0.0 if model == "power_law" else nan
    return PowerLawFit(nan, nan, nan, nan, nan, nan, int(n_points), offset=offset, model=model)


def _interval(exponent: float, stderr: float, dof: int) -> tuple[float, float]:
    half_width = float(scipy.stats.t.ppf(0.5 + _CONFIDENCE / 2, dof)) * stderr
    return exponent - half_width, exponent + half_width


def _r2(residual_ss: float, total_ss: float) -> float:
    return 1.0 - residual_ss / total_ss if total_ss > 0 else math.nan


def _fit_log_log(times: np.ndarray, values: np.ndarray) -> PowerLawFit:
    """Ordinary least squares of ``ln y`` on ``ln t`` with the slope's t-interval."""
    log_t, log_y = np.log(times), np.log(values)
    # Centre relative to the first point: a constant series then centres to exact zeros. The plain
    # mean of n equal logs is off by an ulp, which gave all-equal times a (meaningless) slope with
    # a confidence interval instead of NaN, and a constant y an R² of 0 instead of NaN.
    centred_t = (log_t - log_t[0]) - (log_t - log_t[0]).mean()
    centred_y = (log_y - log_y[0]) - (log_y - log_y[0]).mean()
    sxx = float(centred_t @ centred_t)
    if not sxx > 0:  # all times equal: the slope is undefined
        return _failed(times.size, "power_law")
    exponent = float(centred_t @ centred_y) / sxx
    intercept = float(log_y.mean() - exponent * log_t.mean())
    residual = log_y - (intercept + exponent * log_t)
    dof = times.size - 2
    residual_ss = float(residual @ residual)
    stderr = math.sqrt(residual_ss / dof / sxx)
    ci_low, ci_high = _interval(exponent, stderr, dof)
    return PowerLawFit(
        exponent=exponent,
        prefactor=math.exp(intercept),
        r2=_r2(residual_ss, float(centred_y @ centred_y)),
        stderr=stderr,
        ci_low=ci_low,
        ci_high=ci_high,
        n_points=int(times.size),
    )


def _fit_offset(times: np.ndarray, values: np.ndarray) -> PowerLawFit:
    """``y = c + a·t^b`` by curve_fit from a profiled grid start; NaN on any failure."""
    # Times relative to their geometric mean keep t^b moderate for any exponent we try.
    reference = math.exp(float(np.log(times).mean()))
    scaled = times / reference

    def model(s: np.ndarray, c: float, a: float, b: float) -> np.ndarray:
        return c + a * s**b

    start = _profiled_start(scaled, values, _fit_log_log(times, values).exponent)
    if start is None:
        return _failed(times.size, "offset_power_law")
    try:
        with warnings.catch_warnings():
            # An inestimable covariance is handled below (NaN fit) instead of warning.
            warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
            with np.errstate(all="ignore"):
                params, covariance = scipy.optimize.curve_fit(model, scaled, values, p0=start, maxfev=20_000)
    except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError):
        return _failed(times.size, "offset_power_law")
    c, a_scaled, exponent = (float(value) for value in params)
    prefactor = a_scaled * reference ** (-exponent)
    fitted = model(scaled, c, a_scaled, exponent)
    if not (math.isfinite(c) and math.isfinite(prefactor) and math.isfinite(exponent) and np.isfinite(fitted).all()):
        return _failed(times.size, "offset_power_law")
    variance = float(covariance[2, 2])
    if not (math.isfinite(variance) and variance >= 0):  # b is not identifiable from these points
        return _failed(times.size, "offset_power_law")
    stderr = math.sqrt(variance)
    ci_low, ci_high = _interval(exponent, stderr, times.size - 3)
    residual = values - fitted
    centred = values - values.mean()
    return PowerLawFit(
        exponent=exponent,
        prefactor=prefactor,
        r2=_r2(float(residual @ residual), float(centred @ centred)),
        stderr=stderr,
        ci_low=ci_low,
        ci_high=ci_high,
        n_points=int(times.size),
        offset=c,
        model="offset_power_law",
    )


def _profiled_start(
    scaled: np.ndarray, values: np.ndarray, log_log_exponent: float
) -> tuple[float, float, float] | None:
    """Best ``(c, a, b)`` over a grid of ``b``; for fixed ``b``, ``c`` and ``a`` are a straight-line fit."""
    exponents = np.append(_EXPONENT_GRID, log_log_exponent)
    exponents = exponents[np.isfinite(exponents) & (np.abs(exponents) > 1e-6)]  # b = 0 duplicates c
    with np.errstate(all="ignore"):
        powers = scaled[None, :] ** exponents[:, None]  # (grid, n)
        centred_powers = powers - powers.mean(axis=1, keepdims=True)
        centred_values = values - values.mean()
        spread = np.einsum("gn,gn->g", centred_powers, centred_powers)
        slope = centred_powers @ centred_values / spread
        intercept = values.mean() - slope * powers.mean(axis=1)
        residual_ss = ((values[None, :] - intercept[:, None] - slope[:, None] * powers) ** 2).sum(axis=1)
    residual_ss[~(np.isfinite(residual_ss) & (spread > 0))] = np.inf
    best = int(np.argmin(residual_ss))
    if not np.isfinite(residual_ss[best]):
        return None
    return float(intercept[best]), float(slope[best]), float(exponents[best])
