"""Curves learned online from what the middleware sees for free, per model, kind and hint.

Every call the session sends comes back either finished after ``n`` tokens (an observed length)
or cut at its cap (a censored length: more than the cap); applications may also report whether
the answer was correct. Per ``(model, kind)`` and, when subtasks carry difficulty hints, per
``(model, kind, hint)``, this estimator keeps those observations in an
:class:`~.observations.ObservationLog` (memory, or the ledger's SQLite / Redis store, so that
learning survives restarts and is shared by workers) and fits a shifted-surge curve by
maximum likelihood with the caps as censoring (:func:`~clear_middleware.fit_shifted_surge`):

- with correctness reported for at least ``min_reported`` calls, a correct answer within the
  cap is the event (the fit then learns the ceiling directly);
- otherwise finishing within the cap is the event and the ceiling is
  ``P(finish) * P(correct | finished)``, the latter a Beta estimate whose prior mean is
  ``PRIOR_CORRECT_GIVEN_FINISHED`` with the weight of 10 calls.

Hierarchical shrinkage: a group's parameters (logit ceiling, log threshold, log surge width) are
pulled toward its parent's (the prior for a kind, the kind for a hint) with weight
``n / (n + prior_weight)``, ``n`` the group's calls. A group with no traffic is its parent.

Uncertainty: the threshold's standard deviation starts at ``prior_sigma_tokens`` and shrinks
as ``sqrt(prior_weight / (prior_weight + n))``; with ``spread=True`` the curves handed to the
allocator are the expected curves over that uncertainty
(:func:`~clear_middleware.curves.uncertainty.spread_threshold`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..curves.base import UtilityCurves
from ..curves.fitting import fit_shifted_surge
from ..curves.shifted_surge import ShiftedSurge
from ..curves.uncertainty import spread_threshold
from ..subtask import Subtask
from .base import CallObservation
from .observations import Observation, ObservationLog, observation_log
from .static import DEFAULT_PRIOR

PRIOR_CORRECT_GIVEN_FINISHED = 0.8
"""Share of answers that finish on their own which are correct, before any report (reasoning
models on tasks they can finish mostly get them right; weight: 10 calls)."""
_PRIOR_CORRECT_WEIGHT = 10.0


@dataclass(frozen=True)
class GroupCurve:
    """A learned curve: shifted-surge parameters, the calls behind them, threshold std-dev."""

    ceiling: float
    threshold: float
    width: float
    calls: int
    sigma_tokens: float

    def as_surge(self) -> ShiftedSurge:
        return ShiftedSurge(self.ceiling, self.threshold, 1.0 / self.width)


class HistoryEstimator:
    """Shifted-surge curves per (model, kind[, hint]) learned from censored call outcomes.

    Args:
        store: where observations live: an :class:`ObservationLog`, or a ledger store URI
            (``"memory://"`` default, ``"sqlite:///budget.db"``, ``"redis://..."``).
        prior: the curve of a kind with no traffic (default :data:`DEFAULT_PRIOR`).
        prior_weight: calls' worth of weight the parent (prior or kind) keeps (> 0).
        prior_sigma_tokens: threshold uncertainty with no traffic (tokens, >= 0).
        use_hints: learn per (kind, hint) too, shrunk toward the kind.
        spread: hand the allocator curves spread by the threshold uncertainty.
        min_reported: reported outcomes needed to fit the ceiling from correctness directly.
    """

    def __init__(
        self,
        store: ObservationLog | str | None = None,
        *,
        prior: ShiftedSurge = DEFAULT_PRIOR,
        prior_weight: float = 30.0,
        prior_sigma_tokens: float = 500.0,
        use_hints: bool = True,
        spread: bool = True,
        min_reported: int = 10,
    ) -> None:
        if not prior_weight > 0:
            raise ValueError(f"prior_weight must be > 0 calls; got {prior_weight!r}")
        if not prior_sigma_tokens >= 0:
            raise ValueError(f"prior_sigma_tokens must be >= 0 tokens; got {prior_sigma_tokens!r}")
        if not isinstance(prior, ShiftedSurge) or len(prior) != 1:
            raise ValueError("prior must be a ShiftedSurge holding one curve")
        self.log: ObservationLog = (
            store if store is not None and not isinstance(store, str) else observation_log(store)
        )
        self.prior = GroupCurve(float(prior.ceiling[0]), float(prior.threshold[0]),
                                float(1.0 / prior.rate[0]), 0, float(prior_sigma_tokens))
        self.prior_weight = float(prior_weight)
        self.use_hints = use_hints
        self.spread = spread
        self.min_reported = int(min_reported)
        self._cache: dict[str, tuple[int, GroupCurve | None]] = {}
        self._lock = threading.Lock()

    # -- keys ----------------------------------------------------------------------------------
    @staticmethod
    def key(model: str, kind: str | None, hint: str | None = None) -> str:
        parts = [model, kind or "-"]
        if hint is not None:
            parts.append(hint)
        return "|".join(p.replace("|", "/") for p in parts)

    # -- learning ------------------------------------------------------------------------------
    def observe(self, observation: CallObservation) -> None:
        record = Observation(call_id=observation.call_id, cap=int(observation.cap),
                             tokens=int(observation.completion_tokens),
                             finished=bool(observation.finished), hint=observation.hint,
                             correct=observation.correct)
        for key in self._keys(observation.model, observation.kind, observation.hint):
            self.log.append(key, record)

    def record_outcome(
        self, call_id: str, correct: bool, *, model: str, kind: str | None,
        hint: str | None = None,
    ) -> None:
        if not isinstance(correct, bool):
            raise ValueError(f"correct must be True or False; got {correct!r}")
        record = Observation(call_id=call_id, correct=correct, outcome_only=True)
        for key in self._keys(model, kind, hint):
            self.log.append(key, record)

    def _keys(self, model: str, kind: str | None, hint: str | None) -> list[str]:
        keys = [self.key(model, kind)]
        if self.use_hints and hint is not None:
            keys.append(self.key(model, kind, hint))
        return keys

    # -- estimating ----------------------------------------------------------------------------
    def group(self, model: str, kind: str | None, hint: str | None = None) -> GroupCurve:
        """The learned curve of a group, shrunk toward its parent."""
        parent = self._shrunk(self.key(model, kind), self.prior)
        if hint is None or not self.use_hints:
            return parent
        return self._shrunk(self.key(model, kind, hint), parent)

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> UtilityCurves:
        groups: dict[tuple[str | None, str | None], GroupCurve] = {}
        rows = []
        for s in subtasks:
            hint = s.hint if self.use_hints else None
            if (s.kind, hint) not in groups:
                groups[s.kind, hint] = self.group(model, s.kind, hint)
            rows.append(groups[s.kind, hint])
        surge = ShiftedSurge([g.ceiling for g in rows], [g.threshold for g in rows],
                             [1.0 / g.width for g in rows]) if rows else ShiftedSurge([], [], [])
        if not self.spread or not rows:
            return surge
        return spread_threshold(surge, [g.sigma_tokens for g in rows])

    def _shrunk(self, key: str, parent: GroupCurve) -> GroupCurve:
        fitted = self._fit(key)
        if fitted is None:
            return parent
        w = fitted.calls / (fitted.calls + self.prior_weight)
        if np.isnan(fitted.ceiling):
            # Nothing finished yet: every call was cut at its cap, which says only that the
            # threshold lies beyond the caps tried so far (``fitted.threshold``).
            fitted = GroupCurve(parent.ceiling, max(parent.threshold, fitted.threshold),
                                parent.width, fitted.calls, 0.0)

        def blend(mine: float, theirs: float) -> float:
            return w * mine + (1.0 - w) * theirs

        logit = blend(_logit(fitted.ceiling), _logit(parent.ceiling))
        return GroupCurve(
            ceiling=float(1.0 / (1.0 + np.exp(-logit))),
            threshold=float(np.exp(blend(np.log(fitted.threshold + 50.0),
                                         np.log(parent.threshold + 50.0))) - 50.0),
            width=float(np.exp(blend(np.log(fitted.width), np.log(parent.width)))),
            calls=fitted.calls,
            sigma_tokens=self.prior.sigma_tokens * float(np.sqrt(
                self.prior_weight / (self.prior_weight + fitted.calls))),
        )

    def _fit(self, key: str) -> GroupCurve | None:
        version = self.log.version(key)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
        fitted = _fit_records(self.log.read(key), self.min_reported)
        with self._lock:
            self._cache[key] = (version, fitted)
        return fitted


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return float(np.log(p / (1 - p)))


def _fit_records(records: list[Observation], min_reported: int) -> GroupCurve | None:
    """Maximum-likelihood curve of one group's records (see the module docstring)."""
    outcomes = {r.call_id: r.correct for r in records if r.outcome_only}
    calls = [r for r in records if not r.outcome_only and r.cap > 0]
    if not calls:
        return None
    tokens = np.array([r.tokens for r in calls], dtype=np.float64)
    caps = np.array([r.cap for r in calls], dtype=np.float64)
    finished = np.array([r.finished for r in calls])
    correct = [outcomes.get(r.call_id, r.correct) for r in calls]
    reported = np.array([c is not None for c in correct])
    # A finished call's length is at most its cap; a cut one is censored at its cap.
    lengths = np.minimum(np.maximum(tokens, 1.0), caps)
    if not finished.any():
        return GroupCurve(float("nan"), float(caps.max()), float("nan"), len(calls), 0.0)
    if reported.sum() >= min_reported:
        event = finished & np.array([bool(c) for c in correct])
        params = fit_shifted_surge(lengths[reported][None, :], event[reported][None, :],
                                   caps=caps[reported][None, :])
        ceiling = float(params.ceiling[0])
    else:
        params = fit_shifted_surge(lengths[None, :], finished[None, :], caps=caps[None, :])
        finished_reported = finished & reported
        right = sum(1 for c, f in zip(correct, finished_reported, strict=True) if f and c)
        q = (right + PRIOR_CORRECT_GIVEN_FINISHED * _PRIOR_CORRECT_WEIGHT) / (
            finished_reported.sum() + _PRIOR_CORRECT_WEIGHT)
        ceiling = float(params.ceiling[0]) * q
    return GroupCurve(ceiling=ceiling, threshold=float(params.threshold[0]),
                      width=float(1.0 / params.rate[0]), calls=len(calls), sigma_tokens=0.0)
