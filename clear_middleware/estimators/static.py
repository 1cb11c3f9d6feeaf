"""Curves given by the user per task kind, with a documented prior for everything else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..curves.shifted_surge import ShiftedSurge
from .base import CallObservation

if TYPE_CHECKING:  # the session imports the estimators: a runtime import would be a cycle
    from ..session.subtask import Subtask

DEFAULT_PRIOR = ShiftedSurge(ceiling=0.6, threshold=130.0, rate=1 / 1400.0)
"""The curve of a subtask nothing is known about: ceiling 0.6, emergence at 130 tokens, surge
width 1,400 tokens (median correct length about 2,500 tokens; 99.9% of the ceiling at about
13,000). These are the maximum-likelihood parameters of all runs of the bundled budget sweep
pooled as one query (every model, benchmark and item, each run's outcome at its cap; rounded):
a small reasoning model on competition maths. Give your own per kind for anything else."""


class StaticEstimator:
    """Fixed curves per task kind.

    Args:
        kinds: ``{kind: ShiftedSurge}`` with one curve each (a batch of length 1).
        default: the curve of subtasks whose kind is unknown or not listed.

    Example:
        >>> from clear_middleware.session import Subtask
        >>> est = StaticEstimator({"lookup": ShiftedSurge(0.95, 50, 1 / 100)})
        >>> est.estimate([Subtask.of("hi", kind="lookup"), Subtask.of("x")], "m").threshold
        array([ 50., 130.])
    """

    def __init__(
        self,
        kinds: Mapping[str, ShiftedSurge] | None = None,
        *,
        default: ShiftedSurge = DEFAULT_PRIOR,
    ) -> None:
        for name, curve in {**(kinds or {}), "default": default}.items():
            if not isinstance(curve, ShiftedSurge) or len(curve) != 1:
                raise ValueError(f"kinds[{name!r}] must be a ShiftedSurge holding one curve")
        self._kinds = dict(kinds or {})
        self._default = default

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> ShiftedSurge:
        chosen = [self._kinds.get(s.kind, self._default) if s.kind else self._default
                  for s in subtasks]
        if not chosen:
            return ShiftedSurge([], [], [])
        return ShiftedSurge(
            np.concatenate([c.ceiling for c in chosen]),
            np.concatenate([c.threshold for c in chosen]),
            np.concatenate([c.rate for c in chosen]),
        )

    def observe(self, observation: CallObservation) -> None:
        """Static curves do not learn."""
