"""Progressive CLEAR: spend in rounds, re-pricing as runs reveal their lengths.

One-shot CLEAR fixes every cap before anything runs, so with per-kind curves it cannot tell the
items of a kind apart. A run tells on itself as it goes: one still unfinished long after its
kind usually stops is likely hopeless, and one that finished early hands its leftover back. Each
round here re-solves the shadow price for the unfinished runs on the remaining budget, with
their curves *conditioned on what was seen* (:meth:`UtilityCurves.conditional`: a run that used
``s`` tokens without finishing has the curve of the runs that are still going after ``s``), and
advances each funded run by a step. Runs priced out stop (their sunk tokens are ignored, not
chased).

Continuation vs restart: where the provider can continue a cut-off generation, a step of ``d``
tokens costs ``d``. Where it cannot, advancing means running again from scratch with a larger
cap: the step costs ``s + d``, and the planner sees that cost (the conditional curve is
shifted right by the sunk ``s`` tokens), so it funds fewer, larger steps.

Pricing (``pricing=``): a step's cap is what it *may* spend, but a run that finishes early
hands the rest back to the next round. ``"expected"`` (the default) prices each run's remaining
tokens at what it is expected to spend: the utility of going on to ``r`` more tokens is traded
against ``C(r) = integral_0^r S(x) dx``, where ``S`` is the probability of the run still going
``x`` tokens from now (from the finish curve, conditioned on what was seen). In the coordinate
``c = C(r)`` this is plain CLEAR (each run's curve resampled on expected spend), and at the
optimum a run goes on while its hazard of finishing correctly is above the price. The caps of
a round must still fit in the budget in full: when they do not, the runs whose step buys the
most utility per expected token go first and the others wait a round. ``"cap"`` prices every
step at its full cap, as one-shot CLEAR does (too dear for runs likely to finish early, and
badly so for restarts, whose regenerated tokens are a sure cost).

Step policies (benchmarked in ``benchmarks/progressive.py``):

- ``"fraction"``: advance by ``fraction`` of the run's current target (at least ``min_tokens``,
  at most the target): big steps for runs with large targets, few rounds in all;
- ``"chunk"``: advance by ``chunk_tokens`` (at most the target);
- ``"tangent"`` (an index rule): advance to the run's most efficient next stop, the cap where
  its expected utility per token from here peaks (the tangent from the current point to its
  conditional curve, whose slope is its break-even price), at most the target. It then pauses
  where the run reveals the most per token spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import batch_shape, float_array, non_negative_int
from ..curves.base import UtilityCurves
from ..curves.empirical import EmpiricalCurve
from . import allocate


@dataclass(frozen=True)
class StepPolicy:
    """How far a funded run advances in one round.

    Attributes:
        kind: ``"fraction"`` or ``"chunk"``.
        fraction: share of the run's target taken per round (``"fraction"``), in (0, 1].
        chunk_tokens: tokens per round (``"chunk"``), >= 1.
        min_tokens: smallest step (tokens, >= 1): below it a round costs more in latency than
            it reveals.
        fee_ratio: each step is at least ``fee_ratio`` times the fee it pays besides its new
            tokens (>= 0): the partial answer a continued call re-reads, or a restart
            regenerates, plus the prompt. Steps then grow geometrically with a run's tokens, so
            the fees of all its rounds stay within ``1 / fee_ratio`` of its output (0 = no
            floor).
    """

    kind: Literal["fraction", "chunk", "tangent"] = "fraction"
    fraction: float = 0.5
    chunk_tokens: int = 1024
    min_tokens: int = 256
    fee_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("fraction", "chunk", "tangent"):
            raise ValueError(f"kind must be 'fraction', 'chunk' or 'tangent'; got {self.kind!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {self.fraction!r}")
        non_negative_int("chunk_tokens", self.chunk_tokens, minimum=1)
        non_negative_int("min_tokens", self.min_tokens, minimum=1)
        if not (isinstance(self.fee_ratio, int | float) and 0 <= self.fee_ratio < float("inf")):
            raise ValueError(f"fee_ratio must be a finite number >= 0; got {self.fee_ratio!r}")

    def steps(
        self, targets: NDArray[np.int64], granularity: int,
        tangent: NDArray[np.float64] | None = None, fees: NDArray[np.float64] | None = None,
    ) -> NDArray[np.int64]:
        """Tokens to advance each run by, given its remaining target (0 = stop), for the
        ``"tangent"`` rule its most efficient next stop (remaining tokens), and the fee each
        run's next call pays besides its new tokens (tokens)."""
        if self.kind == "chunk":
            raw = np.full(targets.shape, float(self.chunk_tokens))
        elif self.kind == "tangent":
            if tangent is None:
                raise ValueError("the tangent rule needs each run's most efficient stop")
            raw = np.asarray(tangent, dtype=np.float64)
        else:
            raw = np.ceil(self.fraction * targets)
        raw = np.maximum(raw, self.min_tokens)
        if fees is not None:
            raw = np.maximum(raw, self.fee_ratio * np.asarray(fees, dtype=np.float64))
        step = np.ceil(raw / granularity) * granularity
        return np.where(targets > 0, np.minimum(step, targets), 0).astype(np.int64)


@dataclass(frozen=True)
class RoundPlan:
    """One round for the active runs.

    Attributes:
        targets: CLEAR's remaining tokens per run at this round's price (0 = stop it now).
        steps: tokens each run generates this round (0 = stop).
        new_caps: the cap of this round's call: ``steps`` when continuing; ``used + steps``
            when restarting.
        cost: tokens this round may spend per run: its fee plus its step.
        price: the round's shadow price (utility per token).
        expected_utility: expected utility of the targets (conditional on what was seen).
    """

    targets: NDArray[np.int64]
    steps: NDArray[np.int64]
    new_caps: NDArray[np.int64]
    cost: NDArray[np.int64]
    price: float
    expected_utility: float


def plan_round(
    curves: UtilityCurves,
    used_tokens: ArrayLike,
    budget: float,
    *,
    finish: UtilityCurves | None = None,
    continuation: bool = True,
    policy: StepPolicy | None = None,
    max_tokens: ArrayLike | None = None,
    granularity: int = 16,
    fees: ArrayLike | None = None,
    pricing: Literal["expected", "cap"] = "expected",
) -> RoundPlan:
    """Plan one round for runs that used ``used_tokens`` each without finishing.

    Args:
        curves: each run's (unconditional) curve over its total output tokens.
        used_tokens: tokens each run generated so far (0 for a run not started).
        budget: tokens left for all of them (>= 0).
        finish: each run's probability of having finished (right or wrong) by ``b`` tokens;
            default: only correct answers end a run early.
        continuation: the provider continues cut-off generations (else each step restarts).
        policy: the step policy (default: half the target, at least 256 tokens).
        max_tokens: largest total output per run (tokens; default: its saturation point).
        granularity: steps are multiples of it (tokens).
        fees: tokens each run's next call costs besides its new tokens (default: nothing when
            continuing, the regenerated ``used_tokens`` when restarting). A session passes the
            prompt plus the partial answer, which a provider bills as prompt tokens when
            continuing and as output when restarting.
        pricing: ``"expected"`` (a run's tokens priced at what it is expected to spend) or
            ``"cap"`` (at its full cap); see the module docstring.
    """
    if pricing not in ("expected", "cap"):
        raise ValueError(f"pricing must be 'expected' or 'cap'; got {pricing!r}")
    policy = policy or StepPolicy()
    g = non_negative_int("granularity", granularity, minimum=1)
    n = len(curves)
    used = batch_shape("used_tokens", float_array("used_tokens", used_tokens, low=0.0), n)
    total_cap = (curves.saturation_tokens() if max_tokens is None else batch_shape(
        "max_tokens", float_array("max_tokens", max_tokens, low=0.0), n))
    remaining_cap = np.maximum(total_cap - used, 0.0)
    if fees is None:
        sunk = np.zeros(n) if continuation else used
    else:
        sunk = batch_shape("fees", float_array("fees", fees, low=0.0), n)
    room = np.floor(remaining_cap / g) * g
    if pricing == "expected":
        targets, tangent, price, utility = _expected_targets(
            curves, finish, used, room, sunk, float(budget), g, policy.kind == "tangent")
    else:
        targets, tangent, price, utility = _cap_targets(
            curves, finish, used, room, sunk, float(budget), g, policy.kind == "tangent")
    steps = policy.steps(targets, g, tangent, sunk)
    cost = np.where(steps > 0, steps + np.ceil(sunk).astype(np.int64), 0)
    if cost.sum() > budget:
        steps = _fit_steps(curves, finish, used, steps, cost, sunk, float(budget))
        cost = np.where(steps > 0, cost, 0)
    new_caps = steps + (0 if continuation else used.astype(np.int64))
    new_caps = np.where(steps > 0, new_caps, 0)
    return RoundPlan(targets, steps, new_caps, cost, price, utility)


def _cap_targets(
    curves: UtilityCurves, finish: UtilityCurves | None, used: NDArray[np.float64],
    room: NDArray[np.float64], sunk: NDArray[np.float64], budget: float, g: int,
    want_tangent: bool,
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None, float, float]:
    """Targets with every token of a step priced as spent (``pricing="cap"``)."""
    ahead = curves.conditional(used, finish=finish)
    priced = ahead.shifted(sunk) if sunk.any() else ahead
    # Runs with less than one granule of room left cannot advance: priced as never worth it.
    upper = np.where(room >= g, sunk + room, sunk + g)
    priced_room = priced if (room >= g).all() else _zero_where(priced, room < g)
    alloc = allocate(priced_room, max(budget, 0.0), min_tokens=sunk + g,
                     max_tokens=upper, granularity=g)
    targets = np.where(alloc.funded & (room >= g), alloc.tokens - sunk, 0).astype(np.int64)
    if alloc.price == 0.0:
        targets = _free_tokens(targets, room, sunk, budget)
    tangent = None
    if want_tangent:
        response = priced.responder(sunk + g, sunk + np.maximum(room, g))
        tangent = response.tangent_tokens - sunk
    return targets, tangent, alloc.price, alloc.expected_utility


def _expected_targets(
    curves: UtilityCurves, finish: UtilityCurves | None, used: NDArray[np.float64],
    room: NDArray[np.float64], sunk: NDArray[np.float64], budget: float, g: int,
    want_tangent: bool,
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None, float, float]:
    """Targets with each run's tokens priced at its expected spend (``pricing="expected"``)."""
    r = np.arange(0.0, float(room.max(initial=0.0)) + g, g)
    value, spend = _value_and_spend(curves, finish, used, r, room)
    # Each run's curve over its expected spend, resampled on one spend grid.
    c_grid = np.arange(0.0, float(spend[:, -1].max()) + g, g)
    over_spend = _interp_rows(np.broadcast_to(c_grid, (len(room), c_grid.size)), spend,
                              value)
    over_spend[:, 0] = 0.0
    per_spend = EmpiricalCurve(c_grid, np.maximum.accumulate(over_spend, axis=1))
    movable = room >= g
    if not movable.all():
        per_spend = _zero_where(per_spend, ~movable)
    priced = per_spend.shifted(sunk) if sunk.any() else per_spend
    first = spend[:, 1] if r.size > 1 else np.zeros(len(room))
    full = spend[:, -1]
    lower = sunk + first
    upper = np.where(movable, sunk + np.maximum(full, first), sunk + first)
    alloc = allocate(priced, max(budget, 0.0), min_tokens=lower, max_tokens=upper)
    bought = np.where(alloc.funded & movable, alloc.tokens - sunk, 0.0)
    targets = _tokens_for_spend(bought, spend, r, room, g)
    if alloc.price == 0.0:
        targets = _free_tokens(targets, room, sunk, budget)
    tangent = None
    if want_tangent:
        response = priced.responder(lower, upper)
        tangent = _tokens_for_spend(np.maximum(response.tangent_tokens - sunk, first),
                                    spend, r, room, g).astype(np.float64)
    return targets, tangent, alloc.price, alloc.expected_utility


def _value_and_spend(
    curves: UtilityCurves, finish: UtilityCurves | None, used: NDArray[np.float64],
    r: NDArray[np.float64], room: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each run's conditional utility ``V(r)`` and expected spend ``C(r)`` on the remaining-token
    grid ``r`` (both flat beyond its room)."""
    inside = r[None, :] <= room[:, None]
    value = curves.conditional(used, finish=finish, grid=r).values
    top = np.max(np.where(inside, value, 0.0), axis=1, keepdims=True)
    value = np.where(inside, value, top)
    done = (finish if finish is not None else curves).value(used[:, None] + r[None, :])
    alive = 1.0 - done[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        going = np.where(alive > 1e-12, 1.0 - (done - done[:, :1]) / alive, 0.0)
    going = np.where(inside, np.clip(going, 0.0, 1.0), 0.0)
    step = np.diff(r)
    spend = np.concatenate(
        (np.zeros((len(room), 1)), np.cumsum((going[:, :-1] + going[:, 1:]) / 2 * step, axis=1)),
        axis=1)
    return value, spend


def _tokens_for_spend(
    bought: NDArray[np.float64], spend: NDArray[np.float64], r: NDArray[np.float64],
    room: NDArray[np.float64], g: int,
) -> NDArray[np.int64]:
    """The fewest remaining tokens (a multiple of ``g``, within the room) whose expected spend
    reaches ``bought``; 0 where nothing was bought."""
    reach = spend >= (bought[:, None] - 1e-9)
    first = np.where(reach.any(axis=1), np.argmax(reach, axis=1), r.size - 1)
    tokens = np.minimum(np.maximum(r[first], g), room)
    return np.where(bought > 0, tokens, 0).astype(np.int64)


def _fit_steps(
    curves: UtilityCurves, finish: UtilityCurves | None, used: NDArray[np.float64],
    steps: NDArray[np.int64], cost: NDArray[np.int64], sunk: NDArray[np.float64],
    budget: float,
) -> NDArray[np.int64]:
    """Keep the steps whose full caps fit in ``budget``, those buying the most utility per
    expected token first; the others wait a round."""
    r_step = steps.astype(np.float64)
    gain = np.zeros(len(steps))
    moving = steps > 0
    if moving.any():
        idx = np.flatnonzero(moving)
        grid = np.unique(np.concatenate(([0.0], r_step[idx])))
        value, spend = _value_and_spend(curves.take(idx), None if finish is None
                                        else finish.take(idx), used[idx], grid, r_step[idx])
        at = np.searchsorted(grid, r_step[idx])
        rows = np.arange(idx.size)
        gain[idx] = value[rows, at] / np.maximum(sunk[idx] + spend[rows, at], 1e-9)
    order = np.argsort(np.where(moving, -gain, np.inf), kind="stable")
    fits = (np.cumsum(cost[order]) <= budget) & moving[order]
    keep = np.zeros(len(steps), dtype=bool)
    keep[order[fits]] = True
    return np.where(keep, steps, 0)


def _interp_rows(x: NDArray[np.float64], xp: NDArray[np.float64],
                 fp: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.interp`` row by row, vectorised: ``x`` (n, k), ``xp`` (n, m) non-decreasing rows,
    ``fp`` (n, m); beyond a row's last ``xp``, its last ``fp``."""
    n, m = xp.shape
    span = float(max(xp.max(initial=0.0), x.max(initial=0.0))) + 1.0
    offset = (np.arange(n) * 2.0 * span)[:, None]
    flat = (xp + offset).ravel()
    hi = np.searchsorted(flat, (x + offset).ravel(), side="right").reshape(x.shape)
    start = (np.arange(n) * m)[:, None]
    hi = np.clip(hi, start + 1, start + m - 1)
    lo = hi - 1
    x0, x1 = flat[lo] - offset, flat[hi] - offset
    f0, f1 = fp.ravel()[lo], fp.ravel()[hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(x1 > x0, (x - x0) / (x1 - x0), 1.0), 0.0, 1.0)
    return np.where(x >= xp[:, -1:], fp[:, -1:], f0 + t * (f1 - f0))


def _zero_where(curves: UtilityCurves, mask: NDArray[np.bool_]) -> EmpiricalCurve:
    """The curves as an :class:`EmpiricalCurve`, with the masked ones worth nothing."""
    grid = getattr(curves, "grid", None)
    if grid is None:
        grid = np.arange(0.0, float(np.max(curves.saturation_tokens())) + 64.0, 32.0)
    values = curves.value(np.asarray(grid)[None, :])
    values[mask] = 0.0
    return EmpiricalCurve(grid, values)


def _free_tokens(
    targets: NDArray[np.int64], room: NDArray[np.float64], sunk: NDArray[np.float64],
    budget: float,
) -> NDArray[np.int64]:
    """At price 0 tokens are free: runs the curves call hopeless may still use what nobody else
    wants, up to their caps, cheapest first (a learned curve is flat where nothing was seen,
    not where nothing can happen)."""
    left = float(budget) - float((targets + np.where(targets > 0, sunk, 0)).sum())
    idle = np.flatnonzero((targets == 0) & (room > 0))
    cost = room[idle] + sunk[idle]
    order = idle[np.argsort(cost, kind="stable")]
    fits = np.cumsum(room[order] + sunk[order]) <= left
    out = targets.copy()
    out[order[fits]] = room[order[fits]].astype(np.int64)
    return out
