"""Curves learned online from what the middleware sees for free, per model, kind and hint.

Every call the session sends comes back either finished after ``n`` tokens (an observed length)
or cut at its cap (a censored length: more than the cap); applications may also report whether
the answer was correct. Per ``(model, kind)`` and, when subtasks carry difficulty hints, per
``(model, kind, hint)``, this estimator keeps those observations in an
:class:`~.observations.ObservationLog` (memory, or the ledger's SQLite / Redis store, so that
learning survives restarts and is shared by workers) and learns the group's curve.

The curve is built from *hazards*, on the grid of caps :data:`~.prior.CURVE_GRID`: at each
token count ``b``, of the group's runs still going at ``b``, the share that finishes in the next
step, and the share that finishes there with a correct answer (the Aalen-Johansen estimator of
competing risks: a correct or a wrong finish; a cut call is watched up to its cap and then
drops out). ``U(b)`` is the probability of a correct answer within ``b`` tokens, accumulated
from them. A kind mixes easy and hard items, and this curve is that mixture as it is, not a
single shifted surge forced onto it.

Hierarchical shrinkage, token count by token count: each hazard is the posterior mean of a
beta-process prior centred on the parent's hazard, ``(events + w * h_parent) / (watched + w)``
with ``w = prior_weight`` calls and ``watched`` the group's calls still going (and under their
cap) at ``b``. The parent of a kind is the prior, the parent of a (kind, hint) group its kind.
So where many calls were watched a group's own data rule, and *past the largest cap it has
tried* nobody was watched: the share of its runs still going there continues as the parent's
runs do. A kind whose calls were all cut at 2,048 tokens keeps the value the population's
runs still going at 2,048 go on to have, and CLEAR funds larger caps when that value is worth
their price, which is how the estimator learns what lies past its caps (a curve that
stopped at its largest cap, or extrapolated one surge fitted to a mixture, undervalued those
caps and was never corrected). Measured offline (``benchmarks/learning_censoring.py``), this
took learning at its own caps from about 0.95 of CLEAR on the true per-kind curves to 0.96-1.0
at 2,048 and 4,096 tokens per item.

The parent is first set to the group's *pace* (an accelerated-failure-time model): a group's
runs are taken to be its parent's, ``pace`` times slower in tokens (``U(b) = U_parent(b /
pace)``, the same for the still-running share). The pace is unknown; its posterior on
:data:`PACES` (1/4 to 8) comes from the likelihood of the group's calls under each paced
parent and a log-normal prior of spread ``pace_sigma`` centred on 1, and the paced parent is
the posterior mean of the paced curves (the expected curve, which is what expected accuracy
needs: a few calls leave the pace uncertain and the curve near the parent's). Hard kinds are
slow: AIME runs still going at 3,000 tokens are in the middle of their reasoning, not stuck,
and go on to finish far more often than the population's runs still going there. Continued
at the population's pace, hard kinds were undervalued past their caps, priced out, and never
observed again (deepscaler AIME 2024 learned at 0.22 within 8,192 tokens against a true 0.40,
and so abandoned). ``pace_sigma=0`` turns pacing off; what it is worth is measured in
``benchmarks/learning_censoring.py``.

Past its caps, a group also continues at its *own* hazards (``own_tail_calls``, 30 calls by
default; None turns it off): over the octave below the last token count at which
:data:`TAIL_MIN_WATCHED` of its calls were still watched, its runs finished at some rate and
some share of those finishes were right; past it that rate and share are held constant,
blended with the paced parent's hazards with weight ``n / (n + own_tail_calls)`` for ``n``
calls watched at the octave's start. Within a homogeneous group the share of still-going runs
that finish right in the next octave stays about the same (openrs1 MATH-500: 0.40 from 2,048
to 4,096 tokens, 0.42 from 4,096 to 8,192), while the population's falls (0.25, then 0.14),
its long runs being more and more the hopeless ones; continuing a MATH-500 group at the
population's hazards alone undervalues it past its caps.

The rate is held per *token* by default (``own_tail_scale="tokens"``: a constant hazard);
``"log-tokens"`` holds it per octave, a shorter tail. What the tail is for: on hard-heavy
streams (80% AIME) CLEAR on the parent's tail alone funds MATH-500 calls at about 5,000 tokens
where the true kind curves fund them at 7,000, because past 5,000 tokens the learned curve
flattens while the true one still gains 3.5 points per 1,000 tokens (openrs1): the calls are
never watched there, so the flat tail is never corrected. Held per token, the tail keeps that
gain. Measured end to end (``docs/benchmarks.md``, closer looks; expected accuracy as a
share of CLEAR's on the true kind curves), against the parent's tail alone and the per-octave
own tail on the same streams: openrs1 hard-heavy 0.949 against 0.936 and 0.932, and openrs3
hard-heavy 0.956 against 0.939 and 0.942 (16 streams each); openrs1 balanced at 2,048 tokens
per item 0.989 against 0.971 and 0.983 (8 streams). On the cold-start table every cell is
at 0.963 or above (openrs1 at 4,096 tokens per item: 0.977, 0.936 on the parent's tail in the
run before).
Offline (``benchmarks/learning_censoring.py``, 4 streams) it is about level with the parent's
tail: 0.970 at worst against 0.973, though lower on some cells where both beat the true kind
curves (qwen3 at 1,024 tokens per item: 1.013 against 1.074). The benchmark tables carry the
other tails as ``clear (learned, parent tail)`` (``own_tail_calls=None``) and ``clear
(learned, own tail per octave)``.

The prior is the documented population curve (:func:`~.prior.population_prior`), with how
long its runs are (:func:`~.prior.population_finished`): the expected curve of a subtask of
unknown difficulty, wide and cautious, which sharpens into the kind's own curve as calls
arrive. A user prior given as a shifted surge is spread over a threshold uncertainty of
``prior_sigma_tokens`` (:func:`~clear_middleware.curves.uncertainty.spread_threshold`); without
``prior_finished`` every run of a user prior that is not yet correct is taken as still going.

Without enough correctness reports (``min_reported``), each finished call counts as
``P(correct | finished)`` correct answers, a Beta estimate with prior mean
:data:`PRIOR_CORRECT_GIVEN_FINISHED` and the weight of 10 calls. Curves are smoothed by a
Gaussian kernel of 15% in log-tokens (a staircase of a few dozen calls has steps a new call
does not share).

A group's curve is rebuilt only when its log or one of its ancestors' logs has changed (each
log keeps a version); otherwise the curve built before is returned. An ``estimate`` of 40
subtasks in 12 groups took 24 ms with every curve rebuilt and 0.1 ms with none changed (8 ms
after a new call of one kind, which rebuilds that kind and its hints; timed ad hoc).

Exploration (optional; ``"none"``, the expected curves, is the default):

- ``exploration="pace"``: Thompson sampling on the pace. Each look at a group (one per group
  and ``estimate`` call) draws its pace from the posterior above instead of taking the
  expected curve, so a kind priced out on a few pessimistic calls is funded again whenever a
  draw makes it look fast enough, and a well-observed one barely moves. Offline
  (``benchmarks/learning_censoring.py``) it measured half a point better than the default on
  balanced streams at 2,048-4,096 tokens per item (0.993 against 0.988 of CLEAR on the true
  per-kind curves) and a point worse on hard-heavy ones (0.956 against 0.964), both within the
  streams' noise: a hard kind priced out early on a hard-heavy stream is still not won back
  reliably.
- ``exploration="thompson"``: each time a group's observations change, its curve is fitted to
  a bootstrap resample of its calls (seeded by the group and its data, so the same data give
  the same curve). It measured no better than the default.
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
from ..curves.shifted_surge import ShiftedSurge
from ..curves.uncertainty import spread_threshold
from ..subtask import Subtask
from .base import CallObservation
from .observations import Observation, ObservationLog, observation_log
from .prior import CURVE_GRID, smooth
from .prior import population_finished as _population_finished
from .prior import population_prior as _population_prior

PRIOR_CORRECT_GIVEN_FINISHED = 0.8
"""Share of answers that finish on their own which are correct, before any report (reasoning
models on tasks they can finish mostly get them right; weight: 10 calls)."""
_PRIOR_CORRECT_WEIGHT = 10.0

_ALIVE = 1e-9

PACES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
"""Paces a group may run at relative to its parent (a multiplier on tokens, 1/4 to 8, 6% apart;
see the module docstring)."""
PACES.flags.writeable = False

TAIL_MIN_WATCHED = 10
"""Calls a group must have had watched at a token count for its own tail to start there
(``own_tail_calls``)."""


@dataclass(frozen=True)
class GroupCurve:
    """A group's learned curves on :data:`CURVE_GRID` and the calls behind them.

    ``values``: probability of a correct answer within ``b`` tokens (the utility curve);
    ``running``: probability that a run is still going at ``b`` tokens (not finished, right or
    wrong), 1 at 0 tokens; ``calls``: the group's own calls (0 for the prior); ``pace``: how
    many times slower in tokens than its parent's the group's runs were found to be (1 for the
    prior and for pacing off; below 1 is faster).
    """

    values: NDArray[np.float64]
    running: NDArray[np.float64]
    calls: int
    pace: float = 1.0


_Stamped = tuple[GroupCurve, tuple[int, ...]]
"""A group's curve and the versions of the logs it was built from (its ancestors' first)."""


class HistoryEstimator:
    """Curves per (model, kind[, hint]) learned from censored call outcomes.

    Args:
        store: where observations live: an :class:`ObservationLog`, or a ledger store URI
            (``"memory://"`` default, ``"sqlite:///budget.db"``, ``"redis://..."``).
        prior: the curve of a kind with no traffic: one :class:`EmpiricalCurve` or
            :class:`ShiftedSurge` (default: the population prior).
        prior_weight: calls' worth of weight the parent's hazard keeps at each token count
            against the group's calls watched there (> 0; default 3, chosen on the offline
            learning benchmark, where 2-5 did alike and 30 lost 2.5 points on average).
        prior_sigma_tokens: threshold uncertainty a shifted-surge prior is spread over
            (tokens, >= 0).
        prior_finished: probability that a run of the prior has finished (right or wrong)
            within ``b`` tokens, one :class:`EmpiricalCurve` (default: the population's with
            the population prior, else every run not yet correct is taken as still going).
        pace_sigma: spread of the log-normal prior on a group's pace against its parent's
            (natural-log tokens, >= 0; default 0.7: two spreads are a pace of 1/4 to 4); 0
            keeps every group at its parent's pace.
        own_tail_calls: past its caps, continue a group at its own hazards too, not only its
            parent's, the own ones weighing ``n / (n + own_tail_calls)`` for ``n`` calls
            watched (calls, > 0; default 30; None turns it off): see the module docstring.
        own_tail_scale: what the own tail holds constant past the group's caps: the share of
            the runs still going that finish per token (``"tokens"``, the default: a constant
            hazard) or per octave (``"log-tokens"``: a shorter tail).
        use_hints: learn per (kind, hint) too, shrunk toward the kind.
        min_reported: correctness reports needed to learn from correctness directly (>= 1).
        exploration: ``"none"`` (the expected curves), ``"pace"`` (draw each group's pace
            from its posterior at every look) or ``"thompson"`` (fit each group to a bootstrap
            resample of its calls); see the module docstring.
        seed: seeds the pace draws of ``exploration="pace"`` (None: fresh entropy).

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
        prior_weight: float = 3.0,
        prior_sigma_tokens: float = 500.0,
        prior_finished: EmpiricalCurve | None = None,
        pace_sigma: float = 0.7,
        own_tail_calls: float | None = 30.0,
        own_tail_scale: Literal["log-tokens", "tokens"] = "tokens",
        use_hints: bool = True,
        min_reported: int = 10,
        exploration: Literal["thompson", "pace", "none"] = "none",
        seed: int | None = None,
    ) -> None:
        if not prior_weight > 0:
            raise ValueError(f"prior_weight must be > 0 calls; got {prior_weight!r}")
        if not pace_sigma >= 0:
            raise ValueError(f"pace_sigma must be >= 0 (log-tokens); got {pace_sigma!r}")
        if own_tail_calls is not None and not own_tail_calls > 0:
            raise ValueError(
                f"own_tail_calls must be > 0 calls, or None (off); got {own_tail_calls!r}")
        if own_tail_scale not in ("log-tokens", "tokens"):
            raise ValueError(f"own_tail_scale must be 'log-tokens' or 'tokens'; "
                             f"got {own_tail_scale!r}")
        if not prior_sigma_tokens >= 0:
            raise ValueError(f"prior_sigma_tokens must be >= 0 tokens; got {prior_sigma_tokens!r}")
        default_prior = prior is None
        prior = _population_prior() if prior is None else prior
        if not isinstance(prior, ShiftedSurge | EmpiricalCurve) or len(prior) != 1:
            raise ValueError("prior must be a ShiftedSurge or EmpiricalCurve holding one curve")
        if prior_finished is not None and (
                not isinstance(prior_finished, EmpiricalCurve) or len(prior_finished) != 1):
            raise ValueError("prior_finished must be an EmpiricalCurve holding one curve")
        if exploration not in ("thompson", "pace", "none"):
            raise ValueError(
                f"exploration must be 'thompson', 'pace' or 'none'; got {exploration!r}")
        if int(min_reported) < 1:
            raise ValueError(f"min_reported must be >= 1 calls; got {min_reported!r}")
        self.log: ObservationLog = (
            store if store is not None and not isinstance(store, str) else observation_log(store)
        )
        if isinstance(prior, ShiftedSurge):
            prior = spread_threshold(prior, prior_sigma_tokens, grid=CURVE_GRID)
        values = prior.value(CURVE_GRID[None, :])[0]
        if prior_finished is None and default_prior:
            prior_finished = _population_finished()
        # Without a finishing curve, every run not yet correct is taken as still running.
        finished = (values if prior_finished is None
                    else np.maximum(prior_finished.value(CURVE_GRID[None, :])[0], values))
        self.prior = GroupCurve(values, 1.0 - np.clip(finished, 0.0, 1.0), 0)
        self.prior_weight = float(prior_weight)
        self.pace_sigma = float(pace_sigma)
        self.own_tail_calls = None if own_tail_calls is None else float(own_tail_calls)
        self.own_tail_scale = own_tail_scale
        self.use_hints = use_hints
        self.min_reported = int(min_reported)
        self.exploration = exploration
        self._rng = np.random.default_rng(seed)
        self._cache: dict[str, tuple[int, GroupCounts | None]] = {}
        self._curves: dict[str, _Stamped] = {}
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
        return self._group(model, kind, hint, self._kind(model, kind))

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> EmpiricalCurve:
        # Each kind's curve once per call: its hint groups shrink toward the same one (and,
        # with exploration="pace", toward the same draw).
        kinds: dict[str | None, _Stamped] = {}
        groups: dict[tuple[str | None, str | None], GroupCurve] = {}
        rows = []
        for s in subtasks:
            if (s.kind, s.hint) not in groups:
                if s.kind not in kinds:
                    kinds[s.kind] = self._kind(model, s.kind)
                groups[s.kind, s.hint] = self._group(model, s.kind, s.hint, kinds[s.kind])
            rows.append(groups[s.kind, s.hint].values)
        values = np.array(rows) if rows else np.zeros((0, CURVE_GRID.size))
        return EmpiricalCurve(CURVE_GRID, values)

    def _kind(self, model: str, kind: str | None) -> _Stamped:
        return self._shrunk(self.key(model, kind), (self.prior, ()))

    def _group(self, model: str, kind: str | None, hint: str | None,
               parent: _Stamped) -> GroupCurve:
        if hint is None or not self.use_hints:
            return parent[0]
        return self._shrunk(self.key(model, kind, hint), parent)[0]

    def _shrunk(self, key: str, parent: _Stamped) -> _Stamped:
        """The group's curve shrunk toward ``parent``, and the log versions it was built from
        (the parent's and the group's): a curve is rebuilt only when one of them changed, or,
        with exploration="pace", at every look (each look draws)."""
        counts, version = self._counts(key)
        stamp = (*parent[1], version)
        drawn = self.exploration == "pace"
        if not drawn:
            with self._lock:
                cached = self._curves.get(key)
            if cached is not None and cached[1] == stamp:
                return cached
        rng = self._rng if drawn else None
        built = (_posterior(counts, parent[0], self.prior_weight, self.pace_sigma, rng,
                            self.own_tail_calls, self.own_tail_scale), stamp)
        if not drawn:
            with self._lock:
                self._curves[key] = built
        return built

    def _counts(self, key: str) -> tuple[GroupCounts | None, int]:
        version = self.log.version(key)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached[1], version
        records = self.log.read(key)
        if self.exploration == "thompson":
            records = _resampled(records, seed=zlib.crc32(f"{key}|{version}".encode()))
        counts = _count_records(records, self.min_reported)
        with self._lock:
            self._cache[key] = (version, counts)
        return counts, version


def _resampled(records: list[Observation], seed: int) -> list[Observation]:
    """The correctness reports, and the calls drawn with replacement (as many as there are)."""
    reports = [r for r in records if r.outcome_only]
    calls = [r for r in records if not r.outcome_only]
    picks = np.random.default_rng(seed).integers(0, len(calls), len(calls)) if calls else []
    return reports + [calls[i] for i in picks]


@dataclass(frozen=True)
class GroupCounts:
    """A group's calls binned on :data:`CURVE_GRID`: per bin ``(grid[j-1], grid[j]]``, the
    calls still running (and watched) at its start, the calls that finished in it, and the
    correct answers among those (expected ones, when correctness is not reported)."""

    at_risk: NDArray[np.float64]
    finished: NDArray[np.float64]
    correct: NDArray[np.float64]
    calls: int


def _count_records(records: list[Observation], min_reported: int) -> GroupCounts | None:
    """One group's :class:`GroupCounts` from its records (see the module docstring)."""
    outcomes = {r.call_id: r.correct for r in records if r.outcome_only}
    calls = [r for r in records if not r.outcome_only and r.cap > 0]
    if not calls:
        return None
    caps = np.array([r.cap for r in calls], dtype=np.float64)
    finished = np.array([r.finished for r in calls])
    # A finished call's length is at most its cap; a cut one is watched up to its cap.
    stops = np.minimum(np.maximum([float(r.tokens) for r in calls], 1.0), caps)
    correct = [outcomes.get(r.call_id, r.correct) for r in calls]
    reported = np.array([c is not None for c in correct])
    if reported.sum() >= min_reported:
        keep = reported
        worth = np.array([bool(c) for c in correct], dtype=np.float64)
    else:
        keep = np.ones(len(calls), dtype=bool)
        right = sum(1 for c, f in zip(correct, finished & reported, strict=True) if f and c)
        worth = np.full(len(calls), (right + PRIOR_CORRECT_GIVEN_FINISHED * _PRIOR_CORRECT_WEIGHT)
                        / ((finished & reported).sum() + _PRIOR_CORRECT_WEIGHT))
    stops, finished, worth = stops[keep], finished[keep], worth[keep]
    if not stops.size:
        return None
    grid = CURVE_GRID
    order = np.sort(stops)
    # Bin j (j >= 1) is (grid[j-1], grid[j]]; bin 0 is unused.
    at_risk = np.concatenate(([0.0], order.size - np.searchsorted(order, grid[:-1], "right")))
    bins = np.clip(np.searchsorted(grid, stops[finished], side="left"), 1, grid.size - 1)
    done = np.bincount(bins, minlength=grid.size).astype(np.float64)
    answered_right = np.bincount(bins, weights=worth[finished], minlength=grid.size)
    return GroupCounts(at_risk, done, answered_right, len(calls))


def _hazards(values: NDArray[np.float64], running: NDArray[np.float64],
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per bin of :data:`CURVE_GRID` (last axis), the hazards of a correct answer and of
    finishing at all among the runs still going at the bin's start."""
    alive = running[..., :-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        h_correct = np.where(alive > _ALIVE, np.diff(values, axis=-1) / alive, 0.0)
        h_finish = np.where(alive > _ALIVE, -np.diff(running, axis=-1) / alive, 1.0)
    h_finish = np.clip(h_finish, 0.0, 1.0)
    return np.clip(h_correct, 0.0, h_finish), h_finish


def _paced(parent: GroupCurve, counts: GroupCounts, sigma: float,
           rng: np.random.Generator | None = None) -> GroupCurve:
    """The parent stretched in tokens to the group's pace (its expected curve over the pace).

    Every pace of :data:`PACES` at once: the log-likelihood of the calls' finishes among those
    watched per bin, and of the correct answers among the finishes, under the parent's hazards
    at that pace, plus the log-normal prior ``-ln(pace)^2 / (2 sigma^2)``, gives the pace's
    posterior; the result is the posterior mean of the paced curves, and its ``pace`` the
    posterior geometric mean.
    """
    if sigma == 0:
        return parent
    stretched = CURVE_GRID[None, :] / PACES[:, None]
    values = np.interp(stretched, CURVE_GRID, parent.values)
    running = np.interp(stretched, CURVE_GRID, parent.running)
    h_correct, h_finish = _hazards(values, running)
    finish = np.clip(h_finish, _ALIVE, 1.0 - _ALIVE)
    right = np.clip(h_correct / np.maximum(h_finish, _ALIVE), _ALIVE, 1.0 - _ALIVE)
    watched, done, correct = counts.at_risk[1:], counts.finished[1:], counts.correct[1:]
    log_likelihood = (done * np.log(finish) + (watched - done) * np.log1p(-finish)
                      + correct * np.log(right) + (done - correct) * np.log1p(-right)).sum(-1)
    log_posterior = log_likelihood - np.log(PACES) ** 2 / (2.0 * sigma**2)
    weights = np.exp(log_posterior - log_posterior.max())
    weights /= weights.sum()
    if rng is not None:
        drawn = int(rng.choice(PACES.size, p=weights))
        return GroupCurve(values[drawn], running[drawn], parent.calls, float(PACES[drawn]))
    return GroupCurve(weights @ values, weights @ running, parent.calls,
                      float(np.exp(weights @ np.log(PACES))))


def _own_tail(counts: GroupCounts, h_correct: NDArray[np.float64],
              h_finish: NDArray[np.float64], weight: float, tail_calls: float,
              scale: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The parent's hazards past a group's watched range, blended with the group's own.

    ``top`` is the last token count at which :data:`TAIL_MIN_WATCHED` of the group's calls were
    still watched. Over the octave below it the group's runs finished at some rate per
    log-token (``scale="log-tokens"``) or per token (``"tokens"``), and some share of those
    finishes were right (its hazards, shrunk as in :func:`_posterior`); past ``top`` that rate
    and share are held constant and blended with the parent's hazards, weighing ``n / (n +
    tail_calls)`` with ``n`` the calls watched at the octave's start.
    """
    watched = counts.at_risk[1:]  # per bin (grid[j], grid[j + 1]]
    enough = np.flatnonzero(watched >= TAIL_MIN_WATCHED)
    if not enough.size or enough[-1] + 2 >= CURVE_GRID.size:
        return h_correct, h_finish
    last = int(enough[-1])
    top = CURVE_GRID[last + 1]
    start = max(int(np.searchsorted(CURVE_GRID, top / 2.0)) - 1, 0)
    octave = slice(start, last + 1)
    denominator = watched[octave] + weight
    own_correct = (counts.correct[1:][octave] + weight * h_correct[octave]) / denominator
    own_finish = np.maximum(
        (counts.finished[1:][octave] + weight * h_finish[octave]) / denominator, own_correct)
    still = np.concatenate(([1.0], np.cumprod(1.0 - np.minimum(own_finish, 1.0))))
    finished = 1.0 - still[-1]
    share = float(still[:-1] @ own_correct) / finished if finished > _ALIVE else 0.0
    # Where the rate is measured: log-tokens, or tokens.
    axis = np.log(np.maximum(CURVE_GRID, 1.0)) if scale == "log-tokens" else CURVE_GRID
    rate = -np.log(max(still[-1], _ALIVE)) / (axis[last + 1] - axis[start])
    tail_finish = 1.0 - np.exp(-rate * np.diff(axis[last + 1:]))
    own = watched[start] / (watched[start] + tail_calls)
    h_correct, h_finish = h_correct.copy(), h_finish.copy()
    h_finish[last + 1:] = own * tail_finish + (1.0 - own) * h_finish[last + 1:]
    h_correct[last + 1:] = own * share * tail_finish + (1.0 - own) * h_correct[last + 1:]
    return h_correct, h_finish


def _posterior(counts: GroupCounts | None, parent: GroupCurve, weight: float,
               pace_sigma: float, rng: np.random.Generator | None,
               own_tail_calls: float | None, own_tail_scale: str) -> GroupCurve:
    """The group's curve: its hazards, each shrunk toward its paced parent's by ``weight``
    calls.

    Per bin, the hazard of a correct answer is ``(correct + weight * h_parent) / (at_risk +
    weight)`` and the same for finishing at all (the posterior mean of a beta-process prior
    centred on the parent, set to the group's pace first: :func:`_paced`). Where many calls
    were watched the group's own hazards rule; past the largest cap it tried (no call watched)
    its still-running share continues as the parent's runs do at the group's pace.
    """
    if counts is None:
        return parent
    parent = _paced(parent, counts, pace_sigma, rng)
    h_correct, h_finish = _hazards(parent.values, parent.running)
    if own_tail_calls is not None:
        h_correct, h_finish = _own_tail(counts, h_correct, h_finish, weight, own_tail_calls,
                                        own_tail_scale)
    denominator = counts.at_risk[1:] + weight
    h_correct = (counts.correct[1:] + weight * h_correct) / denominator
    h_finish = np.maximum((counts.finished[1:] + weight * h_finish) / denominator, h_correct)
    running = np.concatenate(([1.0], np.cumprod(1.0 - np.minimum(h_finish, 1.0))))
    values = np.concatenate(([0.0], np.cumsum(running[:-1] * h_correct)))
    values = smooth(np.clip(values, 0.0, 1.0)[None, :])[0]
    finished = smooth(np.clip(1.0 - running, 0.0, 1.0)[None, :])[0]
    return GroupCurve(values, 1.0 - np.maximum(finished, values), counts.calls, parent.pace)
