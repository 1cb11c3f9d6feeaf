"""The estimator contract: subtasks in, a batch of curves out; outcomes back in to learn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..curves.base import UtilityCurves

if TYPE_CHECKING:  # the session imports the estimators: a runtime import would be a cycle
    from ..session.subtask import Subtask


@dataclass(frozen=True)
class CallObservation:
    """What one settled call revealed about its subtask's curve.

    Attributes:
        kind: the subtask's task kind (``None`` = the default kind).
        model: the model that answered.
        cap: the output cap the call ran under (tokens).
        completion_tokens: tokens it generated (reasoning included).
        finished: it stopped on its own (``finish_reason != "length"``): an observed length.
            Otherwise the length is censored: more than ``cap``.
        hint: the subtask's difficulty hint, if any.
        correct: correctness reported by the application (``None`` = unknown).
    """

    kind: str | None
    model: str
    cap: int
    completion_tokens: int
    finished: bool
    hint: str | None = None
    correct: bool | None = None


@runtime_checkable
class CurveEstimator(Protocol):
    """Predicts each subtask's utility curve over its output-token cap."""

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> UtilityCurves:
        """One curve per subtask (output tokens, reasoning included)."""
        ...

    def observe(self, observation: CallObservation) -> None:
        """Learn from a settled call (estimators that do not learn ignore it)."""
        ...
