"""BudgetSession's one-call API (quote / reserve_call / settle_call / release_call), sync and
async: what framework adapters use to price, hold and settle calls they send themselves."""

from __future__ import annotations

import pytest

from clear_middleware.dispatch import provider_settings
from clear_middleware.estimators import CallObservation, StaticEstimator
from clear_middleware.ledger import BudgetExceeded
from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.usage import Usage

MODEL = "openai/o4-mini"
PROMPT = "What is 2+2?"  # 14 tokens for o4-mini (o200k_base); reserved at 21 (prior x1.5)


class RecordingEstimator(StaticEstimator):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[CallObservation] = []

    def observe(self, observation: CallObservation) -> None:
        self.seen.append(observation)


def test_quote_is_the_plan_of_one_call():
    session = BudgetSession(budget_tokens=5_000, model=MODEL)
    quote = session.quote(PROMPT)
    row = session.plan([PROMPT]).rows[0]
    assert (quote.output_tokens, quote.prompt_tokens) == (row.output_tokens, row.prompt_tokens)
    assert quote.prompt_tokens == 21 and quote.funded
    assert quote.settings == provider_settings(MODEL, quote.output_tokens).kwargs
    assert session.current_price == quote.price
    assert session.remaining().reserved_tokens == 0  # a quote holds nothing


def test_quote_plans_the_expected_calls_together():
    session = BudgetSession(budget_tokens=20_000, model=MODEL)
    alone = session.quote(PROMPT).output_tokens
    four = session.quote(PROMPT, expected_calls=4)
    assert four.expected_calls == 4
    assert four.output_tokens == max(r.output_tokens for r in session.plan([PROMPT] * 4).rows)
    assert four.output_tokens < alone  # four calls share what one would get alone
    assert four.output_tokens + 3 * 21 < 20_000 / 2  # and far less than the whole budget


def test_quote_holds_back_a_final_answer():
    session = BudgetSession(budget_tokens=5_000, model=MODEL)
    quote = session.quote(PROMPT, final_answer_tokens=256)
    assert quote.held_tokens == 21 + 256
    assert quote.output_tokens + quote.prompt_tokens <= 5_000 - 277
    # A lone call gets all that is not held back, on the 16-token grid of prompt + output:
    # (5,000 - 277) // 16 * 16 - 21 = 4,699.
    assert quote.output_tokens == 4_699
    # It is refused once what is left after the 277 held tokens buys no cap worth a 0.1%
    # chance (the prior reaches 0.001 at 168 output tokens). With 468 tokens it is funded
    # alone (464 - 21 = 443) but not with the final answer held ((468 - 277) // 16 * 16 - 21
    # = 155 tokens, worth 0.0005); with 469 it is, at 192 - 21 = 171 (worth 0.0012).
    tight = BudgetSession(budget_tokens=468, model=MODEL)
    assert tight.quote(PROMPT).output_tokens == 443
    assert not tight.quote(PROMPT, final_answer_tokens=256).funded
    assert tight.quote(PROMPT, final_answer_tokens=256).settings == {}
    just = BudgetSession(budget_tokens=469, model=MODEL)
    assert just.quote(PROMPT, final_answer_tokens=256).output_tokens == 171


def test_quote_validates_its_arguments():
    session = BudgetSession(budget_tokens=5_000, model=MODEL)
    with pytest.raises(ValueError, match="expected_calls"):
        session.quote(PROMPT, expected_calls=0)
    with pytest.raises(ValueError, match="final_answer_tokens"):
        session.quote(PROMPT, final_answer_tokens=-1)
    with pytest.raises(ValueError, match="at least one chat message"):
        session.quote([])


def test_reserve_settle_and_release_move_the_balance_exactly():
    estimator = RecordingEstimator()
    session = BudgetSession(budget_tokens=5_000, model=MODEL, estimator=estimator)
    ticket = session.reserve_call(Subtask.of(PROMPT, kind="step", id="step-1"),
                                  output_tokens=1_000)
    assert (ticket.prompt_estimate, ticket.prompt_tokens, ticket.output_tokens) == (14, 21, 1_000)
    assert ticket.call_id.endswith("/step-1") and ticket.kind == "step"
    assert ticket.reserved_tokens == 1_021
    balance = session.remaining()
    assert (balance.reserved_tokens, balance.available_tokens) == (1_021, 3_979)

    settlement = session.settle_call(ticket, Usage(14, 300, 200), finish_reason="length")
    assert (settlement.charged_tokens, settlement.returned_tokens) == (314, 707)
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens, balance.available_tokens) == (
        314, 0, 4_686)
    assert session.prompt_margin.observations(MODEL) == 1
    assert estimator.seen == [CallObservation(call_id=ticket.call_id, kind="step", model=MODEL,
                                              cap=1_000, completion_tokens=300, finished=False,
                                              digest=ticket.digest)]
    assert ticket.digest == Subtask.of(PROMPT, kind="step").digest

    failed = session.reserve_call(PROMPT, output_tokens=500)
    session.release_call(failed)
    assert session.remaining().available_tokens == 4_686
    assert [e.kind for e in session.statement()] == ["reserve", "commit", "reserve", "release"]


def test_a_call_that_does_not_fit_is_refused_and_holds_nothing():
    session = BudgetSession(budget_tokens=500, model=MODEL)
    with pytest.raises(BudgetExceeded) as refused:
        session.reserve_call(PROMPT, output_tokens=480)  # 21 + 480 = 501 > 500
    assert refused.value.requested_tokens == 501
    assert session.remaining().reserved_tokens == 0
    assert [e.kind for e in session.statement()] == ["refuse"]
    with pytest.raises(ValueError, match="output_tokens"):
        session.reserve_call(PROMPT, output_tokens=0)


def test_no_usage_is_charged_at_the_reservation():
    session = BudgetSession(budget_tokens=5_000, model=MODEL)
    ticket = session.reserve_call(PROMPT, output_tokens=400)
    assert session.settle_call(ticket, None).charged_tokens == 421
    assert session.remaining().spent_tokens == 421
    assert session.prompt_margin.observations(MODEL) == 0


def test_usd_budget_reserves_usd_at_the_model_price():
    prices = {MODEL: {"input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06}}
    session = BudgetSession(budget_usd=0.01, model=MODEL, prices=prices)
    ticket = session.reserve_call(PROMPT, output_tokens=1_000)
    assert session.remaining().reserved_usd == pytest.approx(21e-06 + 4e-03)
    session.settle_call(ticket, Usage(14, 100, 0))
    assert session.remaining().spent_usd == pytest.approx(14e-06 + 4e-04)


def test_tools_count_as_prompt():
    session = BudgetSession(budget_tokens=5_000, model=MODEL)
    tool = {"type": "function", "function": {
        "name": "add", "description": "Add two integers.",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer"}}}}}
    bare = session.reserve_call(PROMPT, output_tokens=100)
    with_tools = session.reserve_call(PROMPT, output_tokens=100, tools=[tool])
    assert with_tools.prompt_estimate > bare.prompt_estimate


async def test_async_api_matches_the_sync_one():
    session = BudgetSession(budget_tokens=5_000, model=MODEL)
    quote = await session.aquote(PROMPT, expected_calls=2, final_answer_tokens=100)
    assert quote == session.quote(PROMPT, expected_calls=2, final_answer_tokens=100)
    ticket = await session.areserve_call(PROMPT, output_tokens=1_000)
    assert session.remaining().available_tokens == 3_979
    await session.asettle_call(ticket, Usage(14, 300, 0))
    assert session.remaining().spent_tokens == 314
    other = await session.areserve_call(PROMPT, output_tokens=10)
    await session.arelease_call(other)
    none = await session.areserve_call(PROMPT, output_tokens=10)
    assert (await session.asettle_call(none, None)).charged_tokens == 31
    assert session.remaining().available_tokens == 5_000 - 314 - 31
