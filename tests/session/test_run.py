"""``run`` / ``arun`` against the simulator: results, accounting, re-pricing, unfunded policies,
USD budgets and bad input. ``max_concurrency=1`` where exact numbers are asserted: calls then
settle one after another, so every re-plan sees the same ledger on every run."""

from __future__ import annotations

import pytest

from clear_middleware.pricing import MissingPriceError
from clear_middleware.session import BudgetSession, SubtaskResult
from clear_middleware.usage import Usage

from .conftest import MODEL, batch, served_ok, server_tokens, subtask

# Seed 0 replays, for these items, runs of 750, 2465, 848, 2155, 1554 and 765 tokens (the
# first, third and sixth end in the gold answer well below 1,000 tokens).
ANSWERS = {0: "The final answer is $\\boxed{4}$.",
           2: "The final answer is $\\boxed{\\frac{3}{2}}$."}


def _ledger_matches_server(session: BudgetSession, sim) -> int:
    """Spent tokens, after checking they equal what the server reported serving."""
    balance = session.remaining()
    assert balance.reserved_tokens == 0
    assert balance.spent_tokens == server_tokens(served_ok(sim))
    return balance.spent_tokens


def test_run_results_in_order_with_usage_and_allocation(sim, make_session) -> None:
    session = make_session(budget_tokens=5000, max_concurrency=1)
    subtasks = batch(easy=6, hard=3)
    results = session.run(subtasks, seed=0)

    assert all(isinstance(r, SubtaskResult) for r in results)
    assert [(r.index, r.subtask_id) for r in results] == [
        (i, s.id) for i, s in enumerate(subtasks)]
    assert [r.status for r in results] == ["ok"] * 5 + ["unfunded"] * 4
    assert [r.usage for r in results[:5]] == [
        Usage(28, 750, 740), Usage(28, 1014, 1014), Usage(28, 848, 834), Usage(28, 1110, 1110),
        Usage(28, 1110, 1110)]
    assert [r.tokens_allocated for r in results] == [966, 1014, 1014, 1110, 1110, 0, 0, 0, 0]
    assert [r.finish_reason for r in results[:5]] == ["stop", "length", "stop", "length",
                                                      "length"]
    assert {i: results[i].text for i in ANSWERS} == ANSWERS
    assert [results[i].text for i in (1, 3, 4)] == ["", "", ""]  # cut while still reasoning
    assert all(r.cost_usd is None for r in results)  # the sweep model has no price
    assert all(r.attempts == 1 and len(r.call_ids) == 1 and r.model == MODEL
               for r in results[:5])
    # The server saw exactly the funded subtasks, each with its allocated cap.
    assert [(q.item, q.requested_cap) for q in sim.requests] == [
        (s.id, r.tokens_allocated) for s, r in zip(subtasks[:5], results[:5], strict=True)]
    assert _ledger_matches_server(session, sim) == 4972 == sum(
        r.usage.total_tokens for r in results)


def test_unfunded_results_carry_their_price_and_are_never_sent(sim, make_session) -> None:
    session = make_session(budget_tokens=5000, max_concurrency=1)
    results = session.run(batch(easy=6, hard=3), seed=0)
    unfunded = results[5:]
    assert all(r.status == "unfunded" for r in unfunded)
    assert all(r.price is not None and r.price > 0 for r in unfunded)
    assert all(r.usage == Usage() and r.tokens_allocated == 0 and r.call_ids == ()
               and r.attempts == 0 and r.text is None for r in unfunded)
    sent = {q.item for q in sim.requests}
    assert not sent & {r.subtask_id for r in unfunded}
    called = {e.call_id for e in session.statement()}
    assert not any(r.subtask_id in c for r in unfunded for c in called)


def test_tokens_returned_by_early_finishers_fund_later_subtasks(sim, make_session) -> None:
    # The three subtasks that finish far under their caps (750, 848, 765 tokens) go first.
    easy = batch(easy=6)
    subtasks = [easy[i] for i in (0, 2, 5, 1, 3, 4)]
    session = make_session(budget_tokens=3500, max_concurrency=1)
    first = session.plan(subtasks)
    assert [r.output_tokens for r in first.rows] == [838, 838, 822, 822, 0, 0]

    results = session.run(subtasks, seed=0)
    # Each settlement returned unused tokens and the rest were re-priced: every later subtask
    # got a larger cap than the first plan gave it.
    assert [r.tokens_allocated for r in results] == [838, 870, 886, 998, 0, 0]
    assert all(r.tokens_allocated > p.output_tokens
               for r, p in zip(results[1:4], first.rows[1:4], strict=True))
    assert [r.usage.completion_tokens for r in results] == [750, 848, 765, 998, 0, 0]
    assert [r.status for r in results] == ["ok"] * 4 + ["unfunded"] * 2
    assert _ledger_matches_server(session, sim) == 3473


async def test_arun_concurrent_keeps_order_and_budget(sim, make_session) -> None:
    session = make_session(budget_tokens=6000, max_concurrency=4)
    subtasks = batch(easy=6, hard=3)
    seen: list[int] = []
    results = await session.arun(subtasks, on_result=lambda r: seen.append(r.index), seed=0)

    assert [r.index for r in results] == list(range(9))
    assert [r.subtask_id for r in results] == [s.id for s in subtasks]
    assert sorted(seen) == list(range(9))  # on_result saw every subtask once
    assert [r.status for r in results[6:]] == ["unfunded"] * 3
    assert len(sim.requests) == sum(r.ok for r in results)
    assert all(q.requested_cap == r.tokens_allocated for q in sim.requests
               for r in results if r.subtask_id == q.item)
    assert _ledger_matches_server(session, sim) <= 6000


def test_fallback_model_answers_what_was_priced_out(sim, make_session) -> None:
    session = make_session(budget_tokens=5000, max_concurrency=1, on_unfunded="fallback",
                           fallback_model="openai/qwen3-0.6b", fallback_max_tokens=256)
    results = session.run(batch(easy=2, hard=2), seed=0)

    assert [(r.status, r.fallback, r.model) for r in results] == [
        ("ok", False, MODEL), ("ok", False, MODEL),
        ("ok", True, "openai/qwen3-0.6b"), ("ok", True, "openai/qwen3-0.6b")]
    assert [r.tokens_allocated for r in results] == [2454, 2966, 256, 256]
    assert [r.usage for r in results[2:]] == [Usage(27, 256, 256)] * 2
    assert [(q.model, q.item, q.requested_cap) for q in sim.requests[2:]] == [
        ("qwen3-0.6b", "aime24/2024-I-1", 256), ("qwen3-0.6b", "aime24/2024-I-10", 256)]
    assert all(r.call_ids[0].endswith("-fallback") for r in results[2:])
    assert _ledger_matches_server(session, sim) == 28 + 750 + 28 + 2465 + 2 * (27 + 256)


def test_fallback_that_does_not_fit_is_unfunded(sim, make_session) -> None:
    # 3,000 tokens: the easy calls leave 28, less than a fallback's 41 + 256.
    session = make_session(budget_tokens=3000, max_concurrency=1, on_unfunded="fallback",
                           fallback_model="openai/qwen3-0.6b", fallback_max_tokens=256)
    results = session.run(batch(easy=2, hard=2), seed=0)
    assert [r.status for r in results] == ["ok", "ok", "unfunded", "unfunded"]
    assert {q.model for q in sim.requests} == {"deepscaler-1.5b"}
    assert _ledger_matches_server(session, sim) == 2972


PRICES = {MODEL: {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6}}


def test_usd_budget_is_spent_at_the_model_price(sim, make_session) -> None:
    session = make_session(budget_usd=0.01, max_concurrency=1, prices=PRICES)
    results = session.run(batch(easy=6, hard=3), seed=0)

    assert [r.status for r in results] == ["ok"] * 3 + ["unfunded"] * 6
    assert [r.usage for r in results[:3]] == [Usage(28, 750, 740), Usage(28, 853, 853),
                                               Usage(28, 848, 834)]
    assert [r.cost_usd for r in results[:3]] == [
        pytest.approx(28e-6 + 750 * 4e-6), pytest.approx(28e-6 + 853 * 4e-6),
        pytest.approx(28e-6 + 848 * 4e-6)]
    server_usd = sum(q.prompt_tokens * 1e-6 + q.completion_tokens * 4e-6 for q in sim.requests)
    balance = session.remaining()
    assert balance.spent_usd == pytest.approx(server_usd, abs=1e-9)
    assert balance.spent_usd == pytest.approx(sum(r.cost_usd for r in results[:3]), abs=1e-9)
    assert server_usd <= 0.01 and balance.reserved_nano_usd == 0


def test_usd_budget_without_a_price_is_refused(sim) -> None:
    with pytest.raises(MissingPriceError, match=r"no price for model 'openai/deepscaler-1.5b'.*"
                                                r"input_cost_per_token"):
        BudgetSession(budget_usd=1.0, model=MODEL, api_base=sim.base_url, api_key="k")
    assert sim.requests == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget_tokens": -1}, r"budget_tokens must be an integer >= 0; got -1"),
        ({"budget_usd": -0.5}, r"budget_usd must be finite and in \[0, inf\); got -0.5"),
        ({"max_concurrency": 0}, r"max_concurrency must be an integer >= 1; got 0"),
        ({"granularity": 0}, r"granularity must be an integer >= 1; got 0"),
        ({"max_output_tokens": 8}, r"max_output_tokens must be an integer >= 16; got 8"),
        ({"policy": "cheapest"}, "policy must be one of"),
        ({"on_unfunded": "ignore"}, "on_unfunded must be"),
        ({"on_unfunded": "fallback"}, "needs fallback_model"),
        ({"model": ""}, "model is required"),
    ],
)
def test_bad_options_name_the_field(options: dict, message: str) -> None:
    options = {"budget_tokens": 1000, "model": MODEL, **options}
    with pytest.raises((ValueError, TypeError), match=message):
        BudgetSession(**options)


def test_one_subtask_of_unknown_kind_uses_the_prior(sim, make_session) -> None:
    session = make_session(budget_tokens=4000)
    [result] = session.run([subtask("math500/test/algebra/1004.json")], seed=0)
    assert (result.status, result.usage) == ("ok", Usage(28, 750, 740))
    assert _ledger_matches_server(session, sim) == 778


def test_a_second_batch_gets_only_what_the_first_left(sim, make_session) -> None:
    session = make_session(budget_tokens=5000, max_concurrency=1)
    first = session.run(batch(easy=6), seed=0)
    left = 5000 - sum(r.usage.total_tokens for r in first)
    assert session.remaining().available_tokens == left == 28
    second = session.run(batch(easy=2), seed=0)  # 28 tokens fund no 42-token prompt
    assert [r.status for r in second] == ["unfunded", "unfunded"]
    assert len(sim.requests) == sum(r.ok for r in first)
