"""What learning only at its own caps costs the History estimator (offline, no HTTP).

Run: ``python benchmarks/learning_censoring.py [--seeds N]`` (about 5 minutes per seed on 2
cores). Writes the ``learning-censoring`` section of ``docs/benchmarks.md``. See
:mod:`clear_middleware.evaluation.learning`: a balanced stream of 40 windows of 40 subtasks,
28 to learn, accuracy scored on the items' true curves over the last 12.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_section
from clear_middleware.datasets.reasoning_sweep import SWEEP_ATTRIBUTION, load_sweep
from clear_middleware.evaluation.learning import LearningResult, censored_learning

BUDGETS = (512, 1024, 2048, 4096, 8192)
VARIANTS = {
    "censored (default)": dict(observe="censored"),
    "censored, pacing off": dict(observe="censored", pace_sigma=0.0),
    "censored, pace drawn": dict(observe="censored", exploration="pace"),
    "censored, parent tail": dict(observe="censored", own_tail_calls=None),
    "censored, own tail per octave": dict(observe="censored", own_tail_scale="log-tokens"),
    "censored, Thompson": dict(observe="censored", exploration="thompson"),
    "censored, prior weight 30": dict(observe="censored", prior_weight=30.0),
    "every run seen whole": dict(observe="full"),
}
MIXES = ("easy-heavy", "hard-heavy", "mixed")
DEFAULT = "censored (default)"
MIX_VARIANTS = (DEFAULT, "censored, pacing off", "censored, pace drawn",
                "censored, parent tail", "every run seen whole")


def _learn(job: tuple[str, int, str, int, str]) -> LearningResult:
    model, budget, variant, seed, mix = job
    return censored_learning(model, budget, seed=seed, mix=mix, **VARIANTS[variant])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    models = load_sweep().models_with_caps(3)
    jobs = [(m, b, v, s, "balanced") for m in models for b in BUDGETS for v in VARIANTS
            for s in range(args.seeds)]
    jobs += [(m, 2048, v, s, mix) for m in models for mix in MIXES for v in MIX_VARIANTS
             for s in range(args.seeds)]
    with ProcessPoolExecutor(2) as pool:  # one stream per process: two cores
        results = dict(zip(jobs, pool.map(_learn, jobs), strict=True))

    def mean(model: str, budget: int, variant: str, mix: str = "balanced",
             measure: str = "ratio") -> float:
        return float(np.mean([getattr(results[model, budget, variant, s, mix], measure)
                              for s in range(args.seeds)]))

    def versus_uniform(model: str, budget: int, mix: str = "balanced") -> list[str]:
        return [f"{mean(model, budget, DEFAULT, mix, 'learned_gain'):+.2f}",
                f"{mean(model, budget, DEFAULT, mix, 'true_kind_gain'):+.2f}"]

    rows = [[m, b, *(f"{mean(m, b, v):.3f}" for v in VARIANTS), *versus_uniform(m, b)]
            for m in models for b in BUDGETS]
    mix_rows = [[m, mix, *(f"{mean(m, 2048, v, mix):.3f}" for v in MIX_VARIANTS),
                 " / ".join(f"{results[m, 2048, DEFAULT, s, mix].ratio:.2f}"
                            for s in range(args.seeds)), *versus_uniform(m, 2048, mix)]
                for m in models for mix in MIXES]
    for row in rows + mix_rows:
        print(row, flush=True)
    gains = ["default - uniform (points)", "true kind - uniform (points)"]
    headers = ["model", "tokens/item", *(f"learned/true kind: {v}" for v in VARIANTS), *gains]
    body = "\n\n".join([
        "## Learning at its own caps (`benchmarks/learning_censoring.py`)",
        "Offline, no HTTP: a balanced stream of 40 windows of 40 subtasks; CLEAR allocates on "
        "the History estimator's curves and the estimator sees each drawn real run as a "
        "middleware does (finished within its cap, or cut at it). Over windows 29-40, the "
        "expected accuracy of its caps on the items' true curves, divided by that of CLEAR on "
        f"the true per-kind curves; mean over {args.seeds} streams. `every run seen whole` "
        "shows each run uncut whatever its cap (an estimator that saw everything), so the gap "
        "between it and `censored` is what learning at its own caps costs. `pacing off` keeps "
        "every group at its parent's pace (`pace_sigma=0`): past its caps the parent's share "
        "of a hard kind's tail continues as the population's runs do. `pace drawn` "
        "explores: each allocation draws every group's pace from its posterior "
        "(`exploration=\"pace\"`) instead of taking the expected curve. `default` continues "
        "each group past its caps at its own hazards (its finishing rate of the octave below "
        "held constant per token), blended with its paced parent's (`own_tail_calls=30`); "
        "`parent tail` continues it at its parent's hazards alone (`own_tail_calls=None`, the "
        "default before the own tail), `own tail per octave` holds the own rate per octave "
        "(`own_tail_scale=\"log-tokens\"`, a shorter tail). `Thompson` fits each "
        "group to a bootstrap resample of its calls. `prior weight 30` "
        "shrinks each hazard ten times harder toward the parent's than the default. (The "
        "estimator before hazard shrinkage, which mixed curves with a weight of 30 calls and "
        "extended them past the largest cap by a fitted surge, measured 0.92-0.95 at 2048 and "
        "4096 in this protocol; commit cbdf6d3.) With "
        "hints (MATH-500 levels) the learned curves can beat the true per-kind ones, most at "
        "small budgets, where knowing which items are easy matters most. The last two columns "
        "compare with uniform caps on the same windows, without the noise of the drawn runs: "
        "the default's expected accuracy minus uniform's, and the true kind curves' minus "
        "uniform's (what any per-kind estimator can hope to gain), in points. At 8,192 "
        "tokens per item every model but deepscaler has no cap above 8,192 to give, so every "
        "policy sends the same caps.\n\n"
        + markdown_table(headers, rows),
        "### Mixes (2048 tokens/item)\n\n"
        "The same measurement on the streams of the other mixes (80% AIME in `hard-heavy`). "
        "One stream's ratio moves by several points, the most where hard items dominate.\n\n"
        + markdown_table(["model", "mix", *(f"learned/true kind: {v}" for v in MIX_VARIANTS),
                          "censored (default), per stream", *gains], mix_rows),
        f"{SWEEP_ATTRIBUTION} Run took {(time.perf_counter() - started) / 60:.0f} min.",
    ])
    write_section("learning-censoring", body)


if __name__ == "__main__":
    main()
