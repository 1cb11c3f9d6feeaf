"""Offline evaluation of progressive CLEAR on real runs revealed token by token.

For each item one of its real runs is drawn, with its Kaplan-Meier weight
(:func:`~clear_middleware.curves.empirical.replay_weights`), so the draws follow the item's
censoring-aware curve: a finished run, or the run cut at the item's longest length, which then
never finishes. Its length and whether its answer is correct are what a policy faces. Every
policy faces the same drawn runs, and a run counts as solved when it finished within the
tokens its policy gave it and its answer was correct. Repeated over many draws.

Policies: ``uniform`` and one-shot CLEAR with per-kind or true per-item curves fix each cap
before anything runs; progressive CLEAR with per-kind curves spends in rounds
(:mod:`clear_middleware.allocator.progressive`), continuing cut-off runs or restarting them.
Per-kind curves come from the other half of each kind's items (random half splits, as in
:mod:`.frontier`), so no item's own runs inform its curve.

Two per-item references, because an item's "true" curve is estimated from a handful of runs
(about 4-5 runs with weight per item for qwen3 and the OpenRS models, 7 for DeepScaleR):

- ``one-shot (true item curves)``: the item's curve from all its runs, the drawn one included.
  With so few runs this curve partly *knows* the drawn run's outcome: at 4096 tokens per item it
  equals perfect foresight. It is the reference of the original measurement and is kept.
- ``one-shot (item curves, leave-one-out)``: the item's curve from its *other* runs. It knows
  nothing of the drawn run, like any predictor; being estimated from 3-5 runs, it is noisier
  than the item's true curve.

``perfect foresight`` is a bound, not a policy: it knows every drawn run's length and
correctness and funds the correct runs shortest first. ``per-kind stops (hindsight)`` is the
best rule of the form "run every item of kind ``k`` until it finishes or reaches ``t_k``
tokens", its stop times chosen *after* seeing the drawn runs: what per-kind knowledge can
reach when it stops every item of a kind at the same point, with hindsight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..allocator import allocate
from ..allocator.progressive import StepPolicy, plan_round
from ..curves.empirical import EmpiricalCurve, replay_weights
from ..datasets.reasoning_sweep import ItemRollouts, item_rollouts, load_sweep
from .frontier import GRID_STEP, item_curves, kind_half_split

VARIANTS = (
    "uniform",
    "one-shot (per kind)",
    "progressive (per kind, continue)",
    "progressive (per kind, restart)",
    "one-shot (true item curves)",
    "one-shot (item curves, leave-one-out)",
    "per-kind stops (hindsight)",
    "perfect foresight",
)


@dataclass(frozen=True)
class Runs:
    """One drawn run per item: its length (``inf``: never finishes), correctness, and which of
    the item's rollouts it is (``-1``: not from the rollouts)."""

    length: NDArray[np.float64]
    correct: NDArray[np.bool_]
    rollout: NDArray[np.intp] | None = None

    def take(self, index: NDArray[np.intp]) -> Runs:
        return Runs(self.length[index], self.correct[index],
                    None if self.rollout is None else self.rollout[index])


def draw_runs(
    rollouts: ItemRollouts, rng: np.random.Generator, items: NDArray[np.intp] | None = None
) -> Runs:
    """A run per item, drawn with its Kaplan-Meier weight (see the module docstring);
    ``items``: draw for these item indices (repeats allowed) instead of every item once."""
    rows = np.arange(len(rollouts)) if items is None else np.asarray(items)
    weights = replay_weights(rollouts.length, rollouts.censored, rollouts.valid)[rows]
    with np.errstate(divide="ignore"):
        race = -np.log1p(-rng.random(weights.shape)) / weights  # exponential race
    pick = np.argmin(race, axis=1)
    finished = ~rollouts.censored[rows, pick]
    length = np.where(finished, rollouts.length[rows, pick], np.inf)
    return Runs(length, rollouts.correct[rows, pick] & finished, pick)


def leave_one_out(rollouts: ItemRollouts, runs: Runs, grid: NDArray[np.float64]) -> EmpiricalCurve:
    """Each item's curve from its rollouts other than the drawn one."""
    valid = rollouts.valid.copy()
    valid[np.arange(len(rollouts)), runs.rollout] = False
    return EmpiricalCurve.from_rollouts(rollouts.length, rollouts.correct, grid,
                                        censored=rollouts.censored, valid=valid)


def per_kind_stops(
    runs: Runs, kinds: NDArray, budget: float, stops: NDArray[np.float64]
) -> tuple[float, float]:
    """(accuracy, tokens spent per item) of the best per-kind stop times in hindsight: every
    item of kind ``k`` runs until it finishes or reaches ``t_k`` (one of ``stops``), the
    ``t_k`` chosen knowing the drawn runs, total spend within ``budget``."""
    # Per kind and stop time: tokens spent and items solved. Kinds are combined one by one,
    # keeping only the (spend, solved) pairs no other pair beats on both.
    spend = np.array([0.0])
    solved = np.array([0.0])
    for kind in np.unique(kinds):
        mine = kinds == kind
        length, right = runs.length[mine], runs.correct[mine]
        k_spend = np.minimum(length[None, :], stops[:, None]).sum(axis=1)
        k_solved = (right[None, :] & (length[None, :] <= stops[:, None])).sum(axis=1)
        spend = (spend[:, None] + k_spend[None, :]).ravel()
        solved = (solved[:, None] + k_solved[None, :]).ravel()
        keep = spend <= budget
        spend, solved = spend[keep], solved[keep]
        order = np.lexsort((-solved, spend))
        spend, solved = spend[order], solved[order]
        frontier = solved > np.concatenate(([-1.0], np.maximum.accumulate(solved)[:-1]))
        spend, solved = spend[frontier], solved[frontier]
    best = int(np.argmax(solved))
    n = len(runs.length)
    return float(solved[best] / n), float(spend[best] / n)


def perfect_foresight(runs: Runs, budget: float) -> tuple[float, float]:
    """(accuracy, tokens spent per item) of funding the correct runs shortest first, knowing
    every run (a bound)."""
    lengths = np.sort(runs.length[runs.correct & np.isfinite(runs.length)])
    fits = np.cumsum(lengths) <= budget
    n = len(runs.length)
    return float(fits.sum() / n), float(lengths[fits].sum() / n)


def one_shot(caps: NDArray[np.int64], runs: Runs) -> tuple[float, float]:
    """(accuracy, tokens spent per item) of fixed caps."""
    solved = (runs.length <= caps) & runs.correct
    spent = np.minimum(runs.length, caps)
    return float(solved.mean()), float(spent.mean())


def progressive(
    curves: EmpiricalCurve, finish: EmpiricalCurve, runs: Runs, budget: float, *,
    continuation: bool, policy: StepPolicy, max_tokens: float, granularity: int = GRID_STEP,
    max_rounds: int = 64, pricing: Literal["expected", "cap"] = "expected",
) -> tuple[float, float, int]:
    """(accuracy, tokens spent per item, rounds) of progressive CLEAR on drawn runs."""
    n = len(curves)
    used = np.zeros(n)
    active = np.ones(n, dtype=bool)
    solved = np.zeros(n, dtype=bool)
    left = float(budget)
    rounds = 0
    while active.any() and rounds < max_rounds:
        idx = np.flatnonzero(active)
        plan = plan_round(curves.take(idx), used[idx], left, finish=finish.take(idx),
                          continuation=continuation, policy=policy, max_tokens=max_tokens,
                          granularity=granularity, pricing=pricing)
        if not plan.steps.any():
            break
        rounds += 1
        # Priced-out runs pause (their sunk tokens are ignored); a later round, with tokens
        # returned by early finishers, may fund them again.
        go = plan.steps > 0
        moving = idx[go]
        reach = used[moving] + plan.steps[go]
        done = runs.length[moving] <= reach
        generated = np.minimum(runs.length[moving], reach)
        left -= float((generated - used[moving]).sum() if continuation else generated.sum())
        solved[moving[done]] = runs.correct[moving[done]]
        active[moving[done]] = False
        used[moving[~done]] = reach[~done]
        active &= used < max_tokens
    spent = float(budget - left)
    return float(solved.mean()), spent / n, rounds


def evaluate(
    model: str, budgets_per_item: Sequence[int], *, draws: int = 20, seed: int = 0,
    policy: StepPolicy | None = None, restart_policy: StepPolicy | None = None,
    pricing: Literal["expected", "cap"] = "expected",
) -> list[dict[str, float]]:
    """Mean accuracy and tokens of every variant at each average budget (over ``draws``)."""
    table = load_sweep()
    items = item_curves(model, table)
    rollouts = item_rollouts(table, model)
    grid, cap = items.grid, items.max_cap
    finished = rollouts.valid & ~rollouts.censored
    finish = EmpiricalCurve.from_rollouts(rollouts.length, finished, grid,
                                          censored=rollouts.censored, valid=rollouts.valid)
    policy = policy or StepPolicy()
    restart_policy = restart_policy or StepPolicy(kind="fraction", fraction=1.0)
    rng = np.random.default_rng(seed)
    out = []
    for per_item in budgets_per_item:
        sums: dict[str, list[float]] = {v: [0.0, 0.0] for v in VARIANTS}
        for _ in range(draws):
            runs = draw_runs(rollouts, rng)
            held, (kind_u, kind_f) = kind_half_split(items.benchmark, [items.truth, finish], rng)
            sub = runs.take(held)
            loo = leave_one_out(rollouts, runs, grid).take(held)
            budget = per_item * held.size
            kw = dict(granularity=GRID_STEP, max_tokens=cap)
            results = {
                "uniform": one_shot(allocate(items.truth.take(held), budget, policy="uniform",
                                             **kw).tokens, sub),
                "one-shot (per kind)": one_shot(allocate(kind_u, budget, **kw).tokens, sub),
                "one-shot (true item curves)": one_shot(
                    allocate(items.truth.take(held), budget, **kw).tokens, sub),
                "one-shot (item curves, leave-one-out)": one_shot(
                    allocate(loo, budget, **kw).tokens, sub),
                "per-kind stops (hindsight)": per_kind_stops(
                    sub, items.benchmark[held], budget, grid[grid <= cap]),
                "perfect foresight": perfect_foresight(sub, budget),
                "progressive (per kind, continue)": progressive(
                    kind_u, kind_f, sub, budget, continuation=True, policy=policy,
                    max_tokens=cap, pricing=pricing)[:2],
                "progressive (per kind, restart)": progressive(
                    kind_u, kind_f, sub, budget, continuation=False, policy=restart_policy,
                    max_tokens=cap, pricing=pricing)[:2],
            }
            for name, (acc, spent) in results.items():
                sums[name][0] += acc / draws
                sums[name][1] += spent / draws
        out.append({"budget": per_item, **{f"{v}|acc": s[0] for v, s in sums.items()},
                    **{f"{v}|tokens": s[1] for v, s in sums.items()}})
    return out
