"""Run selection: which runs are informative at a cap, reproducibility, continuation."""

from __future__ import annotations

import pytest

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


def test_small_cap_draws_from_every_run(catalog: RunCatalog) -> None:
    counts = _chosen(catalog, 512)
    assert sorted(counts) == [1, 2, 3, 4]
    assert min(counts.values()) >= 60  # a uniform draw: about 100 each


def test_runs_cut_below_the_cap_are_never_replayed(catalog: RunCatalog) -> None:
    assert sorted(_chosen(catalog, 2048)) == [1, 3, 4]  # B (cut at 1024) says nothing at 2048
    assert sorted(_chosen(catalog, 8192)) == [1, 3, 4]  # C cut at exactly the cap: informative
    assert sorted(_chosen(catalog, 8193)) == [1, 4]


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


def test_same_seed_same_run_and_kept_across_caps_while_informative(catalog: RunCatalog) -> None:
    for seed in SEEDS:
        small = catalog.plan("m", "bench/q1", 512, seed)
        assert catalog.plan("m", "bench/q1", 512, seed) == small
        if small.run in (A, D):  # finished runs stay informative at every cap
            assert catalog.plan("m", "bench/q1", 16384, seed).run == small.run


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
    item = "aime24/2024-I-1"
    seen = {
        cap: {catalog.plan("deepscaler-1.5b", item, cap, s).run.run_id for s in SEEDS}
        for cap in (1024, 4096, 8192)
    }
    assert seen[1024] == {r.run_id for r in runs}
    assert seen[4096] == finished | {r.run_id for r in runs if r.censored and r.cap >= 4096}
    assert len(seen[4096]) == 8
    assert seen[8192] == finished


def test_item_for_text_is_deterministic() -> None:
    catalog = load_catalog()
    item = catalog.item_for_text("qwen3-1.7b", "What is 2 + 2?")
    assert item == catalog.item_for_text("qwen3-1.7b", "What is 2 + 2?")
    assert item in catalog.items("qwen3-1.7b")
    picked = {catalog.item_for_text("qwen3-1.7b", f"question {k}") for k in range(200)}
    assert len(picked) > 50  # spread over the items, not stuck on one
