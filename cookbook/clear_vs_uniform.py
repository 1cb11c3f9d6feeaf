"""CLEAR against uniform on one batch: problems solved per budget, and the frontier plot.

The batch mixes easy (MATH-500) and hard (AIME) problems. Each benchmark's accuracy-vs-tokens
curve is fitted from the bundled budget sweep (the same runs the simulator replays, so this is
an in-sample illustration; ``clear-middleware frontier`` is the held-out evaluation). For each
budget, the same chain runs through ``with_budget`` under CLEAR and under a uniform split; the
simulator grades every answer.

    python cookbook/clear_vs_uniform.py [--plot clear_vs_uniform.png]
"""

from __future__ import annotations

import argparse

import numpy as np
from langchain_core.prompts import ChatPromptTemplate

from clear_middleware.curves import ShiftedSurge, fit_shifted_surge
from clear_middleware.datasets.reasoning_sweep import item_rollouts, load_sweep
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import ChatClear, with_budget
from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

MODEL = "deepscaler-1.5b"
BUDGETS = (20_000, 40_000, 80_000, 160_000)
PROMPT = ChatPromptTemplate.from_template("{problem} Solve the problem.")


def batch() -> list[str]:
    items = load_catalog().items(MODEL)
    pick = {"math500": 20, "aime24": 10, "aime25": 10}
    return [i for b, n in pick.items() for i in [x for x in items if x.startswith(b + "/")][:n]]


def fitted_curves() -> StaticEstimator:
    """One shifted-surge curve per benchmark, fitted on all of its runs pooled."""
    runs = item_rollouts(load_sweep(), MODEL)
    kinds = {}
    for benchmark in np.unique(runs.benchmark):
        mask = runs.benchmark == benchmark
        pooled = [x[mask].reshape(1, -1) for x in (runs.length, runs.correct, runs.cap,
                                                   runs.valid)]
        fit = fit_shifted_surge(pooled[0], pooled[1], caps=pooled[2], valid=pooled[3])
        kinds[str(benchmark)] = ShiftedSurge(fit.ceiling, fit.threshold, fit.rate)
    return StaticEstimator(kinds)


def solved(sim: SimulatorServer, policy: str, budget: int, problems: list[str],
           estimator: StaticEstimator) -> int:
    session = BudgetSession(budget_tokens=budget, model=f"openai/{MODEL}", policy=policy,
                            estimator=estimator, api_base=sim.base_url, api_key="sim")
    budgeted = with_budget(
        PROMPT | ChatClear(session=session), session,
        prompt=lambda x: Subtask.of(PROMPT.invoke(x).to_string(), kind=x["benchmark"]))
    start = len(sim.requests)
    budgeted.batch([{"problem": item_marker(p), "benchmark": p.split("/")[0]}
                    for p in problems], config={"max_concurrency": 8})
    assert session.remaining().spent_tokens <= budget
    return sum(r.correct for r in sim.requests[start:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default="clear_vs_uniform.png", help="where to save the PNG")
    args = parser.parse_args()
    problems, estimator = batch(), fitted_curves()
    rows = []
    with SimulatorServer() as sim:
        for budget in BUDGETS:
            rows.append((budget, *(solved(sim, p, budget, problems, estimator)
                                   for p in ("clear", "uniform"))))
    print(f"{len(problems)} problems (20 MATH-500, 20 AIME), deepscaler-1.5b (simulated)")
    print(f"{'budget (tokens)':>16} {'CLEAR solved':>13} {'uniform solved':>15}")
    for budget, clear, uniform in rows:
        print(f"{budget:>16,} {clear:>13} {uniform:>15}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'clear-middleware[plot]'): no plot")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    budgets = [r[0] for r in rows]
    axes.plot(budgets, [r[1] for r in rows], "o-", label="CLEAR")
    axes.plot(budgets, [r[2] for r in rows], "s--", label="uniform")
    axes.set_xscale("log")
    axes.set_xlabel("session budget (tokens)")
    axes.set_ylabel(f"problems solved (of {len(problems)})")
    axes.set_title("Budget frontier: CLEAR vs uniform")
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"frontier plot: {args.plot}")


if __name__ == "__main__":
    main()
