"""Allocation quality on real data: the accuracy-vs-tokens frontier of every policy.

Run: ``python benchmarks/allocation_quality.py`` (about a minute). Prints one table per model
and writes the ``allocation-quality`` section of ``docs/benchmarks.md`` and
``docs/frontier.png``. Data: the bundled budget sweep (CC-BY-4.0, see the attribution below).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import DOCS, markdown_table, write_section
from clear_middleware.datasets.reasoning_sweep import SWEEP_ATTRIBUTION, load_sweep
from clear_middleware.evaluation.frontier import (
    DEFAULT_BUDGETS,
    VARIANTS,
    FrontierPoint,
    frontier,
    item_curves,
)
from clear_middleware.evaluation.report import frontier_rows, text_table

PLOT = DOCS / "frontier.png"


def plot(points: list[FrontierPoint], models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True)
    styles = {"uniform": "k--", "proportional": "c:", "greedy": "y-.",
              "clear (per kind)": "g-o", "clear (fitted surge)": "b-s",
              "clear (true curves)": "r-^", "oracle": "m:"}
    for ax, model in zip(axes, models, strict=True):
        for variant in VARIANTS:
            pts = sorted((p for p in points if p.model == model and p.variant == variant),
                         key=lambda p: p.tokens_per_item)
            ax.plot([p.tokens_per_item for p in pts], [p.accuracy for p in pts],
                    styles[variant], label=variant, markersize=4, linewidth=1.2)
        ax.set_xscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel("tokens spent per item")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("expected accuracy")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Accuracy vs token budget on the Reasoning Budget Sweep (dev split)", fontsize=10)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main() -> None:
    started = time.perf_counter()
    table = load_sweep()
    models = table.models_with_caps(3)
    points: list[FrontierPoint] = []
    sections = []
    for model in models:
        model_points = frontier(item_curves(model, table), DEFAULT_BUDGETS, VARIANTS)
        points += model_points
        headers, rows = frontier_rows(model_points, VARIANTS)
        print(f"\n{model}\n{text_table(headers, rows)}")
        sections.append(f"### {model}\n\n{markdown_table(headers, rows)}")
    plot(points, models)
    summary = _summary(points, models)
    print("\n" + summary)
    body = "\n\n".join([
        "## Allocation quality on real data (`benchmarks/allocation_quality.py`)",
        "Expected accuracy per item, scored on each item's *true* curve (the censoring-aware "
        "empirical accuracy-vs-cap curve of its real runs), for one batch of all items of a model "
        "at an average budget of `tokens/item`; caps on a 64-token grid up to the model's largest "
        "cap. Variants: `clear (true curves)` knows each item's curve; `clear (fitted surge)` a "
        "shifted-surge curve fitted per item; `clear (per kind)` only one curve per benchmark, "
        "learned on the other half of that benchmark's items (mean of 30 random splits); "
        "`proportional` splits by each item's true emergence threshold; `oracle` is the exact "
        "optimum on the grid (dynamic programming); `bound` is the weak-duality bound CLEAR "
        "reports, which no policy can exceed.",
        summary,
        f"![frontier]({PLOT.name})",
        *sections,
        f"{SWEEP_ATTRIBUTION} Run took {time.perf_counter() - started:.0f} s.",
    ])
    write_section("allocation-quality", body)


def _summary(points: list[FrontierPoint], models: list[str]) -> str:
    cell = {(p.model, p.variant, p.budget_per_item): p.accuracy for p in points}
    lines = ["Targets, measured here:"]
    worst_oracle = min(cell[m, "clear (true curves)", b] / cell[m, "oracle", b]
                       for m in models for b in DEFAULT_BUDGETS if cell[m, "oracle", b] > 0)
    lines.append(f"- CLEAR with true curves reaches at least {worst_oracle:.4f} of the oracle at "
                 "every budget and model (target >= 0.99).")
    for m in models:
        uni, kind = cell[m, "uniform", 1024], cell[m, "clear (per kind)", 1024]
        below = [b for b in DEFAULT_BUDGETS
                 if cell[m, "clear (per kind)", b] < cell[m, "uniform", b]]
        worst = min(cell[m, "clear (per kind)", b] / cell[m, "uniform", b]
                    for b in DEFAULT_BUDGETS if cell[m, "uniform", b] > 0)
        best = cell[m, "clear (true curves)", 1024] / uni if uni else float("inf")
        lines.append(
            f"- {m}: per-kind CLEAR at 1024 tokens/item {kind:.3f} vs uniform {uni:.3f} "
            f"({kind / uni:.1f}x; target >= 10x; true curves reach {best:.1f}x); lowest ratio to "
            f"uniform over all budgets {worst:.3f}"
            + (f" (below uniform at {below})" if below else " (never below uniform)")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
