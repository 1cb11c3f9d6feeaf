"""with_budget over real LangChain chains and models, against the simulator over HTTP."""

from __future__ import annotations

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import (
    BudgetExhaustedError,
    ChatClear,
    with_budget,
)
from clear_middleware.session import SubtaskResult
from clear_middleware.simulator import SimulatorServer, item_marker

from .conftest import SIM_MODEL, items, sim_session

PROMPT = ChatPromptTemplate.from_template("{marker} Solve the problem.")
# A task kind worth nothing below 6,000 output tokens (a shifted surge is 0 below its threshold).
HARD = ShiftedSurge(ceiling=0.9, threshold=6_000, rate=1 / 500)


def _inputs(count: int) -> list[dict[str, str]]:
    return [{"marker": item_marker(item)} for item in items(count)]


def _next_seq(sim: SimulatorServer) -> int:
    return max((r.seq for r in sim.requests), default=-1) + 1


def _served_since(sim: SimulatorServer, start: int):
    return [r for r in sim.requests if r.seq >= start]


def _spent_on(served) -> int:
    return sum(r.prompt_tokens + r.completion_tokens for r in served)


def test_batch_of_50_plans_first_never_exceeds_and_returns_unfunded_in_place(sim):
    session = sim_session(sim, budget_tokens=40_000)
    chain = PROMPT | ChatClear(session=session) | StrOutputParser()
    budgeted = with_budget(chain, session)
    inputs = _inputs(50)
    expected = session.plan([budgeted._subtask(x, i) for i, x in enumerate(inputs)])
    assert 0 < len(expected.funded) < 50  # the budget is scarce: CLEAR abandons some
    start = _next_seq(sim)

    outputs = budgeted.batch(inputs, config={"max_concurrency": 8})

    assert len(outputs) == 50
    served = _served_since(sim, start)
    # First wave: exactly the plan of all 50, each with its planned cap reaching the model
    # call inside the chain.
    first = served[:len(expected.funded)]
    assert {r.item: r.requested_cap for r in first} == {
        items(50)[i]: expected.rows[i].output_tokens for i in expected.funded}
    # Later waves: only inputs the first plan abandoned, re-planned on the tokens returned.
    later = {r.item for r in served[len(expected.funded):]}
    assert later <= {items(50)[i] for i in expected.abandoned}
    finished = {r.item: r.finish_reason == "stop" for r in served}
    for index, output in enumerate(outputs):
        item = items(50)[index]
        if item in finished:  # the answer, or nothing when the cap cut the reasoning
            assert isinstance(output, str)
            assert output.startswith("The final answer is") if finished[item] else output == ""
        else:  # never sent: the unfunded result, in place
            assert isinstance(output, SubtaskResult)
            assert (output.status, output.index) == ("unfunded", index) and output.price > 0
    assert any(isinstance(o, SubtaskResult) for o in outputs)
    balance = session.remaining()
    assert balance.spent_tokens == _spent_on(served) <= 40_000
    assert balance.reserved_tokens == 0


async def test_abatch_plans_first_and_returns_unfunded_in_place(sim):
    session = sim_session(sim, budget_tokens=25_000)
    budgeted = with_budget(PROMPT | ChatClear(session=session), session)
    inputs = _inputs(20)
    expected = session.plan([budgeted._subtask(x, i) for i, x in enumerate(inputs)])
    assert 0 < len(expected.funded) < 20
    start = _next_seq(sim)
    outputs = await budgeted.abatch(inputs, config={"max_concurrency": 4})
    funded = [i for i, o in enumerate(outputs) if not isinstance(o, SubtaskResult)]
    assert set(funded) >= set(expected.funded) and len(funded) < 20
    first = _served_since(sim, start)[:len(expected.funded)]
    assert {r.item for r in first} == {items(20)[i] for i in expected.funded}
    assert all(o.status == "unfunded" for o in outputs if isinstance(o, SubtaskResult))
    assert session.remaining().spent_tokens <= 25_000
    assert session.remaining().reserved_tokens == 0


def test_a_call_refused_at_reservation_is_unfunded_in_place_not_raised(sim):
    # Planning sees a 1-token prompt, but each call really sends a long preamble (632 tokens
    # reserved): the plan over-commits, and the ledger refuses the calls that no longer fit.
    # No exception escapes the batch.
    long_prompt = ChatPromptTemplate.from_template("{marker} " + "Think it through. " * 100)
    session = sim_session(sim, budget_tokens=12_000)
    budgeted = with_budget(long_prompt | ChatClear(session=session), session,
                           prompt=lambda _: "x")
    planned = session.plan(["x"] * 6)
    # 5 x (12 + 2,388) = 12,000 tokens planned; each call reserves 632 + 2,388 = 3,020, so only
    # 3 fit at once.
    assert len(planned.funded) == 5
    assert {planned.rows[i].output_tokens for i in planned.funded} == {2_388}
    sim.delay_next(5, seconds=0.3)  # hold replies so every reservation comes before a commit
    outputs = budgeted.batch(_inputs(6), config={"max_concurrency": 6})
    refused = [i for i, o in enumerate(outputs) if isinstance(o, SubtaskResult)]
    answered = [i for i, o in enumerate(outputs) if not isinstance(o, SubtaskResult)]
    assert answered and set(refused) & set(planned.funded)  # planned, then refused
    assert all(outputs[i].status == "unfunded" for i in refused)
    assert session.remaining().spent_tokens <= 12_000
    assert "refuse" in [e.kind for e in session.statement()]


def test_invoke_prices_one_call_at_the_current_price(sim):
    session = sim_session(sim, budget_tokens=40_000)
    budgeted = with_budget(PROMPT | ChatClear(session=session) | StrOutputParser(), session)
    value = _inputs(1)[0]
    quote = session.quote(budgeted._subtask(value, 0))
    answer = budgeted.invoke(value)
    assert answer.startswith("The final answer is")
    assert sim.requests[-1].requested_cap == quote.output_tokens
    assert session.remaining().spent_tokens == _spent_on(sim.requests[-1:])


async def test_ainvoke_returns_the_unfunded_result_when_the_budget_is_spent(sim):
    # 40 tokens left: less than the smallest call, prompt (36 reserved) + min_output_tokens 16.
    session = sim_session(sim, budget_tokens=40)
    budgeted = with_budget(PROMPT | ChatClear(session=session), session)
    value = _inputs(1)[0]
    assert session.quote(budgeted._subtask(value, 0)).prompt_tokens == 36
    before = len(sim.requests)
    result = await budgeted.ainvoke(value)
    assert isinstance(result, SubtaskResult) and result.status == "unfunded"
    assert result.price is not None and result.price > 0
    assert len(sim.requests) == before  # nothing was sent
    assert session.remaining().spent_tokens == 0


def test_stream_applies_the_cap_and_refuses_when_unfunded(sim):
    session = sim_session(sim, budget_tokens=40_000)
    budgeted = with_budget(PROMPT | ChatClear(session=session) | StrOutputParser(), session)
    value = _inputs(2)[1]
    quote = session.quote(budgeted._subtask(value, 0))
    text = "".join(budgeted.stream(value))
    served = sim.requests[-1]
    assert served.streamed and served.requested_cap == quote.output_tokens
    assert text.startswith("The final answer is")
    assert session.remaining().spent_tokens == served.prompt_tokens + served.completion_tokens
    # A kind with no value below 6,000 output tokens, on a session with 500: priced out.
    poor = sim_session(sim, budget_tokens=500, estimator=StaticEstimator({"hard": HARD}))
    before = len(sim.requests)
    with pytest.raises(BudgetExhaustedError) as refused:
        next(iter(with_budget(PROMPT | ChatClear(session=session), poor,
                              kind="hard").stream(value)))
    assert refused.value.requested_tokens == 0 and refused.value.price > 0
    assert len(sim.requests) == before and poor.statement() == []


async def test_astream_settles_the_streamed_call(sim):
    session = sim_session(sim, budget_tokens=40_000)
    budgeted = with_budget(PROMPT | ChatClear(session=session) | StrOutputParser(), session)
    text = "".join([chunk async for chunk in budgeted.astream(_inputs(3)[2])])
    served = sim.requests[-1]
    assert text.startswith("The final answer is") and served.streamed
    assert session.remaining().spent_tokens == served.prompt_tokens + served.completion_tokens


def test_third_party_model_gets_max_tokens_bound_and_is_accounted(sim):
    session = sim_session(sim, budget_tokens=40_000)
    model = ChatOpenAI(model=SIM_MODEL, base_url=sim.base_url, api_key="sim", max_retries=0)
    chain = PROMPT | model.bind(temperature=0) | StrOutputParser()
    budgeted = with_budget(chain, session)
    inputs = _inputs(4)
    expected = session.plan([budgeted._subtask(x, i) for i, x in enumerate(inputs)])
    start = _next_seq(sim)
    outputs = budgeted.batch(inputs)
    served = _served_since(sim, start)
    assert len(served) == len(expected.funded) == sum(isinstance(o, str) for o in outputs)
    caps = {r.item: r.requested_cap for r in served}
    for index in expected.funded:
        assert caps[items(4)[index]] == expected.rows[index].output_tokens
    assert session.remaining().spent_tokens == _spent_on(served)
    assert chain.steps[1].bound.max_tokens is None  # the user's chain is left as it was


def test_the_cap_reaches_a_model_hidden_in_a_lambda(sim):
    session = sim_session(sim, budget_tokens=40_000)
    llm = ChatClear(session=session)

    def solve(value: dict) -> str:  # a nested chain the wrapper cannot see into
        return (PROMPT | llm | StrOutputParser()).invoke(value)

    budgeted = with_budget(RunnableLambda(solve), session,
                           prompt=lambda v: PROMPT.invoke(v).to_string())
    value = _inputs(5)[4]
    quote = session.quote(budgeted._subtask(value, 0))
    assert budgeted.invoke(value).startswith("The final answer is")
    assert sim.requests[-1].requested_cap == quote.output_tokens


def test_with_budget_needs_a_session():
    with pytest.raises(TypeError, match="BudgetSession"):
        with_budget(PROMPT, session="not a session")  # type: ignore[arg-type]
