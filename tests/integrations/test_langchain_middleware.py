"""ClearBudgetMiddleware in real LangChain v1 agents (create_agent)."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.utils.function_calling import convert_to_openai_tool

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import (
    BudgetExhaustedError,
    ChatClear,
    ClearBudgetCallbackHandler,
    ClearBudgetMiddleware,
)
from clear_middleware.integrations.langchain.middleware import DEFAULT_WRAP_UP_PROMPT
from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.simulator import item_marker
from clear_middleware.tokens import count_message_tokens

from .conftest import items, sim_session
from .fakes import ToolLoopModel, lookup

MODEL = "openai/gpt-4o-mini"
QUESTION = "Find the answer."
# Agent steps are short: a curve that saturates at about 1,400 output tokens (99.9% of its
# ceiling at 1,435).
STEP_CURVE = ShiftedSurge(ceiling=0.9, threshold=50, rate=1 / 150)


def _session(budget_tokens: int) -> BudgetSession:
    return BudgetSession(budget_tokens=budget_tokens, model=MODEL,
                         estimator=StaticEstimator({"agent-step": STEP_CURVE}))


def _agent(model, session: BudgetSession, **kwargs):
    kwargs.setdefault("expected_calls", 4)
    kwargs.setdefault("wrap_up_tokens", 200)
    return create_agent(model, tools=[lookup], middleware=[ClearBudgetMiddleware(session,
                                                                                  **kwargs)])


def _held(session: BudgetSession, wrap_up_tokens: int) -> int:
    instruction = count_message_tokens([{"role": "user", "content": DEFAULT_WRAP_UP_PROMPT}],
                                       MODEL)
    return wrap_up_tokens + session.prompt_margin.reserve_tokens(MODEL, instruction)


def _check_graceful_stop(model: ToolLoopModel, session: BudgetSession, result) -> None:
    calls = model.calls
    # Thirteen tool steps, then the wrap-up without tools. A step reports 50 input tokens and
    # min(cap, 300) output tokens: twelve steps spend 12 x 350, leaving 1,800. The thirteenth
    # (prompt reserved at 691) gets what is left once a wrap-up is held back (its prompt plus
    # 242, 933 tokens): (1,800 - 933) // 16 * 16 - 691 = 173, and reports 50 + 173. The
    # fourteenth would need its prompt (745) within 1,577 - (745 + 242) = 590: the wrap-up goes.
    assert [c["tools"] for c in calls] == [True] * 13 + [False]
    assert calls[12]["max_tokens"] == 173
    assert calls[-1]["max_tokens"] == 200 and calls[-1]["last"] == DEFAULT_WRAP_UP_PROMPT
    final = result["messages"][-1]
    assert final.content == "Final answer: 42" and not final.tool_calls
    assert final.response_metadata["clear_budget"] == "wrap_up"
    balance = session.remaining()
    assert balance.spent_tokens == 12 * 350 + (50 + 173) + 250 == 4_673
    assert balance.spent_tokens <= 6_000 and balance.reserved_tokens == 0
    reserves = [e for e in session.statement() if e.kind == "reserve"]
    assert len(reserves) == len(calls)  # one reservation per model call, no double counting
    # Each call was sent with the cap it reserved: reservation - cap is the prompt's reserve
    # (local count x the learned margin), which grows with the conversation.
    prompts = [e.tokens - c["max_tokens"] for e, c in zip(reserves, calls, strict=True)]
    assert prompts == [66, 135, 204, 273, 342, 318, 371, 425, 478, 531, 585, 638, 691, 745]


def test_agent_stops_gracefully_at_the_cap_with_a_wrap_up():
    session = _session(6_000)
    # The first step is priced as one of 4 expected calls, with the wrap-up held back.
    twin = _session(6_000)
    first = twin.quote(Subtask.of(QUESTION, kind="agent-step"),
                       tools=[convert_to_openai_tool(lookup)], expected_calls=4,
                       final_answer_tokens=_held(twin, 200))
    model = ToolLoopModel()
    result = _agent(model, session).invoke({"messages": [("user", QUESTION)]})
    assert model.calls[0]["max_tokens"] == first.output_tokens == 1_358
    _check_graceful_stop(model, session, result)


async def test_async_agent_stops_the_same_way():
    session = _session(6_000)
    model = ToolLoopModel()
    result = await _agent(model, session).ainvoke({"messages": [("user", QUESTION)]})
    assert model.calls[0]["max_tokens"] == 1_358
    _check_graceful_stop(model, session, result)


def test_a_callback_on_the_same_run_does_not_count_twice():
    session = _session(6_000)
    model = ToolLoopModel()
    handler = ClearBudgetCallbackHandler(session)
    _agent(model, session).invoke({"messages": [("user", QUESTION)]},
                                  config={"callbacks": [handler]})
    assert session.remaining().spent_tokens == 4_673
    assert handler.open_calls == 0


def test_exit_behavior_error_raises_before_anything_is_sent():
    # The first step's prompt is reserved at 66 and 320 tokens are held for the wrap-up (its
    # prompt, 200 and the instruction's 54): 400 - 320 = 80 is less than 66 + min_output 16.
    session = _session(400)
    model = ToolLoopModel()
    with pytest.raises(BudgetExhaustedError) as refused:
        _agent(model, session, exit_behavior="error").invoke(
            {"messages": [("user", QUESTION)]})
    assert refused.value.session_id == session.session_id
    assert refused.value.available_tokens == 400
    assert "with 320 tokens held for a final answer" in str(refused.value)
    assert model.calls == []
    assert session.statement() == []


def test_without_a_reserve_the_run_ends_with_a_message_and_no_call():
    session = _session(80)  # less than the first step's prompt (66) + min_output_tokens (16)
    model = ToolLoopModel()
    result = _agent(model, session, wrap_up_tokens=None).invoke(
        {"messages": [("user", QUESTION)]})
    final = result["messages"][-1]
    assert final.content.startswith("Stopped: the token budget of this session is spent")
    assert final.response_metadata["clear_budget"] == "exhausted"
    assert model.calls == [] and session.remaining().spent_tokens == 0


def test_constructor_validates_its_arguments():
    session = _session(1_000)
    with pytest.raises(ValueError, match="exit_behavior"):
        ClearBudgetMiddleware(session, exit_behavior="stop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected_calls"):
        ClearBudgetMiddleware(session, expected_calls=0)
    with pytest.raises(ValueError, match="wrap_up_tokens"):
        ClearBudgetMiddleware(session, wrap_up_tokens=0)
    with pytest.raises(TypeError, match="BudgetSession"):
        ClearBudgetMiddleware("session")  # type: ignore[arg-type]


def test_chat_clear_agent_over_http_counts_each_step_once(sim):
    session = sim_session(sim, budget_tokens=40_000)
    agent = create_agent(ChatClear(session=session),
                         middleware=[ClearBudgetMiddleware(session, expected_calls=2)])
    result = agent.invoke(
        {"messages": [("user", f"{item_marker(items(1)[0])} Solve the problem.")]})
    served = sim.requests[-1]
    assert result["messages"][-1].content.startswith("The final answer is")
    statement = session.statement()
    assert [e.kind for e in statement] == ["reserve", "commit"]
    # Sent with the cap it reserved (reservation = prompt reserve + cap), charged as reported.
    assert served.requested_cap < statement[0].tokens
    assert session.remaining().spent_tokens == served.prompt_tokens + served.completion_tokens
