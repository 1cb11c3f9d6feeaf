"""Curves learned online from what the middleware sees for free, per model, kind and hint.

Every call the session sends comes back either finished after ``n`` tokens (an observed length)
or cut at its cap (a censored length: more than the cap); applications may also report whether
the answer was correct. Per ``(model, kind)`` and, when subtasks carry difficulty hints, per
``(model, kind, hint)``, this estimator keeps those observations in an
:class:`~.observations.ObservationLog` (memory, or the ledger's SQLite / Redis store, so that
learning survives restarts and is shared by workers) and learns the group's curve:

- *Where calls were observed* (caps up to the largest one tried), the censoring-aware empirical
  curve (Aalen-Johansen, :meth:`EmpiricalCurve.from_rollouts`): a correct answer within the cap
  is the event, a cut call is censored at its cap. A kind mixes easy and hard items, and this
  curve is that mixture as it is, not a single shifted surge forced onto it. It is smoothed by a
  Gaussian kernel of 15% in log-tokens (a staircase of a few dozen calls has steps a new call
  does not share).
- *Beyond the largest cap tried*, nothing was observed: the increments of a shifted surge
  fitted by censored maximum likelihood to the same calls
  (:func:`~clear_middleware.fit_shifted_surge`) extend the curve, so the allocator keeps some
  reason to try larger caps.
- Without enough correctness reports (``min_reported``), finishing within the cap is the event
  and the curve is scaled by ``P(correct | finished)``, a Beta estimate with prior mean
  :data:`PRIOR_CORRECT_GIVEN_FINISHED` and the weight of 10 calls.

Hierarchical shrinkage and uncertainty: a group's curve is ``w * own + (1 - w) * parent`` with
``w = n / (n + prior_weight)``, ``n`` its calls; the parent of a kind is the prior, the parent of
a (kind, hint) group its kind. The prior is the documented population curve
(:func:`~.prior.population_prior`): the expected curve of a subtask of unknown difficulty, wide
and cautious, which sharpens into the kind's own curve as calls arrive. A user prior given as
a shifted surge is spread over a threshold uncertainty of ``prior_sigma_tokens``
(:func:`~clear_middleware.curves.uncertainty.spread_threshold`).

Exploration (``exploration="thompson"``, the default). The estimator only sees what the caps it
advises let through: a cap CLEAR never funds is never observed, and a curve that undervalues
it stays undervalued. Each time a group's observations change, its curve is fitted to a
bootstrap resample of its calls (a draw from their sampling distribution, seeded by the group
and its data, so the same data give the same curve): where many calls were seen the draws
agree, and where few were (long caps, rare kinds) they differ, so the allocator now and then
funds a cap the plain fit would not, and learns from it (Thompson sampling);
``exploration="none"`` fits the calls as they are. Measured offline in
``benchmarks/learning_censoring.py``: the estimator that sees every run whole matches CLEAR on
the true per-kind curves (0.98-1.04 of it), one that sees its own caps only reaches about 0.95,
and Thompson sampling recovers little of that (+0.5 points on average); end to end in
``benchmarks/traffic_streams.py`` the difference is within noise.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..curves.empirical import EmpiricalCurve
from ..curves.fitting import fit_shifted_surge
from ..curves.shifted_surge import ShiftedSurge
from ..curves.uncertainty import spread_threshold
from ..subtask import Subtask
from .base import CallObservation
from .observations import Observation, ObservationLog, observation_log
from .prior import CURVE_GRID, smooth
from .prior import population_prior as _population_prior

PRIOR_CORRECT_GIVEN_FINISHED = 0.8
"""Share of answers that finish on their own which are correct, before any report (reasoning
models on tasks they can finish mostly get them right; weight: 10 calls)."""
_PRIOR_CORRECT_WEIGHT = 10.0




@dataclass(frozen=True)
class GroupCurve:
    """A group's learned curve on :data:`CURVE_GRID` and the calls behind it."""

    values: NDArray[np.float64]
    calls: int


class HistoryEstimator:
    """Curves per (model, kind[, hint]) learned from censored call outcomes.

    Args:
        store: where observations live: an :class:`ObservationLog`, or a ledger store URI
            (``"memory://"`` default, ``"sqlite:///budget.db"``, ``"redis://..."``).
        prior: the curve of a kind with no traffic: one :class:`EmpiricalCurve` or
            :class:`ShiftedSurge` (default: the population prior).
        prior_weight: calls' worth of weight the parent (prior or kind) keeps (> 0).
        prior_sigma_tokens: threshold uncertainty a shifted-surge prior is spread over
            (tokens, >= 0).
        use_hints: learn per (kind, hint) too, shrunk toward the kind.
        min_reported: correctness reports needed to learn from correctness directly (>= 1).
        exploration: ``"thompson"`` (fit each group to a bootstrap resample of its calls, see
            the module docstring) or ``"none"``.

    Example:
        >>> est = HistoryEstimator()
        >>> est.observe(CallObservation("c1", "qa", "m", cap=2000, completion_tokens=900,
        ...                             finished=True))
        >>> est.group("m", "qa").calls
        1
    """

    def __init__(
        self,
        store: ObservationLog | str | None = None,
        *,
        prior: EmpiricalCurve | ShiftedSurge | None = None,
        prior_weight: float = 30.0,
        prior_sigma_tokens: float = 500.0,
        use_hints: bool = True,
        min_reported: int = 10,
        exploration: Literal["thompson", "none"] = "thompson",
    ) -> None:
        if not prior_weight > 0:
            raise ValueError(f"prior_weight must be > 0 calls; got {prior_weight!r}")
        if not prior_sigma_tokens >= 0:
            raise ValueError(f"prior_sigma_tokens must be >= 0 tokens; got {prior_sigma_tokens!r}")
        prior = _population_prior() if prior is None else prior
        if not isinstance(prior, ShiftedSurge | EmpiricalCurve) or len(prior) != 1:
            raise ValueError("prior must be a ShiftedSurge or EmpiricalCurve holding one curve")
        if exploration not in ("thompson", "none"):
            raise ValueError(f"exploration must be 'thompson' or 'none'; got {exploration!r}")
        if int(min_reported) < 1:
            raise ValueError(f"min_reported must be >= 1 calls; got {min_reported!r}")
        self.log: ObservationLog = (
            store if store is not None and not isinstance(store, str) else observation_log(store)
        )
        if isinstance(prior, ShiftedSurge):
            prior = spread_threshold(prior, prior_sigma_tokens, grid=CURVE_GRID)
        self.prior = GroupCurve(prior.value(CURVE_GRID[None, :])[0], 0)
        self.prior_weight = float(prior_weight)
        self.use_hints = use_hints
        self.min_reported = int(min_reported)
        self.exploration = exploration
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

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> EmpiricalCurve:
        groups: dict[tuple[str | None, str | None], GroupCurve] = {}
        rows = []
        for s in subtasks:
            hint = s.hint if self.use_hints else None
            if (s.kind, hint) not in groups:
                groups[s.kind, hint] = self.group(model, s.kind, hint)
            rows.append(groups[s.kind, hint].values)
        values = np.array(rows) if rows else np.zeros((0, CURVE_GRID.size))
        return EmpiricalCurve(CURVE_GRID, values)

    def _shrunk(self, key: str, parent: GroupCurve) -> GroupCurve:
        fitted = self._fit(key)
        if fitted is None:
            return parent
        w = fitted.calls / (fitted.calls + self.prior_weight)
        return GroupCurve(w * fitted.values + (1.0 - w) * parent.values, fitted.calls)

    def _fit(self, key: str) -> GroupCurve | None:
        version = self.log.version(key)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
        records = self.log.read(key)
        if self.exploration == "thompson":
            records = _resampled(records, seed=zlib.crc32(f"{key}|{version}".encode()))
        fitted = _fit_records(records, self.min_reported)
        with self._lock:
            self._cache[key] = (version, fitted)
        return fitted


def _resampled(records: list[Observation], seed: int) -> list[Observation]:
    """The correctness reports, and the calls drawn with replacement (as many as there are)."""
    reports = [r for r in records if r.outcome_only]
    calls = [r for r in records if not r.outcome_only]
    picks = np.random.default_rng(seed).integers(0, len(calls), len(calls)) if calls else []
    return reports + [calls[i] for i in picks]


def _fit_records(records: list[Observation], min_reported: int) -> GroupCurve | None:
    """One group's curve from its records (see the module docstring)."""
    outcomes = {r.call_id: r.correct for r in records if r.outcome_only}
    calls = [r for r in records if not r.outcome_only and r.cap > 0]
    if not calls:
        return None
    caps = np.array([r.cap for r in calls], dtype=np.float64)
    finished = np.array([r.finished for r in calls])
    # A finished call's length is at most its cap; a cut one is censored at its cap.
    lengths = np.minimum(np.maximum([float(r.tokens) for r in calls], 1.0), caps)
    correct = [outcomes.get(r.call_id, r.correct) for r in calls]
    reported = np.array([c is not None for c in correct])
    scale = 1.0
    if reported.sum() >= min_reported:
        keep = reported
        event = finished & np.array([bool(c) for c in correct])
    else:
        keep = np.ones(len(calls), dtype=bool)
        event = finished
        right = sum(1 for c, f in zip(correct, finished & reported, strict=True) if f and c)
        scale = (right + PRIOR_CORRECT_GIVEN_FINISHED * _PRIOR_CORRECT_WEIGHT) / (
            (finished & reported).sum() + _PRIOR_CORRECT_WEIGHT)
    lengths, caps, event, cut = lengths[keep], caps[keep], event[keep], ~finished[keep]
    observed = EmpiricalCurve.from_rollouts(lengths[None, :], event[None, :], CURVE_GRID,
                                            censored=cut[None, :]).values[0]
    top = float(caps.max())
    values = np.where(top >= CURVE_GRID, observed, np.interp(top, CURVE_GRID, observed))
    if event.any() and top < CURVE_GRID[-1]:
        # Beyond the largest cap tried: the fitted surge's increments.
        params = fit_shifted_surge(lengths[None, :], event[None, :], caps=caps[None, :])
        surge = ShiftedSurge(params.ceiling, params.threshold, params.rate)
        tail = surge.value(CURVE_GRID[None, :])[0] - surge.value(np.array([[top]]))[0, 0]
        values = values + np.where(top < CURVE_GRID, np.maximum(tail, 0.0), 0.0)
    return GroupCurve(smooth(np.clip(values * scale, 0.0, 1.0)[None, :])[0], len(calls))
