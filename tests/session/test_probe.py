"""ProbeEstimator in a BudgetSession, over real HTTP against the simulator's oracle probes:
probe calls are reserved and settled in the session's ledger before the plan, failed ones are
released, answers are cached, and settled calls teach the probe's error."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from clear_middleware.estimators import ProbeEstimator, StaticEstimator
from clear_middleware.estimators.probe import DEFAULT_TEMPLATE
from clear_middleware.pricing import MissingPriceError
from clear_middleware.simulator import SimulatorServer, target_marker

from .conftest import KINDS, MODEL, batch

TEMPLATE = DEFAULT_TEMPLATE + "\n" + target_marker("{model}")
# deepscaler-1.5b: median correct lengths of the batch's items (tokens; the sweep's 16,384
# output limit for aime24/2024-I-10, which no run solved).
MEDIANS = {"math500/test/algebra/1004.json": 740, "math500/test/algebra/1082.json": 2504,
           "aime24/2024-I-1": 2792, "aime24/2024-I-10": 16384}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(probe_models={"probe-oracle": 0.5, "probe-exact": 0.0}) as server:
        yield server


def _probe(model: str = "openai/probe-exact", **options) -> ProbeEstimator:
    return ProbeEstimator(StaticEstimator(KINDS), model, prompt_template=TEMPLATE, **options)


def _subtasks():
    return batch(easy=2, hard=2)


def _probe_requests(sim: SimulatorServer) -> list:
    return [r for r in sim.requests if r.model and r.model.startswith("probe-")]


def test_probe_tokens_are_charged_before_the_plan(sim, make_session) -> None:
    est = _probe()
    session = make_session(budget_tokens=8000, estimator=est)
    plan = session.plan(_subtasks())

    probes = _probe_requests(sim)
    assert sorted(r.item for r in probes) == sorted(MEDIANS)
    assert {r.item: est.cached_estimate(s, MODEL) for r, s in zip(
        sorted(probes, key=lambda r: r.item), sorted(_subtasks(), key=lambda s: s.id),
        strict=True)} == MEDIANS
    served = sum(r.prompt_tokens + r.completion_tokens for r in probes)
    entries = session.statement()
    reserves = [e for e in entries if e.kind == "reserve"]
    commits = [e for e in entries if e.kind == "commit"]
    assert len(reserves) == len(commits) == 4
    assert all("/probe/" in e.call_id for e in entries)
    # Each probe reserved its worst case (prompt + 24 output tokens) and was charged the usage.
    assert all(e.tokens >= r.prompt_tokens + 24 for e, r in zip(
        sorted(reserves, key=lambda e: e.tokens), sorted(probes, key=lambda r: r.prompt_tokens),
        strict=True))
    assert sum(e.tokens for e in commits) == served == est.stats.tokens
    assert session.remaining().spent_tokens == served
    assert plan.budget_tokens == 8000 - served
    assert (est.stats.probed, est.stats.failed, est.stats.unparsed) == (4, 0, 0)
    # The plan used the per-item curves: the unsolved AIME item moved far right.
    rows = {r.subtask_id: r for r in plan.rows}
    assert not rows["aime24/2024-I-10"].funded


def test_answers_are_cached_so_replanning_does_not_probe_again(sim, make_session) -> None:
    est = _probe()
    session = make_session(budget_tokens=8000, estimator=est)
    session.plan(_subtasks())
    first = session.remaining().spent_tokens
    session.plan(_subtasks())
    session.quote(_subtasks()[0])
    assert len(_probe_requests(sim)) == 4
    assert session.remaining().spent_tokens == first
    assert est.stats.cached == 5


def test_a_failed_probe_is_released_and_leaves_the_base_curve(sim, make_session) -> None:
    est = _probe()
    session = make_session(budget_tokens=8000, estimator=est, max_retries=0)
    sim.fail_next(1)
    subtask = _subtasks()[:1]
    plan = session.plan(subtask)
    assert [e.kind for e in session.statement()] == ["reserve", "release"]
    assert session.remaining().spent_tokens == 0
    assert (est.stats.failed, est.stats.probed) == (1, 0)
    assert est.cached_estimate(subtask[0], MODEL) is None
    base = make_session(budget_tokens=8000).plan(subtask)
    assert plan.rows[0].output_tokens == base.rows[0].output_tokens
    # Not cached: the next plan probes again, and that one is charged.
    session.plan(subtask)
    assert est.stats.probed == 1 and session.remaining().spent_tokens > 0


def test_an_answer_without_a_number_is_charged_and_falls_back(sim, make_session) -> None:
    # A sweep model as the probe: under a 16-token cap it is still reasoning (no content).
    est = _probe(model=MODEL, max_tokens=16)
    session = make_session(budget_tokens=8000, estimator=est)
    plan = session.plan(_subtasks()[:2])
    assert (est.stats.unparsed, est.stats.probed) == (2, 0)
    assert est.stats.tokens == session.remaining().spent_tokens > 0
    base = make_session(budget_tokens=8000 - est.stats.tokens).plan(_subtasks()[:2])
    assert [r.output_tokens for r in plan.rows] == [r.output_tokens for r in base.rows]
    session.plan(_subtasks()[:2])  # an unusable answer is cached too
    assert est.stats.unparsed == 2 and est.stats.cached == 2


def test_a_probe_the_budget_cannot_hold_is_not_sent(sim, make_session) -> None:
    est = _probe()
    session = make_session(budget_tokens=50, estimator=est)
    session.plan(_subtasks()[:1])
    assert est.stats.unfunded == 1 and _probe_requests(sim) == []
    assert [e.kind for e in session.statement()] == ["refuse"]


PRICES = {"deepscaler-1.5b": {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6},
          "probe-exact": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}}


def test_under_a_usd_cap_the_probe_is_priced_by_the_session(sim, make_session) -> None:
    est = _probe()
    session = make_session(budget_usd=0.05, estimator=est, prices=PRICES)
    session.plan(_subtasks()[:2])
    probes = _probe_requests(sim)
    usd = sum(r.prompt_tokens * 1e-7 + r.completion_tokens * 2e-7 for r in probes)
    assert est.stats.usd == pytest.approx(usd)
    assert session.remaining().spent_nano_usd == pytest.approx(usd * 1e9, abs=2)
    unpriced = make_session(budget_usd=0.05, estimator=_probe(model="openai/probe-oracle"),
                            prices=PRICES)
    with pytest.raises(MissingPriceError, match="probe-oracle"):
        unpriced.plan(_subtasks()[:1])


async def test_arun_probes_concurrently_and_settled_calls_teach_the_probe(
        sim, make_session) -> None:
    est = _probe(max_concurrency=2)
    session = make_session(budget_tokens=12_000, estimator=est)
    results = await session.arun(_subtasks(), seed=0)
    assert len(_probe_requests(sim)) == 4
    sent = [r for r in results if r.status == "ok"]
    assert sent and sum(est.learned_calls) == len(sent)
    balance = session.remaining()
    assert balance.reserved_tokens == 0
    assert balance.spent_tokens == sum(r.prompt_tokens + r.completion_tokens
                                       for r in sim.requests if r.status == 200)
    # The probe was exact: lengths scatter around it by about the run-to-run spread.
    assert abs(est.bias) < 0.5 and est.total_sigma < 1.0
    assert np.isfinite(est.probe_sigma)
