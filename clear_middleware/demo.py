"""``clear-middleware demo``: one batch under one session budget, CLEAR against uniform caps.

What it does (offline, in seconds):

1. starts the local simulator (:mod:`clear_middleware.simulator`), which replays real runs of a
   small reasoning model of the bundled budget sweep (``deepscaler-1.5b`` by default);
2. draws a batch of the model's sweep items (60 by default), each benchmark in its share of the
   sweep; each prompt names its item, and its kind is its benchmark;
3. learns one curve per benchmark from the *other* items only (their runs pooled per benchmark,
   a shifted surge fitted by maximum likelihood with one shared surge rate), so the estimator
   never sees the runs of the batch it allocates;
4. sends the batch through LiteLLM twice under the same token budget (1,500 tokens per subtask
   by default), once with ``policy="clear"`` and once with ``policy="uniform"``, each in a
   fresh :class:`~clear_middleware.session.BudgetSession`, with a progress bar on stderr;
5. prints a table: accuracy (the simulator's grading of each replayed run, which is the
   sweep's own), subtasks answered / abandoned / failed, tokens spent by the ledger and as the
   server counted them, and the USD the usage would cost at a named model's prices.

With ``model`` (and ``api_base`` / ``api_key``) or ``config`` (a LiteLLM config file) the same
batch goes to a real provider and no simulator is started. Accuracy is then "n/a": the sweep
holds item ids and gold answers, not the problems' text, so answers cannot be checked.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .curves import ShiftedSurge
from .datasets.reasoning_sweep import SWEEP_ATTRIBUTION, item_rollouts, load_sweep
from .dispatch.client import LiteLLMClient
from .estimators import StaticEstimator
from .evaluation.report import text_table
from .pricing import ModelPrice, PriceBook
from .progress import ProgressBar
from .session import BudgetSession, Subtask, SubtaskResult
from .simulator import SimulatorServer, item_marker, load_catalog

DEFAULT_N = 60
DEFAULT_BUDGET_PER_ITEM = 1500  # tokens per subtask: scarce for these models
DEFAULT_SIM_MODEL = "deepscaler-1.5b"
DEFAULT_PRICE_MODEL = "openai/o4-mini"
HELD_OUT_SHARE = 0.25  # share of the items (about as much per benchmark) kept out of the batch
POLICIES = ("clear", "uniform")
API_KEY_ENV = "CLEAR_DEMO_API_KEY"


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs (the command-line options of ``clear-middleware demo``).

    Attributes:
        n: subtasks in the batch (>= 1, at most 75% of the sweep model's items).
        budget_per_item: the session budget divided by ``n`` (tokens, >= 1).
        sim_model: the sweep model whose items, runs and curves are used.
        seed: draws the batch and seeds every call (>= 0).
        model: a LiteLLM model name to call instead of the simulator (a model group with
            ``config``).
        api_base, api_key: passed to LiteLLM with ``model`` (``api_key`` defaults to the
            ``CLEAR_DEMO_API_KEY`` variable, else LiteLLM's own provider variables).
        config: a LiteLLM config file with a ``model_list``; its first model group is called
            unless ``model`` names another.
        price_model: the model whose prices turn usage into USD.
        concurrency: calls in flight at once (>= 1).
    """

    n: int = DEFAULT_N
    budget_per_item: int = DEFAULT_BUDGET_PER_ITEM
    sim_model: str = DEFAULT_SIM_MODEL
    seed: int = 0
    model: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    config: str | None = None
    price_model: str = DEFAULT_PRICE_MODEL
    concurrency: int = 8

    @property
    def simulated(self) -> bool:
        return self.model is None and self.config is None

    @property
    def budget_tokens(self) -> int:
        return self.n * self.budget_per_item


@dataclass(frozen=True)
class Batch:
    """The items sent (``"<benchmark>/<item_id>"``, in run order) and those kept out."""

    items: tuple[str, ...]
    held_out: tuple[str, ...]

    def kinds(self) -> dict[str, int]:
        """Subtasks per benchmark, largest first."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[_kind(item)] = counts.get(_kind(item), 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class Target:
    """Where the calls go: a LiteLLM model (or Router group) and the kwargs it needs."""

    model: str
    description: str
    router: Any = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    simulator: SimulatorServer | None = None


@dataclass(frozen=True)
class PolicyOutcome:
    """One policy's run of the batch.

    Attributes:
        policy: ``"clear"`` or ``"uniform"``.
        results: one per subtask, in batch order.
        correct: subtasks answered correctly (``None`` when answers cannot be checked).
        spent_tokens: what the session's ledger charged (tokens).
        server_tokens: prompt + completion tokens the simulator reported serving (``None``
            for a real provider).
        usd: the usage priced at the price model (USD).
        seconds: wall time of the run.
    """

    policy: str
    results: tuple[SubtaskResult, ...]
    correct: int | None
    spent_tokens: int
    server_tokens: int | None
    usd: float
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / len(self.results)


# -- the batch and what the estimator may know ------------------------------------------------
def check_options(options: DemoOptions, items: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the option and its accepted range."""
    limit = len(items) - math.ceil(HELD_OUT_SHARE * len(items))
    if not isinstance(options.n, int) or not 1 <= options.n <= limit:
        raise ValueError(f"--n must be an integer in [1, {limit}] for {options.sim_model} "
                         f"({len(items)} items, a quarter kept out to learn the curves); "
                         f"got {options.n!r}")
    for name, value, low in (("--budget-per-item", options.budget_per_item, 1),
                             ("--seed", options.seed, 0),
                             ("--concurrency", options.concurrency, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if options.config is not None and (options.api_base or options.api_key):
        raise ValueError("--api-base and --api-key go in the litellm_params of --config's "
                         "model_list, not beside --config")
    if options.model is None and options.config is None and (options.api_base or options.api_key):
        raise ValueError("--api-base and --api-key need --model (a LiteLLM model name)")


def draw_batch(items: Sequence[str], n: int, seed: int) -> Batch:
    """``n`` items, each benchmark in its share of ``items`` (largest remainders), shuffled."""
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[str]] = {}
    for item in sorted(items):
        by_kind.setdefault(_kind(item), []).append(item)
    kinds = sorted(by_kind)
    quota = np.array([n * len(by_kind[k]) / len(items) for k in kinds])
    take = np.floor(quota).astype(int)
    for k in np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]:
        take[k] += 1
    chosen: list[str] = []
    held: list[str] = []
    for kind, count in zip(kinds, take, strict=True):
        pool = by_kind[kind]
        order = rng.permutation(len(pool))
        chosen += [pool[i] for i in order[:count]]
        held += [pool[i] for i in order[count:]]
    return Batch(tuple(chosen[i] for i in rng.permutation(len(chosen))), tuple(sorted(held)))


def kind_curves(model: str, held_out: Sequence[str]) -> dict[str, ShiftedSurge]:
    """One curve per benchmark, fitted on the runs of the held-out items only.

    Each benchmark's runs are pooled into one row (each run's outcome at its own cap); the
    rows share one surge rate, which keeps the fit well-posed for a benchmark with few
    successes.
    """
    runs = item_rollouts(load_sweep(), model)
    keys = np.char.add(np.char.add(runs.benchmark, "/"), runs.item_id)
    kept = np.isin(keys, list(held_out))
    kinds = sorted(set(runs.benchmark[kept].tolist()))
    rows = [(kept & (runs.benchmark == kind)) for kind in kinds]
    pooled = [(runs.length[m][runs.valid[m]], runs.correct[m][runs.valid[m]],
               runs.cap[m][runs.valid[m]]) for m in rows]
    width = max(len(p[0]) for p in pooled)

    def pad(column: int, fill: float | bool) -> np.ndarray:
        return np.array([np.concatenate([p[column], np.full(width - len(p[column]), fill)])
                         for p in pooled])

    valid = np.array([np.arange(width) < len(p[0]) for p in pooled])
    fitted = ShiftedSurge.fit(pad(0, 0.0), pad(1, False).astype(bool), caps=pad(2, 1.0),
                              valid=valid, rate="shared")
    return {kind: fitted.take([i]) for i, kind in enumerate(kinds)}


def batch_subtasks(batch: Batch) -> list[Subtask]:
    """One subtask per item: its marker (the simulator replays that item), kind = benchmark."""
    return [Subtask.of(f"{item_marker(item)} Solve problem {item}. Put the final answer in "
                       "\\boxed{}.", kind=_kind(item), id=item) for item in batch.items]


def _kind(item: str) -> str:
    return item.split("/", 1)[0]


# -- running ----------------------------------------------------------------------------------
def real_target(options: DemoOptions) -> Target:
    """The provider named by ``model`` / ``api_base`` / ``api_key`` or ``config``."""
    if options.config is not None:
        router = LiteLLMClient(options.config).router
        groups = [d["model_name"] for d in router.model_list]
        model = options.model or groups[0]
        if model not in groups:
            raise ValueError(f"--model {model!r} is not a model group of --config; "
                             f"groups: {sorted(set(groups))}")
        return Target(model, f"{model} from {options.config}", router=router)
    assert options.model is not None
    kwargs = {"api_base": options.api_base} if options.api_base else {}
    api_key = options.api_key or os.environ.get(API_KEY_ENV)
    if api_key:
        kwargs["api_key"] = api_key
    where = f" at {options.api_base}" if options.api_base else ""
    return Target(options.model, f"{options.model}{where}", kwargs=kwargs)


async def run_policy(policy: str, subtasks: Sequence[Subtask], target: Target,
                     estimator: StaticEstimator, options: DemoOptions, price: ModelPrice,
                     err: TextIO) -> PolicyOutcome:
    """One fresh session, the whole batch, and what it spent and solved."""
    session = BudgetSession(budget_tokens=options.budget_tokens, model=target.model,
                            router=target.router, estimator=estimator, policy=policy,
                            max_concurrency=options.concurrency, **target.kwargs)
    sim = target.simulator
    if sim is not None:
        sim.clear_log()
    bar = ProgressBar(len(subtasks), policy, stream=err)
    seeded = {"seed": options.seed} if sim is not None else {}  # not every provider takes one
    start = time.perf_counter()
    results = await session.arun(subtasks, on_result=bar.advance, **seeded)
    bar.close()
    seconds = time.perf_counter() - start
    correct = server_tokens = None
    if sim is not None:
        answered = [q for q in sim.requests if q.status == 200 and not q.disconnected]
        graded = {q.item: q.correct for q in answered}
        correct = sum(bool(graded.get(r.subtask_id)) for r in results if r.ok)
        server_tokens = sum(q.prompt_tokens + q.completion_tokens for q in answered)
    usd = sum(price.cost_usd(r.usage.prompt_tokens, r.usage.completion_tokens,
                             r.usage.reasoning_tokens) for r in results)
    return PolicyOutcome(policy, tuple(results), correct, session.remaining().spent_tokens,
                         server_tokens, usd, seconds)


def run_demo(options: DemoOptions, *, out: TextIO | None = None,
             err: TextIO | None = None) -> list[PolicyOutcome]:
    """Run the demo and print its report to ``out`` (progress to ``err``)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    catalog = load_catalog()
    if options.sim_model not in catalog.models():
        raise ValueError(f"--sim-model must be one of {catalog.models()}; "
                         f"got {options.sim_model!r}")
    check_options(options, catalog.items(options.sim_model))
    price = PriceBook().price(options.price_model)  # MissingPriceError names the model
    batch = draw_batch(catalog.items(options.sim_model), options.n, options.seed)
    estimator = StaticEstimator(kind_curves(options.sim_model, batch.held_out))
    subtasks = batch_subtasks(batch)
    if options.simulated:
        with SimulatorServer() as sim:
            target = Target(f"openai/{options.sim_model}",
                            f"openai/{options.sim_model} on the local simulator "
                            f"({sim.base_url})", kwargs={"api_base": sim.base_url,
                                                         "api_key": "sim"}, simulator=sim)
            print(header(options, batch, target), file=out, flush=True)
            outcomes = asyncio.run(_run_all(subtasks, target, estimator, options, price, err))
    else:
        target = real_target(options)
        print(header(options, batch, target), file=out, flush=True)
        outcomes = asyncio.run(_run_all(subtasks, target, estimator, options, price, err))
    print(report(outcomes, options), file=out)
    return outcomes


async def _run_all(subtasks, target, estimator, options, price, err) -> list[PolicyOutcome]:
    return [await run_policy(policy, subtasks, target, estimator, options, price, err)
            for policy in POLICIES]


# -- the report -------------------------------------------------------------------------------
def header(options: DemoOptions, batch: Batch, target: Target) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in batch.kinds().items())
    return "\n".join([
        f"clear-middleware demo: {options.n} subtasks of {options.sim_model} ({kinds}), one "
        f"session budget of {options.budget_tokens:,} tokens ({options.budget_per_item:,} "
        "per subtask)",
        f"calls: {target.description}, through LiteLLM",
        f"curves: one per benchmark, fitted on the {len(batch.held_out)} sweep items not in "
        "the batch",
    ])


def report(outcomes: Sequence[PolicyOutcome], options: DemoOptions) -> str:
    """The results table and a one-line reading of it."""
    headers = ["policy", "accuracy", "answered", "abandoned", "errors", "tokens spent",
               "server tokens", f"USD at {options.price_model}"]
    rows = [[o.policy, "n/a" if o.accuracy is None else f"{o.accuracy:.1%}",
             str(o.count("ok")), str(o.count("unfunded")), str(o.count("error")),
             f"{o.spent_tokens:,}", "n/a" if o.server_tokens is None else f"{o.server_tokens:,}",
             f"${o.usd:.4f}"] for o in outcomes]
    lines = ["", text_table(headers, rows), ""]
    agree = all(o.server_tokens in (None, o.spent_tokens) for o in outcomes)
    within = all(o.spent_tokens <= options.budget_tokens for o in outcomes)
    lines.append(f"budget {options.budget_tokens:,} tokens: "
                 f"{'every run stayed within it' if within else 'EXCEEDED'}; "
                 + ("ledger and server agree on every token" if agree else
                    "LEDGER AND SERVER DISAGREE"))
    by_policy = {o.policy: o for o in outcomes}
    clear, uniform = by_policy.get("clear"), by_policy.get("uniform")
    if clear and uniform and clear.correct is not None and uniform.correct is not None:
        lines.append(f"CLEAR solved {clear.correct} of {options.n}, uniform caps "
                     f"{uniform.correct}, on the same budget; CLEAR abandoned "
                     f"{clear.count('unfunded')} subtasks it priced as not worth their tokens.")
    lines.append(SWEEP_ATTRIBUTION)
    return "\n".join(lines)
