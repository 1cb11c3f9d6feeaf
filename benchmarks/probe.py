"""What a probe of a given quality is worth: CLEAR per kind, plus a probe, vs true item curves.

Run: ``python benchmarks/probe.py [--quick]`` (about 10 minutes on 2 cores; ``--quick`` for a
smoke run). Writes the ``probe`` section of ``docs/benchmarks.md``.

End to end, like ``benchmarks/traffic_streams.py``: balanced streams of windows of 40 subtasks,
each window one :class:`BudgetSession` whose calls go through LiteLLM over HTTP to the local
simulator, which replays real runs of the sweep. Variants on the same stream:

- ``uniform``: the same cap for every subtask;
- ``per kind``: CLEAR with each kind's true curve (the sampling-weighted mean of its items'
  measured curves): the best a per-kind estimator can do;
- ``probe sigma=s``: :class:`ProbeEstimator` over the same per-kind curves, probing the
  simulator's synthetic oracle, which answers each item's true median correct length times
  ``exp(N(0, s))`` (fixed per item); the probe's tokens are charged to each window's budget,
  and its error (bias and sigma) is learned online from the settled calls across windows,
  starting from the documented prior (total log-sigma 1.0);
- ``per item``: CLEAR with each item's own measured curve.

"Share recovered" is ``(probe - per kind) / (per item - per kind)``: the share of what
per-item knowledge is worth that the probe recovers, after paying for itself. The oracle is
synthetic: this measures a probe of a *known* noise, not any real small model (the dev data
holds no small model's estimates).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import markdown_table, write_section
from clear_middleware.datasets.reasoning_sweep import SWEEP_ATTRIBUTION, load_sweep
from clear_middleware.estimators import DEFAULT_TEMPLATE, ProbeEstimator
from clear_middleware.evaluation.traffic import (
    CurveTable,
    StreamResult,
    arun_streams,
    item_pool,
    kind_truth,
    sampling_weights,
)
from clear_middleware.simulator import SimulatorServer, target_marker

NOISE = (0.25, 0.5, 1.0)
BUDGETS = (1024, 2048, 4096)
TEMPLATE = DEFAULT_TEMPLATE + "\n" + target_marker("{model}")


def _probe_model(sigma: float) -> str:
    return f"probe-{sigma}".replace(".", "_")


def _factory(made: dict[str, ProbeEstimator], kind, sigma: float, name: str):
    """A probe estimator over the per-kind curves ``kind``, remembered in ``made``."""
    def make() -> ProbeEstimator:
        made[name] = ProbeEstimator(CurveTable(kind), f"openai/{_probe_model(sigma)}",
                                    prompt_template=TEMPLATE, max_tokens=16)
        return made[name]
    return make


def _no_errors(results: dict[str, StreamResult]) -> None:
    errors = {v: sum(r.errors) for v, r in results.items() if sum(r.errors)}
    if errors:
        raise RuntimeError(f"calls failed during the benchmark: {errors}")


async def measure(sim, models, budgets, windows, size):
    rows = []
    for model in models:
        pool = item_pool(model)
        kind = kind_truth(pool, sampling_weights(pool, "balanced"))
        for budget in budgets:
            made: dict[str, ProbeEstimator] = {}
            extra = {f"probe sigma={s}": _factory(made, kind, s, f"probe sigma={s}")
                     for s in NOISE}
            res = await arun_streams(
                sim, model, budget_per_item=budget, windows=windows, window_size=size,
                variants=("uniform", "clear (true kind curves)", "clear (true item curves)"),
                extra=extra, pool=pool)
            _no_errors(res)
            uni = res["uniform"].accuracy
            per_kind = res["clear (true kind curves)"].accuracy
            per_item = res["clear (true item curves)"].accuracy
            probes = [res[name].accuracy for name in extra]
            gap = per_item - per_kind
            shares = [f"{(p - per_kind) / gap:+.2f}" if gap > 0.01 else "n/a" for p in probes]
            items = sum(res["uniform"].items)
            tokens = [made[name].stats.tokens / items for name in extra]
            learned = [made[name].probe_sigma for name in extra]
            rows.append([
                model, budget, f"{uni:.3f}", f"{per_kind:.3f}",
                *(f"{p:.3f}" for p in probes), f"{per_item:.3f}", *shares,
                f"{tokens[0]:.0f}",
                " / ".join(f"{s:.2f}" for s in learned),
            ])
            print(rows[-1], flush=True)
    headers = ["model", "tokens/item", "uniform", "per kind",
               *(f"probe sigma={s}" for s in NOISE), "per item",
               *(f"share recovered, sigma={s}" for s in NOISE),
               "probe tokens/item", "learned probe sigma (0.25 / 0.5 / 1.0)"]
    return headers, rows


def _summary(rows) -> str:
    """Mean share recovered per noise level over the cells (those with a per-item gap)."""
    first = 4 + len(NOISE) + 1  # the share columns
    parts = []
    for k, sigma in enumerate(NOISE):
        shares = [float(r[first + k]) for r in rows if r[first + k] != "n/a"]
        mean = sum(shares) / max(len(shares), 1)
        parts.append(f"sigma={sigma}: {mean:+.2f}")
    return ("Mean share of the per-item gain recovered, over the cells: " + ", ".join(parts)
            + ".")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--windows", type=int, default=6, help="windows per stream")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS),
                        help="output tokens per item")
    args = parser.parse_args()
    started = time.perf_counter()
    models = load_sweep().models_with_caps(3)
    windows, size, budgets = (2, 12, (2048,)) if args.quick else (
        args.windows, 40, tuple(args.budgets))
    if args.quick:
        models = models[:1]
    probes = {_probe_model(s): s for s in NOISE}
    with SimulatorServer(probe_models=probes) as sim:
        headers, rows = asyncio.run(measure(sim, models, budgets, windows, size))
    minutes = (time.perf_counter() - started) / 60
    print(markdown_table(headers, rows))
    print(_summary(rows))
    if args.quick:
        return
    body = "\n\n".join([
        "## Probe: estimated tokens per subtask (`benchmarks/probe.py`)",
        f"End to end through the simulator, balanced streams of {windows} windows of {size} "
        "subtasks per model and budget (every window a `BudgetSession`; all variants see the "
        "same stream and each occurrence of an item replays the same run). `per kind` is CLEAR "
        "with each kind's true curve, `per item` CLEAR with each item's measured curve. "
        "`probe sigma=s` is `ProbeEstimator` over the same per-kind curves, asking the "
        "simulator's *synthetic* oracle probe, which answers the item's true median correct "
        "length times exp(N(0, s)) (fixed per item; the target's output limit for items it "
        "never solved). Probe calls are charged to each window's budget (column `probe "
        "tokens/item`, sigma=0.25: prompt about 90 tokens, answer 1-2); the probe's bias and "
        "sigma are learned online across the windows from the documented prior (total "
        "log-sigma 1.0), and the last column is the probe sigma learned by the end. "
        "`share recovered` = (probe - per kind) / (per item - per kind).",
        markdown_table(headers, rows),
        _summary(rows),
        f"Accuracy is over {windows * size} subtasks per cell: its binomial standard error is "
        "about 0.03, less for differences between variants (they are paired: same items, same "
        "runs), but a single cell's share is still uncertain by a few tenths where the per-item "
        "gap is about 0.1; read the pattern across cells. The learned probe sigma includes "
        "what the documented within-item spread (0.3) does not cover, so it comes out above "
        "the oracle's true noise for the sharpest probe. What this does not measure: any real "
        "small model's estimates (the dev data has none); a real probe also errs "
        "systematically by kind, which the learned bias absorbs only on average.",
        f"{SWEEP_ATTRIBUTION} Run took {minutes:.0f} min.",
    ])
    write_section("probe", body)


if __name__ == "__main__":
    main()
