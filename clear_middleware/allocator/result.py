"""The result of an allocation: integer token caps per subtask, the price, and a bound."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Allocation:
    """Token caps for a batch of subtasks, with the market price and an optimality certificate.

    Attributes:
        policy: the policy that produced it (``"clear"``, ``"uniform"``, ...).
        budget: the token budget the batch had to fit in.
        tokens: the cap of each subtask in tokens (int64); 0 means not funded. Their sum never
            exceeds ``budget``; each non-zero cap lies within the bounds and is a multiple of
            the granularity.
        funded: ``tokens > 0``.
        values: expected utility of each subtask at its cap (the curve's value; 0 if unfunded).
        expected_utility: ``values.sum()``: the expected number of solved subtasks when the
            utility is a probability of success.
        price: the shadow price, utility per token, at which the batch's demand clears the
            budget (0 when the budget is slack). Unfunded subtasks were priced out at it.
        upper_bound: the weak-duality bound ``min_lam lam*B + sum_i max_b [U_i(b) - lam*b]``:
            no allocation of ``budget`` tokens, by any policy, can expect more utility.
    """

    policy: str
    budget: int
    tokens: NDArray[np.int64]
    funded: NDArray[np.bool_]
    values: NDArray[np.float64]
    expected_utility: float
    price: float
    upper_bound: float

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def spent(self) -> int:
        """Total tokens allocated (<= ``budget``)."""
        return int(self.tokens.sum())

    @property
    def n_funded(self) -> int:
        return int(self.funded.sum())

    @property
    def n_abandoned(self) -> int:
        """Subtasks given nothing: rationally abandoned (CLEAR) or left out by the policy."""
        return len(self) - self.n_funded

    @property
    def gap(self) -> float:
        """``upper_bound - expected_utility`` (>= 0): how far from optimal this can at most be."""
        return max(self.upper_bound - self.expected_utility, 0.0)

    def summary(self) -> str:
        """One line: policy, utility against its bound, tokens spent, funded count, price."""
        return (
            f"{self.policy}: expected utility {self.expected_utility:.3f} "
            f"(bound {self.upper_bound:.3f}), {self.spent}/{self.budget} tokens, "
            f"{self.n_funded}/{len(self)} funded, price {self.price:.3g}/token"
        )
