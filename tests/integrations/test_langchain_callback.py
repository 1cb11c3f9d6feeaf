"""The callback handlers on any chat model: ChatOpenAI against the simulator over HTTP, and a
fake model without usage. Reserve before, settle after (streams too), release on error."""

from __future__ import annotations

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import (
    AsyncClearBudgetCallbackHandler,
    BudgetExhaustedError,
    ChatClear,
    ClearBudgetCallbackHandler,
)
from clear_middleware.session import BudgetSession

from .conftest import SIM_MODEL, sim_session

QUESTION = "[[item:aime24/2024-I-1]] Find the answer."
# A task kind worth nothing below 6,000 output tokens (a shifted surge is 0 below its threshold).
HARD = ShiftedSurge(ceiling=0.9, threshold=6_000, rate=1 / 500)


def _openai(sim, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(model=SIM_MODEL, base_url=sim.base_url, api_key="sim", max_retries=0,
                      **kwargs)


def _kinds(session: BudgetSession) -> list[str]:
    return [e.kind for e in session.statement()]


def test_any_chat_model_is_reserved_at_its_cap_and_settled_from_usage(sim):
    session = sim_session(sim, budget_tokens=30_000)
    handler = ClearBudgetCallbackHandler(session)
    message = _openai(sim, max_tokens=3_000).invoke(QUESTION, config={"callbacks": [handler]})
    reserve, commit = session.statement()
    prompt_reserve = session.quote(QUESTION).prompt_tokens
    assert reserve.tokens == prompt_reserve + 3_000  # counted before the call, at its cap
    served = sim.requests[-1]
    assert served.requested_cap == 3_000
    assert commit.tokens == message.usage_metadata["total_tokens"] == (
        served.prompt_tokens + served.completion_tokens)
    assert handler.open_calls == 0 and handler.refused == 0


def test_without_a_cap_the_call_is_reserved_at_the_quote(sim):
    session = sim_session(sim, budget_tokens=30_000)
    quote = session.quote(QUESTION)
    _openai(sim).invoke(QUESTION, config={"callbacks": [ClearBudgetCallbackHandler(session)]})
    reserve, commit = session.statement()
    assert reserve.tokens == quote.prompt_tokens + quote.output_tokens
    served = sim.requests[-1]
    assert served.requested_cap is None  # a callback cannot cap the provider call
    assert commit.tokens == served.prompt_tokens + served.completion_tokens


def test_streamed_calls_are_settled_from_the_merged_stream(sim):
    session = sim_session(sim, budget_tokens=30_000)
    handler = ClearBudgetCallbackHandler(session)
    text = "".join(c.text for c in _openai(sim, max_tokens=4_096, stream_usage=True).stream(
        QUESTION, config={"callbacks": [handler]}))
    served = sim.requests[-1]
    assert served.streamed and text == "The final answer is $\\boxed{204}$."
    assert _kinds(session) == ["reserve", "commit"]
    assert session.statement()[1].tokens == served.prompt_tokens + served.completion_tokens


def test_a_stream_without_usage_is_charged_its_reservation(sim):
    session = sim_session(sim, budget_tokens=30_000)
    for _ in _openai(sim, max_tokens=2_000, stream_usage=False).stream(
            QUESTION, config={"callbacks": [ClearBudgetCallbackHandler(session)]}):
        pass
    reserve, commit = session.statement()
    assert commit.tokens == reserve.tokens and "no_usage" in commit.reason


def test_unfundable_calls_are_refused_with_a_typed_error_and_never_sent(sim):
    before = len(sim.requests)
    session = sim_session(sim, budget_tokens=2_000)
    handler = ClearBudgetCallbackHandler(session)
    with pytest.raises(BudgetExhaustedError) as over:
        _openai(sim, max_tokens=3_000).invoke(QUESTION, config={"callbacks": [handler]})
    assert over.value.available_tokens == 2_000 and over.value.requested_tokens > 3_000
    # No cap: the quote prices it. The handler's kind has no value below 6,000 output tokens,
    # far above the 500 the session has, so the price abandons it (nothing is reserved).
    hard = sim_session(sim, budget_tokens=500, estimator=StaticEstimator({"hard": HARD}))
    with pytest.raises(BudgetExhaustedError) as abandoned:
        _openai(sim).invoke(QUESTION, config={"callbacks": [
            ClearBudgetCallbackHandler(hard, kind="hard")]})
    assert abandoned.value.requested_tokens == 0 and abandoned.value.price > 0
    assert _kinds(hard) == []
    assert len(sim.requests) == before
    assert handler.refused == 1 and _kinds(session) == ["refuse"]


def test_raise_error_false_only_watches(sim):
    session = sim_session(sim, budget_tokens=2_000)
    handler = ClearBudgetCallbackHandler(session, raise_error=False)
    before = len(sim.requests)
    _openai(sim, max_tokens=3_000).invoke(QUESTION, config={"callbacks": [handler]})
    assert len(sim.requests) == before + 1  # sent anyway, unaccounted
    assert handler.refused == 1 and session.remaining().spent_tokens == 0


def test_a_failed_call_is_released(sim):
    session = sim_session(sim, budget_tokens=30_000)
    handler = ClearBudgetCallbackHandler(session)
    sim.fail_next(1, status=400)
    with pytest.raises(Exception, match="injected fault"):
        _openai(sim, max_tokens=1_000).invoke(QUESTION, config={"callbacks": [handler]})
    assert _kinds(session) == ["reserve", "release"]
    assert session.remaining().available_tokens == 30_000 and handler.open_calls == 0


async def test_async_handler_reserves_settles_and_refuses(sim):
    session = sim_session(sim, budget_tokens=30_000)
    handler = AsyncClearBudgetCallbackHandler(session)
    model = _openai(sim, max_tokens=3_000, stream_usage=True)
    message = await model.ainvoke(QUESTION, config={"callbacks": [handler]})
    chunks = [c async for c in model.astream(QUESTION, config={"callbacks": [handler]})]
    assert len(chunks) > 1
    assert _kinds(session) == ["reserve", "commit"] * 2
    assert session.remaining().spent_tokens == 2 * message.usage_metadata["total_tokens"]
    poor = AsyncClearBudgetCallbackHandler(sim_session(sim, budget_tokens=2_000))
    with pytest.raises(BudgetExhaustedError):
        await model.ainvoke(QUESTION, config={"callbacks": [poor]})


def test_a_model_without_usage_is_charged_its_reservation():
    session = BudgetSession(budget_tokens=10_000, model="openai/gpt-4o-mini")
    model = GenericFakeChatModel(messages=iter([AIMessage("fine")]))
    model.invoke("hi", max_tokens=100,
                 config={"callbacks": [ClearBudgetCallbackHandler(session)]})
    reserve, commit = session.statement()
    assert reserve.tokens == commit.tokens == 100 + session.quote("hi").prompt_tokens


def test_chat_clear_runs_are_left_to_chat_clear(sim):
    session = sim_session(sim, budget_tokens=30_000)
    ChatClear(session=session).invoke(QUESTION, config={"callbacks": [
        ClearBudgetCallbackHandler(session)]})
    assert _kinds(session) == ["reserve", "commit"]  # counted once, by ChatClear


def test_handler_needs_a_session():
    with pytest.raises(TypeError, match="BudgetSession"):
        ClearBudgetCallbackHandler(object())  # type: ignore[arg-type]
