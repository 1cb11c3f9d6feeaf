"""The CLEAR policy: one shadow price, rational abandonment, and the leftover-after-a-jump step.

1. *Clearing.* Search the smallest price ``lam*`` at which total demand fits the budget
   (:mod:`.price_search`). Every query best-responds to it: funded ones sit where their marginal
   utility equals the price, insolvent ones (non-positive surplus) get nothing.
2. *Leftover after a jump.* Demand jumps down at ``lam*`` (queries turning insolvent, or
   envelope vertices), so ``B - D(lam*)`` can be large: for a batch of identical curves
   it is the whole budget. Queries whose demand is larger just below ``lam*`` are funded at
   that larger demand, cheapest increment first, while they fit.
3. *Spreading.* What is still left goes to the funded set alone, by lowering the price for
   that set (each funded query keeps at least what it has); all of them are on the concave side
   of their curves, so this only adds utility. Steps 2-3 repeat while they place tokens.
4. *Rounding* to integer multiples of the granularity, then any tokens still idle go to the
   most valuable priced-out subtask at the cap they allow (:mod:`.rounding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..curves.base import BestResponse
from .price_search import TOKEN_TOLERANCE, PriceBracket, clearing_bracket

_MAX_SPREAD_ROUNDS = 32


@dataclass(frozen=True)
class ClearSolution:
    """Continuous CLEAR allocation before rounding."""

    tokens: NDArray[np.float64]
    price: float
    upper_bound: float


def market_bracket(response: BestResponse, budget: float) -> tuple[PriceBracket, float]:
    """The clearing bracket and the duality bound it certifies.

    The dual ``g(lam) = lam*B + sum_i max_b [U_i(b) - lam*b]`` is convex with subgradient
    ``B - D(lam)``, which changes sign across the bracket: its minimum lies between the two
    prices, and the smaller of the two values is the bound (within the bracket's 1e-12 width).
    """
    bracket = clearing_bracket(response, budget)
    bound = response.dual_bound(bracket.price, budget)
    if not bracket.slack:
        bound = min(bound, response.dual_bound(bracket.below, budget))
    return bracket, bound


def solve_clear(response: BestResponse, budget: float) -> ClearSolution:
    """Steps 1-3 of the module docstring on continuous tokens."""
    bracket, bound = market_bracket(response, budget)
    tokens = bracket.demand_at.copy()
    if bracket.slack:
        return ClearSolution(tokens, 0.0, bound)
    tokens = _fund_jumps(tokens, bracket.demand_below, budget)
    price_cap = bracket.price  # the funded set's demand there is what it already holds
    for _ in range(_MAX_SPREAD_ROUNDS):
        if budget - tokens.sum() <= TOKEN_TOLERANCE:
            break
        funded = np.flatnonzero(tokens > 0)
        if funded.size == 0:
            break
        sub = response.take(funded)
        inner = clearing_bracket(sub, budget, floor=tokens[funded], ceiling_price=price_cap)
        if inner.demand_at.sum() > budget:
            break
        before = tokens.sum()
        tokens[funded] = _fund_jumps(inner.demand_at, inner.demand_below, budget)
        price_cap = inner.price
        if inner.slack or tokens.sum() - before <= TOKEN_TOLERANCE:
            break
    return ClearSolution(tokens, bracket.price, bound)


def _fund_jumps(
    tokens: NDArray[np.float64], below: NDArray[np.float64], budget: float
) -> NDArray[np.float64]:
    """Raise queries to their demand just below the price, cheapest increment first, while the
    increments fit in what the budget has left."""
    step = np.maximum(below - tokens, 0.0)
    candidates = np.flatnonzero(step > 0)
    if candidates.size == 0:
        return tokens
    order = candidates[np.argsort(step[candidates], kind="stable")]
    fits = np.cumsum(step[order]) <= budget - tokens.sum() + 1e-9
    chosen = order[fits] if fits.all() else order[: int(np.argmin(fits))]
    out = tokens.copy()
    out[chosen] = below[chosen]
    return out
