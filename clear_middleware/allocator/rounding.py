"""From continuous token budgets to integer caps on a granularity grid, never over the budget."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..curves.base import UtilityCurves

_MAX_ROUNDS = 64


def round_to_grid(
    curves: UtilityCurves,
    tokens: NDArray[np.float64],
    budget: int,
    granularity: int,
    upper: NDArray[np.float64],
) -> NDArray[np.int64]:
    """Floor each allocation to a multiple of ``granularity``, then hand the freed units back.

    Leftover units go one per subtask per round to the funded subtasks with the largest gain
    ``U(b + g) - U(b)`` that stay within ``upper``; the sum never exceeds ``budget``.
    Bounds must already be multiples of ``granularity`` (the allocator aligns them).
    """
    g = granularity
    # A continuous cap a hair under a grid point (float noise) belongs to that point.
    caps = (np.floor(tokens / g + 1e-9).astype(np.int64)) * g
    caps = _trim_to_budget(curves, caps, budget, g)
    units = (budget - int(caps.sum())) // g
    for _ in range(_MAX_ROUNDS):
        if units <= 0:
            break
        eligible = (caps > 0) & (caps + g <= upper + 1e-9)
        if not eligible.any():
            break
        gain = np.where(eligible, curves.value(caps + g) - curves.value(caps), 0.0)
        k = min(units, int((gain > 0).sum()))
        if k == 0:
            break
        top = np.argpartition(-gain, k - 1)[:k]
        caps[top] += g
        units -= k
    return caps


def _trim_to_budget(
    curves: UtilityCurves, caps: NDArray[np.int64], budget: int, g: int
) -> NDArray[np.int64]:
    """Take units back, cheapest loss first, in the (float-noise) case the caps overspend."""
    excess_units = -(-(int(caps.sum()) - budget) // g)
    while excess_units > 0:
        funded = caps > 0
        loss = np.where(funded, curves.value(caps) - curves.value(caps - g), np.inf)
        k = min(excess_units, int(funded.sum()))
        worst = np.argpartition(loss, k - 1)[:k]
        caps[worst] -= g
        excess_units -= k
    return caps


MIN_CALL_UTILITY = 1e-3
"""Tokens left idle by the price fund a subtask only where its expected utility reaches this (a
0.1% chance of success): below it the call is noise, and the tokens may serve a later batch."""


def fill_unfunded(
    curves: UtilityCurves,
    caps: NDArray[np.int64],
    budget: int,
    granularity: int,
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
) -> NDArray[np.int64]:
    """Spend what the price left idle on subtasks it priced out, most valuable first.

    At the clearing price a subtask is funded only at its most efficient cap (where its
    utility per token peaks); tokens left over that cannot reach that cap would otherwise go
    unused, although a smaller cap still has value. Each step funds the unfunded subtask with
    the largest utility at the largest cap the leftover allows (within its bounds), if that
    utility reaches :data:`MIN_CALL_UTILITY`; the loop runs once per subtask so funded,
    usually none or one.
    """
    g = granularity
    caps = caps.copy()
    left = budget - int(caps.sum())
    while left >= g:
        room = np.floor(np.minimum(upper, left) / g) * g
        candidate = (caps == 0) & (room >= np.maximum(lower, g))
        if not candidate.any():
            break
        gain = np.where(candidate, curves.value(room), 0.0)
        best = int(np.argmax(gain))
        if gain[best] < MIN_CALL_UTILITY:
            break
        caps[best] = int(room[best])
        left -= caps[best]
    return caps
