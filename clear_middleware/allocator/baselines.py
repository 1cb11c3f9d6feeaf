"""Baseline policies CLEAR is measured against, on the same bounds and granularity.

- ``uniform``: every subtask gets ``B / n`` (the common practice of one fixed cap).
- ``proportional``: caps proportional to each subtask's (predicted) emergence threshold, the
  paper's predictor-proportional baseline.
- ``greedy``: repeatedly gives the next granule of tokens to the subtask whose utility gains
  most from it (myopic marginal gain per token). Below every threshold all gains are 0 and it
  spreads like uniform; it cannot see past a threshold, which is what S-curves punish.

A share below a subtask's ``lower`` bound cannot be sent, so that subtask gets 0; shares are
capped at ``upper``. All policies return integer caps, multiples of the granularity.
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import NDArray

from ..curves.base import BestResponse


def _fit_bounds(
    share: NDArray[np.float64], response: BestResponse, granularity: int
) -> NDArray[np.int64]:
    caps = (np.floor(np.minimum(share, response.upper) / granularity) * granularity).astype(
        np.int64
    )
    return np.where(caps >= np.maximum(response.lower, 1), caps, 0)


def uniform_caps(response: BestResponse, budget: int, granularity: int) -> NDArray[np.int64]:
    """``floor(B / n)`` tokens each, on the granularity grid and within the bounds."""
    n = response.lower.shape[0]
    return _fit_bounds(np.full(n, budget / n), response, granularity)


def proportional_caps(response: BestResponse, budget: int, granularity: int) -> NDArray[np.int64]:
    """Caps proportional to the curves' emergence thresholds (uniform if all are 0).

    A curve with a zero ceiling has no threshold to be proportional to and gets nothing.
    """
    curves = response.curves
    weight = np.where(curves.ceiling > 0, np.asarray(curves.threshold, dtype=np.float64), 0.0)
    total = weight.sum()
    n = weight.shape[0]
    share = budget * weight / total if total > 0 else np.full(n, budget / n)
    return _fit_bounds(share, response, granularity)


def greedy_caps(response: BestResponse, budget: int, granularity: int) -> NDArray[np.int64]:
    """Myopic marginal-gain greedy over granules of ``granularity`` tokens.

    A subtask's first step takes it to its lower bound; each later step adds one granule. The
    next step always goes to the largest gain per token, ties to the subtask holding fewer
    tokens. Cost: ``O((B / g) log n)`` heap operations in a Python loop, and an ``(n, C)`` table
    of curve values (``C = upper / g``): a baseline for evaluation batches, not a production
    path.
    """
    g = granularity
    lower_units = np.maximum(np.ceil(response.lower / g), 1).astype(np.int64)
    upper_units = np.floor(response.upper / g).astype(np.int64)
    choices = int(upper_units.max(initial=0))
    caps = np.zeros(lower_units.shape[0], dtype=np.int64)
    if choices == 0:
        return caps
    table = response.curves.value((np.arange(choices + 2) * float(g))[None, :])
    rows = np.arange(lower_units.shape[0])
    start = np.minimum(lower_units, choices + 1)
    first_gain = table[rows, start] / (start * g)
    heap = [(-float(first_gain[i]), 0, int(i)) for i in np.flatnonzero(lower_units <= upper_units)]
    heapq.heapify(heap)
    remaining = budget
    while heap and remaining > 0:
        _, held, i = heapq.heappop(heap)
        step = int(lower_units[i]) * g if held == 0 else g
        if step > remaining:
            continue
        caps[i] = held + step
        remaining -= step
        units = caps[i] // g
        if units + 1 <= upper_units[i]:
            gain = float(table[i, units + 1] - table[i, units]) / g
            heapq.heappush(heap, (-gain, int(caps[i]), i))
    return caps
