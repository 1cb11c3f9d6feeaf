"""Progressive CLEAR against one-shot allocation, offline on real runs and through the simulator.

Run: ``python benchmarks/progressive.py [--quick]`` (about 15 minutes). Writes the
``progressive`` section of ``docs/benchmarks.md``.

1. Offline, exact: each item's drawn real run is revealed token by token
   (:mod:`clear_middleware.evaluation.progressive`); budgets are generated (output) tokens, the
   unit of the CLEAR spec, so a continued step costs only its new tokens and a restart pays the
   regenerated ones again. 20 draws per budget; per-kind curves from the other half of each
   kind.
2. End to end: ``BudgetSession(mode="progressive")`` over HTTP through LiteLLM to the simulator,
   which continues the *same* real run when asked to continue (``continue_final_message``) and
   draws a run consistent with the new cap on a restart. Budgets are the ledger's tokens
   (prompts included), so a continued step also pays the partial answer as prompt tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_section
from clear_middleware.allocator.progressive import StepPolicy
from clear_middleware.datasets.reasoning_sweep import SWEEP_ATTRIBUTION, load_sweep
from clear_middleware.evaluation.progressive import VARIANTS, evaluate
from clear_middleware.evaluation.traffic import (
    CurveTable,
    Window,
    item_pool,
    kind_truth,
    sampling_weights,
    window_subtasks,
)
from clear_middleware.session import BudgetSession
from clear_middleware.simulator import SimulatorServer

BUDGETS = (512, 1024, 2048, 4096, 8192)


def offline(models, draws):
    rows = []
    for model in models:
        for r in evaluate(model, BUDGETS, draws=draws, seed=3):
            acc = {v: r[f"{v}|acc"] for v in VARIANTS}
            item = acc["one-shot (true item curves)"]
            loo = acc["one-shot (item curves, leave-one-out)"]
            stops = acc["per-kind stops (hindsight)"]
            prog = acc["progressive (per kind, continue)"]
            rows.append([model, r["budget"], *(f"{acc[v]:.3f}" for v in VARIANTS),
                         f"{prog / item:.2f}" if item else "",
                         f"{prog / loo:.2f}" if loo else "",
                         f"{prog / stops:.2f}" if stops else "",
                         f"{prog - acc['one-shot (per kind)']:+.3f}"])
            print(rows[-1], flush=True)
    headers = ["model", "tokens/item", *VARIANTS, "progressive / true item",
               "progressive / item leave-one-out", "progressive / per-kind stops (hindsight)",
               "progressive - one-shot per kind"]
    return headers, rows


def step_policies(model, draws):
    rows = []
    policies = {
        "fraction 0.5 (default)": StepPolicy(),
        "fraction 0.25": StepPolicy(kind="fraction", fraction=0.25, min_tokens=128),
        "chunk 256": StepPolicy(kind="chunk", chunk_tokens=256, min_tokens=64),
        "chunk 1024": StepPolicy(kind="chunk", chunk_tokens=1024),
        "tangent (index rule)": StepPolicy(kind="tangent", min_tokens=64),
    }
    for name, policy in policies.items():
        res = evaluate(model, (1024, 2048, 4096), draws=draws, seed=5, policy=policy)
        rows.append([name, *(f"{r['progressive (per kind, continue)|acc']:.3f}" for r in res)])
        print(rows[-1], flush=True)
    return ["step policy", "1024", "2048", "4096"], rows


def pricing(models, draws):
    """Expected-spend pricing against pricing every step at its full cap."""
    rows = []
    for model in models:
        by = {p: evaluate(model, (2048, 4096), draws=draws, seed=7, pricing=p)
              for p in ("expected", "cap")}
        for k, budget in enumerate((2048, 4096)):
            rows.append([model, budget, *(
                f"{by[p][k][f'progressive (per kind, {mode})|acc']:.3f}"
                for mode in ("continue", "restart") for p in ("expected", "cap"))])
            print(rows[-1], flush=True)
    return ["model", "tokens/item", "continue, expected spend", "continue, full cap",
            "restart, expected spend", "restart, full cap"], rows


def end_to_end(models, budgets, batches, size, sim):
    # One event loop for every session: LiteLLM keeps connection pools per loop, and a fresh
    # loop per session leaves hundreds of idle connections to the simulator behind.
    return asyncio.run(_end_to_end(models, budgets, batches, size, sim))


async def _end_to_end(models, budgets, batches, size, sim):
    rows = []
    for model in models:
        pool = item_pool(model)
        weights = sampling_weights(pool, "mixed")
        kinds = CurveTable(kind_truth(pool, weights))
        items = CurveTable(pool.truth)
        setups = {
            "uniform": dict(policy="uniform", estimator=kinds),
            "one-shot (per kind)": dict(estimator=kinds),
            "progressive (per kind, continue)": dict(estimator=kinds, mode="progressive"),
            "progressive (per kind, restart)": dict(estimator=kinds, mode="progressive",
                                                    continuation="restart"),
            "one-shot (true item curves)": dict(estimator=items),
        }
        for budget in budgets:
            correct = {name: 0 for name in setups}
            spent = {name: 0 for name in setups}
            errors = {name: 0 for name in setups}
            for b in range(batches):
                rng = np.random.default_rng(100 + b)
                window = Window(tuple(int(i) for i in rng.choice(len(pool), size, p=weights)),
                                b)
                subtasks = window_subtasks(pool, window)
                for name, options in setups.items():
                    session = BudgetSession(
                        budget_tokens=(budget + 60) * size, model=f"openai/{model}",
                        max_output_tokens=int(pool.truth.grid[-1]), api_base=sim.base_url,
                        api_key="sim", max_concurrency=size, **options)
                    results = await session.arun(subtasks)
                    errors[name] += sum(r.status == "error" for r in results)
                    correct[name] += sum(
                        r.status == "ok" and r.finish_reason == "stop"
                        and f"\\boxed{{{pool.gold[i]}}}" in (r.text or "")
                        for r, i in zip(results, window.items, strict=True))
                    spent[name] += (await session.ledger.aremaining(session.session_id)
                                    ).spent_tokens
            n = batches * size
            item = correct["one-shot (true item curves)"]
            prog = correct["progressive (per kind, continue)"]
            rows.append([model, budget, *(f"{correct[v] / n:.3f}" for v in setups),
                         f"{prog / item:.2f}" if item else "",
                         f"{spent['progressive (per kind, continue)'] / n:.0f}",
                         str(sum(errors.values()))])
            print(rows[-1], flush=True)
    headers = ["model", "tokens/item", *setups, "progressive / true item",
               "progressive tokens/item spent", "provider errors"]
    return headers, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    models = load_sweep().models_with_caps(3)
    draws, batches, size = (3, 1, 20) if args.quick else (20, 3, 60)
    if args.quick:
        models = models[:1]
    headers, rows = offline(models, draws)
    policy_headers, policy_rows = step_policies(models[0], draws)
    pricing_headers, pricing_rows = pricing(models, draws)
    with SimulatorServer() as sim:
        e2e_headers, e2e_rows = end_to_end(models, (2048, 4096), batches, size, sim)
    body = "\n\n".join([
        "## Progressive CLEAR (`benchmarks/progressive.py`)",
        "### Offline: real runs revealed token by token\n\n"
        f"Mean accuracy over {draws} draws of one real run per item (each drawn with its "
        "Kaplan-Meier weight, so draws follow the item's censoring-aware curve); a batch is "
        "one half of each kind's items (per-kind curves come from the other half). Budgets "
        "are generated tokens per item. `progressive (per kind, restart)` pays the "
        "regenerated tokens again on every step. Two per-item references: `true item curves` "
        "are estimated from all of an item's runs, *the drawn one included*; with 4-7 runs "
        "per item that can be drawn they partly know the drawn run's outcome (at 4096 "
        "tokens/item they equal perfect foresight). `item curves, leave-one-out` use the "
        "item's other runs only: what a per-item predictor could know, but noisier than the "
        "item's true curve. `perfect foresight` is a bound: it knows each drawn run and funds "
        "the correct ones shortest first. `per-kind stops (hindsight)` runs every item of a "
        "kind to one stop time, the stop times chosen after seeing the drawn runs: what "
        "per-kind knowledge reaches with "
        "hindsight when it treats a kind's items alike.\n\n" + markdown_table(headers, rows),
        f"### Step policies ({models[0]}, progressive with continuation)\n\n"
        + markdown_table(policy_headers, policy_rows),
        "### Pricing a round: expected spend or full caps\n\n"
        "Each round's price is solved with every run's tokens counted at what it is expected "
        "to spend (a run that finishes early hands the rest back; the default) or at its full "
        "cap. Restarts gain most: their regenerated tokens are a sure cost, and pricing the "
        "new ones at their cap as well made the planner too timid.\n\n"
        + markdown_table(pricing_headers, pricing_rows),
        "### End to end through the simulator\n\n"
        f"{batches} batches of {size} items (every item equally likely) per cell; budget = "
        "(tokens/item + 60 for the prompt) x items in the ledger's tokens (prompts included: a "
        "continued step also pays its partial answer again as prompt tokens). The simulator "
        "continues the same real run on `continue_final_message` and, on a restart, replays "
        "the same drawn run under the larger cap (each item's runs drawn with their "
        "Kaplan-Meier weights).\n\n"
        + markdown_table(e2e_headers, e2e_rows),
        f"{SWEEP_ATTRIBUTION} Run took {(time.perf_counter() - started) / 60:.0f} min.",
    ])
    write_section("progressive", body)


if __name__ == "__main__":
    main()
