"""The contract every batch of utility curves meets, and the best-response object they hand out.

A *curve* maps a cap of generated tokens ``b`` to the expected utility of a call (for reasoning
tasks: the probability of a correct answer), non-decreasing in ``b`` and 0 at ``b = 0``. Curves
come in *batches*: one object holds ``n`` curves as arrays, so the allocator never loops over
subtasks in Python.

At a token price ``lam`` (utility per token, >= 0) each curve best-responds with
``argmax_b U(b) - lam * b`` over ``b`` in ``{0} U [lower, upper]``; choosing 0 is *abandonment*.
The :class:`BestResponse` object fixes the bounds once (they shape the response) and answers
demand queries for many prices, which is what the price search does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

SATURATION_FRACTION = 0.999
"""Default share of a curve's ceiling that defines its saturation point (the default cap)."""


@runtime_checkable
class UtilityCurves(Protocol):
    """A batch of ``n`` non-decreasing utility curves over a token cap.

    ``tokens`` arguments broadcast against the batch axis: a scalar, shape ``(n,)`` (one cap per
    curve) or ``(n, k)`` / ``(1, k)`` (``k`` caps per curve) give results of the same shape.
    """

    def __len__(self) -> int: ...

    @property
    def ceiling(self) -> NDArray[np.float64]:
        """Best reachable utility of each curve (its value at an unlimited cap)."""
        ...

    @property
    def threshold(self) -> NDArray[np.float64]:
        """Emergence threshold of each curve, in tokens: below it the curve is 0."""
        ...

    def value(self, tokens: ArrayLike) -> NDArray[np.float64]:
        """Expected utility at a cap of ``tokens``."""
        ...

    def marginal(self, tokens: ArrayLike) -> NDArray[np.float64]:
        """Utility per additional token at ``tokens`` (right derivative)."""
        ...

    def saturation_tokens(self, fraction: float = SATURATION_FRACTION) -> NDArray[np.float64]:
        """Smallest cap, in tokens, at which each curve reaches ``fraction`` of its ceiling."""
        ...

    def responder(
        self, min_tokens: ArrayLike = 0, max_tokens: ArrayLike | None = None
    ) -> BestResponse:
        """Best responses under the bounds ``{0} U [min_tokens, max_tokens]`` (tokens).

        ``max_tokens=None`` caps each curve at its saturation point.
        """
        ...

    def take(self, index: ArrayLike) -> Self:
        """The sub-batch selected by an index array or boolean mask."""
        ...

    def conditional(
        self, used_tokens: ArrayLike, *, finish: UtilityCurves | None = None,
        grid: ArrayLike | None = None,
    ) -> UtilityCurves:
        """Curves over the *remaining* tokens of runs that used ``used_tokens`` without finishing.

        ``V(r) = (U(s + r) - U(s)) / P(not finished by s)``: sunk tokens are ignored, and a run
        still going after ``s`` tokens is, given that, more likely one of the long ones. For a
        kind's curve (a mixture over its items) this is exactly the curve of the items that are
        still running. ``finish`` gives ``P(finished by b)`` for all answers, right or wrong
        (by default the curve itself: only correct answers end a run early). The result is an
        :class:`EmpiricalCurve` on ``grid`` (remaining tokens), exact at its points.
        """
        ...

    def shifted(self, tokens: ArrayLike) -> Self:
        """The same curves with every cap moved right by ``tokens`` (>= 0, scalar or per
        curve): ``V(b) = U(b - tokens)``. A fixed cost per call, such as its prompt, enters the
        allocation this way, so it counts in each call's break-even price."""
        ...


class CurveMethods:
    """What every curve family derives from its ``responder``: shared by the concrete classes."""

    def best_response(
        self, price: float, *, min_tokens: ArrayLike = 0, max_tokens: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Tokens each curve buys at ``price`` (utility per token) within its bounds."""
        return self.responder(min_tokens, max_tokens).demand(price)  # type: ignore[attr-defined]

    def conditional(
        self, used_tokens: ArrayLike, *, finish: UtilityCurves | None = None,
        grid: ArrayLike | None = None,
    ) -> UtilityCurves:
        """See :meth:`UtilityCurves.conditional`."""
        from .conditional import conditional_curve

        return conditional_curve(self, used_tokens, finish=finish, grid=grid)  # type: ignore[arg-type]


class BestResponse(ABC):
    """Demand for tokens of a batch of curves as a function of the price, under fixed bounds.

    Attributes:
        curves: the batch.
        lower: effective minimum tokens of a funded curve, shape ``(n,)``.
        upper: maximum tokens, shape ``(n,)``; a curve with ``upper < lower`` is never funded.
        break_even: the price (utility per token) at or above which each curve is abandoned:
            ``max_b U(b) / b`` over its bounds. Curves with positive surplus are exactly those
            with ``price < break_even``.
        tangent_tokens: where ``U(b) / b`` peaks within the bounds (tokens; 0 for a curve never
            worth funding): what a curve buys just below its break-even price, the cap of best
            utility per token.
    """

    curves: UtilityCurves
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    break_even: NDArray[np.float64]
    tangent_tokens: NDArray[np.float64]

    @property
    def breakpoints(self) -> NDArray[np.float64] | None:
        """Sorted prices at which total demand can jump, or None when unknown or too many.

        The price search bisects over these first, then solves the smooth pieces in between.
        """
        return None

    @abstractmethod
    def demand(self, price: float) -> NDArray[np.float64]:
        """Tokens each curve buys at ``price`` (float, 0 where abandoned), shape ``(n,)``."""

    def demand_slope(
        self, price: float, tokens: NDArray[np.float64]
    ) -> NDArray[np.float64] | None:
        """``d tokens / d price`` per curve at ``price`` given its demand ``tokens``, or None
        when demand is not differentiable (the price search then bisects instead of Newton)."""
        return None

    @abstractmethod
    def take(self, index: NDArray[np.intp]) -> BestResponse:
        """The same bounds and prices for a sub-batch."""

    def max_surplus(self, price: float) -> NDArray[np.float64]:
        """``max_b U(b) - price * b`` over the bounds (>= 0: abandoning is always allowed)."""
        tokens = self.demand(price)
        surplus = self.curves.value(tokens) - price * tokens
        return np.where(tokens > 0, np.maximum(surplus, 0.0), 0.0)

    def dual_bound(self, price: float, budget: float) -> float:
        """Weak-duality upper bound on the best total utility within ``budget`` tokens.

        ``g(price) = price * budget + sum_i max_b [U_i(b) - price * b]`` >= OPT for any price >= 0.
        """
        return float(price * budget + self.max_surplus(price).sum())
