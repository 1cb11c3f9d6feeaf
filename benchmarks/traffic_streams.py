"""Estimators on traffic streams, end to end through the local reasoning simulator.

Run: ``python benchmarks/traffic_streams.py [--quick] [--streams N] [--mix-streams N]`` (about
25 minutes per cold-start stream, 2 by default, and 15 per stream of the mixes, 2 by default;
``--mixes-only`` runs only the mixes; ``--quick`` for a smoke run). Writes the
``traffic-streams`` section of ``docs/benchmarks.md`` and ``docs/cold_start.png``.

``python benchmarks/traffic_streams.py --closer-look --streams 8`` runs only the cold-start
cells whose expected learned/true-kind ratio in the last full run was below
:data:`CLOSER_LOOK_BELOW`, on more streams (about 1.3 minutes per stream and cell), and writes
the ``traffic-streams-closer`` section: two streams per cell leave a ratio uncertain by a few
points, so a cell near the 0.95 target is settled on more. ``--closer-look-mixes --streams 8``
does the same for the rows of the last mixes table below it (about 10 seconds per stream and
variant), with the closer look's opt-in variants, and writes the
``traffic-streams-mixes-closer`` section. Every call
goes BudgetSession -> LiteLLM -> HTTP -> simulator, which replays real runs of the bundled
budget sweep (CC-BY-4.0, attribution below); see ``clear_middleware/evaluation/traffic.py`` for
the variants, mixes and arrivals.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import DOCS, markdown_table, write_section
from clear_middleware import ShiftedSurge
from clear_middleware.datasets.reasoning_sweep import SWEEP_ATTRIBUTION, load_sweep
from clear_middleware.evaluation.frontier import item_curves
from clear_middleware.evaluation.traffic import CurveTable, StreamResult, arun_streams, item_pool
from clear_middleware.simulator import SimulatorServer

BUDGETS = (512, 1024, 2048, 4096, 8192)
MAIN = ("uniform", "clear (prior only)", "clear (learned)", "clear (true kind curves)",
        "clear (true item curves)")
ABLATIONS = ("clear (learned, no hints)", "clear (learned, Thompson)",
             "clear (learned, pacing off)", "clear (learned, pace drawn)",
             "clear (learned, parent tail)", "clear (learned, own tail per octave)")
CLOSER_LOOK_ABLATIONS = ("clear (learned, pace drawn)", "clear (learned, parent tail)",
                         "clear (learned, own tail per octave)")
"""The ablations a closer look runs on every cell (the others run on the full run's first model
only)."""
_item_pool = cache(item_pool)
"""Each model's item pool, built once per run (about 0.3 s each)."""
PLOT = DOCS / "cold_start.png"
CLOSER_LOOK_BELOW = 0.97
"""Cells of the last full run with an expected ratio below this get a closer look."""
CLOSER_LOOK_SECTION = "traffic-streams-closer"
MIXES_SECTION = "traffic-streams-mixes"
MIXES_CLOSER_SECTION = "traffic-streams-mixes-closer"


async def cold_start(cells, windows, size, measure_from, sim, streams, ablations=None):
    """Per (model, budget) cell: every main variant on ``streams`` balanced streams (pooled),
    and the ablations ``ablations[model]``."""
    ablations = ablations or {}
    rows, per_window = [], {}
    for model, budget in cells:
        pool = _item_pool(model)
        variants = MAIN + tuple(ablations.get(model, ()))
        runs, res, per_stream = await _pooled(
            sim, model, pool, streams, variants, measure_from, budget_per_item=budget,
            windows=windows, window_size=size)
        learned, kind = res["clear (learned)"], res["clear (true kind curves)"]
        uni, prior = res["uniform"], res["clear (prior only)"]
        rows.append([
            model, budget, *(f"{res[v].accuracy_after(0):.3f}" for v in MAIN),
            _ratio(learned, kind), _ratio(learned, kind, expected=True),
            " / ".join(per_stream),
            f"{100 * (learned.accuracy_after(0) - uni.accuracy_after(0)):+.1f}",
            f"{100 * (prior.accuracy_after(0) - uni.accuracy_after(0)):+.1f}",
            *(f"{res[v].accuracy_after(0):.3f} ({_ratio(res[v], kind, expected=True)})"
              if v in res else "" for v in ABLATIONS),
            _calls_per_kind(runs[0]["clear (learned)"], measure_from),
        ])
        per_window[model, budget] = runs[0]
        print(rows[-1], flush=True)
    headers = ["model", "tokens/item", *MAIN, "learned/true kind",
               "learned/true kind, expected", "expected, per stream", "learned-uniform (pts)",
               "prior-uniform (pts)", *ABLATIONS, "calls/kind before measuring"]
    return headers, rows, per_window


async def _pooled(sim, model, pool, streams, variants, measure_from, **stream_options):
    """``streams`` streams (seeds 0 to ``streams - 1``) of ``variants``: each stream's results,
    every variant's measured windows pooled over the streams, and each stream's expected
    learned/true-kind ratio."""
    runs = []
    for seed in range(streams):
        runs.append(await arun_streams(sim, model, variants=variants, pool=pool,
                                       measure_from=measure_from, seed=seed, **stream_options))
        _no_errors(runs[-1])
    res = {v: _measured([r[v] for r in runs], measure_from) for v in variants}
    per_stream = [_ratio(_measured([r["clear (learned)"]], measure_from),
                         _measured([r["clear (true kind curves)"]], measure_from),
                         expected=True) for r in runs]
    return runs, res, per_stream


def _measured(results: list[StreamResult], window: int) -> StreamResult:
    """The windows from ``window`` on of one variant's streams, pooled into one result."""
    pooled = StreamResult(results[0].variant)
    for result in results:
        for name in ("correct", "items", "output_tokens", "abandoned", "calls_learned",
                     "errors", "expected_correct", "caps"):
            getattr(pooled, name).extend(getattr(result, name)[window:])
    return pooled


def _ratio(learned: StreamResult, kind: StreamResult, *, expected: bool = False) -> str:
    """Learned over true-kind accuracy (realised, or expected)."""
    if expected:
        ours, theirs = learned.expected_accuracy_after(0), kind.expected_accuracy_after(0)
    else:
        ours, theirs = learned.accuracy_after(0), kind.accuracy_after(0)
    return f"{ours / max(theirs, 1e-9):.3f}"


def _no_errors(results: dict[str, StreamResult]) -> None:
    """A provider error would count as a wrong answer: refuse to report such a run."""
    errors = {v: sum(r.errors) for v, r in results.items() if sum(r.errors)}
    if errors:
        raise RuntimeError(f"calls failed during the benchmark: {errors}")


def _calls_per_kind(result: StreamResult, window: int) -> str:
    """Calls per kind the learned estimator had seen when measurement began."""
    return str(result.calls_learned[window - 1] // 3)


def _first_table(section: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first Markdown table in ``section``."""
    lines = []
    for line in section.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    cells = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in lines if not line.startswith("|---")]
    return cells[0], cells[1:]


def _below(report_text: str, section: str, after: str, width: int) -> list[tuple[str, ...]]:
    """The first ``width`` cells of each row of the first table after ``after`` in the report's
    ``section`` whose expected ratio is below :data:`CLOSER_LOOK_BELOW`."""
    text = report_text.split(f"<!-- BEGIN {section} -->", 1)[1].split(
        f"<!-- END {section} -->", 1)[0]
    header, rows = _first_table(text.split(after, 1)[1])
    column = header.index("learned/true kind, expected")
    return [tuple(row[:width]) for row in rows if float(row[column]) < CLOSER_LOOK_BELOW]


def closer_look_cells(report_text: str) -> list[tuple[str, int]]:
    """The cold-start cells (model, tokens/item) of the report's last full run whose expected
    ratio (pooled) was below :data:`CLOSER_LOOK_BELOW`."""
    return [(model, int(budget)) for model, budget
            in _below(report_text, "traffic-streams", "### Cold start", 2)]


def closer_look_mix_rows(report_text: str) -> list[tuple[str, str, str]]:
    """The rows (model, mix, arrivals) of the report's last mixes table whose expected ratio
    (pooled) was below :data:`CLOSER_LOOK_BELOW`."""
    return [(model, mix, arrivals) for model, mix, arrivals
            in _below(report_text, MIXES_SECTION, "### Mixes", 3)]


MIX_SETTINGS = (*((mix, "fixed") for mix in ("easy-heavy", "hard-heavy", "mixed")),
                *(("balanced", arrivals) for arrivals in ("poisson", "burst")))
"""The (mix, arrivals) rows of the mixes table."""
MIX_VARIANTS = ("uniform", "clear (learned)", "clear (true kind curves)",
                "clear (true item curves)")


async def mixes_and_arrivals(rows_to_run, windows, size, measure_from, sim, streams,
                             ablations=()):
    """Per (model, mix, arrivals) row: the variants at 2048 tokens/item (and the
    ``ablations``), ``streams`` streams each (pooled), measured after ``measure_from``
    windows of learning."""
    rows = []
    variants = (*MIX_VARIANTS, *ablations)
    for model, mix, arrivals in rows_to_run:
        pool = _item_pool(model)
        _, res, per_stream = await _pooled(
            sim, model, pool, streams, variants, measure_from, mix=mix,
            arrivals=arrivals, budget_per_item=2048, windows=windows, window_size=size)
        learned, kind = res["clear (learned)"], res["clear (true kind curves)"]
        rows.append([model, mix, arrivals,
                     *(f"{res[v].accuracy_after(0):.3f}" for v in MIX_VARIANTS),
                     _ratio(learned, kind), _ratio(learned, kind, expected=True),
                     " / ".join(per_stream),
                     *(f"{res[v].accuracy_after(0):.3f} ({_ratio(res[v], kind, expected=True)})"
                       for v in ablations)])
        print(rows[-1], flush=True)
    return ["model", "mix", "arrivals", *MIX_VARIANTS, "learned/true kind",
            "learned/true kind, expected", "expected, per stream", *ablations], rows


def mixes_section(headers, rows, streams: int, measure_from: int, windows: int,
                  minutes: float) -> None:
    """Write the ``traffic-streams-mixes`` section."""
    write_section(MIXES_SECTION, "\n\n".join([
        "### Mixes and arrivals, every model (2048 tokens/item)",
        f"The protocol of the cold start above (learning from windows 1-{measure_from}, "
        f"measured over windows {measure_from + 1}-{windows}, {streams} streams per row, "
        "pooled) on the other mixes (`easy-heavy`: 80% MATH-500, levels 1-3 twice as likely; "
        "`hard-heavy`: 80% AIME, levels 4-5 twice as likely; `mixed`: every item equally "
        "likely) and arrivals (`poisson` window sizes; `burst`: every fifth window four times "
        "as large) of a balanced stream. The same stream's ratio moves from run to run "
        "(which concurrent calls settle first changes what the learned estimator has seen at "
        "each re-plan), most on hard-heavy streams, where a kind's funding hangs on two close "
        "AIME curves: a row is uncertain by a few points. The rows below "
        f"{CLOSER_LOOK_BELOW} are settled on more streams in the next section "
        "(`--closer-look-mixes`).",
        markdown_table(headers, rows),
        f"{SWEEP_ATTRIBUTION} Run took {minutes:.0f} min.",
    ]))


async def robustness(models, windows, size, sim):
    """CLEAR with per-item fitted surges whose thresholds carry log-normal noise."""
    rows = []
    noise_levels = (0.0, 0.25, 0.5, 1.0)
    for model in models:
        pool = _item_pool(model)
        fitted = item_curves(model, load_sweep()).fitted
        rng = np.random.default_rng(7)
        extra = {}
        for sigma in noise_levels:
            tau = fitted.threshold * np.exp(rng.normal(0.0, sigma, len(fitted)))
            noisy = ShiftedSurge(fitted.ceiling, tau, fitted.rate)
            extra[f"noise {sigma}"] = (lambda c=noisy: CurveTable(c))
        res = await arun_streams(sim, model, budget_per_item=2048, windows=windows,
                                 window_size=size, variants=("uniform", "clear (true kind curves)"),
                                 extra=extra, pool=pool)
        _no_errors(res)
        rows.append([model, *(f"{res[v].accuracy:.3f}" for v in
                              ("uniform", "clear (true kind curves)", *extra))])
        print(rows[-1], flush=True)
    headers = ["model", "uniform", "true kind curves",
               *(f"item surges, threshold noise sigma={s}" for s in noise_levels)]
    return headers, rows


def plot(per_window, model, budgets, measure_from):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 3.6), sharey=False)
    for ax, budget in zip(np.atleast_1d(axes), budgets, strict=True):
        for number, (variant, result) in enumerate(per_window[model, budget].items()):
            color = f"C{number}"
            acc = np.array(result.correct) / np.maximum(result.items, 1)
            if variant.startswith("clear (learned"):
                # Learning variants: accuracy per window, smoothed over 4 windows.
                smooth = np.convolve(acc, np.ones(4) / 4, mode="valid")
                ax.plot(np.arange(4, len(acc) + 1), smooth, marker="o", markersize=3,
                        label=variant, color=color)
            else:  # static variants: their accuracy over the measured windows
                ax.axhline(result.accuracy_after(measure_from), linestyle="--", linewidth=1,
                           label=variant, color=color)
        ax.axvline(measure_from + 0.5, color="grey", linewidth=0.8)
        ax.set_title(f"{model}, {budget} tokens/item")
        ax.set_xlabel("window (batches of subtasks, in arrival order)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("accuracy in window")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def closer_look(windows: int, size: int, measure_from: int, streams: int,
                started: float) -> None:
    """More streams for the cells of the last full run near the target (see the module
    docstring); writes the ``traffic-streams-closer`` section."""
    from benchmarks._report import REPORT

    cells = closer_look_cells(REPORT.read_text())
    with SimulatorServer() as sim:
        headers, rows, _ = asyncio.run(
            cold_start(cells, windows, size, measure_from, sim, streams,
                       ablations={model: CLOSER_LOOK_ABLATIONS for model, _ in cells}))
    keep = [i for i, name in enumerate(headers)
            if name not in ABLATIONS or name in CLOSER_LOOK_ABLATIONS]
    body = "\n\n".join([
        "### A closer look: the cells near the target, on more streams "
        "(`benchmarks/traffic_streams.py --closer-look`)",
        f"The cold-start cells whose expected learned/true-kind ratio was below "
        f"{CLOSER_LOOK_BELOW} in the cold-start table when this run started (the table above, "
        "or the one it replaced when both ran at once; two streams leave a ratio uncertain by "
        "a few points), "
        f"run again on {streams} streams each (seeds 0-{streams - 1}, the first two the same "
        "streams as above), pooled, in the same protocol. A cell is settled by these "
        "streams, not by the two above. The same stream's ratio can move by a few points "
        "from run to run: which concurrent calls settle first changes what the learned "
        "estimator has seen at each re-plan.",
        markdown_table([headers[i] for i in keep], [[row[i] for i in keep] for row in rows]),
        f"{SWEEP_ATTRIBUTION} Run took {(time.perf_counter() - started) / 60:.0f} min.",
    ])
    write_section(CLOSER_LOOK_SECTION, body)


def mixes_closer_look(windows: int, size: int, measure_from: int, streams: int,
                      started: float) -> None:
    """More streams, and the closer look's ablations, for the rows of the last mixes table
    near the target; writes the ``traffic-streams-mixes-closer`` section."""
    from benchmarks._report import REPORT

    rows_to_run = closer_look_mix_rows(REPORT.read_text())
    with SimulatorServer() as sim:
        headers, rows = asyncio.run(mixes_and_arrivals(
            rows_to_run, windows, size, measure_from, sim, streams,
            ablations=CLOSER_LOOK_ABLATIONS))
    write_section(MIXES_CLOSER_SECTION, "\n\n".join([
        "### A closer look at the mixes near the target "
        "(`benchmarks/traffic_streams.py --closer-look-mixes`)",
        f"The rows of the mixes table whose expected learned/true-kind ratio was below "
        f"{CLOSER_LOOK_BELOW} when this run started, run again on {streams} streams each "
        f"(seeds 0-{streams - 1}, the first ones the same streams as the table's), pooled, in "
        "the same protocol, with the closer look's opt-in estimator variants (a cell: "
        "accuracy, and in brackets the expected ratio to the true kind curves). A row is "
        "settled by these streams, not by the mixes table's.",
        markdown_table(headers, rows),
        f"{SWEEP_ATTRIBUTION} Run took {(time.perf_counter() - started) / 60:.0f} min.",
    ]))


def _every_mix(models) -> list[tuple[str, str, str]]:
    """Every (model, mix, arrivals) row of the mixes table."""
    return [(model, mix, arrivals) for model in models for mix, arrivals in MIX_SETTINGS]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--streams", type=int, default=2,
                        help="balanced streams per cold-start cell (pooled)")
    parser.add_argument("--mix-streams", type=int, default=2,
                        help="streams per mix and arrival setting (pooled)")
    parser.add_argument("--mixes-only", action="store_true",
                        help="only the mixes and arrivals (every model)")
    parser.add_argument("--skip-mixes", action="store_true",
                        help="the full run without the mixes and arrivals (run them apart "
                             "with --mixes-only)")
    parser.add_argument("--closer-look", action="store_true",
                        help="only the cells of the last full run below CLOSER_LOOK_BELOW")
    parser.add_argument("--closer-look-mixes", action="store_true",
                        help="only the rows of the last mixes table below CLOSER_LOOK_BELOW")
    args = parser.parse_args()
    started = time.perf_counter()
    models = load_sweep().models_with_caps(3)
    windows, size, measure_from = (4, 12, 2) if args.quick else (52, 40, 28)
    if args.closer_look:
        closer_look(windows, size, measure_from, args.streams, started)
        return
    if args.closer_look_mixes:
        mixes_closer_look(windows, size, measure_from, args.streams, started)
        return
    if args.quick:
        models = models[:1]
    if args.mixes_only:
        with SimulatorServer() as sim:
            mix_headers, mix_rows = asyncio.run(mixes_and_arrivals(
                _every_mix(models), windows, size, measure_from, sim, args.mix_streams))
        mixes_section(mix_headers, mix_rows, args.mix_streams, measure_from, windows,
                      (time.perf_counter() - started) / 60)
        return
    cells = [(model, budget) for model in models for budget in BUDGETS]

    async def run_all(sim):
        cold = await cold_start(cells, windows, size, measure_from, sim, args.streams,
                                ablations={models[0]: ABLATIONS})
        mixes = None if args.skip_mixes else await mixes_and_arrivals(
            _every_mix(models), windows, size, measure_from, sim, args.mix_streams)
        rob = await robustness(models, max(windows // 4, 2), size, sim)
        return cold, mixes, rob

    with SimulatorServer() as sim:  # one event loop for every session (see arun_streams)
        cold, mixes, (rob_headers, rob_rows) = asyncio.run(run_all(sim))
    headers, rows, per_window = cold
    plot(per_window, models[0], (1024, 2048), measure_from)
    minutes = (time.perf_counter() - started) / 60
    body = "\n\n".join([
        "## Estimators on traffic streams (`benchmarks/traffic_streams.py`)",
        f"End to end: each window of {size} subtasks is one `BudgetSession` "
        "(budget = tokens/item x subtasks, plus prompts) whose calls go through LiteLLM over HTTP "
        "to the local simulator, which replays real runs of the sweep (each item's runs drawn "
        "with their Kaplan-Meier weights, so replies at every cap follow the item's "
        "censoring-aware curve, the true curve scored against); the harness grades each "
        "answer against the gold answer and reports it back (`record_outcome`). All variants see "
        "the same stream, and each occurrence of an item replays the same run under every "
        f"variant. Cold start: {args.streams} streams per cell, pooled. Accuracy is measured "
        f"over windows {measure_from + 1}-{windows}, after the "
        f"learned estimator has learned from windows 1-{measure_from} (it keeps learning after); "
        "the variants that do not learn run the measured windows only. `prior only` is CLEAR "
        "with no history at all (the population prior, computed without the evaluated model). "
        "Kinds are the three benchmarks; MATH-500 items carry their level as a hint. "
        "`learned` is the History estimator's defaults: past its caps each group continues "
        "at its own hazards, its finishing rate of the octave below held constant per token, "
        "blended with its paced parent's (`own_tail_calls=30`). The "
        "ablations (first model only) learn without hints, with Thompson sampling (each "
        "group fitted to a bootstrap resample of its calls instead of the calls as they are), "
        "with pacing off (`pace_sigma=0`: past its caps every group continues at its "
        "parent's pace instead of its own), with the pace drawn (`exploration=\"pace\"`: "
        "each look at a group draws its pace from its posterior), with the parent's tail "
        "alone (`own_tail_calls=None`: past its caps a group continues at its paced "
        "parent's hazards only, the default before the own tail), and with the own tail's "
        "rate held per octave instead of per token (`own_tail_scale=\"log-tokens\"`, a "
        "shorter tail). "
        "An ablation's cell is its accuracy and, in brackets, its expected ratio to the true "
        "kind curves. "
        "`learned/true kind` divides the accuracies the calls reached; `, expected` divides "
        "the expected accuracies of the caps they were sent with, on the items' true curves: "
        "the same allocations without the noise of which run each call drew; `per stream` "
        "shows how much one stream's ratio moves.",
        "### Cold start, balanced stream\n\n" + markdown_table(headers, rows),
        f"![cold start]({PLOT.name})",
        "Mixes and arrivals, for every model, are in their own section below.",
        "### Robustness: noisy per-item thresholds (2048 tokens/item, all windows)\n\n"
        "Per-item shifted-surge curves fitted on the item's own runs, each threshold multiplied "
        "by exp(N(0, sigma)) (the paper's section 7.3 protocol).\n\n"
        + markdown_table(rob_headers, rob_rows),
        f"{SWEEP_ATTRIBUTION} Run took {minutes:.0f} min.",
    ])
    write_section("traffic-streams", body)
    if mixes is not None:
        mixes_section(*mixes, args.mix_streams, measure_from, windows, minutes)


if __name__ == "__main__":
    main()
