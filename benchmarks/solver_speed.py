"""Solver speed: CLEAR against a general-purpose solver and the exact oracle, in one run.

Run: ``python benchmarks/solver_speed.py``. Writes the ``solver-speed`` section of
``docs/benchmarks.md``. Curves are random shifted surges (ceilings 0.3-1, thresholds
log-normal around 1,100 tokens, surge widths 200-2,000 tokens) with a budget of 2,000 tokens
per query (about half of them can be funded). Times are the best of several runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_section
from clear_middleware import ShiftedSurge, allocate

PER_QUERY = 2000


def curves_of(n: int, seed: int = 0) -> ShiftedSurge:
    rng = np.random.default_rng(seed)
    return ShiftedSurge(rng.uniform(0.3, 1.0, n), rng.lognormal(7.0, 0.8, n),
                        1.0 / rng.uniform(200.0, 2000.0, n))


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def slsqp(curves: ShiftedSurge, budget: float) -> float:
    """SLSQP on the smooth relaxation: maximise sum U_i(b_i), sum b_i <= B, 0 <= b_i <= cap."""
    n = len(curves)
    cap = curves.saturation_tokens()
    x0 = np.full(n, budget / n)
    result = minimize(
        lambda b: -curves.value(b).sum(), x0, jac=lambda b: -curves.marginal(b),
        method="SLSQP", bounds=list(zip(np.zeros(n), cap, strict=True)),
        constraints=[{"type": "ineq", "fun": lambda b: budget - b.sum(),
                      "jac": lambda b: -np.ones(n)}],
        options={"maxiter": 500, "ftol": 1e-9},
    )
    b = np.minimum(np.maximum(result.x, 0.0), cap)
    b *= min(1.0, budget / max(b.sum(), 1e-12))
    return float(curves.value(b).sum())


def main() -> None:
    rows, printed = [], []
    clear_times = {}
    for n in (1_000, 10_000, 100_000, 1_000_000):
        curves = curves_of(n)
        repeats = 7 if n <= 100_000 else 3
        t, alloc = best_time(lambda c=curves, k=n: allocate(c, PER_QUERY * k), repeats)
        clear_times[n] = t
        rows.append([f"{n:,}", "clear", f"{t * 1e3:.1f}", f"{t / n * 1e9:.0f}",
                     f"{alloc.expected_utility / alloc.upper_bound:.6f}", "1.0x"])
    for n, repeats in ((100, 3), (300, 1)):
        curves = curves_of(n, seed=1)
        t_clear, alloc = best_time(lambda c=curves, k=n: allocate(c, PER_QUERY * k), 5)
        t_slsqp, value = best_time(lambda c=curves, k=n: slsqp(c, PER_QUERY * k), repeats)
        rows.append([f"{n:,}", "SLSQP (smooth relaxation)", f"{t_slsqp * 1e3:.1f}",
                     f"{t_slsqp / n * 1e9:.0f}", f"{value / alloc.upper_bound:.6f}",
                     f"{t_slsqp / t_clear:.0f}x slower than clear ({t_clear * 1e3:.1f} ms)"])
    for n in (30, 100):
        curves = curves_of(n, seed=2)
        t_clear, alloc = best_time(
            lambda c=curves, k=n: allocate(c, PER_QUERY * k, granularity=64), 5)
        t_oracle, oracle = best_time(
            lambda c=curves, k=n: allocate(c, PER_QUERY * k, policy="oracle", granularity=64), 1)
        rows.append([f"{n:,}", "oracle (DP, 64-token grid)", f"{t_oracle * 1e3:.1f}",
                     f"{t_oracle / n * 1e9:.0f}",
                     f"{oracle.expected_utility / alloc.upper_bound:.6f}",
                     f"{t_oracle / t_clear:.0f}x slower than clear ({t_clear * 1e3:.1f} ms); "
                     "clear/oracle utility "
                     f"{alloc.expected_utility / oracle.expected_utility:.5f}"])
    headers = ["queries", "solver", "time (ms)", "ns/query", "utility / bound", "ratio"]
    growth = clear_times[1_000_000] / clear_times[100_000]
    printed.append(markdown_table(headers, rows))
    print(printed[0])
    print(f"\nclear: 10x more queries (1e5 -> 1e6) costs {growth:.1f}x the time")
    body = "\n\n".join([
        "## Solver speed (`benchmarks/solver_speed.py`)",
        f"Random shifted-surge batches at {PER_QUERY:,} tokens per query; best of several runs "
        "on this 2-core machine. `utility / bound` is the expected utility reached over the "
        "weak-duality bound (1.0 = provably optimal). SLSQP solves the smooth relaxation from a "
        "uniform start (it stalls in the flat region below the thresholds, a local optimum); the "
        "oracle is exact on its grid.",
        printed[0],
        f"Growth: 10x more queries (10^5 -> 10^6) costs {growth:.1f}x the time for `clear` "
        f"(linear would be 10x). 10^5 queries: {clear_times[100_000] * 1e3:.0f} ms "
        "(target: well under 100 ms).",
    ])
    write_section("solver-speed", body)


if __name__ == "__main__":
    main()
