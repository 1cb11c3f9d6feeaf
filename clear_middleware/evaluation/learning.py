"""Offline: what learning only at its own caps costs the History estimator.

A stream of windows (a mix of :mod:`.traffic`, balanced by default) is allocated by CLEAR on the
estimator's curves; each subtask's drawn real run is then observed the way a middleware sees it:
finished within its cap (an observed length, and correctness reported), or cut at its cap
(censored). After ``measure_from`` windows of learning, each window's caps are scored by their
*expected* accuracy on the items' true curves (no run-draw noise), against CLEAR on the true
per-kind curves and against uniform caps (the same windows, the same budget).
``observe="full"`` shows every run whole whatever its cap (an estimator that
saw everything): the gap between the two is what censoring by its own caps costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..allocator import allocate
from ..datasets.reasoning_sweep import item_rollouts, load_sweep
from ..estimators.base import CallObservation
from ..estimators.history import HistoryEstimator
from ..estimators.prior import population_finished, population_prior
from ..subtask import Subtask
from .progressive import draw_runs
from .traffic import item_pool, kind_truth, sampling_weights


@dataclass(frozen=True)
class LearningResult:
    """Mean expected accuracy per subtask (0-1) over the measured windows, of three policies'
    caps on the same windows: CLEAR on the learned curves, CLEAR on the true per-kind curves,
    and uniform caps."""

    learned: float
    true_kind: float
    uniform: float

    @property
    def ratio(self) -> float:
        """Learned over true-kind accuracy (the issue's target: >= 0.95)."""
        return self.learned / max(self.true_kind, 1e-12)

    @property
    def learned_gain(self) -> float:
        """Learned minus uniform accuracy, in points (percent of subtasks)."""
        return 100.0 * (self.learned - self.uniform)

    @property
    def true_kind_gain(self) -> float:
        """True-kind minus uniform accuracy, in points: what a per-kind estimator can gain."""
        return 100.0 * (self.true_kind - self.uniform)


def censored_learning(
    model: str, budget_per_item: int, *, windows: int = 40, measure_from: int = 28,
    window_size: int = 40, seed: int = 0, observe: Literal["censored", "full"] = "censored",
    mix: str = "balanced", **estimator_options: Any,
) -> LearningResult:
    """Learned CLEAR against true-kind CLEAR on one stream (see the module docstring).

    ``estimator_options`` go to the :class:`HistoryEstimator` (its defaults otherwise), e.g.
    ``exploration``, ``prior_weight``, ``pace_sigma``, ``own_tail_calls``, ``own_tail_scale``.
    """
    pool = item_pool(model)
    runs = item_rollouts(load_sweep(), model)
    weights = sampling_weights(pool, mix)
    kinds = kind_truth(pool, weights)
    max_cap = int(pool.truth.grid[-1])
    estimator = HistoryEstimator(prior=population_prior([model]),
                                 prior_finished=population_finished([model]),
                                 seed=seed, **estimator_options)
    rng = np.random.default_rng(seed)
    learned, true_kind, uniform = [], [], []
    calls = 0
    for window in range(windows):
        items = rng.choice(len(pool), window_size, p=weights)
        drawn = draw_runs(runs, rng, items)
        subtasks = [Subtask.of("-", kind=str(pool.kind[i]), hint=pool.hint[i]) for i in items]
        budget = budget_per_item * window_size
        caps = allocate(estimator.estimate(subtasks, model), budget, max_tokens=max_cap,
                        granularity=16).tokens
        seen = np.full(caps.shape, max_cap) if observe == "full" else caps
        for k in np.flatnonzero(caps > 0):
            finished = bool(drawn.length[k] <= seen[k])
            estimator.observe(CallObservation(
                f"c{calls}", str(pool.kind[items[k]]), model, int(seen[k]),
                int(min(drawn.length[k], seen[k])), finished, hint=pool.hint[items[k]],
                correct=bool(drawn.correct[k]) and finished))
            calls += 1
        if window >= measure_from:
            truth = pool.truth.take(items)
            window_kinds = kinds.take(items)
            kind_caps = allocate(window_kinds, budget, max_tokens=max_cap,
                                 granularity=16).tokens
            uniform_caps = allocate(window_kinds, budget, policy="uniform",
                                    max_tokens=max_cap, granularity=16).tokens
            for scores, policy_caps in ((learned, caps), (true_kind, kind_caps),
                                        (uniform, uniform_caps)):
                scores.append(truth.value(policy_caps[:, None].astype(float))[:, 0].mean())
    return LearningResult(float(np.mean(learned)), float(np.mean(true_kind)),
                          float(np.mean(uniform)))
