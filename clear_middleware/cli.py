"""``clear-middleware`` command line: ``demo`` (one batch through LiteLLM under a session budget,
CLEAR against uniform caps) and ``frontier`` (CLEAR against the baselines on real data)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .datasets.reasoning_sweep import SWEEP_ATTRIBUTION, load_sweep
from .evaluation.frontier import DEFAULT_BUDGETS, VARIANTS, frontier, item_curves
from .evaluation.report import frontier_rows, text_table


def _frontier(args: argparse.Namespace) -> int:
    table = load_sweep(args.data)
    models = args.model or table.models_with_caps(3)
    variants = [v for v in VARIANTS if not (args.no_oracle and v == "oracle")]
    print("Expected accuracy per item on the true (measured) curves, by average token budget.")
    for model in models:
        points = frontier(item_curves(model, table), args.budgets, variants)
        headers, rows = frontier_rows(points, variants)
        print(f"\n{model} ({len(table.for_model(model))} runs)")
        print(text_table(headers, rows))
    print(f"\n{SWEEP_ATTRIBUTION}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo  # imports LiteLLM: only when asked for

    options = DemoOptions(
        n=args.n, budget_per_item=args.budget_per_item, sim_model=args.sim_model,
        seed=args.seed, model=args.model, api_base=args.api_base, api_key=args.api_key,
        config=args.config, price_model=args.price_model, concurrency=args.concurrency,
    )
    run_demo(options)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from .demo import DEFAULT_BUDGET_PER_ITEM, DEFAULT_N, DEFAULT_PRICE_MODEL, DEFAULT_SIM_MODEL

    demo = sub.add_parser(
        "demo", help="run a batch through LiteLLM under one budget: CLEAR against uniform caps",
        description="Start the local simulator, run a batch of sweep items through LiteLLM "
        "under one session budget with CLEAR and with uniform caps, and print accuracy, "
        "tokens spent, subtasks abandoned and USD. --model/--api-base/--config call a real "
        "provider instead.",
    )
    demo.add_argument("--n", type=int, default=DEFAULT_N, help="subtasks in the batch")
    demo.add_argument("--budget-per-item", type=int, default=DEFAULT_BUDGET_PER_ITEM,
                      help="session budget per subtask (tokens)")
    demo.add_argument("--sim-model", default=DEFAULT_SIM_MODEL,
                      help="the sweep model whose items and runs are used")
    demo.add_argument("--seed", type=int, default=0, help="draws the batch; seeds the calls")
    demo.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    demo.add_argument("--price-model", default=DEFAULT_PRICE_MODEL,
                      help="price the usage at this model's USD prices")
    real = demo.add_argument_group("a real provider instead of the simulator")
    real.add_argument("--model", help="a LiteLLM model name (or a model group of --config)")
    real.add_argument("--api-base", help="the provider's base URL")
    real.add_argument("--api-key", help="the provider's key (default: $CLEAR_DEMO_API_KEY, "
                      "else LiteLLM's provider variables)")
    real.add_argument("--config", help="a LiteLLM config file with a model_list")
    demo.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clear-middleware", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    front = sub.add_parser(
        "frontier",
        help="accuracy of CLEAR and the baselines at several budgets, on the bundled real data",
    )
    front.add_argument("--model", action="append", help="a model of the sweep (repeatable); "
                       "default: every model run under at least three caps")
    front.add_argument("--budgets", type=int, nargs="+", default=list(DEFAULT_BUDGETS),
                       help="average tokens per item")
    front.add_argument("--data", help="a budget-sweep CSV instead of the bundled copy")
    front.add_argument("--no-oracle", action="store_true", help="skip the (slow) exact oracle")
    front.set_defaults(func=_frontier)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as error:  # bad option values: say which, exit 2 like argparse
        parser.error(str(error))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
