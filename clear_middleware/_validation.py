"""Input checks shared by the public APIs: every failure names the field and the accepted range."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike, NDArray


def float_array(
    name: str,
    value: ArrayLike,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_inf: bool = False,
) -> NDArray[np.float64]:
    """``value`` as a float64 array, checked to be finite (unless ``allow_inf``) and in range.

    Raises ``ValueError`` naming ``name``, the accepted range and the first offending entry.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; got {value!r}") from exc
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= arr > high
    if bad.any():
        where = np.argwhere(bad)[0]
        entry = arr[tuple(where)] if arr.ndim else arr.item()
        at = f" at index {tuple(int(i) for i in where)}" if arr.ndim else ""
        accepted = _describe(low, high, low_open, allow_inf)
        raise ValueError(f"{name} must be {accepted}; got {entry!r}{at}")
    return arr


def _describe(low: float | None, high: float | None, low_open: bool, allow_inf: bool) -> str:
    finite = "a number (not NaN)" if allow_inf else "finite"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    bracket = "(" if (low_open or low is None) else "["
    closing = ")" if high is None else "]"
    return f"{finite} and in {bracket}{lo}, {hi}{closing}"


def non_negative_int(name: str, value: object, *, minimum: int = 0) -> int:
    """A whole number >= ``minimum`` (floats with an integral value are accepted)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if not isinstance(value, Integral) and (
        not math.isfinite(float(value)) or float(value) != int(value)
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    result = int(value)
    if result < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return result


def batch_shape(name: str, arr: NDArray, n: int) -> NDArray:
    """Broadcast a scalar or length-``n`` array to shape ``(n,)``, naming ``name`` on mismatch."""
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},); got shape {arr.shape}")
    return arr
