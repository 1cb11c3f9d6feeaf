"""Traffic streams through the local reasoning simulator: how well estimators learn curves.

A stream is a sequence of windows (batches of subtasks arriving together), each with a budget
of ``budget_per_item`` output tokens per subtask (plus its prompt). Every subtask names a real
item of the budget sweep; the simulator replays one of that item's measured runs, cut at the cap
the session funded. Each window runs through a real :class:`BudgetSession` over HTTP (LiteLLM
-> simulator), and the harness plays the application: it checks each answer against the gold
answer and reports correctness back to the session (``record_outcome``), as an application
that can grade its answers would.

Variants compared on the *same* stream (each occurrence of an item replays the same run under
every variant, so differences come from the caps alone):

- ``uniform``: the same cap for every subtask;
- ``clear (prior only)``: CLEAR with the documented population prior and no learning (no
  history at all); the prior is computed without the evaluated model's runs;
- ``clear (learned)``: CLEAR with a :class:`HistoryEstimator` (its defaults) that starts empty
  and learns from every settled call (per model and kind, and per difficulty hint where items
  have one);
- ``clear (learned, no hints)``: the same without hints;
- ``clear (learned, Thompson)``: the same with hints, each group fitted to a bootstrap
  resample of its calls (``exploration="thompson"``) instead of the calls as they are;
- ``clear (learned, pacing off)``: the same with hints, every group kept at its parent's pace
  (``pace_sigma=0``: past its caps the parent's share of a hard kind's tail continues as
  the population's runs do);
- ``clear (learned, pace drawn)``: the same with hints, each look at a group drawing its pace
  from its posterior (``exploration="pace"``, Thompson sampling on the pace);
- ``clear (learned, parent tail)``: the same with hints, past its caps each group continuing
  at its paced parent's hazards alone (``own_tail_calls=None``; the estimator's default before
  the own tail);
- ``clear (learned, own tail per octave)``: the same, the own tail holding its finishing rate
  per octave instead of per token (``own_tail_scale="log-tokens"``);
- ``clear (true kind curves)``: CLEAR told each kind's true curve (the sampling-weighted mean
  of the items' measured curves): the target of a per-kind estimator;
- ``clear (true item curves)``: CLEAR told each item's own measured curve: what per-item
  prediction would be worth.

Mixes: ``balanced`` (each kind equally likely), ``easy-heavy`` (80% MATH-500, levels 1-3
twice as likely), ``hard-heavy`` (80% AIME, MATH-500 levels 4-5 twice as likely), ``mixed``
(every item equally likely). Arrivals: ``fixed`` windows, ``poisson`` window sizes, or
``burst`` (every fifth window four times as large).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ..curves.base import UtilityCurves
from ..curves.empirical import EmpiricalCurve
from ..datasets.reasoning_sweep import load_math500, load_sweep
from ..estimators.history import HistoryEstimator
from ..estimators.prior import population_finished, population_prior
from ..estimators.static import StaticEstimator
from ..simulator import SimulatorServer, item_marker, load_catalog
from ..subtask import Subtask
from ..tokens import count_text_tokens
from .frontier import item_curves

MIXES = ("balanced", "easy-heavy", "hard-heavy", "mixed")
ARRIVALS = ("fixed", "poisson", "burst")
VARIANTS = (
    "uniform",
    "clear (prior only)",
    "clear (learned)",
    "clear (learned, no hints)",
    "clear (learned, Thompson)",
    "clear (learned, pacing off)",
    "clear (learned, pace drawn)",
    "clear (learned, parent tail)",
    "clear (learned, own tail per octave)",
    "clear (true kind curves)",
    "clear (true item curves)",
)


@dataclass(frozen=True)
class ItemPool:
    """The items of one model: simulator keys, kinds, hints, gold answers, true curves."""

    model: str
    key: NDArray[np.str_]
    kind: NDArray[np.str_]
    hint: list[str | None]
    gold: list[str]
    truth: EmpiricalCurve

    def __len__(self) -> int:
        return len(self.key)


def item_pool(model: str) -> ItemPool:
    """All items of ``model`` with their measured curves; MATH-500 items carry ``level-<n>``."""
    table = load_sweep()
    curves = item_curves(model, table)
    from ..datasets.reasoning_sweep import item_rollouts

    runs = item_rollouts(table, model)
    math = load_math500()
    keys = np.array([f"{b}/{i}" for b, i in zip(runs.benchmark, runs.item_id, strict=True)])
    hints = [f"level-{math[i].level}" if i in math else None for i in runs.item_id]
    catalog = load_catalog()
    gold = [catalog.runs(model, k)[0].gold for k in keys]
    return ItemPool(model, keys, runs.benchmark, hints, gold, curves.truth)


def sampling_weights(pool: ItemPool, mix: str) -> NDArray[np.float64]:
    """Probability of drawing each item under a mix (see the module docstring)."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {list(MIXES)}; got {mix!r}")
    n = len(pool)
    weight = np.ones(n)
    if mix != "mixed":
        kinds, counts = np.unique(pool.kind, return_counts=True)
        share = dict(zip(kinds, 1.0 / counts, strict=True))
        weight = np.array([share[k] for k in pool.kind])
        is_math = pool.kind == "math500"
        level = np.array([int(h.split("-")[1]) if h else 0 for h in pool.hint])
        if mix in ("easy-heavy", "hard-heavy"):
            easy = mix == "easy-heavy"
            favoured = (level <= 3) if easy else (level >= 4)
            within = np.where(is_math & favoured, 2.0, 1.0)  # levels twice as likely
            math_share = 0.8 if easy else 0.2
            weight = np.where(is_math, math_share * within / within[is_math].sum(),
                              (1.0 - math_share) / (~is_math).sum())
    return weight / weight.sum()


def kind_truth(pool: ItemPool, weights: NDArray[np.float64]) -> EmpiricalCurve:
    """Each item's row replaced by its kind's sampling-weighted mean curve."""
    values = np.empty_like(pool.truth.values)
    for kind in np.unique(pool.kind):
        mask = pool.kind == kind
        w = weights[mask] / weights[mask].sum()
        values[mask] = w @ pool.truth.values[mask]
    return EmpiricalCurve(pool.truth.grid, values)


@dataclass(frozen=True)
class Window:
    """One batch of the stream: item indices, and a nonce that fixes which runs they replay."""

    items: tuple[int, ...]
    nonce: int


def make_stream(
    pool: ItemPool, mix: str, windows: int, window_size: int, *, arrivals: str = "fixed",
    seed: int = 0,
) -> list[Window]:
    """Draw a stream of windows of items (with replacement) under a mix and arrival pattern."""
    if arrivals not in ARRIVALS:
        raise ValueError(f"arrivals must be one of {list(ARRIVALS)}; got {arrivals!r}")
    rng = np.random.default_rng(seed)
    p = sampling_weights(pool, mix)
    out = []
    for w in range(windows):
        size = window_size
        if arrivals == "poisson":
            size = max(1, int(rng.poisson(window_size)))
        elif arrivals == "burst" and w % 5 == 4:
            size = 4 * window_size
        out.append(Window(tuple(int(i) for i in rng.choice(len(pool), size=size, p=p)), w))
    return out


class CurveTable:
    """An estimator that looks each subtask's curve up by item index in a table (oracles and
    noisy predictors: subtask ids are ``"<item index>:<window>:<position>"``)."""

    def __init__(self, curves: UtilityCurves) -> None:
        self.curves = curves

    def estimate(self, subtasks: Sequence[Subtask], model: str) -> UtilityCurves:
        return self.curves.take([int(s.id.split(":")[0]) for s in subtasks])

    def observe(self, observation) -> None:
        """Oracles do not learn."""

    def record_outcome(self, call_id, correct, *, model, kind, hint=None) -> None:
        """Oracles do not learn."""


@dataclass
class StreamResult:
    """Per-window outcomes of one variant on one stream."""

    variant: str
    correct: list[int] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    calls_learned: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    expected_correct: list[float] = field(default_factory=list)
    caps: list[tuple[int, ...]] = field(default_factory=list)  # output caps sent (0: unsent)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / max(sum(self.items), 1)

    def accuracy_after(self, window: int) -> float:
        """Accuracy over the windows from ``window`` on (the learned regime)."""
        return sum(self.correct[window:]) / max(sum(self.items[window:]), 1)

    def expected_accuracy_after(self, window: int) -> float:
        """Expected accuracy of the caps sent over the windows from ``window`` on, on the
        items' true curves: the same caps, without the noise of which run each call drew."""
        return sum(self.expected_correct[window:]) / max(sum(self.items[window:]), 1)


PROMPT_TOKENS = 48
"""Every prompt is padded to this many tokens: the item marker must not make some prompts
cheaper than others (CLEAR funds the cheaper of two equally promising subtasks first, and
marker length would then leak the benchmark)."""


def window_subtasks(pool: ItemPool, window: Window) -> list[Subtask]:
    """The subtasks of a window: each names its item, carries its kind and hint, and has a
    prompt of exactly :data:`PROMPT_TOKENS` tokens."""
    out = []
    for k, i in enumerate(window.items):
        text = (f"{item_marker(str(pool.key[i]))} Solve the problem; give the final answer in "
                f"\\boxed{{}}. (request {window.nonce}-{k})")
        padded = text
        for pad in range(2 * PROMPT_TOKENS):  # " ." is one token; the seam may merge one
            padded = text + " ." * (pad // 2) + " x" * (pad % 2)
            if count_text_tokens(padded, f"openai/{pool.model}") == PROMPT_TOKENS:
                break
        out.append(Subtask.of(padded, kind=str(pool.kind[i]), id=f"{i}:{window.nonce}:{k}",
                              hint=pool.hint[i]))
    return out


_LEARNED_OPTIONS: dict[str, dict[str, object]] = {
    "clear (learned)": {},
    "clear (learned, no hints)": dict(use_hints=False),
    "clear (learned, Thompson)": dict(exploration="thompson"),
    "clear (learned, pacing off)": dict(pace_sigma=0.0),
    "clear (learned, pace drawn)": dict(exploration="pace", seed=0),
    "clear (learned, parent tail)": dict(own_tail_calls=None),
    "clear (learned, own tail per octave)": dict(own_tail_scale="log-tokens"),
}
"""The learning variants: the :class:`HistoryEstimator` options each changes (hints on
otherwise)."""
LEARNING = tuple(_LEARNED_OPTIONS)


def _estimator(variant: str, pool: ItemPool, weights: NDArray[np.float64],
               extra: Mapping[str, Callable[[], object]]):
    # The prior never includes the runs of the model under evaluation.
    prior = population_prior([pool.model])
    learned = dict(prior=prior, prior_finished=population_finished([pool.model]))
    if variant in extra:
        return extra[variant]()
    if variant in ("uniform", "clear (prior only)"):
        return StaticEstimator(default=prior)
    if variant in _LEARNED_OPTIONS:
        return HistoryEstimator(**{**learned, "use_hints": True, **_LEARNED_OPTIONS[variant]})
    if variant == "clear (true kind curves)":
        return CurveTable(kind_truth(pool, weights))
    if variant == "clear (true item curves)":
        return CurveTable(pool.truth)
    raise ValueError(f"variant must be one of {list(VARIANTS)}; got {variant!r}")


async def arun_stream(
    sim: SimulatorServer, pool: ItemPool, stream: Sequence[Window], variant: str,
    budget_per_item: int, weights: NDArray[np.float64],
    extra: Mapping[str, Callable[[], object]] | None = None, measure_from: int = 0,
) -> StreamResult:
    """Run one variant over a stream, one session per window, learning across windows.

    Variants that do not learn skip the windows before ``measure_from`` (nothing depends on
    them); learning variants run every window and learn from all of them.
    """
    from ..session import BudgetSession

    estimator = _estimator(variant, pool, weights, extra or {})
    max_cap = int(pool.truth.grid[-1])
    result = StreamResult(variant)
    for number, window in enumerate(stream):
        if number < measure_from and variant not in LEARNING:
            result.correct.append(0)
            result.items.append(0)
            result.output_tokens.append(0)
            result.abandoned.append(0)
            result.calls_learned.append(0)
            result.errors.append(0)
            result.expected_correct.append(0.0)
            result.caps.append(())
            continue
        subtasks = window_subtasks(pool, window)
        session = BudgetSession(
            budget_tokens=budget_per_item * len(subtasks) + 40 * len(subtasks),
            model=f"openai/{pool.model}", estimator=estimator,
            policy="uniform" if variant == "uniform" else "clear",
            max_output_tokens=max_cap, granularity=16, max_concurrency=len(subtasks),
            api_base=sim.base_url, api_key="sim",
        )
        # The budget adds 40 tokens a subtask for its prompt, which a fresh session reserves
        # at 83 (48 tokens, 55 with the chat overhead, plus the session's prompt margin):
        # uniform output caps fall about 45 tokens short of ``budget_per_item``. Every
        # variant has the same budget.
        results = await session.arun(subtasks)
        correct = 0
        for res, i in zip(results, window.items, strict=True):
            if res.status != "ok":
                continue
            good = res.finish_reason == "stop" and f"\\boxed{{{pool.gold[i]}}}" in (res.text or "")
            correct += good
            session.record_outcome(res, correct=good)
        result.correct.append(correct)
        result.items.append(len(results))
        result.output_tokens.append(sum(r.usage.completion_tokens for r in results))
        result.abandoned.append(sum(r.status == "unfunded" for r in results))
        result.errors.append(sum(r.status == "error" for r in results))
        result.caps.append(tuple(r.tokens_allocated if r.status == "ok" else 0 for r in results))
        caps = np.array(result.caps[-1], dtype=np.float64)[:, None]
        result.expected_correct.append(
            float(pool.truth.take(list(window.items)).value(caps).sum()))
        group = getattr(estimator, "group", None)
        result.calls_learned.append(
            sum(group(f"openai/{pool.model}", k).calls for k in np.unique(pool.kind))
            if group else 0)
    return result


async def arun_streams(
    sim: SimulatorServer, model: str, *, mix: str = "balanced", budget_per_item: int = 2048,
    windows: int = 12, window_size: int = 40, arrivals: str = "fixed",
    variants: Sequence[str] = VARIANTS, seed: int = 0,
    extra: Mapping[str, Callable[[], object]] | None = None, pool: ItemPool | None = None,
    measure_from: int = 0,
) -> dict[str, StreamResult]:
    """Every variant on one stream (see the module docstring).

    ``extra`` adds variants: ``{name: estimator factory}`` (run with CLEAR). Non-learning
    variants only run from window ``measure_from`` on. Run many of these in one event loop:
    LiteLLM keeps its connection pools per loop.
    """
    pool = pool or item_pool(model)
    weights = sampling_weights(pool, mix)
    stream = make_stream(pool, mix, windows, window_size, arrivals=arrivals,
                         seed=seed + zlib.crc32(model.encode()))
    return {v: await arun_stream(sim, pool, stream, v, budget_per_item, weights, extra,
                                 measure_from)
            for v in (*variants, *(extra or {}))}


def run_streams(model: str, *, sim: SimulatorServer | None = None,
                **options: object) -> dict[str, StreamResult]:
    """Blocking :func:`arun_streams`; starts a simulator if none is given."""
    if sim is not None:
        return asyncio.run(arun_streams(sim, model, **options))
    with SimulatorServer() as server:
        return asyncio.run(arun_streams(server, model, **options))
