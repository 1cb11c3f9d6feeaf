"""The accuracy-vs-tokens frontier of every policy on real per-item curves.

Each item of the budget sweep gets its *true* curve: the censoring-aware empirical accuracy
curve of its runs (:meth:`EmpiricalCurve.from_rollouts`). Policies then allocate one batch
(all items of a model) at an average budget per item, each from the curves it is allowed to
know, and every allocation is scored on the true curves:

- ``clear (true curves)``, ``oracle``, ``greedy``, ``proportional``: per-item true curves
  (``proportional`` splits by each item's true emergence threshold);
- ``clear (fitted surge)``: per-item shifted-surge curves fitted by maximum likelihood on the
  same runs (each run's outcome at its cap): what the parametric family costs;
- ``clear (per kind)``: no per-item information at all. Each benchmark (task kind) gets one
  curve learned on *other* items: items are split at random into halves per kind, the curve
  learned on one half allocates the other, averaged over many splits. (Learning each item's
  curve from all the others, leave-one-out, would anti-select: the items whose leave-out curve
  looks easiest are exactly the hardest ones.) A kind curve from a dozen items is a staircase
  whose flat steps a new item does not share, so it is smoothed by a Gaussian kernel of
  bandwidth 0.15 in log-tokens;
- ``uniform``: the same cap for every item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..allocator import allocate
from ..curves import EmpiricalCurve, ShiftedSurge
from ..datasets.reasoning_sweep import SweepTable, item_rollouts, load_sweep
from ..estimators.prior import smooth

GRID_STEP = 64
"""Token grid of the true curves, and the granularity of every allocation here."""
DEFAULT_BUDGETS = (512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)

VARIANTS = (
    "uniform",
    "proportional",
    "greedy",
    "clear (per kind)",
    "clear (fitted surge)",
    "clear (true curves)",
    "oracle",
)


@dataclass(frozen=True)
class ItemCurves:
    """One model's items with their true and fitted curves.

    Attributes:
        model: the model's name in the sweep.
        benchmark: task kind of each item.
        grid: token grid of the true curves (0 ... the model's largest cap).
        truth: censoring-aware empirical curves, one per item.
        fitted: per-item shifted-surge fits of the same runs.
    """

    model: str
    benchmark: NDArray[np.str_]
    grid: NDArray[np.float64]
    truth: EmpiricalCurve
    fitted: ShiftedSurge

    def __len__(self) -> int:
        return len(self.truth)

    @property
    def max_cap(self) -> float:
        """The largest cap the model was run under (tokens): the allocation ceiling."""
        return float(self.grid[-1])


def item_curves(model: str, table: SweepTable | None = None) -> ItemCurves:
    """True (empirical) and fitted curves of every item of ``model``."""
    runs = item_rollouts(load_sweep() if table is None else table, model)
    top = int(np.ceil(runs.max_length / GRID_STEP)) * GRID_STEP
    grid = np.arange(0, top + GRID_STEP, GRID_STEP, dtype=np.float64)
    truth = EmpiricalCurve.from_rollouts(
        runs.length, runs.correct, grid, censored=runs.censored, valid=runs.valid
    )
    fitted = ShiftedSurge.fit(runs.length, runs.correct, caps=runs.cap, valid=runs.valid)
    return ItemCurves(model, runs.benchmark, grid, truth, fitted)


def kind_half_split(
    kinds: NDArray, curves: Sequence[EmpiricalCurve], rng: np.random.Generator
) -> tuple[NDArray[np.intp], list[EmpiricalCurve]]:
    """One random half-split per kind: (held-out item indices, their per-kind curves).

    Each held-out item's curve is the smoothed mean curve of the *other* half of its kind, for
    every batch of item curves in ``curves`` (e.g. utility and finish curves, same grid); all
    held-out items of a kind share it. The held-out order is shuffled, so which items of a kind
    a policy funds first is random.
    """
    held = np.zeros(len(kinds), dtype=bool)
    for kind in np.unique(kinds):
        idx = rng.permutation(np.flatnonzero(kinds == kind))
        held[idx[: idx.size // 2]] = True
    order = rng.permutation(np.flatnonzero(held))
    out = []
    for batch in curves:
        values = np.zeros_like(batch.values)
        for kind in np.unique(kinds[order]):
            rows = order[kinds[order] == kind]
            train = np.flatnonzero((kinds == kind) & ~held)
            values[rows] = batch.values[train].mean(axis=0)
        out.append(EmpiricalCurve(batch.grid, smooth(values[order], batch.grid)))
    return order, out


def kind_curve_splits(
    items: ItemCurves, splits: int = 30, seed: int = 0
) -> list[tuple[NDArray[np.intp], EmpiricalCurve]]:
    """``splits`` random half-splits per kind of the items' true curves
    (:func:`kind_half_split`)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(splits):
        order, (kind_curves,) = kind_half_split(items.benchmark, [items.truth], rng)
        out.append((order, kind_curves))
    return out


@dataclass(frozen=True)
class FrontierPoint:
    """One policy at one average budget: mean accuracy (expected, on the true curves) and the
    tokens it actually allocated, both per item."""

    model: str
    variant: str
    budget_per_item: int
    accuracy: float
    tokens_per_item: float
    upper_bound: float


def frontier(
    items: ItemCurves,
    budgets_per_item: Sequence[int] = DEFAULT_BUDGETS,
    variants: Sequence[str] = VARIANTS,
    kind_splits: int = 30,
) -> list[FrontierPoint]:
    """Every variant at every average budget; scores are on the true per-item curves."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"variants must be among {list(VARIANTS)}; got {unknown}")
    n = len(items)
    cap = items.max_cap
    splits = kind_curve_splits(items, kind_splits) if "clear (per kind)" in variants else []
    points = []
    for per_item in budgets_per_item:
        bound = allocate(items.truth, per_item * n, granularity=GRID_STEP, max_tokens=cap)
        for variant in variants:
            if variant == "clear (per kind)":
                acc, spent = [], []
                for order, curves in splits:
                    alloc = allocate(curves, per_item * order.size, granularity=GRID_STEP,
                                     max_tokens=cap)
                    acc.append(items.truth.take(order).value(alloc.tokens.astype(float)).mean())
                    spent.append(alloc.spent / order.size)
                accuracy, tokens = float(np.mean(acc)), float(np.mean(spent))
            else:
                curves = items.fitted if variant == "clear (fitted surge)" else items.truth
                policy = variant.split(" ")[0]
                alloc = allocate(curves, per_item * n, policy=policy, granularity=GRID_STEP,
                                 max_tokens=cap)
                accuracy = float(items.truth.value(alloc.tokens.astype(float)).mean())
                tokens = alloc.spent / n
            points.append(FrontierPoint(items.model, variant, int(per_item), accuracy, tokens,
                                        bound.upper_bound / n))
    return points
