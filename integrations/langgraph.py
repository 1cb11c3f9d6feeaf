"""LangGraph: parallel branches (``Send`` fan-out, map-reduce) that share one session budget.

A fan-out sends N branches at once; planned one by one they would race for the budget, so
:func:`fan_out` plans them together (one subtask per branch, CLEAR on what the session has
left) and puts each branch's allocation in its ``Send`` payload under ``"clear_budget"`` (plain
numbers: checkpointers store them). Each branch node opens :func:`branch_scope` around its
model calls, so the planned cap reaches them as with ``with_budget``; a branch the plan
abandoned returns :func:`unfunded_result` instead of calling anything.

Sessions are per thread: :class:`ThreadSessions` keeps one :class:`BudgetSession` per
``config["configurable"]["thread_id"]`` (made by your factory, which should use the thread id
as the session id so a reopened thread resumes its budget from the ledger).

Example (the branches use :class:`~.langchain.ChatClear`, which reads the scope)::

    class State(TypedDict):
        questions: list[str]
        answers: Annotated[list, operator.add]

    sessions = ThreadSessions(lambda thread_id: BudgetSession(
        budget_tokens=60_000, model="openai/o4-mini", session_id=thread_id,
        store="sqlite:///budgets.db"))
    llm = ChatClear(model="openai/o4-mini")

    def spread(state: State, config: RunnableConfig) -> list[Send]:
        return fan_out(sessions.for_config(config), "solve",
                       [{"question": q} for q in state["questions"]], prompt="question")

    def solve(branch: dict, config: RunnableConfig) -> dict:
        budget = branch["clear_budget"]
        if not budget["funded"]:
            return {"answers": [unfunded_result(budget)]}
        with branch_scope(sessions.for_config(config), budget):
            return {"answers": [llm.invoke(branch["question"]).text]}

    graph = StateGraph(State)
    graph.add_node("solve", solve)
    graph.add_conditional_edges(START, spread, ["solve"])
    graph.add_edge("solve", END)
    graph.compile().invoke({"questions": [...]}, {"configurable": {"thread_id": "t-1"}})
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.types import Send

from clear_middleware.session import BudgetSession, Subtask, SubtaskResult
from clear_middleware.session.budget_session import SubtaskLike

from .langchain.scope import BudgetExhaustedError, BudgetScope, budget_scope

__all__ = [
    "BUDGET_KEY",
    "BranchBudget",
    "ThreadSessions",
    "branch_scope",
    "fan_out",
    "unfunded_result",
]

#: The key of a branch's allocation in its ``Send`` payload.
BUDGET_KEY = "clear_budget"


class BranchBudget(TypedDict):
    """One branch's allocation (plain numbers, so checkpointers can store it).

    Attributes:
        session_id: the session that planned it.
        index: the branch's position in the fan-out. ``subtask_id``: its ledger name.
        output_tokens: its output cap (tokens, reasoning included); 0 if abandoned.
        price: the shadow price of the plan (expected utility per token).
        funded: False when the plan abandoned the branch.
    """

    session_id: str
    index: int
    subtask_id: str
    output_tokens: int
    price: float
    funded: bool


class ThreadSessions:
    """One :class:`BudgetSession` per LangGraph thread, made on first use.

    Args:
        factory: builds the session of a thread from its ``thread_id``.

    Example:
        >>> sessions = ThreadSessions(lambda thread_id: BudgetSession(
        ...     budget_tokens=10_000, model="openai/o4-mini", session_id=thread_id))
        >>> sessions.for_config({"configurable": {"thread_id": "t-1"}}).session_id
        't-1'
    """

    def __init__(self, factory: Callable[[str], BudgetSession]) -> None:
        self._factory = factory
        self._sessions: dict[str, BudgetSession] = {}
        self._lock = threading.Lock()

    def for_config(self, config: RunnableConfig | Mapping[str, Any]) -> BudgetSession:
        """The session of the thread named by ``config["configurable"]["thread_id"]``."""
        thread_id = (config.get("configurable") or {}).get("thread_id")
        if thread_id is None or thread_id == "":
            raise ValueError('a budgeted graph needs config["configurable"]["thread_id"]: '
                             "each thread is one budget session")
        key = str(thread_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._factory(key)
                if not isinstance(session, BudgetSession):
                    raise TypeError("the session factory must return a BudgetSession")
                self._sessions[key] = session
            return session


def fan_out(
    session: BudgetSession,
    node: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    prompt: str | Callable[[Mapping[str, Any]], SubtaskLike] = "prompt",
    kind: str | None = None,
) -> list[Send]:
    """Plan all branches together and send each to ``node`` with its allocation.

    Args:
        session: the session the branches share.
        node: the branch node's name.
        payloads: one state dict per branch.
        prompt: the payload key holding the branch's prompt (a string or chat messages), or
            a function from payload to prompt; used for planning only.
        kind: the branches' task kind, for the curve estimator.

    Returns:
        One ``Send(node, {**payload, "clear_budget": BranchBudget})`` per payload, in order;
        abandoned branches are sent too (their node returns :func:`unfunded_result`), so a
        reducer sees every branch.
    """
    read = prompt if callable(prompt) else (lambda payload: payload[prompt])
    plan = session.plan([Subtask.of(read(p), kind=kind, id=str(i))
                         for i, p in enumerate(payloads)])
    return [
        Send(node, {**payload, BUDGET_KEY: BranchBudget(
            session_id=session.session_id, index=row.index, subtask_id=row.subtask_id,
            output_tokens=row.output_tokens, price=plan.price, funded=row.funded)})
        for payload, row in zip(payloads, plan.rows, strict=True)
    ]


@contextmanager
def branch_scope(session: BudgetSession, budget: BranchBudget) -> Iterator[BudgetScope]:
    """Open the branch's budget scope around its model calls.

    Raises:
        BudgetExhaustedError: the branch was abandoned by the plan (check ``funded`` first
            and return :func:`unfunded_result` instead), or belongs to another session.
    """
    if budget["session_id"] != session.session_id:
        raise BudgetExhaustedError(session.session_id, reason=(
            f"the branch was planned by session {budget['session_id']!r}"))
    if not budget["funded"]:
        raise BudgetExhaustedError(session.session_id, price=budget["price"])
    scope = BudgetScope(session, output_tokens=budget["output_tokens"],
                        subtask_id=budget["subtask_id"])
    with budget_scope(scope):
        yield scope


def unfunded_result(budget: BranchBudget) -> SubtaskResult:
    """The session's ``unfunded`` result for an abandoned branch (with the price)."""
    return SubtaskResult(budget["index"], budget["subtask_id"], "unfunded", price=budget["price"])
