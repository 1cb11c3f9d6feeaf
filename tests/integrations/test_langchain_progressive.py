"""Progressive mode through the LangChain adapters: ``with_budget(...).batch`` in rounds (cut
inputs continued where the provider can, or restarted with larger caps), ``clear_progress``
events, and the agent middleware's step-by-step calls; against the simulator over HTTP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from clear_middleware import EmpiricalCurve, ShiftedSurge, StepPolicy
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import (
    BudgetExhaustedError,
    BudgetScope,
    ChatClear,
    ClearBudgetMiddleware,
    budget_scope,
    with_budget,
)
from clear_middleware.integrations.langchain.runnable import PROGRESS_EVENT
from clear_middleware.session import BudgetSession, SubtaskResult
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

from .conftest import SIM_MODEL, sim_session

PROMPT = ChatPromptTemplate.from_template("{marker} Solve the problem.")
# Items of the bundled sweep (deepscaler-1.5b): MATH-500 algebra problems its runs solve in
# 700-1,850 tokens, and AIME problems it does not solve within 4,096 (nor 8,192 here).
SHORT = ("math500/test/algebra/1004.json", "math500/test/algebra/1265.json",
         "math500/test/algebra/1936.json", "math500/test/algebra/1934.json",
         "math500/test/algebra/1960.json", "math500/test/algebra/2551.json",
         "math500/test/algebra/2789.json", "math500/test/algebra/2080.json")
LONG = ("aime24/2024-I-10", "aime24/2024-I-11", "aime24/2024-I-12", "aime24/2024-I-13",
        "aime24/2024-I-14", "aime24/2024-I-3", "aime24/2024-I-4", "aime24/2024-I-5")


def _kind_curve(chosen) -> EmpiricalCurve:
    """The curve of one task kind pooling the sweep's runs of ``chosen`` (what a per-kind
    estimator learns: it cannot tell the kind's items apart)."""
    runs = [r for item in chosen for r in load_catalog().runs(SIM_MODEL, item)]
    grid = np.arange(0.0, 8193.0, 64.0)
    return EmpiricalCurve.from_rollouts(
        np.array([[r.length for r in runs]], float), np.array([[r.correct for r in runs]]),
        grid, censored=np.array([[r.censored for r in runs]]))


def _session(sim: SimulatorServer, chosen, budget: int, mode: str, **kwargs) -> BudgetSession:
    return sim_session(sim, budget_tokens=budget, mode=mode, max_output_tokens=8192,
                       estimator=StaticEstimator({"mix": _kind_curve(chosen)}), **kwargs)


def _chain(session: BudgetSession, *, streaming: bool = False, **kwargs):
    return with_budget(PROMPT | ChatClear(session=session, streaming=streaming)
                       | StrOutputParser(), session, kind="mix", **kwargs)


def _inputs(chosen) -> list[dict[str, str]]:
    return [{"marker": item_marker(item)} for item in chosen]


def _served_since(sim: SimulatorServer, start: int):
    return [r for r in sim.requests if r.seq >= start]


def _next_seq(sim: SimulatorServer) -> int:
    return max((r.seq for r in sim.requests), default=-1) + 1


def _finished(outputs) -> list[int]:
    return [i for i, o in enumerate(outputs)
            if isinstance(o, str) and o.startswith("The final answer is")]


def _check_ledger(session: BudgetSession, served, budget: int) -> None:
    balance = session.remaining()
    assert balance.spent_tokens == sum(r.prompt_tokens + r.completion_tokens for r in served)
    assert balance.spent_tokens <= budget and balance.reserved_tokens == 0


def test_progressive_batch_beats_one_shot_when_a_kind_hides_hopeless_items(sim):
    # Sixteen inputs of one kind, the eight hopeless AIME items first: one-shot CLEAR funds
    # the first six at the kind's cap (about 1,630 tokens each), all of them hopeless, and
    # nothing is left for the rest. Progressive probes nine of them with ~1,000-token steps
    # (priced at what a run is expected to spend), prices the cut ones out, and reaches a
    # MATH item that finishes.
    chosen = LONG + SHORT
    one_shot = _session(sim, chosen, 10_000, "one_shot")
    start = _next_seq(sim)
    baseline = _chain(one_shot).batch(_inputs(chosen), config={"max_concurrency": 4})
    served = _served_since(sim, start)
    _check_ledger(one_shot, served, 10_000)
    assert _finished(baseline) == []
    assert {chosen.index(r.item) for r in served} == set(range(6))

    session = _session(sim, chosen, 10_000, "progressive")
    start = _next_seq(sim)
    outputs = _chain(session).batch(_inputs(chosen), config={"max_concurrency": 4})
    served = _served_since(sim, start)
    _check_ledger(session, served, 10_000)
    assert session.remaining().spent_tokens == 9_463
    assert _finished(outputs) == [8] and len(_finished(outputs)) > len(_finished(baseline))
    # Round 1: the first nine inputs with ~1,000-token steps; item 8 finishes, the others are
    # cut. Round 2 re-prices what is left on the conditioned curves: the cut ones are priced
    # out, the next input is probed with what is left.
    first = sorted((chosen.index(r.item), r.requested_cap, r.finish_reason) for r in served[:9])
    assert first == [(i, 880 if i == 5 else 1008, "length") for i in range(8)] + [
        (8, 1008, "stop")]
    assert [(chosen.index(r.item), r.requested_cap, r.finish_reason) for r in served[9:]] == [
        (9, 592, "length")]
    unfunded = [o for o in outputs if isinstance(o, SubtaskResult)]
    assert len(unfunded) == 15 and all(o.status == "unfunded" and o.price > 0 for o in unfunded)
    # Those cut once were sent once; those never reached were never sent.
    assert [o.attempts for o in unfunded] == [1] * 8 + [1] + [0] * 6


def _restarted(sim: SimulatorServer, session: BudgetSession, **kwargs) -> None:
    chosen = SHORT[:6]
    start = _next_seq(sim)
    outputs = _chain(session, **kwargs).batch(_inputs(chosen), config={"max_concurrency": 4})
    served = _served_since(sim, start)
    _check_ledger(session, served, 10_000)
    assert session.remaining().spent_tokens == 8_987
    calls: dict[int, list[tuple[int, int, str]]] = {}
    for r in served:
        calls.setdefault(chosen.index(r.item), []).append(
            (r.requested_cap, r.completion_tokens, r.finish_reason))
    assert calls == {
        0: [(976, 703, "stop")],
        1: [(976, 848, "stop")],
        2: [(976, 976, "length"), (1952, 1136, "stop")],
        3: [(976, 976, "length"), (1952, 1124, "stop")],
        4: [(976, 976, "length"), (1056, 1056, "length")],
        5: [(976, 976, "length")],
    }
    # A restart regenerates the same run from the start (same prompt, same seed).
    assert all(r.already_tokens == 0 for r in served)
    assert _finished(outputs) == [0, 1, 2, 3]
    assert [(o.index, o.status, o.attempts) for o in outputs[4:]] == [
        (4, "unfunded", 2), (5, "unfunded", 1)]


def test_progressive_batch_restarts_cut_inputs_with_larger_caps(sim):
    # Six MATH items of one kind and a budget for about one and a half runs each: round 1
    # sends every one with a 976-token step; two finish, four are cut. Round 2 restarts three
    # of them with larger caps (continuation=False: the cap is the tokens used plus the step,
    # the partial answer generated again; a step is at least what it regenerates, so two get
    # 976 more and the third what is left); two finish there, one is cut again, and the last
    # round prices the two left out.
    session = _session(sim, SHORT[:6], 10_000, "progressive")
    assert session.continuation == "continue_final"
    _restarted(sim, session, continuation=False)


def test_a_session_that_restarts_makes_the_batch_restart(sim):
    # The same batch on a session told to restart (its provider cannot continue): with_budget
    # restarts too, by default, with the same calls.
    session = _session(sim, SHORT[:6], 10_000, "progressive", continuation="restart")
    assert _chain(session).continuation is False
    _restarted(sim, session)


# The same six items and budget, continued (the default with ChatClear on a provider that can):
# round 0 as above; round 1 sends two of the four cut inputs a 976-token step (at least what it
# re-reads: fee_ratio 1) continuing their partial answers, and both finish where the restarted
# runs end (1,136 and 1,124 tokens); round 2 continues a third with the 64 tokens left after
# its re-read. Each continued call re-reads
# its 976-token partial answer as prompt, so in a token budget continuing costs what
# restarting costs (8,983 tokens here, 8,987 restarted): the same four inputs finish. (Under a
# USD cap re-read prompt tokens cost less than output.)
CONTINUED_CALLS = {
    0: [(976, 703, "stop", 0)],
    1: [(976, 848, "stop", 0)],
    2: [(976, 976, "length", 0), (976, 160, "stop", 976)],
    3: [(976, 976, "length", 0), (976, 148, "stop", 976)],
    4: [(976, 976, "length", 0), (64, 64, "length", 976)],
    5: [(976, 976, "length", 0)],
}
# (round, index, status, cap sent, tokens used, attempts), sorted within each round.
CONTINUED_EVENTS = [
    (0, 0, "done", 976, 703, 1), (0, 1, "done", 976, 848, 1), (0, 2, "cut", 976, 976, 1),
    (0, 3, "cut", 976, 976, 1), (0, 4, "cut", 976, 976, 1), (0, 5, "cut", 976, 976, 1),
    (1, 2, "done", 976, 1136, 2), (1, 3, "done", 976, 1124, 2),
    (2, 4, "cut", 64, 1040, 2), (3, 4, "unfunded", 0, 1040, 2), (3, 5, "unfunded", 0, 976, 1),
]


@pytest.mark.parametrize(("is_async", "streaming"), [(False, False), (True, False),
                                                     (True, True)])
async def test_progressive_batch_continues_cut_inputs(sim, is_async, streaming):
    chosen = SHORT[:6]
    session = _session(sim, chosen, 10_000, "progressive")
    budgeted = _chain(session, streaming=streaming)
    assert budgeted.continuation is True
    handler = _Events() if is_async else _SyncEvents()
    config = {"max_concurrency": 4, "callbacks": [handler]}
    start = _next_seq(sim)
    outputs = (await budgeted.abatch(_inputs(chosen), config=config) if is_async
               else budgeted.batch(_inputs(chosen), config=config))
    served = _served_since(sim, start)
    _check_ledger(session, served, 10_000)
    assert session.remaining().spent_tokens == 8_983
    calls: dict[int, list[tuple[int, int, str, int]]] = {}
    for r in served:
        calls.setdefault(chosen.index(r.item), []).append(
            (r.requested_cap, r.completion_tokens, r.finish_reason, r.already_tokens))
    assert calls == CONTINUED_CALLS
    # A continued call goes on with the same run (the server saw the partial answer).
    for index in (2, 3, 4):
        assert len({r.run_id for r in served if r.item == chosen[index]}) == 1
    assert sorted(_rows(handler.events)) == CONTINUED_EVENTS
    # The chain's parser saw each whole answer.
    assert _finished(outputs) == [0, 1, 2, 3]
    # Each call reserved its prompt at the margin in force when it started, and its step; a
    # continued call also the partial answer it re-reads with its message framing (980
    # tokens). Each was charged what the server reported. The prompt's 24 tokens take the
    # 1.5 prior margin (36) until five calls have settled, the learned one (25) after: the four
    # first calls start before anything settles (976 + 36 = 1012) and so, nearly always, do
    # the other two of round 0; but with four at a time the sixth may start after the other
    # five settled (976 + 25 = 1001); the continued ones always come after.
    statement = [(e.kind, e.tokens) for e in session.statement()]
    reserves = sorted(t for k, t in statement if k == "reserve")
    assert reserves[6:] == [64 + 980 + 25, 976 + 980 + 25, 976 + 980 + 25]
    assert reserves[:6].count(1012) >= 5
    assert set(reserves[:6]) <= {1012, 1001}
    assert sorted(t for k, t in statement if k == "commit") == [
        727, 872, 1000, 1000, 1000, 1000, 1068, 1152, 1164]


@pytest.mark.parametrize("streaming", [False, True])
def test_chat_clear_continues_the_partial_answer_in_its_scope(sim, streaming):
    # One call cut inside its visible answer, then a call continuing it in a scope that
    # carries the partial answer: the message is the whole answer, as one uncut call gives.
    session = _session(sim, SHORT[:1], 5_000, "progressive")
    llm = ChatClear(session=session, streaming=streaming)
    messages = PROMPT.invoke(_inputs(SHORT[:1])[0])
    start = _next_seq(sim)
    whole = llm.invoke(messages, max_tokens=1024)
    with budget_scope(BudgetScope(session, output_tokens=698)) as cut_scope:
        cut = llm.invoke(messages)
    [outcome] = cut_scope.outcomes
    assert (outcome.output_tokens, outcome.finish_reason, outcome.continued) == (
        698, "length", False)
    assert outcome.answer is not None and outcome.answer.text == cut.content == (
        "The final answer is $\\")
    with budget_scope(BudgetScope(session, output_tokens=100,
                                  resume=outcome.answer)) as scope:
        rest = llm.invoke(messages)
    assert [(o.output_tokens, o.finish_reason, o.answer, o.continued)
            for o in scope.outcomes] == [(5, "stop", None, True)]
    assert rest.content == whole.content == "The final answer is $\\boxed{4}$."
    assert (rest.additional_kwargs["reasoning_content"]
            == whole.additional_kwargs["reasoning_content"])
    assert rest.usage_metadata["input_tokens"] == 726 and rest.usage_metadata[
        "output_tokens"] == 5
    served = _served_since(sim, start)
    assert [(r.requested_cap, r.completion_tokens, r.finish_reason, r.already_tokens)
            for r in served] == [(1024, 703, "stop", 0), (698, 698, "length", 0),
                                 (100, 5, "stop", 698)]
    assert len({r.run_id for r in served}) == 1
    _check_ledger(session, served, 5_000)
    # The continued call reserved prompt + re-read partial answer (698 tokens, 702 with its
    # message framing) + its cap (100), and was charged the 726 prompt tokens the server read.
    assert [(e.kind, e.tokens) for e in session.statement()] == [
        ("reserve", 1060), ("commit", 727), ("reserve", 734), ("commit", 722),
        ("reserve", 838), ("commit", 731)]


def test_with_budget_continues_only_chat_clear_on_a_provider_that_can(sim):
    session = _session(sim, SHORT[:1], 5_000, "progressive")
    llm = ChatClear(session=session)
    assert with_budget(PROMPT | llm.bind(temperature=0.0) | StrOutputParser(),
                       session).continuation is True
    fake = GenericFakeChatModel(messages=iter([]))
    # Another chat model, or a model the traversal cannot see: restarts.
    for chain in (PROMPT | fake, PROMPT | {"a": llm, "b": fake},
                  RunnableLambda(lambda v: (PROMPT | llm).invoke(v))):
        assert with_budget(chain, session).continuation is False
        with pytest.raises(ValueError, match="continuation=True needs"):
            with_budget(chain, session, continuation=True)
    assert with_budget(PROMPT | llm, session, continuation=False).continuation is False
    restarting = _session(sim, SHORT[:1], 5_000, "progressive", continuation="restart")
    with pytest.raises(ValueError, match="its continuation is 'restart'"):
        with_budget(PROMPT | llm, restarting, continuation=True)


class _Events(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


class _SyncEvents(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def _rows(events) -> list[tuple]:
    return [(data["round"], data["index"], data["status"], data["output_tokens"],
             data["used_tokens"], data["attempts"]) for _, data in events]


# Three MATH items, 2,500 tokens, one call at a time: the event of every attempt, in order
# (round, index, status, cap sent, tokens used, attempts), then the inputs the last round
# priced out. Round 0 sends two (a third full cap would not fit), both finish; round 1 sends
# the third with what is left, it is cut, and round 2 prices it out.
EXPECTED_EVENTS = [
    (0, 0, "done", 912, 703, 1),
    (0, 1, "done", 912, 848, 1),
    (1, 2, "cut", 496, 496, 1),
    (2, 2, "unfunded", 0, 496, 1),
]


async def test_abatch_dispatches_a_progress_event_per_attempt_in_order(sim):
    chosen = SHORT[:3]
    session = _session(sim, chosen, 2_500, "progressive")
    handler = _Events()
    start = _next_seq(sim)
    outputs = await _chain(session).abatch(
        _inputs(chosen), config={"max_concurrency": 1, "callbacks": [handler]})
    _check_ledger(session, _served_since(sim, start), 2_500)
    assert {name for name, _ in handler.events} == {PROGRESS_EVENT}
    assert _rows(handler.events) == EXPECTED_EVENTS
    assert all(data["session_id"] == session.session_id for _, data in handler.events)
    assert _finished(outputs) == [0, 1]


def test_batch_dispatches_the_same_events(sim):
    chosen = SHORT[:3]
    session = _session(sim, chosen, 2_500, "progressive")
    handler = _SyncEvents()
    _chain(session).batch(_inputs(chosen),
                          config={"max_concurrency": 1, "callbacks": [handler]})
    assert _rows(handler.events) == EXPECTED_EVENTS


async def test_progress_events_reach_astream_events(sim):
    chosen = SHORT[:3]
    session = _session(sim, chosen, 2_500, "progressive")
    budgeted = _chain(session)

    async def solve_all(values, config):
        return await budgeted.abatch(values, config={**config, "max_concurrency": 1})

    seen = [event["data"] async for event in RunnableLambda(solve_all).astream_events(
        _inputs(chosen), version="v2") if event["event"] == "on_custom_event"
        and event["name"] == PROGRESS_EVENT]
    assert _rows([(PROGRESS_EVENT, data) for data in seen]) == EXPECTED_EVENTS


def test_progressive_batch_keeps_return_exceptions(sim):
    session = _session(sim, SHORT[:2], 6_000, "progressive")
    llm = ChatClear(session=session)

    def solve(value: dict) -> str:
        if value.get("fail"):
            raise RuntimeError("broken input")
        return (PROMPT | llm | StrOutputParser()).invoke(value)

    budgeted = with_budget(RunnableLambda(solve), session, kind="mix",
                           prompt=lambda v: PROMPT.invoke(v).to_string())
    values = [_inputs(SHORT[:1])[0], {**_inputs(SHORT[1:2])[0], "fail": True}]
    outputs = budgeted.batch(values, return_exceptions=True)
    assert isinstance(outputs[1], RuntimeError) and str(outputs[1]) == "broken input"
    assert isinstance(outputs[0], str)
    with pytest.raises(RuntimeError, match="broken input"):
        budgeted.batch(values)
    assert session.remaining().reserved_tokens == 0


def test_bad_inputs_to_the_step_planner():
    session = BudgetSession(budget_tokens=10_000, model="openai/o4-mini", mode="progressive")
    with pytest.raises(ValueError, match="one entry per subtask"):
        session.plan_steps(["a", "b"], [0])
    with pytest.raises(ValueError, match="used_tokens must be"):
        session.plan_steps(["a"], [-1])
    with pytest.raises(ValueError, match="used_tokens must be an integer"):
        session.quote_step("a", used_tokens=-5)
    with pytest.raises(ValueError, match="expected_calls must be an integer"):
        session.quote_step("a", expected_calls=0)
    usd_only = BudgetSession(budget_usd=1.0, model="openai/gpt-4o-mini")
    with pytest.raises(ValueError, match="planned in tokens"):
        usd_only.quote_step("a")
    with pytest.raises(ValueError, match="planned in tokens"):
        usd_only.plan_steps(["a"], [0])


# -- the agent middleware, progressive ----------------------------------------------------------
AGENT_ITEM = "math500/test/algebra/1082.json"  # the run replayed here is 2,594 tokens long
STEP_CURVE = ShiftedSurge(ceiling=0.9, threshold=500, rate=1 / 1500)


def _agent_session(sim: SimulatorServer, budget: int) -> BudgetSession:
    return sim_session(sim, budget_tokens=budget, mode="progressive", max_output_tokens=8192,
                       estimator=StaticEstimator({"agent-step": STEP_CURVE}),
                       # Fixed 1,024-token chunks (no floor at the regenerated tokens).
                       step_policy=StepPolicy(kind="chunk", chunk_tokens=1024, fee_ratio=0))


def _agent(session: BudgetSession, **kwargs):
    kwargs.setdefault("expected_calls", 1)
    kwargs.setdefault("wrap_up_tokens", 256)
    return create_agent(ChatClear(session=session),
                        middleware=[ClearBudgetMiddleware(session, **kwargs)])


def _question(item: str = AGENT_ITEM) -> dict[str, Any]:
    return {"messages": [("user", f"{item_marker(item)} Solve the problem.")]}


def _calls(served) -> list[tuple[int, int, str]]:
    return [(r.requested_cap, r.completion_tokens, r.finish_reason) for r in served]


# Slack budget: the call goes out with a 1,024-token step, is cut, and is sent again with the
# tokens it used plus another step until it finishes (the same run, regenerated each time).
RESTARTS = [(1024, 1024, "length"), (2048, 2048, "length"), (3072, 2594, "stop")]


def test_middleware_resends_a_cut_call_with_a_larger_cap_until_it_finishes(sim):
    session = _agent_session(sim, 40_000)
    start = _next_seq(sim)
    result = _agent(session).invoke(_question())
    served = _served_since(sim, start)
    assert _calls(served) == RESTARTS
    assert len({r.run_id for r in served}) == 1 and all(r.already_tokens == 0 for r in served)
    final = result["messages"][-1]
    assert final.content.startswith("The final answer is")
    assert len([m for m in result["messages"] if m.type == "ai"]) == 1  # one agent step
    _check_ledger(session, served, 40_000)
    # Each attempt reserved prompt plus its cap and was charged what the server reported.
    assert [(e.kind, e.tokens) for e in session.statement()] == [
        ("reserve", 1060), ("commit", 1048), ("reserve", 2084), ("commit", 2072),
        ("reserve", 3108), ("commit", 2618)]


async def test_async_middleware_resends_the_same_way(sim):
    session = _agent_session(sim, 40_000)
    start = _next_seq(sim)
    result = await _agent(session).ainvoke(_question())
    served = _served_since(sim, start)
    assert _calls(served) == RESTARTS
    assert result["messages"][-1].content.startswith("The final answer is")
    _check_ledger(session, served, 40_000)


@pytest.mark.parametrize("is_async", [False, True])
async def test_middleware_priced_out_after_a_cut_wraps_up(sim, is_async):
    # 2,300 tokens: the first step (1,024) is cut and charged 1,048; of the 1,252 left, 346 are
    # held for the wrap-up, and a restart (prompt + 1,024 + a granule) no longer fits: the
    # call is priced out and the wrap-up goes, paid from the reserve.
    session = _agent_session(sim, 2_300)
    start = _next_seq(sim)
    agent = _agent(session)
    result = (await agent.ainvoke(_question()) if is_async else agent.invoke(_question()))
    served = _served_since(sim, start)
    assert _calls(served) == [(1024, 1024, "length"), (256, 256, "length")]
    assert served[1].prompt_tokens > served[0].prompt_tokens  # the wrap-up instruction
    assert result["messages"][-1].response_metadata["clear_budget"] == "wrap_up"
    _check_ledger(session, served, 2_300)
    assert session.remaining().spent_tokens == 1_048 + 313


def test_middleware_priced_out_with_exit_behavior_error_raises(sim):
    session = _agent_session(sim, 2_300)
    start = _next_seq(sim)
    with pytest.raises(BudgetExhaustedError, match="346 tokens held for a final answer"):
        _agent(session, exit_behavior="error").invoke(_question())
    served = _served_since(sim, start)
    assert _calls(served) == [(1024, 1024, "length")]
    _check_ledger(session, served, 2_300)


async def test_agents_sharing_a_session_re_quote_each_step_at_the_live_price(sim):
    # Three agents in one batch on one session: every step of every call is re-quoted at
    # what the session has left when it goes, so they compete step by step; the budget holds.
    session = _agent_session(sim, 9_000)
    start = _next_seq(sim)
    results = await _agent(session).abatch(
        [_question(item) for item in (AGENT_ITEM, SHORT[0], SHORT[3])],
        config={"max_concurrency": 3})
    served = _served_since(sim, start)
    _check_ledger(session, served, 9_000)
    items = (AGENT_ITEM, SHORT[0], SHORT[3])
    by_item = {item: _calls([r for r in served if r.item == item]) for item in items}
    # The two short ones finish (703 and 1,124 tokens, the second after one restart); the
    # long one finishes too or, when the others took the tokens first, wraps up (one call of
    # 256 tokens, its own prompt naming no item).
    assert by_item[SHORT[0]] == [(1024, 703, "stop")]
    assert by_item[SHORT[3]] == [(1024, 1024, "length"), (2048, 1124, "stop")]
    long_calls = by_item[AGENT_ITEM]
    assert long_calls[:2] == [(1024, 1024, "length"), (2048, 2048, "length")]
    wrap_ups = [r for r in served if r.item not in items]
    if long_calls[-1][2] == "stop":  # funded to the end, re-priced at the live price
        assert wrap_ups == [] and long_calls[-1][1] == 2594
    else:
        assert [r.requested_cap for r in wrap_ups] == [256]
        assert results[0]["messages"][-1].response_metadata["clear_budget"] == "wrap_up"
    assert [r["messages"][-1].content.startswith("The final answer is")
            for r in results][1:] == [True, True]


def test_a_cut_call_that_left_nothing_to_continue_makes_the_batch_restart(sim):
    # The bookkeeping between rounds: an input whose capped call recorded no partial answer
    # (a chat model other than ChatClear, hidden from the traversal) cannot be continued, so
    # the rest of the batch restarts; tokens of a continued call add to those before it.
    from clear_middleware.integrations.langchain.runnable import _Attempt, _Rounds
    from clear_middleware.integrations.langchain.scope import CallOutcome, PartialAnswer
    from clear_middleware.session import StepPlan

    session = _session(sim, SHORT[:1], 5_000, "progressive")
    budgeted = _chain(session)
    rounds = _Rounds(budgeted, 3)

    def attempt(index, cap, outcome, resume=None):
        scope = budgeted._scope(index, cap, resume)
        scope.outcomes.append(outcome)
        return rounds.apply(_Attempt(index, cap, scope, output=f"out{index}", resume=resume))

    def plan(caps):
        return StepPlan(0.5, (0,) * len(caps), caps, caps, caps, caps, caps, True, 1.0)

    partial = PartialAnswer("", "thinking")
    assert rounds.start([0, 1, 2], plan((500, 500, 500)))
    assert attempt(0, 500, CallOutcome(500, "length", partial))["status"] == "cut"
    assert attempt(2, 500, CallOutcome(500, "length", partial))["status"] == "cut"
    assert rounds.continuing and rounds.partial[0] == partial
    assert rounds.start([0, 2], plan((300, 300)))
    assert rounds.moving == [(0, 300, partial), (2, 300, partial)]
    # Continued and finished: its tokens add up.
    event = attempt(0, 300, CallOutcome(120, "stop", None, True), resume=partial)
    assert (event["status"], event["used_tokens"], event["output_tokens"]) == ("done", 620, 300)
    assert rounds.outputs[0] == "out0"
    # Given a partial answer, but the call did not continue it: the batch restarts from now.
    event = attempt(2, 300, CallOutcome(300, "length"), resume=partial)
    # It ran from the start under the step's cap: it goes on, restarted, from the 500 tokens
    # it is known to need.
    assert (event["status"], event["used_tokens"]) == ("cut", 500)
    assert not rounds.continuing and rounds.partial == [None] * 3
    assert rounds.start([1, 2], plan((900, 900)))
    assert rounds.moving == [(1, 900, None), (2, 900, None)]
