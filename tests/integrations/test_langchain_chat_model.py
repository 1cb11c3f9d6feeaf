"""ChatClear over HTTP: budgets, refusals, failures, streams, tools and provider settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import BudgetExhaustedError, ChatClear
from clear_middleware.session import BudgetSession
from clear_middleware.simulator import item_marker

from .conftest import MODEL, items, sim_session
from .tool_server import ToolServer

QUESTION = f"{item_marker('aime24/2024-I-1')} Find the answer."


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(scope="module")
def tools() -> Iterator[ToolServer]:
    with ToolServer() as server:
        yield server


def test_without_a_session_it_is_a_plain_litellm_chat_model(sim):
    llm = ChatClear(model=MODEL, api_base=sim.base_url, api_key="sim")
    message = llm.invoke(QUESTION, seed=1)
    assert message.content == "The final answer is $\\boxed{204}$."
    assert message.usage_metadata == {"input_tokens": 23, "output_tokens": 2612,
                                      "total_tokens": 2635,
                                      "output_token_details": {"reasoning": 2602}}
    assert message.response_metadata == {"model_name": MODEL, "finish_reason": "stop"}
    assert message.additional_kwargs["reasoning_content"].startswith("[[run:330]]")
    assert sim.requests[-1].requested_cap is None  # no budget, no cap
    assert ChatClear(model=MODEL, max_tokens=700, api_base=sim.base_url,
                     api_key="sim").invoke(QUESTION).usage_metadata["output_tokens"] == 700


def test_with_a_session_each_call_is_quoted_reserved_and_settled(sim):
    session = sim_session(sim, budget_tokens=30_000)
    llm = ChatClear(session=session)
    assert llm.model == MODEL
    quote = session.quote(QUESTION)
    message = llm.invoke(QUESTION)
    served = sim.requests[-1]
    assert served.requested_cap == quote.output_tokens
    reserve, commit = session.statement()
    assert (reserve.kind, reserve.tokens) == ("reserve", quote.prompt_tokens + quote.output_tokens)
    assert (commit.kind, commit.tokens) == ("commit", message.usage_metadata["total_tokens"])
    assert commit.tokens == served.prompt_tokens + served.completion_tokens


def test_explicit_cap_wins_and_the_model_max_tokens_is_a_ceiling(sim):
    session = sim_session(sim, budget_tokens=30_000)
    ChatClear(session=session).bind(max_tokens=900).invoke(QUESTION)
    assert sim.requests[-1].requested_cap == 900
    ChatClear(session=session, max_tokens=500).bind(max_tokens=900).invoke(QUESTION)
    assert sim.requests[-1].requested_cap == 500
    ChatClear(session=session, max_tokens=600).invoke(QUESTION)  # quote, clipped
    assert sim.requests[-1].requested_cap == 600


def test_a_call_the_session_cannot_fund_is_refused_and_never_sent(sim):
    before = len(sim.requests)
    # The session's curve has no value below 6,000 output tokens, far above its 800: the price
    # abandons the call before any reservation is tried.
    hard = StaticEstimator(default=ShiftedSurge(ceiling=0.9, threshold=6_000, rate=1 / 500))
    session = sim_session(sim, budget_tokens=800, estimator=hard)
    with pytest.raises(BudgetExhaustedError) as refused:
        ChatClear(session=session).invoke(QUESTION)
    assert refused.value.price is not None and refused.value.requested_tokens == 0
    assert session.statement() == []
    with pytest.raises(BudgetExhaustedError) as over:
        ChatClear(session=sim_session(sim, budget_tokens=800)).bind(max_tokens=1000).invoke(
            QUESTION)
    assert over.value.requested_tokens > 1000 and over.value.available_tokens == 800
    assert len(sim.requests) == before


def test_a_failed_call_releases_its_reservation(sim):
    session = sim_session(sim, budget_tokens=30_000)
    sim.fail_next(1, status=400)
    with pytest.raises(Exception, match="injected fault"):
        ChatClear(session=session).invoke(QUESTION)
    assert [e.kind for e in session.statement()] == ["reserve", "release"]
    assert session.remaining().available_tokens == 30_000


async def test_async_invoke_and_stream_settle_what_the_provider_reported(sim):
    session = sim_session(sim, budget_tokens=30_000)
    llm = ChatClear(session=session)
    message = await llm.ainvoke(QUESTION)
    full = None
    async for chunk in llm.astream(QUESTION):
        full = chunk if full is None else full + chunk
    assert isinstance(full, AIMessageChunk) and full.content == message.content
    assert full.usage_metadata == message.usage_metadata
    assert sim.requests[-1].streamed
    assert session.remaining().spent_tokens == 2 * message.usage_metadata["total_tokens"]


def test_a_stream_abandoned_early_is_charged_its_reservation(sim):
    session = sim_session(sim, budget_tokens=30_000)
    stream = ChatClear(session=session).stream(QUESTION)
    next(stream)
    stream.close()
    reserve, commit = session.statement()
    assert commit.kind == "commit" and commit.tokens == reserve.tokens
    assert "no_usage" in commit.reason


def test_model_override_per_call(sim):
    llm = ChatClear(model=MODEL, api_base=sim.base_url, api_key="sim")
    message = llm.invoke(QUESTION, model="openai/qwen3-1.7b")
    assert sim.requests[-1].model == "qwen3-1.7b"
    assert message.response_metadata["model_name"] == "openai/qwen3-1.7b"


def test_tool_calls_are_parsed(tools):
    llm = ChatClear(model="openai/tool-model", api_base=tools.base_url, api_key="x")
    message = llm.bind_tools([add], tool_choice="any").invoke("What is 1 + 2?")
    assert message.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1",
                                   "type": "tool_call"}]
    body = tools.bodies[-1]
    assert body["tool_choice"] == "required"
    assert body["tools"][0]["function"]["name"] == "add"
    llm.bind_tools([add], tool_choice="add").invoke("What is 1 + 2?")
    assert tools.bodies[-1]["tool_choice"] == {"type": "function", "function": {"name": "add"}}


def test_streamed_tool_calls_merge(tools):
    llm = ChatClear(model="openai/tool-model", api_base=tools.base_url, api_key="x")
    full = None
    for chunk in llm.bind_tools([add]).stream("What is 1 + 2?"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1",
                                "type": "tool_call"}]
    assert full.usage_metadata["total_tokens"] == 52


def test_the_budgeted_cap_becomes_the_provider_settings(tools):
    # o4-mini is an OpenAI reasoning model: the cap goes out as max_completion_tokens with a
    # reasoning effort chosen by budget (clear_middleware.dispatch.provider_settings).
    session = BudgetSession(budget_tokens=30_000, model="openai/o4-mini",
                            api_base=tools.base_url, api_key="x")
    ChatClear(session=session).bind(max_tokens=5_000).invoke("Plan a trip.")
    body = tools.bodies[-1]
    assert body["max_completion_tokens"] == 5_000 and body["reasoning_effort"] == "medium"
    assert "max_tokens" not in body
    assert session.remaining().spent_tokens == 52


def test_needs_a_model_or_a_session():
    with pytest.raises(ValueError, match="model"):
        ChatClear()
    assert items(1)  # the simulator catalog is there for the tests above
