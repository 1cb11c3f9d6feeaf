"""Market clearing: the smallest token price at which a batch's demand fits the budget.

Total demand ``D(lam) = sum_i b_i*(lam)`` is non-increasing in the price and right-continuous,
with downward jumps where a query becomes insolvent (its surplus reaches 0) or, for empirical
curves, moves down a vertex of its envelope. The search returns a *bracket*: the clearing
price ``lam*`` with ``D(lam*) <= B`` and a price just below it with ``D > B``, together with both
demands, because the tokens between them (the jump) are what the leftover step hands out.

The search keeps ``D(lo) > B >= D(hi)`` and picks each next price by, in order of preference:

- bisection over the known jump prices inside the bracket once only a few are left (which
  settles a crossing at a jump in ``log2`` of their number of steps);
- regula falsi (Illinois variant) in log-price: seen from afar a large batch's demand is
  nearly smooth, and this lands within a few jumps of the root in a handful of steps;
- while the bracket still starts at price 0, a Newton step from its top on the slope the
  response reports (or a step a thousand times lower);
- geometric bisection whenever a step would leave the bracket.

When no known jump is left inside, one evaluation just below ``hi`` tells whether the crossing
is the jump at ``hi`` itself. Every step is one vectorised demand evaluation: no loop over
queries. On 10^5 shifted-surge queries the whole search takes about a dozen evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..curves.base import BestResponse

_RELATIVE_WIDTH = 1e-12
_MAX_STEPS = 200
_FEW_JUMPS = 16  # with this few jump prices left inside, bisect over them directly
TOKEN_TOLERANCE = 0.5
"""Demand within this many tokens under the budget counts as clearing it (caps are integers)."""

DemandFn = Callable[[float, bool], tuple[NDArray[np.float64], float | None]]
"""``demand(price, with_slope) -> (tokens per query, total d tokens / d price or None)``."""


@dataclass(frozen=True)
class PriceBracket:
    """``price`` clears (``demand_at.sum() <= budget``); ``below`` just under it does not.

    For a slack budget ``price == below == 0`` and both demands are the demand at price 0.
    """

    price: float
    below: float
    demand_at: NDArray[np.float64]
    demand_below: NDArray[np.float64]

    @property
    def slack(self) -> bool:
        return self.price == 0.0


def clearing_bracket(
    response: BestResponse,
    budget: float,
    *,
    floor: NDArray[np.float64] | None = None,
    ceiling_price: float | None = None,
) -> PriceBracket:
    """Bracket the smallest price at which demand fits ``budget`` tokens.

    Args:
        response: best responses of the batch under its bounds.
        budget: tokens, >= 0.
        floor: per-query tokens already committed; demand is ``max(floor, b*(lam))``. Used to
            spread leftover tokens over an already funded set.
        ceiling_price: an upper end for the search (default: the largest break-even price,
            where demand is 0, or ``floor``).
    """

    def demand(price: float, with_slope: bool = False) -> tuple[NDArray[np.float64], float | None]:
        tokens = response.demand(price)
        slopes = response.demand_slope(price, tokens) if with_slope else None
        if floor is not None:
            # Where demand meets the floor exactly (at the price that set it) its slope from
            # below is still the curve's: keep it, so Newton can start there.
            free = tokens >= floor * (1.0 - 1e-12) - 1e-9
            tokens = np.maximum(tokens, floor)
            slopes = None if slopes is None else np.where(free, slopes, 0.0)
        return tokens, None if slopes is None else float(slopes.sum())

    at_zero, _ = demand(0.0)
    if at_zero.sum() <= budget:
        return PriceBracket(0.0, 0.0, at_zero, at_zero)
    hi = float(response.break_even.max()) if ceiling_price is None else float(ceiling_price)
    d_hi, slope_hi = demand(hi, True)
    if d_hi.sum() > budget:  # only possible when the floor alone overspends
        return PriceBracket(hi, hi, d_hi, d_hi)
    return _search(demand, budget, response.breakpoints, hi, d_hi, slope_hi, at_zero)


def _search(
    demand: DemandFn,
    budget: float,
    breakpoints: NDArray[np.float64] | None,
    hi: float,
    d_hi: NDArray[np.float64],
    slope_hi: float | None,
    d_lo: NDArray[np.float64],
) -> PriceBracket:
    """Shrink ``(lo, hi]`` from ``lo = 0`` keeping ``D(lo) > budget >= D(hi)``."""
    lo = 0.0
    f_lo, f_hi = d_lo.sum() - budget, d_hi.sum() - budget
    # Illinois weights: the interpolation value of an end kept twice in a row is halved, so a
    # curved stretch cannot pin one end forever; the true excesses decide termination.
    w_lo, w_hi = f_lo, f_hi
    kept = 0
    jump_checked_at: float | None = None
    top = hi
    for _ in range(_MAX_STEPS):
        if -f_hi <= TOKEN_TOLERANCE or hi - lo <= _RELATIVE_WIDTH * hi:
            break
        if lo == 0.0 and hi <= _RELATIVE_WIDTH * top:
            break  # the crossing is a jump at price 0 (flat curves taking their cap)
        inside = _inside(breakpoints, lo, hi)
        if inside is not None and inside.size == 0 and jump_checked_at != hi and _is_jump(
            breakpoints, hi
        ):
            # Demand is continuous on (lo, hi) and jumps at hi: either it crosses the budget
            # inside, or the whole crossing is the jump at hi.
            jump_checked_at = hi
            just_below = hi * (1.0 - _RELATIVE_WIDTH)
            if just_below > lo:
                d_just, _ = demand(just_below, False)
                if d_just.sum() > budget:
                    return PriceBracket(hi, just_below, d_hi, d_just)
        if inside is not None and 0 < inside.size <= _FEW_JUMPS:
            mid = float(inside[inside.size // 2])
        elif lo > 0:
            # Regula falsi in log-price: demand of a large batch is nearly smooth there.
            l_lo, l_hi = math.log(lo), math.log(hi)
            mid = math.exp(l_hi - w_hi * (l_hi - l_lo) / (w_hi - w_lo))
        else:
            mid = _newton_from_top(hi, f_hi, slope_hi)
        if not lo < mid < hi:
            mid = math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
        d_mid, slope_mid = demand(mid, lo == 0)
        f_mid = d_mid.sum() - budget
        if f_mid <= 0:
            hi, d_hi, f_hi, w_hi, slope_hi = mid, d_mid, f_mid, f_mid, slope_mid
            w_lo = 0.5 * w_lo if kept == -1 else w_lo
            kept = -1
        else:
            lo, d_lo, f_lo, w_lo = mid, d_mid, f_mid, f_mid
            w_hi = 0.5 * w_hi if kept == 1 else w_hi
            kept = 1
    return PriceBracket(hi, lo, d_hi, d_lo)


def _newton_from_top(hi: float, f_hi: float, slope: float | None) -> float:
    """First finite lower price to try while the bracket still starts at 0: a Newton step in
    log-price from ``hi`` when demand has a slope there, else a thousandth of ``hi``."""
    if slope:
        # d/dl D(e^l) = price * dD/dprice; at most 8 e-folds down in one step.
        step = -f_hi / (hi * slope)
        if math.isfinite(step):
            return hi * math.exp(max(step, -8.0))
    return hi * 1e-3


def _is_jump(breakpoints: NDArray[np.float64] | None, price: float) -> bool:
    """Whether demand jumps at ``price`` (unknown jump prices: assume it may)."""
    if breakpoints is None:
        return True
    i = np.searchsorted(breakpoints, price)
    return bool(i < breakpoints.size and breakpoints[i] == price)


def _inside(
    breakpoints: NDArray[np.float64] | None, lo: float, hi: float
) -> NDArray[np.float64] | None:
    """The known jump prices strictly between ``lo`` and ``hi`` (None when unknown)."""
    if breakpoints is None:
        return None
    first = np.searchsorted(breakpoints, lo, side="right")
    last = np.searchsorted(breakpoints, hi, side="left")
    return breakpoints[first:last]
