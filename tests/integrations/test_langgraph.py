"""A LangGraph map-reduce whose parallel branches share one session budget, over HTTP."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.langchain import BudgetExhaustedError, ChatClear
from clear_middleware.integrations.langgraph import (
    BUDGET_KEY,
    ThreadSessions,
    branch_scope,
    fan_out,
    unfunded_result,
)
from clear_middleware.session import BudgetSession, SubtaskResult

from .conftest import MODEL, items, questions, sim_session


class State(TypedDict):
    questions: list[str]
    answers: Annotated[list, operator.add]


def _graph(sessions: ThreadSessions):
    llm = ChatClear(model=MODEL)  # no session of its own: each branch's scope pays

    def spread(state: State, config: RunnableConfig):
        return fan_out(sessions.for_config(config), "solve",
                       [{"question": q} for q in state["questions"]], prompt="question")

    def solve(branch: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        budget = branch[BUDGET_KEY]
        if not budget["funded"]:
            return {"answers": [unfunded_result(budget)]}
        with branch_scope(sessions.for_config(config), budget):
            return {"answers": [(budget["index"], llm.invoke(branch["question"]).text)]}

    graph = StateGraph(State)
    graph.add_node("solve", solve)
    graph.add_conditional_edges(START, spread, ["solve"])
    graph.add_edge("solve", END)
    return graph.compile()


def test_parallel_branches_share_one_budget_and_are_planned_together(sim):
    sessions = ThreadSessions(lambda thread_id: sim_session(
        sim, budget_tokens=30_000, session_id=thread_id))
    asked = questions(16)
    twin = sim_session(sim, budget_tokens=30_000)
    expected = twin.plan(asked)
    assert 0 < len(expected.funded) < 16

    start = len(sim.requests)
    out = _graph(sessions).invoke({"questions": asked, "answers": []},
                                  {"configurable": {"thread_id": "thread-a"}})

    session = sessions.for_config({"configurable": {"thread_id": "thread-a"}})
    assert session.session_id == "thread-a"
    answered = sorted(a[0] for a in out["answers"] if isinstance(a, tuple))
    unfunded = sorted(a.index for a in out["answers"] if isinstance(a, SubtaskResult))
    assert answered == expected.funded and unfunded == expected.abandoned
    served = sim.requests[start:]
    caps = {r.item: r.requested_cap for r in served}
    assert caps == {items(16)[i]: expected.rows[i].output_tokens for i in expected.funded}
    balance = session.remaining()
    assert balance.spent_tokens == sum(r.prompt_tokens + r.completion_tokens for r in served)
    assert balance.spent_tokens <= 30_000 and balance.reserved_tokens == 0


def test_each_thread_is_its_own_session_and_resumes_its_budget(sim):
    sessions = ThreadSessions(lambda thread_id: sim_session(
        sim, budget_tokens=20_000, session_id=thread_id))
    graph = _graph(sessions)
    graph.invoke({"questions": questions(2), "answers": []},
                 {"configurable": {"thread_id": "t-1"}})
    first = sessions.for_config({"configurable": {"thread_id": "t-1"}}).remaining()
    graph.invoke({"questions": questions(2), "answers": []},
                 {"configurable": {"thread_id": "t-2"}})
    assert sessions.for_config({"configurable": {"thread_id": "t-1"}}).remaining() == first
    graph.invoke({"questions": questions(1), "answers": []},
                 {"configurable": {"thread_id": "t-1"}})
    again = sessions.for_config({"configurable": {"thread_id": "t-1"}}).remaining()
    assert again.spent_tokens > first.spent_tokens  # the same budget, drawn down again


def test_a_graph_without_a_thread_id_is_refused(sim):
    sessions = ThreadSessions(lambda thread_id: sim_session(sim, budget_tokens=1_000))
    with pytest.raises(ValueError, match="thread_id"):
        _graph(sessions).invoke({"questions": questions(1), "answers": []})


def test_branch_scope_refuses_abandoned_and_foreign_branches():
    # The branches' kind is worth nothing below 6,000 output tokens; the session has 1,000.
    hard = StaticEstimator({"hard": ShiftedSurge(ceiling=0.9, threshold=6_000, rate=1 / 500)})
    session = BudgetSession(budget_tokens=1_000, model=MODEL, session_id="s-1", estimator=hard)
    sends = fan_out(session, "solve", [{"prompt": "hard"}, {"prompt": "harder"}], kind="hard")
    budget = sends[0].arg[BUDGET_KEY]
    assert budget["funded"] is False and sends[0].node == "solve"
    assert not sends[1].arg[BUDGET_KEY]["funded"] and budget["price"] > 0
    with pytest.raises(BudgetExhaustedError), branch_scope(session, budget):
        pass
    other = BudgetSession(budget_tokens=1_000, model=MODEL, session_id="s-2")
    with pytest.raises(BudgetExhaustedError, match="planned by session 's-1'"), \
            branch_scope(other, budget):
        pass
    assert unfunded_result(budget) == SubtaskResult(0, "0", "unfunded", price=budget["price"])
