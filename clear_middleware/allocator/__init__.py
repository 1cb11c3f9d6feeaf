"""Split one token budget across a batch of subtasks: CLEAR and the baselines it is measured by."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from .._validation import float_array, non_negative_int
from ..curves.base import UtilityCurves
from .baselines import greedy_caps, proportional_caps, uniform_caps
from .clear import market_bracket, solve_clear
from .oracle import oracle_caps
from .result import Allocation
from .rounding import MIN_CALL_UTILITY, fill_unfunded, round_to_grid

Policy = Literal["clear", "uniform", "proportional", "greedy", "oracle"]

SMALL_BATCH = 12
"""Batches up to this size also get an exact search on a coarse grid (see ``_polish_small``)."""
_POLISH_UNITS = 256
POLICIES: tuple[str, ...] = get_args(Policy)

_BASELINES = {
    "uniform": uniform_caps,
    "proportional": proportional_caps,
    "greedy": greedy_caps,
    "oracle": oracle_caps,
}


def allocate(
    curves: UtilityCurves,
    budget: float,
    *,
    policy: Policy = "clear",
    min_tokens: ArrayLike = 0,
    max_tokens: ArrayLike | None = None,
    granularity: int = 1,
) -> Allocation:
    """Split ``budget`` tokens across the batch's subtasks.

    Args:
        curves: one utility curve per subtask (e.g. :class:`~clear_middleware.ShiftedSurge`).
        budget: total tokens, finite and >= 0 (a fractional budget is floored).
        policy: ``"clear"`` (shadow price with rational abandonment), or a baseline:
            ``"uniform"``, ``"proportional"``, ``"greedy"``, ``"oracle"`` (exact DP on the
            granularity grid; small batches only).
        min_tokens: smallest cap worth sending, tokens >= 0 (scalar or one per subtask).
        max_tokens: largest cap, tokens >= ``min_tokens`` (scalar or per subtask); ``None``
            caps each subtask at its curve's saturation point (99.9% of its ceiling).
        granularity: caps are multiples of this many tokens, an integer >= 1.

    Returns:
        An :class:`Allocation`: ``tokens.sum() <= budget``, each cap 0 or in
        ``[min_tokens, max_tokens]`` and a multiple of ``granularity``, with the clearing
        price and the duality bound (the same bound for every policy).

    Example:
        >>> from clear_middleware import ShiftedSurge, allocate
        >>> curves = ShiftedSurge(ceiling=0.9, threshold=[300, 800, 6000], rate=1 / 250)
        >>> allocate(curves, budget=3000).tokens.tolist()
        [1250, 1750, 0]
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {list(POLICIES)}; got {policy!r}")
    b = float(float_array("budget", budget, low=0.0))
    total = math.floor(b)
    g = non_negative_int("granularity", granularity, minimum=1)
    n = len(curves)
    response = curves.responder(min_tokens, max_tokens)
    if max_tokens is not None and np.any(response.upper < response.lower):
        i = int(np.argmax(response.upper < response.lower))
        raise ValueError(
            f"max_tokens must be >= min_tokens; subtask {i} has max_tokens="
            f"{response.upper[i]:g} < min_tokens={response.lower[i]:g}"
        )
    # Align the bounds to the grid once, so every policy and the bound see the same problem.
    lower = np.ceil(response.lower / g) * g
    upper = np.floor(response.upper / g) * g
    response = curves.responder(lower, np.maximum(upper, 0.0))
    if n == 0:
        empty = np.zeros(0)
        return Allocation(policy, total, empty.astype(np.int64), empty.astype(bool), empty,
                          0.0, 0.0, 0.0)
    if policy == "clear":
        solution = solve_clear(response, float(total))
        caps = round_to_grid(curves, solution.tokens, total, g, upper)
        caps = fill_unfunded(curves, caps, total, g, lower, upper)
        if n <= SMALL_BATCH:
            caps = _polish_small(curves, response, caps, total, g)
        price, bound = solution.price, solution.upper_bound
    else:
        caps = _BASELINES[policy](response, total, g)
        bracket, bound = market_bracket(response, float(total))
        price = bracket.price
    values = np.where(caps > 0, curves.value(caps.astype(np.float64)), 0.0)
    utility = float(values.sum())
    return Allocation(
        policy=policy,
        budget=total,
        tokens=caps,
        funded=caps > 0,
        values=values,
        expected_utility=utility,
        price=float(price),
        upper_bound=float(bound),
    )


def _polish_small(curves, response, caps, total: int, g: int):
    """For a handful of subtasks, keep the better of CLEAR's caps and the exact optimum on a
    grid of about 256 budget units (a few milliseconds at this size).

    CLEAR is within one subtask's ceiling of the optimum, and in a large batch that is
    nothing; in a fan-out of three subtasks it can be a third of the value (e.g. one subtask
    funded at its most efficient cap where two at half of it would solve more).
    """
    step = max(g, -(-total // _POLISH_UNITS) // g * g)
    if (np.ceil(response.lower / step) * step > response.upper).all():
        return caps
    exact = oracle_caps(response, total, step)
    # As for idle tokens: a cap worth almost nothing is not a call worth sending.
    exact = np.where(curves.value(exact.astype(np.float64)) >= MIN_CALL_UTILITY, exact, 0)
    value = float(curves.value(caps.astype(np.float64))[caps > 0].sum())
    exact_value = float(curves.value(exact.astype(np.float64))[exact > 0].sum())
    return exact if exact_value > value + 1e-12 else caps


__all__ = ["POLICIES", "Allocation", "Policy", "allocate"]
