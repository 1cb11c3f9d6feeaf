"""Curves given by the user per task kind, with a documented prior for everything else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..curves.base import UtilityCurves
from ..curves.empirical import EmpiricalCurve
from ..curves.shifted_surge import ShiftedSurge
from ..subtask import Subtask
from .base import CallObservation
from .prior import CURVE_GRID, population_prior

DEFAULT_SURGE = ShiftedSurge(ceiling=0.6, threshold=130.0, rate=1 / 1400.0)
"""A single shifted surge for the bundled sweep: all its runs pooled as one query and fitted by
maximum likelihood (each run's outcome at its cap; rounded): ceiling 0.6, emergence at 130
tokens, surge width 1,400. Useful as a parametric starting point; as the curve of an unknown
subtask prefer :func:`~.prior.population_prior` (see there why)."""


class StaticEstimator:
    """Fixed curves per task kind.

    Args:
        kinds: ``{kind: curve}``, each a :class:`ShiftedSurge` or :class:`EmpiricalCurve`
            holding one curve.
        default: the curve of subtasks whose kind is unknown or not listed (default: the
            documented population prior, :func:`~.prior.population_prior`).

    Example:
        >>> est = StaticEstimator({"lookup": ShiftedSurge(0.95, 50, 1 / 100)},
        ...                       default=ShiftedSurge(0.6, 130, 1 / 1400))
        >>> est.estimate([Subtask.of("hi", kind="lookup"), Subtask.of("x")], "m").threshold
        array([ 50., 130.])
    """

    def __init__(
        self,
        kinds: Mapping[str, UtilityCurves] | None = None,
        *,
        default: UtilityCurves | None = None,
    ) -> None:
        default = population_prior() if default is None else default
        for name, curve in {**(kinds or {}), "default": default}.items():
            if not isinstance(curve, ShiftedSurge | EmpiricalCurve) or len(curve) != 1:
                raise ValueError(
                    f"kinds[{name!r}] must be a ShiftedSurge or EmpiricalCurve holding one curve")
        self._kinds = dict(kinds or {})
        self._default = default

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> UtilityCurves:
        chosen = [self._kinds.get(s.kind, self._default) if s.kind else self._default
                  for s in subtasks]
        if chosen and all(isinstance(c, ShiftedSurge) for c in chosen):
            return ShiftedSurge(
                np.concatenate([c.ceiling for c in chosen]),
                np.concatenate([c.threshold for c in chosen]),
                np.concatenate([c.rate for c in chosen]),
            )
        rows = [c.value(CURVE_GRID[None, :])[0] for c in chosen]
        return EmpiricalCurve(CURVE_GRID, np.array(rows) if rows else
                              np.zeros((0, CURVE_GRID.size)))

    def observe(self, observation: CallObservation) -> None:
        """Static curves do not learn."""

    def record_outcome(
        self, call_id: str, correct: bool, *, model: str, kind: str | None, hint: str | None
    ) -> None:
        """Static curves do not learn."""
