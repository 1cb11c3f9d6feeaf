"""The exact optimum on a token grid: multiple-choice knapsack by dynamic programming.

For evaluation with known curves on small batches. Each subtask picks one cap from
``{0} U {lower, lower + g, ..., upper}`` (``g`` the granularity) and the DP over budget units
of ``g`` tokens finds the allocation of largest total utility within the budget.

Complexity: ``O(n * C * K)`` time and ``O(n * K)`` memory, with ``n`` subtasks, ``C`` choices
per subtask (``upper / g``) and ``K = B / g`` budget units. 160 subtasks with caps up to 16,384
tokens on a 64-token grid and 8,192 tokens each (K = 20,480) take about a second here. Larger
problems raise ``ValueError`` naming the granularity that would fit.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..curves.base import BestResponse

MAX_CELL_UPDATES = 4_000_000_000


def oracle_caps(response: BestResponse, budget: int, granularity: int) -> NDArray[np.int64]:
    """The utility-maximising caps on the granularity grid (ties: fewer tokens)."""
    curves = response.curves
    g = granularity
    n = response.lower.shape[0]
    lower_units = np.maximum(np.ceil(response.lower / g), 1).astype(np.int64)
    upper_units = np.floor(response.upper / g).astype(np.int64)
    capacity = int(min(budget // g, np.maximum(upper_units, 0).sum()))
    choices = int(upper_units.max(initial=0))
    cells = n * max(choices, 1) * (capacity + 1)
    if cells > MAX_CELL_UPDATES:
        needed = g * int(np.ceil(np.sqrt(cells / MAX_CELL_UPDATES)))
        raise ValueError(
            f"oracle would need {cells:.3g} DP cell updates (n={n}, choices={choices}, "
            f"units={capacity}); use granularity >= {needed} or a smaller batch"
        )
    if capacity == 0 or choices == 0:
        return np.zeros(n, dtype=np.int64)
    caps_tokens = (np.arange(choices + 1) * g).astype(np.float64)
    table = curves.value(caps_tokens[None, :])  # (n, choices + 1): utility of j units
    best = np.zeros(capacity + 1)
    pick = np.zeros((n, capacity + 1), dtype=np.int32)
    for i in range(n):  # the DP is sequential over subtasks; each step is vectorised
        new = best.copy()
        chosen = np.zeros(capacity + 1, dtype=np.int32)
        for j in range(int(lower_units[i]), int(min(upper_units[i], capacity)) + 1):
            candidate = best[: capacity + 1 - j] + table[i, j]
            better = candidate > new[j:] + 1e-12
            new[j:] = np.where(better, candidate, new[j:])
            chosen[j:] = np.where(better, j, chosen[j:])
        best, pick[i] = new, chosen
    units = np.zeros(n, dtype=np.int64)
    k = int(np.argmax(best))
    for i in range(n - 1, -1, -1):
        units[i] = pick[i, k]
        k -= units[i]
    return units * g
