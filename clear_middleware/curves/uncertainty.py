"""Curves whose emergence threshold is uncertain: the expected curve over the threshold.

When a threshold is only known as ``tau ~ Normal(mu, sigma)`` (truncated at 0), the expected
utility at a cap ``b`` is ``E[U(b; tau)]``: the curve is *spread*, rising earlier and more
gently than at ``mu``. The allocator then sees the risk: an uncertain subtask's break-even price
is lower and it is funded less eagerly, and a funded one gets a cap that covers more of the
plausible thresholds. The expectation is a Gauss-Hermite quadrature over ``tau`` evaluated on a
token grid, giving an :class:`EmpiricalCurve`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validation import batch_shape, float_array
from .empirical import EmpiricalCurve
from .shifted_surge import ShiftedSurge

_NODES = 9


def spread_threshold(
    curves: ShiftedSurge,
    sigma_tokens: ArrayLike,
    *,
    grid: ArrayLike | None = None,
    step_tokens: float = 32.0,
) -> EmpiricalCurve:
    """``E[U(b)]`` when each curve's threshold is ``Normal(threshold, sigma_tokens)`` (>= 0).

    Args:
        curves: the curves at their most likely thresholds.
        sigma_tokens: standard deviation of each threshold, tokens >= 0 (scalar or per curve).
        grid: token grid of the result (default: every ``step_tokens`` up to the largest
            saturation point plus three sigmas).
        step_tokens: grid spacing when ``grid`` is not given (tokens, > 0).
    """
    n = len(curves)
    sigma = batch_shape("sigma_tokens", float_array("sigma_tokens", sigma_tokens, low=0.0), n)
    if grid is None:
        step = float(float_array("step_tokens", step_tokens, low=0.0, low_open=True))
        top = float(np.max(curves.saturation_tokens() + 3.0 * sigma, initial=step))
        grid = np.arange(0.0, top + step, step)
    g = float_array("grid", grid, low=0.0)
    nodes, weights = np.polynomial.hermite_e.hermegauss(_NODES)
    weights = weights / weights.sum()
    # (n, nodes) thresholds; mass below 0 sits at 0 (a threshold cannot be negative).
    taus = np.maximum(curves.threshold[:, None] + sigma[:, None] * nodes[None, :], 0.0)
    x = np.maximum(g[None, None, :] - taus[:, :, None], 0.0) * curves.rate[:, None, None]
    values = curves.ceiling[:, None] * np.einsum(
        "k,nkm->nm", weights, -np.expm1(-x) - x * np.exp(-x))
    values[:, 0] = 0.0
    return EmpiricalCurve(g, np.maximum.accumulate(values, axis=1))
