"""Which real run the simulator replays for a request: the run catalog and its selection rule.

Every run of the sweep is one (model, item, seed, cap) measurement: a length in tokens, whether
it was cut at its cap, and, if it finished, whether its answer was right. Runs at different caps
are independent samples. A run that finished after ``L`` tokens would have done the same under
any cap >= ``L`` and been cut under any cap < ``L``; a run cut at its cap ``c`` only tells that
its length exceeds ``c``.

Selection for a request with (effective) cap ``C`` tokens, after ``P`` tokens already generated
(``P = 0`` unless the request continues an earlier answer), at total cap ``T = P + C``:

1. Each run of the item carries its Kaplan-Meier probability mass
   (:func:`~clear_middleware.curves.empirical.replay_weights`): a finished run its share of the
   length distribution, a cut run none, since its share belongs to the runs longer than its cap
   (Efron's redistribution to the right). The probability of running past the longest
   finished run goes to the run(s) cut after it at the longest length, assumed to keep running.
2. One run is drawn with these weights, from hashes of (seed key, run id): reproducible for
   the same seed key, independent across items, and the same run at every cap. The reply
   finishes when the run's length is ``<= T`` and is cut at ``T`` otherwise, so the replies'
   distribution at every cap is the item's censoring-aware (Aalen-Johansen) curve, the one the
   evaluation scores against. (Drawing uniformly among the runs known at ``T`` instead would drop
   the runs cut below ``T``, the long ones, and replay an easier item than the data shows.)
3. A continuation names its run (the run marker in the partial text): that run is kept while it
   is *informative* at ``T`` (it finished after more than ``P`` tokens, or was cut at a cap
   ``>= T``), which replays the same run from where it stopped. Otherwise a run is drawn as in
   2 among the runs still going after ``P`` tokens (the length distribution given ``> P``).
4. A cut run replayed past its cap (the run holding the probability of running longest, or,
   when no run is left to draw, the run cut at the largest cap) is *extrapolated*: assumed
   still running at ``T``, so the reply is cut at the cap (``length``, incorrect). This is the
   pessimistic reading of a censored length.

Data: see ``clear_middleware.datasets.reasoning_sweep.SWEEP_ATTRIBUTION``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from clear_middleware.curves import empirical
from clear_middleware.curves.empirical import EmpiricalCurve
from clear_middleware.datasets.reasoning_sweep import sweep_rows

_TRUE = {"True", "true", "1"}


@dataclass(frozen=True)
class SweepRun:
    """One measured run.

    Attributes:
        run_id: row index in the sweep file (stable for a given file).
        model: model short name, e.g. ``"deepscaler-1.5b"``.
        item: ``"<benchmark>/<item_id>"``, e.g. ``"math500/test/precalculus/807.json"``.
        seed: sampling seed of the run.
        cap: the run's own cap, in tokens.
        length: generated tokens (equal to ``cap`` when cut).
        censored: the run was cut at its cap, so its true length is only known to exceed it.
        correct: the run finished and its answer was graded correct.
        answer: the run's extracted final answer, if it produced one.
        gold: the reference answer of the item.
    """

    run_id: int
    model: str
    item: str
    seed: int
    cap: int
    length: int
    censored: bool
    correct: bool
    answer: str | None
    gold: str


@dataclass(frozen=True)
class ReplayPlan:
    """What to generate for one request: tokens ``[start, end)`` of ``run``.

    Attributes:
        run: the replayed run.
        start: tokens already generated before this request (continuations), >= 0.
        end: position where this reply stops, in tokens from the run's start.
        finished: the run ends at ``end`` (finish reason ``stop``); else it is cut (``length``).
        extrapolated: no run was informative at this cap; ``run`` is assumed to go on past it.
    """

    run: SweepRun
    start: int
    end: int
    finished: bool
    extrapolated: bool

    @property
    def completion_tokens(self) -> int:
        return self.end - self.start

    @property
    def correct(self) -> bool:
        return self.finished and self.run.correct


class RunCatalog:
    """The runs of the sweep, indexed by model and item."""

    def __init__(self, runs: Iterable[SweepRun]) -> None:
        self._runs: dict[int, SweepRun] = {}
        self._by_item: dict[tuple[str, str], list[SweepRun]] = {}
        self._items: dict[str, list[str]] = {}
        self._max_cap: dict[str, int] = {}
        self._medians: dict[tuple[str, str], float | None] = {}
        self._weights: dict[tuple[str, str], NDArray[np.float64]] = {}
        for run in runs:
            self._runs[run.run_id] = run
            self._by_item.setdefault((run.model, run.item), []).append(run)
            self._max_cap[run.model] = max(self._max_cap.get(run.model, 0), run.cap)
        for model, item in self._by_item:
            self._items.setdefault(model, []).append(item)
        for items in self._items.values():
            items.sort()

    def models(self) -> list[str]:
        return sorted(self._items)

    def items(self, model: str) -> Sequence[str]:
        """Item keys of ``model``, sorted; ``KeyError`` if the model is unknown."""
        return self._items[model]

    def max_cap(self, model: str) -> int:
        """The largest cap (tokens) ``model`` was run under: the simulated output limit."""
        return self._max_cap[model]

    def runs(self, model: str, item: str) -> Sequence[SweepRun]:
        """Runs of one item of one model; ``KeyError`` if there are none."""
        return self._by_item[(model, item)]

    def median_correct_length(self, model: str, item: str) -> float | None:
        """Tokens at which the item's censoring-aware accuracy curve (its runs, Aalen-Johansen
        on a 16-token grid) reaches half its ceiling: the median length of its correct answers.
        ``None`` when no run of ``model`` answered the item correctly."""
        key = (model, item)
        if key not in self._medians:
            runs = self.runs(model, item)
            grid = np.arange(0, self.max_cap(model) + 16, 16, dtype=np.float64)
            curve = EmpiricalCurve.from_rollouts(
                [[r.length for r in runs]], [[r.correct for r in runs]], grid,
                censored=[[r.censored for r in runs]])
            self._medians[key] = (float(curve.saturation_tokens(0.5)[0])
                                  if curve.ceiling[0] > 0 else None)
        return self._medians[key]

    def run(self, run_id: int) -> SweepRun | None:
        return self._runs.get(run_id)

    def item_for_text(self, model: str, text: str) -> str:
        """A deterministic item of ``model`` for a prompt with no item reference."""
        items = self.items(model)
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        return items[int.from_bytes(digest[:8], "big") % len(items)]

    def plan(
        self,
        model: str,
        item: str,
        cap: int,
        seed_key: str,
        *,
        already: int = 0,
        prefer_run_id: int | None = None,
    ) -> ReplayPlan:
        """Choose the run and the token span to replay (see the module docstring).

        Args:
            model, item: which runs to draw from.
            cap: new tokens allowed for this reply, >= 1.
            seed_key: any string; equal keys give equal choices.
            already: tokens generated before (a continuation), >= 0.
            prefer_run_id: the run being continued, kept if still informative.
        """
        runs = self.runs(model, item)
        total = already + cap
        preferred = self._runs.get(prefer_run_id) if prefer_run_id is not None else None
        if preferred is not None and (preferred.model, preferred.item) != (model, item):
            preferred = None
        if preferred is not None and not preferred.censored and preferred.length <= already:
            # The continued run had already stopped: nothing more to say.
            return ReplayPlan(preferred, already, already, finished=True, extrapolated=False)

        def informative(run: SweepRun) -> bool:
            return run.cap >= total if run.censored else run.length > already

        if preferred is not None and informative(preferred):
            chosen = preferred
        else:
            chosen = self._draw(model, item, seed_key, already)
            if chosen is None:
                longest = max(run.cap for run in runs)
                chosen = min((run for run in runs if run.cap == longest), key=lambda r: r.run_id)
                return ReplayPlan(chosen, already, total, finished=False, extrapolated=True)
        if not chosen.censored and chosen.length <= total:
            return ReplayPlan(chosen, already, chosen.length, finished=True, extrapolated=False)
        return ReplayPlan(chosen, already, total, finished=False,
                          extrapolated=chosen.censored and chosen.cap < total)

    def replay_weights(self, model: str, item: str) -> NDArray[np.float64]:
        """The probability of drawing each of :meth:`runs`, in their order (module docstring,
        rule 1): Kaplan-Meier masses of the finished runs, the rest to the runs cut at the
        longest length when no finished run is longer."""
        key = (model, item)
        if key not in self._weights:
            runs = self.runs(model, item)
            weights = empirical.replay_weights(
                np.array([[run.length for run in runs]], dtype=np.float64),
                np.array([[run.censored for run in runs]]), np.ones((1, len(runs)), dtype=bool))[0]
            weights.flags.writeable = False
            self._weights[key] = weights
        return self._weights[key]

    def _draw(self, model: str, item: str, seed_key: str, already: int) -> SweepRun | None:
        """A run drawn with :meth:`replay_weights` among those still going after ``already``
        tokens; ``None`` when none is. Each run gets a uniform ``u`` from a hash of (seed key,
        run id) and the smallest ``-ln(1 - u) / weight`` wins (an exponential race: run ``i``
        wins with probability ``weight_i / sum(weights)``; with equal weights the smallest ``u``
        wins)."""
        runs = self.runs(model, item)
        weights = self.replay_weights(model, item)
        race = [(-math.log1p(-_uniform(seed_key, run.run_id)) / weight, run.run_id, run)
                for run, weight in zip(runs, weights, strict=True)
                if weight > 0.0 and (run.censored or run.length > already)]
        return min(race)[2] if race else None


def _uniform(seed_key: str, run_id: int) -> float:
    """A number in (0, 1) from a hash of (seed key, run id)."""
    digest = hashlib.sha256(f"{seed_key}|{run_id}".encode()).digest()
    return ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) / 2.0**53  # exact in a float


@lru_cache(maxsize=4)
def load_catalog(path: str | None = None) -> RunCatalog:
    """The runs of the bundled sweep (or of a sweep CSV, optionally ``.gz``, at ``path``)."""
    return RunCatalog(_parse_runs(sweep_rows(path)))


def _parse_runs(rows: Iterable[dict[str, str]]) -> Iterable[SweepRun]:
    for index, row in enumerate(rows):
        censored = row["reached_cap"] in _TRUE
        has_answer = row.get("has_answer", "") in _TRUE and bool(row.get("answer"))
        yield SweepRun(
            run_id=index,
            model=row["model"],
            item=f"{row['benchmark']}/{row['item_id']}",
            seed=int(row["seed"]),
            cap=int(row["budget"]),
            length=int(row["n_new_tokens"]),
            censored=censored,
            # An answer found in a cut run is not counted: under a larger cap it might change.
            correct=row["correct"] in _TRUE and not censored,
            answer=row["answer"] if has_answer else None,
            gold=row.get("gold", ""),
        )
