"""``clear-middleware`` command line: ``frontier`` (CLEAR against the baselines on real data)."""

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clear-middleware", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
