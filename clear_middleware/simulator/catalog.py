"""Which real run the simulator replays for a request: the run catalog and its selection rule.

Every run of the sweep is one (model, item, seed, cap) measurement: a length in tokens, whether
it was cut at its cap, and, if it finished, whether its answer was right. Runs at different caps
are independent samples. A run that finished after ``L`` tokens would have done the same under
any cap >= ``L`` and been cut under any cap < ``L``; a run cut at its cap ``c`` only tells that
its length exceeds ``c``.

Selection for a request with (effective) cap ``C`` tokens, after ``P`` tokens already generated
(``P = 0`` unless the request continues an earlier answer):

1. A run is *informative* at total cap ``T = P + C`` when it finished with a length ``L > P``,
   or was cut at a cap ``c >= T``. A run cut at a smaller cap says nothing about lengths beyond
   its cap, so it is never replayed there (it would bias lengths down).
2. The item's runs are ordered by a hash of (seed key, run id); the first informative run in
   that order is replayed. This is a uniform draw among informative runs, reproducible for the
   same seed key, and it keeps the same run across caps as long as that run stays informative.
   A continuation names its run (the run marker in the partial text): that run is kept when it
   is still informative, which replays the same run from where it stopped.
3. If no run is informative (every run was cut below ``T``), the run cut at the largest cap is
   *extrapolated*: assumed still running at ``T``, so the reply is cut at the cap (``length``,
   incorrect). This is the pessimistic reading of a censored length.

Data: see ``clear_middleware.datasets.reasoning_sweep.SWEEP_ATTRIBUTION``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

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
            import numpy as np

            from clear_middleware.curves.empirical import EmpiricalCurve

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
            ordered = sorted(runs, key=lambda run: _priority(seed_key, run.run_id))
            chosen = next((run for run in ordered if informative(run)), None)
            if chosen is None:
                longest = max(run.cap for run in runs)
                chosen = next(run for run in ordered if run.cap == longest)
                return ReplayPlan(chosen, already, total, finished=False, extrapolated=True)
        if not chosen.censored and chosen.length <= total:
            return ReplayPlan(chosen, already, chosen.length, finished=True, extrapolated=False)
        return ReplayPlan(chosen, already, total, finished=False, extrapolated=False)


def _priority(seed_key: str, run_id: int) -> int:
    digest = hashlib.sha256(f"{seed_key}|{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


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
