"""The shifted-surge utility curve of CLEAR, for a batch of queries.

With ``x = b - tau`` (tokens past the emergence threshold), ceiling ``a`` in [0, 1] and rate
``beta > 0`` (per token; ``1/beta`` is the width of the surge)::

    U(b)  = 0                                     for b < tau
    U(b)  = a * (1 - (1 + beta*x) * exp(-beta*x)) for b >= tau
    U'(b) = a * beta**2 * x * exp(-beta*x)

``U'`` is the density of the lengths of correct answers (a Gamma(2, beta) shifted by ``tau``,
scaled by ``a``). Everything below depends on ``x`` only through ``y = beta * x``, so the
dimensionless function ``G(y) = 1 - (1 + y) e^{-y}`` (the Gamma(2) CDF) carries the shape.

Best response to a price ``lam`` (closed form, spec section 2): below the peak marginal
``a*beta/e`` the local maximum of ``U(b) - lam*b`` sits at
``x* = -W_{-1}(-lam / (a*beta)) / beta`` on the lower Lambert-W branch; the query is abandoned
when its surplus there is not positive, i.e. when ``lam`` reaches its break-even price
``max_b U(b)/b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import float_array
from ._bounds import token_bounds
from ._lambertw import neg_w_lower_from_log
from .base import SATURATION_FRACTION, BestResponse, CurveMethods


def gamma2_cdf(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """``G(y) = 1 - (1 + y) e^{-y}`` for ``y >= 0`` (0 below), computed without cancellation."""
    y = np.maximum(y, 0.0)
    # -expm1(-y) - y*exp(-y) keeps full relative precision for small y.
    return -np.expm1(-y) - y * np.exp(-y)


def gamma2_quantile(fraction: float) -> float:
    """``y`` with ``G(y) = fraction``, for ``fraction`` in (0, 1): bisection to machine precision
    (a scalar; this keeps scipy.special, slow to import, out of the package import)."""
    lo, hi = 0.0, 1.0
    while float(gamma2_cdf(np.array(hi))) < fraction:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if float(gamma2_cdf(np.array(mid))) < fraction:
            lo = mid
        else:
            hi = mid
    return hi


def _tangent_y(k: NDArray[np.float64]) -> NDArray[np.float64]:
    """``y > 0`` maximising ``G(y) / (k + y)``: the root of ``e^y = y^2 + (k+1) y + 1``.

    ``k = beta * tau`` >= 0. The ray from the origin that touches the curve meets it at
    ``b = tau + y / beta``; its slope is the break-even price.
    """
    k = np.asarray(k, dtype=np.float64)
    # The fixed point y = log(y^2 + (k+1) y + 1) is a contraction for y > 1.8; then Newton.
    y = 2.0 + np.log1p(k)
    for _ in range(6):
        y = np.log(y * y + (k + 1.0) * y + 1.0)
    for _ in range(4):
        ey = np.exp(y)
        h = ey - y * y - (k + 1.0) * y - 1.0
        y = y - h / (ey - 2.0 * y - (k + 1.0))
    return y


@dataclass(frozen=True, eq=False)
class ShiftedSurge(CurveMethods):
    """A batch of shifted-surge curves held as arrays (scalars broadcast).

    Args:
        ceiling: ``a``, best reachable accuracy, in [0, 1] (0: never solved).
        threshold: ``tau``, the emergence threshold in tokens, >= 0.
        rate: ``beta``, per token, > 0 (``1/beta`` tokens is the width of the surge).

    Example:
        >>> curves = ShiftedSurge(ceiling=0.9, threshold=[500.0, 2000.0], rate=1 / 400)
        >>> curves.value([1500.0, 1500.0]).round(3).tolist()
        [0.641, 0.0]
    """

    ceiling: NDArray[np.float64]
    threshold: NDArray[np.float64]
    rate: NDArray[np.float64]

    def __init__(self, ceiling: ArrayLike, threshold: ArrayLike, rate: ArrayLike) -> None:
        a = float_array("ceiling", ceiling, low=0.0, high=1.0)
        tau = float_array("threshold", threshold, low=0.0)
        beta = float_array("rate", rate, low=0.0, low_open=True)
        try:
            a, tau, beta = np.broadcast_arrays(a, tau, beta)
        except ValueError as exc:
            raise ValueError(
                "ceiling, threshold and rate must be scalars or arrays of one length; got shapes "
                f"{np.shape(a)}, {np.shape(tau)}, {np.shape(beta)}"
            ) from exc
        if a.ndim > 1:
            raise ValueError(f"ceiling, threshold and rate must be 1-D; got shape {a.shape}")
        for name, arr in (("ceiling", a), ("threshold", tau), ("rate", beta)):
            arr = np.atleast_1d(arr).astype(np.float64, copy=True)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    # -- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        lengths: ArrayLike,
        correct: ArrayLike,
        *,
        caps: ArrayLike | None = None,
        valid: ArrayLike | None = None,
        rate: Literal["per_query", "shared"] = "per_query",
    ) -> ShiftedSurge:
        """Maximum-likelihood curves from rollouts, one curve per row.

        Args:
            lengths: generated tokens of each rollout, shape ``(n_queries, n_rollouts)``.
            correct: the rollout produced a correct answer within its cap.
            caps: the cap (tokens) each rollout ran under. Without it, every rollout is taken
                as run to completion (the spec's closed form).
            valid: False marks padding in ragged data.
            rate: ``"per_query"`` fits ``beta`` per row; ``"shared"`` one ``beta`` for all rows.

        See :func:`clear_middleware.curves.fitting.fit_shifted_surge` for the estimator.
        """
        from .fitting import fit_shifted_surge

        params = fit_shifted_surge(lengths, correct, caps=caps, valid=valid, rate=rate)
        return cls(params.ceiling, params.threshold, params.rate)

    # -- the curve ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.ceiling.shape[0])

    def _params(self, tokens: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray]:
        if tokens.ndim <= 1:
            return self.ceiling, self.threshold, self.rate
        shape = (len(self),) + (1,) * (tokens.ndim - 1)
        return self.ceiling.reshape(shape), self.threshold.reshape(shape), self.rate.reshape(shape)

    def value(self, tokens: ArrayLike) -> NDArray[np.float64]:
        """``U(b)``: expected utility at a cap of ``tokens``."""
        b = np.asarray(tokens, dtype=np.float64)
        a, tau, beta = self._params(b)
        return a * gamma2_cdf(beta * (b - tau))

    def marginal(self, tokens: ArrayLike) -> NDArray[np.float64]:
        """``U'(b)``: utility per additional token at a cap of ``tokens``."""
        b = np.asarray(tokens, dtype=np.float64)
        a, tau, beta = self._params(b)
        y = np.maximum(beta * (b - tau), 0.0)
        return a * beta * y * np.exp(-y)

    @property
    def peak_marginal(self) -> NDArray[np.float64]:
        """``a * beta / e``: the largest marginal utility, reached at ``b = tau + 1/beta``."""
        return self.ceiling * self.rate / np.e

    def saturation_tokens(self, fraction: float = SATURATION_FRACTION) -> NDArray[np.float64]:
        """``tau + G^{-1}(fraction) / beta``: the cap (tokens) where the curve reaches
        ``fraction`` of its ceiling."""
        frac = float(float_array("fraction", fraction, low=0.0, high=1.0, low_open=True))
        y = gamma2_quantile(frac) if frac < 1.0 else np.inf
        return self.threshold + y / self.rate

    def responder(
        self, min_tokens: ArrayLike = 0, max_tokens: ArrayLike | None = None
    ) -> SurgeResponse:
        lower, upper = token_bounds(len(self), min_tokens, max_tokens, self.saturation_tokens())
        return SurgeResponse(self, lower, upper)

    def take(self, index: ArrayLike) -> Self:
        idx = np.asarray(index)
        return type(self)(self.ceiling[idx], self.threshold[idx], self.rate[idx])

    def shifted(self, tokens: ArrayLike) -> Self:
        """Exact: the threshold moves by ``tokens``."""
        offset = float_array("tokens", tokens, low=0.0)
        return type(self)(self.ceiling, self.threshold + offset, self.rate)

    def __repr__(self) -> str:
        return f"ShiftedSurge(n={len(self)})"


class SurgeResponse(BestResponse):
    """Closed-form best responses of shifted-surge curves under fixed bounds."""

    def __init__(
        self, curves: ShiftedSurge, lower: NDArray[np.float64], upper: NDArray[np.float64]
    ) -> None:
        self.curves = curves
        self.lower = lower
        self.upper = upper
        a, tau, beta = curves.ceiling, curves.threshold, curves.rate
        # The tangent point from the origin maximises U(b)/b; clipped into the bounds it still
        # does (U(b)/b is unimodal), and U/b there is the break-even price.
        tangent = np.clip(tau + _tangent_y(beta * tau) / beta, lower, upper)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = curves.value(tangent) / tangent
        fundable = (upper >= lower) & (upper > 0)
        self.break_even = np.where(fundable & (tangent > 0), np.nan_to_num(ratio), 0.0)
        self.tangent_tokens = np.where(self.break_even > 0, tangent, 0.0)
        # A zero ceiling has no log; any very negative value keeps W finite and the query is
        # never funded anyway (its break-even price is 0).
        with np.errstate(divide="ignore"):
            self._log_a_beta = np.where(a > 0, np.log(a * beta), -1e300)
        self._threshold, self._inv_rate = tau, 1.0 / beta

    @property
    def breakpoints(self) -> NDArray[np.float64]:
        # Demand is continuous in the price except where a query's surplus reaches 0.
        return np.unique(self.break_even[self.break_even > 0])

    def demand(self, price: float) -> NDArray[np.float64]:
        funded = price < self.break_even
        n_funded = int(np.count_nonzero(funded))
        if n_funded == 0:
            return np.zeros(self.lower.shape)
        # Solve only for the funded queries when that saves work (W is the costly part).
        subset = np.flatnonzero(funded) if n_funded < 0.6 * funded.size else slice(None)
        with np.errstate(divide="ignore"):
            log_price = np.log(price) if price > 0 else -np.inf
        x_star = neg_w_lower_from_log(self._log_a_beta[subset] - log_price) * self._inv_rate[subset]
        tokens = np.clip(self._threshold[subset] + x_star, self.lower[subset], self.upper[subset])
        out = np.zeros(self.lower.shape)
        out[subset] = tokens
        return np.where(funded, out, 0.0) if isinstance(subset, slice) else out

    def demand_slope(
        self, price: float, tokens: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        # Interior optimum: U'(b) = price, so db/dprice = 1 / U''(b) with
        # U''(b) = a beta^2 e^{-y} (1 - y) < 0 on the concave side (y = beta (b - tau) > 1).
        interior = (tokens > self.lower) & (tokens < self.upper)
        y = (tokens - self._threshold) / self._inv_rate
        # Far below the threshold (y << 0) e^{-y} overflows to inf: convex there, no slope.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            curvature = self.curves.ceiling * (1.0 - y) * np.exp(-y) / (self._inv_rate**2)
            slope = 1.0 / curvature
        return np.where(interior & (curvature < 0), slope, 0.0)

    def take(self, index: NDArray[np.intp]) -> SurgeResponse:
        sub = object.__new__(SurgeResponse)
        sub.curves = self.curves.take(index)
        sub.lower, sub.upper = self.lower[index], self.upper[index]
        sub.break_even, sub._log_a_beta = self.break_even[index], self._log_a_beta[index]
        sub.tangent_tokens = self.tangent_tokens[index]
        sub._threshold, sub._inv_rate = self._threshold[index], self._inv_rate[index]
        return sub
