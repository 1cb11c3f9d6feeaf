"""Plain-text and Markdown tables of frontier points (shared by the CLI and the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

from .frontier import FrontierPoint


def frontier_rows(
    points: Sequence[FrontierPoint], variants: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per (model, budget), mean accuracy per variant, then CLEAR's
    ratios to uniform and to the oracle, and the duality bound."""
    headers = ["model", "tokens/item", *variants]
    extra = [("clear (true curves)", "oracle", "true/oracle"),
             ("clear (per kind)", "uniform", "kind/uniform"),
             ("clear (true curves)", "uniform", "true/uniform")]
    extra = [e for e in extra if e[0] in variants and e[1] in variants]
    headers += [name for *_, name in extra] + ["bound"]
    by_key: dict[tuple[str, int], dict[str, FrontierPoint]] = {}
    for p in points:
        by_key.setdefault((p.model, p.budget_per_item), {})[p.variant] = p
    rows = []
    for (model, budget), cell in by_key.items():
        row = [model, str(budget)]
        row += [f"{cell[v].accuracy:.3f}" if v in cell else "" for v in variants]
        for num, den, _ in extra:
            a, b = cell[num].accuracy, cell[den].accuracy
            row.append(f"{a / b:.2f}x" if b > 0 else "inf")
        row.append(f"{next(iter(cell.values())).upper_bound:.3f}")
        rows.append(row)
    return headers, rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width table for terminals."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "-" * len(line), *body])
