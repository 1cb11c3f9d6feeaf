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
    """

    kind: Literal["fraction", "chunk", "tangent"] = "fraction"
    fraction: float = 0.5
    chunk_tokens: int = 1024
    min_tokens: int = 256

    def __post_init__(self) -> None:
        if self.kind not in ("fraction", "chunk", "tangent"):
            raise ValueError(f"kind must be 'fraction', 'chunk' or 'tangent'; got {self.kind!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {self.fraction!r}")
        non_negative_int("chunk_tokens", self.chunk_tokens, minimum=1)
        non_negative_int("min_tokens", self.min_tokens, minimum=1)

    def steps(
        self, targets: NDArray[np.int64], granularity: int,
        tangent: NDArray[np.float64] | None = None,
    ) -> NDArray[np.int64]:
        """Tokens to advance each run by, given its remaining target (0 = stop) and, for the
        ``"tangent"`` rule, its most efficient next stop (remaining tokens)."""
        if self.kind == "chunk":
            raw = np.full(targets.shape, float(self.chunk_tokens))
        elif self.kind == "tangent":
            if tangent is None:
                raise ValueError("the tangent rule needs each run's most efficient stop")
            raw = np.asarray(tangent, dtype=np.float64)
        else:
            raw = np.ceil(self.fraction * targets)
        raw = np.maximum(raw, self.min_tokens)
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
    """
    policy = policy or StepPolicy()
    g = non_negative_int("granularity", granularity, minimum=1)
    n = len(curves)
    used = batch_shape("used_tokens", float_array("used_tokens", used_tokens, low=0.0), n)
    total_cap = (curves.saturation_tokens() if max_tokens is None else batch_shape(
        "max_tokens", float_array("max_tokens", max_tokens, low=0.0), n))
    remaining_cap = np.maximum(total_cap - used, 0.0)
    ahead = curves.conditional(used, finish=finish)
    if fees is None:
        sunk = np.zeros(n) if continuation else used
    else:
        sunk = batch_shape("fees", float_array("fees", fees, low=0.0), n)
    priced = ahead.shifted(sunk) if sunk.any() else ahead
    room = np.floor(remaining_cap / g) * g
    # Runs with less than one granule of room left cannot advance: priced as never worth it.
    upper = np.where(room >= g, sunk + room, sunk + g)
    priced_room = priced if (room >= g).all() else _zero_where(priced, room < g)
    alloc = allocate(priced_room, max(float(budget), 0.0), min_tokens=sunk + g,
                     max_tokens=upper, granularity=g)
    targets = np.where(alloc.funded & (room >= g), alloc.tokens - sunk, 0).astype(np.int64)
    if alloc.price == 0.0:
        targets = _free_tokens(targets, np.floor(remaining_cap / g) * g, sunk, budget)
    tangent = None
    if policy.kind == "tangent":
        response = priced.responder(sunk + g, sunk + np.floor(remaining_cap / g) * g)
        tangent = response.tangent_tokens - sunk
    steps = policy.steps(targets, g, tangent)
    new_caps = steps + (0 if continuation else used.astype(np.int64))
    new_caps = np.where(steps > 0, new_caps, 0)
    cost = np.where(steps > 0, steps + np.ceil(sunk).astype(np.int64), 0)
    return RoundPlan(targets, steps, new_caps, cost, alloc.price, alloc.expected_utility)


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
