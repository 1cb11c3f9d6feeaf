"""Does the prompt text predict a subtask's curve better than its difficulty hint?

Run: ``python benchmarks/prompt_features.py`` (under a minute). Writes the ``prompt-features``
section of ``docs/benchmarks.md``. Only the MATH-500 items of the dev data have texts (100 per
model), so this is measured offline on them: each item's true curve is its measured curve, and
every estimator is cross-fitted (10 folds: an item's curve comes from a model that never saw
it). One batch of the 100 items is allocated by CLEAR at each average budget and scored on
the true curves.

- ``kind``: one curve for all MATH-500 items (the mean of the training items' curves);
- ``hints``: one curve per difficulty level (the History estimator with hints, in the limit);
- ``hints + text``: the level's curve stretched along the token axis by a ridge regression of
  the item's log median correct length on text features (prompt tokens and characters, maths
  markup counts, digits, lines) and the level;
- ``true item``: each item's own curve (what perfect per-item prediction would give).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_section
from clear_middleware import EmpiricalCurve, allocate
from clear_middleware.datasets.reasoning_sweep import (
    SWEEP_ATTRIBUTION,
    item_rollouts,
    load_math500,
    load_sweep,
)
from clear_middleware.estimators.prompt_features import RidgeScale, stretch, text_features
from clear_middleware.evaluation.frontier import GRID_STEP, item_curves

BUDGETS = (512, 1024, 2048, 4096)
FOLDS = 10


def median_need(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Tokens at which each curve reaches half its ceiling (nan for a zero curve)."""
    half = values[:, -1:] * 0.5
    idx = np.argmax(values >= half, axis=1)
    return np.where(values[:, -1] > 0, grid[idx], np.nan)


def main() -> None:
    started = time.perf_counter()
    table = load_sweep()
    problems = load_math500()
    rows = []
    for model in table.models_with_caps(3):
        items = item_curves(model, table)
        runs = item_rollouts(table, model)
        math = np.flatnonzero(items.benchmark == "math500")
        grid, truth = items.grid, items.truth.values[math]
        ids = runs.item_id[math]
        levels = [f"level-{problems[i].level}" for i in ids]
        feats = np.array([text_features(problems[i].problem) for i in ids])
        need = np.log(median_need(truth, grid))
        fold = np.random.default_rng(0).permutation(len(math)) % FOLDS
        kind = np.zeros_like(truth)
        hints = np.zeros_like(truth)
        text = np.zeros_like(truth)
        errors = {"hints": [], "hints + text": []}
        for f in range(FOLDS):
            train, test = fold != f, fold == f
            kind[test] = truth[train].mean(axis=0)
            for level in set(levels):
                same = train & (np.array(levels) == level)
                mine = test & (np.array(levels) == level)
                hints[mine] = truth[same].mean(axis=0) if same.any() else truth[train].mean(0)
            ok = train & np.isfinite(need)
            ridge = RidgeScale().fit(feats[ok], [levels[i] for i in np.flatnonzero(ok)], need[ok])
            level_only = RidgeScale(alpha=1e9).fit(
                feats[ok], [levels[i] for i in np.flatnonzero(ok)], need[ok])
            test_idx = np.flatnonzero(test)
            test_levels = [levels[i] for i in test_idx]
            pred = ridge.predict(feats[test], test_levels)
            base = level_only.predict(feats[test], test_levels)  # the level's own mean
            for k, i in enumerate(test_idx):
                text[i] = stretch(hints[i], grid, np.array([np.exp(pred[k] - base[k])])).values[0]
            finite = np.isfinite(need[test])
            errors["hints"] += list(np.abs(base - need[test])[finite])
            errors["hints + text"] += list(np.abs(pred - need[test])[finite])
        truth_curves = EmpiricalCurve(grid, truth)
        variants = {"kind": kind, "hints": hints, "hints + text": text, "true item": truth}
        for budget in BUDGETS:
            acc = {}
            for name, values in variants.items():
                alloc = allocate(EmpiricalCurve(grid, values), budget * len(math),
                                 granularity=GRID_STEP, max_tokens=items.max_cap)
                acc[name] = truth_curves.value(alloc.tokens.astype(float)).mean()
            uniform = allocate(truth_curves, budget * len(math), policy="uniform",
                               granularity=GRID_STEP, max_tokens=items.max_cap)
            rows.append([model, budget, f"{uniform.expected_utility / len(math):.3f}",
                         *(f"{acc[v]:.3f}" for v in variants),
                         f"{np.mean(errors['hints']):.3f}",
                         f"{np.mean(errors['hints + text']):.3f}"])
            print(rows[-1], flush=True)
    headers = ["model", "tokens/item", "uniform", "kind", "hints", "hints + text", "true item",
               "abs. log-error, hints", "abs. log-error, hints + text"]
    wins = sum(float(r[5]) > float(r[4]) + 0.005 for r in rows)
    losses = sum(float(r[5]) < float(r[4]) - 0.005 for r in rows)
    verdict = (
        f"Text features beat hints by more than half a point in {wins} of {len(rows)} cells and "
        f"lose by more than half a point in {losses}; so the prompt-feature estimator stays off "
        "by default." if wins <= losses else
        f"Text features beat hints by more than half a point in {wins} of {len(rows)} cells "
        f"(lose in {losses})."
    )
    body = "\n\n".join([
        "## Prompt features vs difficulty hints (`benchmarks/prompt_features.py`)",
        "MATH-500 items only (the only items with texts: 100 per model), cross-fitted in 10 "
        "folds, one batch of the 100 items allocated by CLEAR and scored on the true curves. "
        "The log-error columns are the mean absolute error of the predicted log median correct "
        "length (hints alone predict the level's mean).",
        markdown_table(headers, rows),
        verdict,
        "What could not be measured: texts exist only for MATH-500 (no AIME texts), 100 items "
        "per model is small for any text model, and a learned text model (the paper's DeBERTa "
        "regressor) cannot be trained offline here.",
        f"{SWEEP_ATTRIBUTION} MATH-500 texts: MIT License (see clear_middleware/data/README.md). "
        f"Run took {time.perf_counter() - started:.0f} s.",
    ])
    write_section("prompt-features", body)


if __name__ == "__main__":
    main()
