"""Arbitrary measured curves on one token grid, and how to build them from censored rollouts.

An :class:`EmpiricalCurve` batch holds ``n`` non-decreasing curves sampled on a shared grid of
caps; between grid points a curve is linear, after the last it is flat, and before the first
(when the grid does not start at 0) it rises linearly from ``U(0) = 0``. Real measured curves,
the paper's triangular and quadratic ablations, or any other shape enter the allocator this way.

Best responses use the curve's upper concave envelope above the origin: the maximum of
``U(b) - lam * b`` over a piecewise-linear curve is reached at one of its vertices, and the
vertices that can win for some price are exactly those of the envelope. With the envelope's
slopes ``s_1 > s_2 > ...`` the demand at price ``lam`` is the vertex after the last slope above
``lam``: a count, vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import float_array
from ._bounds import token_bounds
from .base import SATURATION_FRACTION, BestResponse, CurveMethods

_MONOTONE_TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class EmpiricalCurve(CurveMethods):
    """A batch of non-decreasing piecewise-linear curves on one token grid.

    Args:
        grid: caps in tokens, strictly increasing, >= 0, shape ``(m,)``.
        values: utility at each grid point, >= 0 and non-decreasing along the grid, shape
            ``(n, m)`` (or ``(m,)`` for a single curve). At a grid point 0 the value must be 0:
            a call that is not sent has no utility.

    Example:
        >>> curve = EmpiricalCurve([0, 1000, 2000], [[0.0, 0.2, 0.8]])
        >>> curve.value([1500.0]).tolist()
        [0.5]
    """

    grid: NDArray[np.float64]
    values: NDArray[np.float64]

    def __init__(self, grid: ArrayLike, values: ArrayLike) -> None:
        g = float_array("grid", grid, low=0.0)
        v = float_array("values", values, low=0.0)
        if g.ndim != 1 or g.size == 0:
            raise ValueError(f"grid must be a non-empty 1-D array of tokens; got shape {g.shape}")
        if np.any(np.diff(g) <= 0):
            i = int(np.argmax(np.diff(g) <= 0))
            raise ValueError(
                "grid must be strictly increasing; "
                f"grid[{i + 1}]={g[i + 1]!r} <= grid[{i}]={g[i]!r}"
            )
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != g.size:
            raise ValueError(
                f"values must have shape (n, {g.size}) to match grid; got shape {v.shape}"
            )
        steps = np.diff(v, axis=1)
        if np.any(steps < -_MONOTONE_TOLERANCE):
            row, col = (int(i) for i in np.argwhere(steps < -_MONOTONE_TOLERANCE)[0])
            raise ValueError(
                "values must be non-decreasing along the grid; "
                f"values[{row}, {col + 1}]={v[row, col + 1]!r} < "
                f"values[{row}, {col}]={v[row, col]!r}"
            )
        if g[0] == 0.0 and np.any(v[:, 0] != 0.0):
            row = int(np.argmax(v[:, 0] != 0.0))
            raise ValueError(
                f"values at grid point 0 must be 0 (an unsent call has no utility); "
                f"values[{row}, 0]={v[row, 0]!r}"
            )
        v = np.maximum.accumulate(v, axis=1)  # remove sub-tolerance rounding dips
        if g[0] > 0.0:
            g = np.concatenate(([0.0], g))
            v = np.concatenate((np.zeros((v.shape[0], 1)), v), axis=1)
        g.flags.writeable = False
        v.flags.writeable = False
        object.__setattr__(self, "grid", g)
        object.__setattr__(self, "values", v)

    @classmethod
    def from_rollouts(
        cls,
        lengths: ArrayLike,
        correct: ArrayLike,
        grid: ArrayLike,
        *,
        censored: ArrayLike | None = None,
        valid: ArrayLike | None = None,
    ) -> EmpiricalCurve:
        """Accuracy-vs-cap curves from rollouts, censoring-aware (Aalen-Johansen).

        ``U(b)`` estimates the probability that a run finishes within ``b`` tokens with a
        correct answer. A finished run of length ``L`` counts as correct (or not) for every cap
        ``>= L``; a run cut at its cap ``C`` only says its length exceeds ``C``, so it stays "at
        risk" up to ``C`` and drops out after. With no censoring this is exactly
        ``#{k: correct_k and L_k <= b} / n``.

        Args:
            lengths: tokens generated per rollout, shape ``(n, r)``.
            correct: the rollout finished with a correct answer, shape ``(n, r)``.
            grid: the caps (tokens) to evaluate the curves at.
            censored: the rollout was cut at its cap (length is a lower bound), shape ``(n, r)``.
            valid: False marks padding in ragged data, shape ``(n, r)``.
        """
        length = float_array("lengths", lengths, low=0.0)
        if length.ndim == 1:
            length = length[None, :]
        shape = length.shape
        ok = np.ones(shape, bool) if valid is None else np.broadcast_to(valid, shape).astype(bool)
        cens = np.zeros(shape, bool) if censored is None else np.broadcast_to(censored, shape)
        good = np.broadcast_to(correct, shape).astype(bool) & ok & ~cens.astype(bool)
        mass, _ = finish_masses(length, cens, ok)
        g = float_array("grid", grid, low=0.0)
        reached = length[:, :, None] <= g[None, None, :]
        values = np.einsum("nr,nrm->nm", np.where(good, mass, 0.0), reached)
        return cls(g, np.clip(values, 0.0, 1.0))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def ceiling(self) -> NDArray[np.float64]:
        return self.values[:, -1]

    @property
    def threshold(self) -> NDArray[np.float64]:
        """Start of the first rising segment, in tokens; ``inf`` for a curve that never rises."""
        positive = self.values > 0
        first = np.maximum(np.argmax(positive, axis=1) - 1, 0)
        return np.where(positive.any(axis=1), self.grid[first], np.inf)

    def _locate(self, tokens: ArrayLike) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        b = np.asarray(tokens, dtype=np.float64)
        rows = np.arange(len(self)).reshape((len(self),) + (1,) * max(b.ndim - 1, 0))
        if b.ndim == 0:
            rows = np.arange(len(self))
        g = self.grid
        seg = np.clip(np.searchsorted(g, b, side="right") - 1, 0, g.size - 2 if g.size > 1 else 0)
        return b, rows, seg, g

    def value(self, tokens: ArrayLike) -> NDArray[np.float64]:
        b, rows, seg, g = self._locate(tokens)
        if g.size == 1:
            return np.broadcast_to(self.values[rows, 0], np.broadcast(rows, b).shape).copy()
        v0, v1 = self.values[rows, seg], self.values[rows, seg + 1]
        frac = np.clip((b - g[seg]) / (g[seg + 1] - g[seg]), 0.0, 1.0)
        return v0 + frac * (v1 - v0)

    def marginal(self, tokens: ArrayLike) -> NDArray[np.float64]:
        b, rows, seg, g = self._locate(tokens)
        if g.size == 1:
            return np.zeros(np.broadcast(rows, b).shape)
        slope = (self.values[rows, seg + 1] - self.values[rows, seg]) / (g[seg + 1] - g[seg])
        return np.where(b >= g[-1], 0.0, slope)

    def saturation_tokens(self, fraction: float = SATURATION_FRACTION) -> NDArray[np.float64]:
        frac = float(float_array("fraction", fraction, low=0.0, high=1.0, low_open=True))
        target = frac * self.ceiling
        above = self.values >= target[:, None] - 1e-15
        j = np.argmax(above, axis=1)  # first grid index reaching the target (exists: last one)
        rows = np.arange(len(self))
        prev = np.maximum(j - 1, 0)
        v0, v1 = self.values[rows, prev], self.values[rows, j]
        g0, g1 = self.grid[prev], self.grid[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac_seg = np.where(v1 > v0, (target - v0) / (v1 - v0), 1.0)
        return np.where(self.ceiling > 0, g0 + np.clip(frac_seg, 0.0, 1.0) * (g1 - g0), 0.0)

    def responder(
        self, min_tokens: ArrayLike = 0, max_tokens: ArrayLike | None = None
    ) -> EnvelopeResponse:
        lower, upper = token_bounds(len(self), min_tokens, max_tokens, self.saturation_tokens())
        return EnvelopeResponse(self, lower, upper)

    def take(self, index: ArrayLike) -> Self:
        return type(self)(self.grid, self.values[np.asarray(index)])

    def shifted(self, tokens: ArrayLike) -> Self:
        """Resampled on the grid extended by the largest shift: exact at grid points, linear
        in between (offsets that are not grid multiples smooth a kink by at most one step)."""
        offset = np.broadcast_to(float_array("tokens", tokens, low=0.0), (len(self),))
        top = self.grid[-1] + float(offset.max(initial=0.0))
        grid = self.grid if top == self.grid[-1] else np.append(self.grid, top)
        values = self.value(np.maximum(grid[None, :] - offset[:, None], 0.0))
        return type(self)(grid, values)

    def __repr__(self) -> str:
        return f"EmpiricalCurve(n={len(self)}, grid={self.grid.size} points)"


def upper_envelope(
    x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vertices of the upper concave envelope from the origin, row by row.

    ``x`` (non-decreasing along rows) and ``y`` have shape ``(n, m)``. Returns ``(xs, slopes)``
    of shape ``(n, K+1)`` and ``(n, K)``: vertex positions starting at the origin, and the
    strictly decreasing positive slopes between them, padded with ``-1`` (never bought). The loop
    runs once per envelope vertex (at most ``m``), each step vectorised over the batch.
    """
    n, m = x.shape
    cur_x, cur_y = np.zeros(n), np.zeros(n)
    xs, slopes = [cur_x], []
    active = np.ones(n, bool)
    for _ in range(m):
        dx = x - cur_x[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(dx > 0, (y - cur_y[:, None]) / dx, -np.inf)
        best = s.max(axis=1)
        active &= best > 0
        if not active.any():
            break
        # Farthest point among those on the steepest ray, so collinear points are skipped.
        on_ray = s >= best[:, None] * (1 - 1e-12)
        j = m - 1 - np.argmax(on_ray[:, ::-1], axis=1)
        rows = np.arange(n)
        cur_x = np.where(active, x[rows, j], cur_x)
        cur_y = np.where(active, y[rows, j], cur_y)
        xs.append(cur_x)
        slopes.append(np.where(active, best, -1.0))
    if not slopes:
        return np.zeros((n, 1)), np.full((n, 0), -1.0)
    return np.stack(xs, axis=1), np.stack(slopes, axis=1)


class EnvelopeResponse(BestResponse):
    """Best responses of empirical curves: vertices of their bounded concave envelopes."""

    def __init__(
        self, curves: EmpiricalCurve, lower: NDArray[np.float64], upper: NDArray[np.float64]
    ) -> None:
        self.curves = curves
        self.lower = lower
        self.upper = upper
        fundable = (upper >= lower) & (upper > 0)
        # Candidate caps: the grid points clipped into [lower, upper] (which adds both bounds).
        cand = np.clip(curves.grid[None, :], lower[:, None], upper[:, None])
        cand = np.where(fundable[:, None], cand, 0.0)
        self._xs, self._slopes = upper_envelope(cand, curves.value(cand))
        self.break_even = self._slopes[:, 0] if self._slopes.shape[1] else np.zeros(len(curves))
        self.break_even = np.maximum(self.break_even, 0.0)
        first_vertex = self._xs[:, min(1, self._xs.shape[1] - 1)]
        self.tangent_tokens = np.where(self.break_even > 0, first_vertex, 0.0)
        self._top = cand[:, -1]

    def demand(self, price: float) -> NDArray[np.float64]:
        if price <= 0.0:
            # Tokens are free: every maximiser is optimal, and the largest (the cap) is what a
            # slack budget hands out, as for the shifted surge.
            return np.where(self.break_even > 0, self._top, 0.0)
        bought = (self._slopes > price).sum(axis=1)
        return self._xs[np.arange(self._xs.shape[0]), bought]

    def take(self, index: NDArray[np.intp]) -> EnvelopeResponse:
        sub = object.__new__(EnvelopeResponse)
        sub.curves = self.curves.take(index)
        sub.lower, sub.upper = self.lower[index], self.upper[index]
        sub._xs, sub._slopes = self._xs[index], self._slopes[index]
        sub.break_even, sub._top = self.break_even[index], self._top[index]
        sub.tangent_tokens = self.tangent_tokens[index]
        return sub


def finish_masses(
    lengths: NDArray[np.float64], censored: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Kaplan-Meier probability mass of each finished run, and the survival left over.

    Per row of runs: runs are ordered by length, finished runs before cut ones at equal length
    (a run cut at ``C`` was still running at ``C``); each finished run takes ``S / at_risk`` of
    the survival ``S`` before it. A cut run takes no mass: its share moves to the longer runs
    (Efron's redistribution to the right). What no finished run takes is the probability of
    still running after the longest run, ``residual``.

    Args:
        lengths: tokens per run, shape ``(n, r)``.
        censored: the run was cut at its cap, shape ``(n, r)``.
        valid: False marks padding, shape ``(n, r)``.

    Returns:
        ``(mass, residual)``: mass per run in the input order (0 for cut runs and padding),
        shape ``(n, r)``, summing with ``residual`` (shape ``(n,)``) to 1 per row with a run.
    """
    shape = lengths.shape
    cens = censored.astype(bool) & valid
    key = np.where(valid, lengths, np.inf)
    order = np.lexsort((cens, key), axis=-1)
    event = np.take_along_axis(valid & ~cens, order, axis=1)
    at_risk = valid.sum(axis=1, keepdims=True) - np.arange(shape[1])[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(event & (at_risk > 0), 1.0 / at_risk, 0.0)
    survival = np.cumprod(np.concatenate((np.ones((shape[0], 1)), 1.0 - hazard), axis=1), axis=1)
    mass = np.empty(shape)
    np.put_along_axis(mass, order, survival[:, :-1] * hazard, axis=1)
    residual = np.where(valid.any(axis=1), survival[:, -1], 0.0)
    return mass, residual


def replay_weights(
    lengths: NDArray[np.float64], censored: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Probability of drawing each run so that a drawn run, replayed under any cap, follows
    the censoring-aware curve of its row (:meth:`EmpiricalCurve.from_rollouts`).

    A finished run gets its Kaplan-Meier mass (:func:`finish_masses`), a cut run none, except
    the run(s) cut at the row's longest length, which share what is left over: replayed, they
    keep running (past their cap that is an assumption; the curve is flat there too).
    Shapes ``(n, r)`` in and out; a row with a run sums to 1.
    """
    mass, residual = finish_masses(lengths, censored, valid)
    cut = censored.astype(bool) & valid
    longest = np.where(valid, lengths, -np.inf).max(axis=1, keepdims=True)
    holders = cut & (lengths == longest)
    count = np.maximum(holders.sum(axis=1, keepdims=True), 1)
    return mass + np.where(holders, residual[:, None] / count, 0.0)
