"""The documented prior: what a subtask's curve is before anything is known about it.

It is the *population* curve of the bundled budget sweep: the censoring-aware accuracy-vs-cap
curve of every item of every model (ten small reasoning models on AIME 2024/2025 and
MATH-500), averaged over items and smoothed by a Gaussian kernel of 15% in log-tokens. About
0.03 at 512 tokens, 0.08 at 1,024, 0.27 at 2,048, 0.44 at 4,096, 0.51 at 8,192 and 0.52 at
16,384.

Why a mixture and not one shifted surge: a subtask of unknown difficulty is a draw from a
population, and the expected curve of a draw is the population's mean curve, which is much
more concave than any single S-curve. With the mean curve, CLEAR with no history stays within
a point of uniform caps on the dev data at every budget from 512 to 8,192 tokens per item
(``benchmarks/traffic_streams.py``); a single pooled shifted surge concentrates tokens on a
few subtasks and falls up to 10 points behind uniform.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from ..curves.empirical import EmpiricalCurve

#: Caps (tokens) learned and prior curves are tabulated at: fine where reasoning budgets
#: usually are, coarser beyond.
CURVE_GRID = np.unique(np.concatenate([
    np.arange(0, 4096, 32), np.arange(4096, 8192, 64), np.arange(8192, 16384, 128),
    np.arange(16384, 65536 + 1, 512),
])).astype(np.float64)
CURVE_GRID.flags.writeable = False

_NEGLIGIBLE = 1e-6
SMOOTHING_LOG_TOKENS = 0.15
"""Bandwidth of the Gaussian kernel that smooths curves from few items, natural-log tokens."""


def smooth(values: np.ndarray, grid: np.ndarray = CURVE_GRID) -> np.ndarray:
    """Curves (rows) on ``grid`` smoothed in log-tokens; kept non-decreasing and 0 at 0."""
    log_grid = np.log(np.maximum(grid, 1.0))
    kernel = np.exp(-0.5 * ((log_grid[:, None] - log_grid[None, :]) / SMOOTHING_LOG_TOKENS) ** 2)
    kernel /= kernel.sum(axis=0, keepdims=True)
    out = np.maximum.accumulate(np.asarray(values) @ kernel, axis=-1)
    # The kernel's tails reach down to a few tokens (1e-12 at 48): no answer comes that fast.
    out[out < _NEGLIGIBLE] = 0.0
    out[..., 0] = 0.0
    return out


@lru_cache(maxsize=16)
def _population(exclude: tuple[str, ...]) -> tuple[EmpiricalCurve, EmpiricalCurve]:
    from ..datasets.reasoning_sweep import item_rollouts, load_sweep

    table = load_sweep()
    correct, finished = [], []
    for model in table.models():
        if model in exclude:
            continue
        runs = item_rollouts(table, model)
        for rows, event in ((correct, runs.correct), (finished, ~runs.censored)):
            rows.append(EmpiricalCurve.from_rollouts(
                runs.length, event, CURVE_GRID, censored=runs.censored, valid=runs.valid
            ).values)
    if not correct:
        raise ValueError(f"exclude_models leaves no model of the sweep; got {sorted(exclude)}")
    right, done = (EmpiricalCurve(CURVE_GRID, smooth(np.concatenate(rows).mean(axis=0)[None, :]))
                   for rows in (correct, finished))
    return right, done


def population_prior(exclude_models: Iterable[str] = ()) -> EmpiricalCurve:
    """The documented prior (one curve on :data:`CURVE_GRID`); ``exclude_models`` leaves
    models of the sweep out (for evaluations on those models)."""
    return _population(tuple(sorted(set(exclude_models))))[0]


def population_finished(exclude_models: Iterable[str] = ()) -> EmpiricalCurve:
    """The population's probability that a run has finished (correct or not) within ``b``
    tokens, on :data:`CURVE_GRID`, censoring-aware and smoothed like :func:`population_prior`:
    how long the runs the prior's accuracy comes from are. About 0.12 at 1,024 tokens, 0.33 at
    2,048, 0.51 at 4,096, 0.61 at 8,192 and 0.62 at 16,384 (the rest ran past the sweep's
    largest caps)."""
    return _population(tuple(sorted(set(exclude_models))))[1]
