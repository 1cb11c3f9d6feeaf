"""The estimator contract: subtasks in, a batch of curves out; outcomes back in to learn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..curves.base import UtilityCurves
from ..subtask import Subtask


@dataclass(frozen=True)
class CallObservation:
    """What one settled call revealed about its subtask's curve.

    Attributes:
        call_id: the ledger call id (correctness reports refer to it).
        kind: the subtask's task kind (``None`` = the default kind).
        model: the model that answered.
        cap: the output cap the call ran under (tokens).
        completion_tokens: tokens it generated (reasoning included).
        finished: it stopped on its own (``finish_reason != "length"``): an observed length.
            Otherwise the length is censored: more than ``cap``.
        hint: the subtask's difficulty hint, if any.
        correct: correctness reported by the application (``None`` = unknown).
        digest: the subtask's :attr:`~clear_middleware.subtask.Subtask.digest`, so estimators
            that predict per prompt can match the call to their prediction (``None`` = unknown).
    """

    call_id: str
    kind: str | None
    model: str
    cap: int
    completion_tokens: int
    finished: bool
    hint: str | None = None
    correct: bool | None = None
    digest: str | None = None


@runtime_checkable
class CurveEstimator(Protocol):
    """Predicts each subtask's utility curve over its output-token cap."""

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> UtilityCurves:
        """One curve per subtask (output tokens, reasoning included)."""
        ...

    def observe(self, observation: CallObservation) -> None:
        """Learn from a settled call (estimators that do not learn ignore it)."""
        ...

    def record_outcome(
        self, call_id: str, correct: bool, *, model: str, kind: str | None, hint: str | None
    ) -> None:
        """Learn the correctness the application reports for a settled call."""
        ...


# Optional hooks an estimator may also have (looked up with getattr by the session):
#
#   prepare(subtasks, model, *, session=None) -> None
#   async aprepare(subtasks, model, *, session=None) -> None
#
# called before a batch is planned (``plan``, ``quote`` / ``run``, ``arun``, ``astream``,
# ``aquote``), with the session, for work that costs budget and must be charged to it (the
# probe's calls, :class:`~clear_middleware.estimators.probe.ProbeEstimator`). ``estimate`` is
# then called as often as the session re-plans, and must not call anything itself.
