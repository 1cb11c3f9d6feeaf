"""Run selection: which runs are informative at a cap, reproducibility, continuation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_middleware.curves.empirical import EmpiricalCurve
from clear_middleware.simulator import RunCatalog, SweepRun, load_catalog


def _run(run_id: int, *, cap: int, length: int, censored: bool, correct: bool = False) -> SweepRun:
    return SweepRun(
        run_id=run_id,
        model="m",
        item="bench/q1",
        seed=0,
        cap=cap,
        length=length,
        censored=censored,
        correct=correct,
        answer=None,
        gold="7",
    )


# A: finished after 3000 tokens, correct. B: cut at 1024. C: cut at 8192. D: finished at 500.
A = _run(1, cap=4096, length=3000, censored=False, correct=True)
B = _run(2, cap=1024, length=1024, censored=True)
C = _run(3, cap=8192, length=8192, censored=True)
D = _run(4, cap=4096, length=500, censored=False)
SEEDS = [f"seed:{k}" for k in range(400)]


@pytest.fixture
def catalog() -> RunCatalog:
    return RunCatalog([A, B, C, D])


def _chosen(catalog: RunCatalog, cap: int, **kwargs: object) -> dict[int, int]:
    counts: dict[int, int] = {}
    for seed in SEEDS:
        run_id = catalog.plan("m", "bench/q1", cap, seed, **kwargs).run.run_id
        counts[run_id] = counts.get(run_id, 0) + 1
    return counts


def test_weights_are_kaplan_meier_masses(catalog: RunCatalog) -> None:
    # By length: D finishes (1/4 of 4 at risk), B is cut (its share moves right), A finishes
    # (1/2 of the 3/4 left), C is cut last and keeps the 3/8 still running.
    assert catalog.replay_weights("m", "bench/q1").tolist() == [0.375, 0.0, 0.375, 0.25]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([512, 1024, 2048, 4096]), st.integers(1, 4096),
                          st.booleans()), min_size=1, max_size=12))
def test_weights_replay_the_aalen_johansen_curve_at_every_cap(
    draws: list[tuple[int, int, bool]],
) -> None:
    # Each run: its cap, the length it would need, whether that answer is right. It is cut
    # when the length exceeds its cap.
    runs = [_run(k, cap=cap, length=min(need, cap), censored=need > cap,
                 correct=right and need <= cap) for k, (cap, need, right) in enumerate(draws)]
    catalog = RunCatalog(runs)
    weights = catalog.replay_weights("m", "bench/q1")
    assert weights.sum() == pytest.approx(1.0)
    caps = [256, 700, 1024, 3000, 4096]
    curve = EmpiricalCurve.from_rollouts([[r.length for r in runs]], [[r.correct for r in runs]],
                                         caps, censored=[[r.censored for r in runs]])
    replayed = [sum(w for r, w in zip(runs, weights, strict=True) if r.correct and r.length <= c)
                for c in caps]
    np.testing.assert_allclose(replayed, curve.values[0, 1:], atol=1e-12)


def test_draws_follow_the_weights_and_never_replay_a_run_cut_early(catalog: RunCatalog) -> None:
    for cap in (512, 2048, 8192):
        assert sorted(_chosen(catalog, cap)) == [1, 3, 4]  # B (cut at 1024) is never replayed
    many = [catalog.plan("m", "bench/q1", 512, f"seed:{k}").run.run_id for k in range(4000)]
    assert abs(many.count(1) / 4000 - 0.375) < 0.025  # 3 standard errors
    assert abs(many.count(4) / 4000 - 0.25) < 0.025


def test_replayed_accuracy_is_the_censoring_aware_curve(catalog: RunCatalog) -> None:
    # Aalen-Johansen on A, B, C, D: A (correct, 3000 tokens) carries 3/8. A uniform draw among
    # the runs known at 4096 (A, C, D) would give 1/3.
    curve = EmpiricalCurve.from_rollouts([[3000, 1024, 8192, 500]], [[True, False, False, False]],
                                         [4096], censored=[[False, True, True, False]])
    seeds = [f"seed:{k}" for k in range(4000)]
    replayed = sum(catalog.plan("m", "bench/q1", 4096, s).correct for s in seeds) / len(seeds)
    assert curve.values[0, -1] == 0.375
    assert abs(replayed - 0.375) < 0.025


def test_plans_cut_or_finish_by_length(catalog: RunCatalog) -> None:
    seed_a = next(s for s in SEEDS if catalog.plan("m", "bench/q1", 16384, s).run == A)
    cut = catalog.plan("m", "bench/q1", 2999, seed_a)
    assert (cut.run, cut.start, cut.end, cut.finished, cut.correct) == (A, 0, 2999, False, False)
    done = catalog.plan("m", "bench/q1", 3000, seed_a)
    assert (done.end, done.completion_tokens, done.finished, done.correct) == (
        3000,
        3000,
        True,
        True,
    )
    seed_c = next(s for s in SEEDS if catalog.plan("m", "bench/q1", 8000, s).run == C)
    plan = catalog.plan("m", "bench/q1", 8000, seed_c)
    assert (plan.end, plan.finished, plan.extrapolated) == (8000, False, False)
    past = catalog.plan("m", "bench/q1", 9000, seed_c)  # C keeps running past its cap: a guess
    assert (past.run, past.end, past.finished, past.extrapolated) == (C, 9000, False, True)


def test_same_seed_same_run_at_every_cap(catalog: RunCatalog) -> None:
    for seed in SEEDS:
        small = catalog.plan("m", "bench/q1", 512, seed)
        assert catalog.plan("m", "bench/q1", 512, seed) == small
        assert catalog.plan("m", "bench/q1", 16384, seed).run == small.run


def test_draws_are_independent_across_items() -> None:
    runs = [_run(k, cap=4096, length=100 * k, censored=False) for k in range(1, 11)]
    other = [SweepRun(**{**vars(r), "run_id": r.run_id + 10, "item": "bench/q2"}) for r in runs]
    catalog = RunCatalog(runs + other)
    same = sum(catalog.plan("m", "bench/q1", 4096, s).run.length
               == catalog.plan("m", "bench/q2", 4096, s).run.length for s in SEEDS)
    assert same < 80  # about 40 (1 in 10) when the draws are independent; 400 if shared


def test_no_informative_run_extrapolates_the_longest_cut_run() -> None:
    e = _run(5, cap=2048, length=2048, censored=True)
    catalog = RunCatalog([B, e])
    for seed in SEEDS[:20]:
        plan = catalog.plan("m", "bench/q1", 4096, seed)
        assert (plan.run, plan.end, plan.finished, plan.extrapolated) == (e, 4096, False, True)


def test_continuation_resumes_the_same_run(catalog: RunCatalog) -> None:
    plan = catalog.plan("m", "bench/q1", 4096, "any", already=1024, prefer_run_id=A.run_id)
    assert (plan.run, plan.start, plan.end, plan.completion_tokens) == (A, 1024, 3000, 1976)
    assert plan.finished and plan.correct
    kept = catalog.plan("m", "bench/q1", 256, "any", already=512, prefer_run_id=B.run_id)
    assert (kept.run, kept.start, kept.end, kept.finished) == (B, 512, 768, False)


def test_continuation_past_a_cut_run_draws_a_run_longer_than_the_prefix(
    catalog: RunCatalog,
) -> None:
    # B was cut at 1024: beyond that it is unknown, so a run known to be longer than the
    # 512 tokens already generated is drawn (A or C; D stopped at 500).
    counts = _chosen(catalog, 1024, already=512, prefer_run_id=B.run_id)
    assert sorted(counts) == [1, 3]


def test_continuing_a_run_that_already_stopped_adds_nothing(catalog: RunCatalog) -> None:
    plan = catalog.plan("m", "bench/q1", 1000, "any", already=500, prefer_run_id=D.run_id)
    assert (plan.run, plan.completion_tokens, plan.finished) == (D, 0, True)


def test_bundled_catalog_on_a_real_item() -> None:
    catalog = load_catalog()
    assert catalog.models() == [
        "deepscaler-1.5b",
        "ii-thought-1.5b",
        "nemotron-1.5b",
        "openrs1-1.5b",
        "openrs2-1.5b",
        "openrs3-1.5b",
        "qwen25math-1.5b",
        "qwen3-0.6b",
        "qwen3-1.7b",
        "still3-1.5b",
    ]
    assert (catalog.max_cap("deepscaler-1.5b"), catalog.max_cap("qwen3-0.6b")) == (16384, 4096)
    assert len(catalog.items("deepscaler-1.5b")) == 160
    runs = catalog.runs("deepscaler-1.5b", "aime24/2024-I-1")
    assert len(runs) == 14  # caps 1024..16384, three seeds (two at 16384)
    finished = {r.run_id for r in runs if not r.censored}
    assert len(finished) == 7
    # Seven runs finished (2311-3293 tokens); the run cut at 4096 is the longest one seen and
    # keeps the 1/8 still running past 3293; the runs cut at 1024 and 2048 are never replayed.
    weights = dict(zip((r.run_id for r in runs),
                       catalog.replay_weights("deepscaler-1.5b", "aime24/2024-I-1"), strict=True))
    assert {k for k, w in weights.items() if w > 0} == finished | {180}
    assert all(w == pytest.approx(0.125) for w in weights.values() if w > 0)
    seen = {catalog.plan("deepscaler-1.5b", "aime24/2024-I-1", 1024, s).run.run_id for s in SEEDS}
    assert seen == finished | {180}


def test_item_for_text_is_deterministic() -> None:
    catalog = load_catalog()
    item = catalog.item_for_text("qwen3-1.7b", "What is 2 + 2?")
    assert item == catalog.item_for_text("qwen3-1.7b", "What is 2 + 2?")
    assert item in catalog.items("qwen3-1.7b")
    picked = {catalog.item_for_text("qwen3-1.7b", f"question {k}") for k in range(200)}
    assert len(picked) > 50  # spread over the items, not stuck on one
