"""Maximum-likelihood shifted-surge parameters from rollouts (spec section 5).

Model of one rollout of a query run under a cap of ``C`` tokens: with probability ``a`` it is a
*solving* run whose length is ``tau + Gamma(2, beta)``; otherwise it never produces a correct
answer. What a rollout shows is its outcome *at its cap*: correct at length ``L <= C``
(likelihood ``a * f(L)``), or no correct answer within ``C`` tokens (``1 - a * G(beta (C - tau))``,
whether it finished wrong or was cut). ``U(b) = a * G(beta * (b - tau))`` is then exactly the
probability of a correct answer under a cap of ``b``. (A wrong answer says a little more: it
would stay wrong under any cap. Using it would need a model of how long failing runs are, and a
wrong model of those biases ``a``; the outcome at the cap needs none.)

Without caps (every rollout ran to completion) the likelihood separates: ``a = #correct / n``
and ``(tau, beta)`` maximise the shifted-Gamma likelihood of the correct lengths; for a fixed
``tau`` below the shortest, ``beta = 2 / (mean L - tau)``, and ``tau`` is found by profiling. With
caps all three are fitted jointly by L-BFGS-B on the exact gradient, vectorised over queries.

Identifiability: a query with fewer than two distinct correct lengths has no finite
per-query MLE of the shape (the likelihood grows without bound as ``tau`` approaches its one
length), so it takes the shared rate, for which the fit is well-posed; a query never seen to
succeed gets ``a = 0`` (its curve is 0) with ``tau`` at its longest observed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import float_array
from .shifted_surge import gamma2_cdf

_PROFILE_POINTS = 256
_GOLDEN_STEPS = 40
_SHARED_SWEEPS = 200
_TINY = 1e-300


@dataclass(frozen=True)
class SurgeParameters:
    """Fitted parameters, one entry per query: ceiling ``a``, threshold ``tau`` (tokens),
    rate ``beta`` (per token), and the log-likelihood of each query's rollouts."""

    ceiling: NDArray[np.float64]
    threshold: NDArray[np.float64]
    rate: NDArray[np.float64]
    log_likelihood: NDArray[np.float64]


@dataclass(frozen=True)
class _Rollouts:
    length: NDArray[np.float64]
    good: NDArray[np.bool_]  # correct within its cap
    fail: NDArray[np.bool_]  # no correct answer within its cap
    cap: NDArray[np.float64]  # tokens (inf: ran to completion)

    @property
    def capped(self) -> bool:
        return bool(np.isfinite(self.cap[self.fail]).any())

    @property
    def n_good(self) -> NDArray[np.float64]:
        return self.good.sum(axis=1).astype(np.float64)

    @property
    def shortest_good(self) -> NDArray[np.float64]:
        return np.where(self.good, self.length, np.inf).min(axis=1)

    @property
    def identifiable(self) -> NDArray[np.bool_]:
        """At least two distinct correct lengths: the per-query shape has a finite MLE."""
        lo = self.shortest_good
        hi = np.where(self.good, self.length, -np.inf).max(axis=1)
        return (self.n_good >= 2) & (hi > lo)


def _prepare(lengths, correct, caps, valid) -> _Rollouts:
    length = float_array("lengths", lengths, low=0.0)
    if length.ndim == 1:
        length = length[None, :]
    if length.ndim != 2:
        raise ValueError(f"lengths must have shape (n_queries, n_rollouts); got {length.shape}")
    shape = length.shape

    def shaped(name: str, value: ArrayLike) -> NDArray:
        arr = np.asarray(value)
        if arr.shape != shape and arr.shape != shape[1:] and arr.ndim != 0:
            raise ValueError(f"{name} must have the shape of lengths {shape}; got {arr.shape}")
        return np.broadcast_to(arr, shape)

    ok = np.ones(shape, bool) if valid is None else shaped("valid", valid).astype(bool)
    good = shaped("correct", correct).astype(bool) & ok
    if caps is None:
        cap = np.full(shape, np.inf)
    else:
        cap = shaped("caps", float_array("caps", caps, low=0.0, low_open=True, allow_inf=True))
        if np.any(good & (length > cap)):
            raise ValueError("lengths of correct rollouts must be <= their caps")
    if good.any() and np.any(length[good] <= 0):
        raise ValueError("lengths of correct rollouts must be > 0 tokens")
    return _Rollouts(length, good, ok & ~good, np.asarray(cap, dtype=np.float64))


def fit_shifted_surge(
    lengths: ArrayLike,
    correct: ArrayLike,
    *,
    caps: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    rate: Literal["per_query", "shared"] = "per_query",
) -> SurgeParameters:
    """Fit ``(a, tau, beta)`` per query by maximum likelihood; see the module docstring.

    Args:
        lengths: tokens generated per rollout, shape ``(n_queries, n_rollouts)``.
        correct: the rollout produced a correct answer within its cap.
        caps: the cap (tokens, > 0, ``inf`` allowed) each rollout ran under; without it
            every rollout is taken as run to completion (the closed form).
        valid: False marks padding in ragged data (optional).
        rate: ``"per_query"`` (one ``beta`` per query) or ``"shared"`` (one for all).
    """
    if rate not in ("per_query", "shared"):
        raise ValueError(f"rate must be 'per_query' or 'shared'; got {rate!r}")
    data = _prepare(lengths, correct, caps, valid)
    n = data.length.shape[0]
    seen = data.good | data.fail
    longest = np.where(seen, data.length, 0.0).max(axis=1)
    if not data.good.any():
        return SurgeParameters(np.zeros(n), longest, np.full(n, 1e-3), np.zeros(n))
    tau_shared, beta_shared = _fit_shape_shared(data)
    if rate == "shared":
        tau, beta = tau_shared, np.full(n, beta_shared)
    else:
        tau, beta = _fit_shape_per_query(data)
        fallback = ~data.identifiable
        tau, beta = np.where(fallback, tau_shared, tau), np.where(fallback, beta_shared, beta)
    n_obs = seen.sum(axis=1)
    a = np.where(n_obs > 0, data.n_good / np.maximum(n_obs, 1), 0.0)
    if data.capped:
        a, tau, beta = _fit_capped(data, a, tau, beta, shared=(rate == "shared"))
    never = data.n_good == 0
    a = np.where(never, 0.0, a)
    tau = np.where(never, longest, tau)
    return SurgeParameters(a, tau, beta, _log_likelihood(data, a, tau, beta))


# -- uncensored shape fits ------------------------------------------------------------------------
def _profile(data: _Rollouts, tau: NDArray[np.float64]) -> NDArray[np.float64]:
    """Profile log-likelihood of the correct lengths at ``tau`` (``beta`` at its optimum).

    ``tau`` has shape ``(n, k)``; the result too.
    """
    m = data.n_good[:, None]
    u = data.length[:, None, :] - tau[:, :, None]
    good = data.good[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.where(good, u, 0.0).sum(axis=2)
        logs = np.where(good, np.log(np.maximum(u, _TINY)), 0.0).sum(axis=2)
        beta = 2.0 * m / total
        return np.where(m > 0, 2.0 * m * np.log(beta) + logs - 2.0 * m, 0.0)


def _fit_shape_per_query(data: _Rollouts) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-query ``(tau, beta)``: a grid over ``tau`` in ``[0, L_min)``, then golden section."""
    shortest = np.where(np.isfinite(data.shortest_good), data.shortest_good, 0.0)
    # Points crowd towards L_min, where the profile turns down steeply.
    u = 1.0 - np.linspace(1.0, 0.0, _PROFILE_POINTS, endpoint=False) ** 2
    taus = shortest[:, None] * u[None, :]
    best = np.argmax(_profile(data, taus), axis=1)
    lo = shortest * u[np.maximum(best - 1, 0)]
    hi = shortest * np.where(best + 1 < u.size, u[np.minimum(best + 1, u.size - 1)], u[-1])
    inv_phi = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(_GOLDEN_STEPS):
        c = hi - inv_phi * (hi - lo)
        d = lo + inv_phi * (hi - lo)
        f = _profile(data, np.stack((c, d), axis=1))
        left_better = f[:, 0] >= f[:, 1]
        hi = np.where(left_better, d, hi)
        lo = np.where(left_better, lo, c)
    tau = (lo + hi) / 2.0
    mean_excess = np.where(data.good, data.length - tau[:, None], 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = 2.0 * data.n_good / mean_excess
    return tau, np.where(np.isfinite(beta) & (beta > 0), beta, np.nan)


def _fit_shape_shared(data: _Rollouts) -> tuple[NDArray[np.float64], float]:
    """Per-query ``tau`` with one shared ``beta``, by coordinate ascent.

    For a fixed ``beta`` each ``tau_i`` solves ``sum_k 1/(L_ik - tau_i) = beta * m_i`` (a concave
    problem; 0 when even ``tau_i = 0`` is past the optimum); for fixed ``tau``,
    ``beta = 2 M / sum (L - tau)``. Each sweep raises the likelihood.
    """
    m = data.n_good
    has = m > 0
    shortest = np.where(has, data.shortest_good, 0.0)
    tau = np.zeros_like(m)
    beta = 2.0 * m.sum() / np.where(data.good, data.length, 0.0).sum()
    for _ in range(_SHARED_SWEEPS):
        lo, hi = np.zeros_like(m), shortest.copy()
        for _ in range(50):  # bisection on the monotone first-order condition
            mid = (lo + hi) / 2.0
            with np.errstate(divide="ignore"):
                lhs = np.where(data.good, 1.0 / (data.length - mid[:, None]), 0.0).sum(axis=1)
            too_far = lhs > beta * m
            hi, lo = np.where(too_far, mid, hi), np.where(too_far, lo, mid)
        new_tau = np.where(has, lo, 0.0)
        new_beta = 2.0 * m.sum() / np.where(data.good, data.length - new_tau[:, None], 0.0).sum()
        converged = abs(new_beta - beta) <= 1e-12 * beta and np.allclose(new_tau, tau, atol=1e-9)
        tau, beta = new_tau, new_beta
        if converged:
            break
    return tau, float(beta)


# -- joint fit with caps ---------------------------------------------------------------------------
def _log_likelihood(data: _Rollouts, a, tau, beta) -> NDArray[np.float64]:
    a, tau, beta = (np.asarray(v, dtype=np.float64)[:, None] for v in (a, tau, beta))
    u = data.length - tau
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        good = (np.log(np.maximum(a, _TINY)) + 2 * np.log(beta)
                + np.log(np.maximum(u, _TINY)) - beta * u)
        fail = np.log(np.maximum(1.0 - a * gamma2_cdf(beta * (data.cap - tau)), _TINY))
    return (np.where(data.good, good, 0.0) + np.where(data.fail, fail, 0.0)).sum(axis=1)


def expit(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The logistic function, overflow-free."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _fit_capped(data: _Rollouts, a0, tau0, beta0, *, shared: bool):
    """Joint ``(a, tau, beta)`` by L-BFGS-B on the exact gradient; starts at the closed form.

    Parameters are unconstrained: ``a = expit(alpha)``, ``beta = exp(gamma)``,
    ``tau = L_min * expit(theta)`` (``tau`` must stay below the shortest correct length).
    Queries with no correct run keep ``a = 0``; non-identifiable shapes keep the shared rate.
    """
    n = data.length.shape[0]
    has = data.n_good > 0
    span = np.where(has, data.shortest_good, 1.0)
    fixed_rate = ~data.identifiable | shared
    eps = 1e-6
    alpha0 = np.log(np.clip(a0, eps, 1 - eps) / (1 - np.clip(a0, eps, 1 - eps)))
    s0 = np.clip(np.nan_to_num(tau0 / span), eps, 1 - eps)
    theta0 = np.log(s0 / (1 - s0))
    gamma0 = np.log(beta0)
    x0 = np.concatenate((alpha0, theta0, gamma0[:1] if shared else gamma0))

    def unpack(x):
        alpha, theta = x[:n], x[n : 2 * n]
        gamma = np.full(n, x[2 * n]) if shared else x[2 * n :]
        return expit(alpha), span * expit(theta), np.exp(gamma)

    good, fail = data.good, data.fail
    # Rollouts that ran to completion: x = inf, G = 1, and G's derivatives vanish.
    excess_cap = np.where(np.isfinite(data.cap), data.cap, 0.0)

    def objective(x):
        a, tau, beta = unpack(x)
        A, T, B = a[:, None], tau[:, None], beta[:, None]
        u = data.length - T
        up = np.maximum(u, _TINY)
        xc = np.maximum(excess_cap - T, 0.0)  # tokens of the cap past the threshold
        y = np.where(np.isfinite(data.cap), B * xc, np.inf)
        G = gamma2_cdf(y)
        dens = np.where(np.isfinite(y), y * np.exp(-np.minimum(y, 700.0)), 0.0)  # dG/dy
        surv = np.maximum(1.0 - A * G, _TINY)
        ll = (np.where(good, np.log(np.maximum(A, _TINY)) + 2 * np.log(B) + np.log(up) - B * u,
                       0.0)
              + np.where(fail, np.log(surv), 0.0)).sum()
        d_a = (np.where(good, 1.0 / np.maximum(A, _TINY), 0.0)
               - np.where(fail, G / surv, 0.0)).sum(axis=1)
        d_beta = (np.where(good, 2.0 / B - u, 0.0)
                  - np.where(fail, A * dens * xc / surv, 0.0)).sum(axis=1)
        d_tau = (np.where(good, -1.0 / up + B, 0.0)
                 + np.where(fail & (xc > 0), A * dens * B / surv, 0.0)).sum(axis=1)
        s = tau / span
        g_alpha = d_a * a * (1 - a)
        g_theta = d_tau * span * s * (1 - s)
        g_gamma = d_beta * beta
        grad = np.concatenate((g_alpha, g_theta, [g_gamma.sum()] if shared else g_gamma))
        return -ll, -grad

    bounds = [(-30.0, 30.0)] * n + [(-30.0, 30.0)] * n
    if shared:
        bounds += [(-20.0, 5.0)]
    else:
        bounds += [(g, g) if f else (-20.0, 5.0) for g, f in zip(gamma0, fixed_rate, strict=True)]
    # Rows with nothing to learn keep their starting point.
    for i in np.flatnonzero(~has):
        bounds[i] = (x0[i], x0[i])
        bounds[n + i] = (x0[n + i], x0[n + i])
    from scipy.optimize import minimize  # importing scipy.optimize takes about a second

    result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})
    a, tau, beta = unpack(result.x)
    return a, tau, beta
