"""Callback handlers that put any LangChain chat model's calls on a session's budget.

Attach one to a chain or agent (``config={"callbacks": [handler]}``) and every chat model
call inside, from any provider package, is:

1. counted before it is sent (its messages and tool schemas, locally with tiktoken);
2. reserved in the session's ledger at prompt plus output cap, where the cap is the one the
   model was invoked with (``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``,
   ``num_predict``), else the planned cap of an open budget scope, else the session's quote
   at its current price;
3. settled from the reply's ``usage_metadata`` (streamed calls too, from the merged stream),
   or charged its whole reservation when the model reported none;
4. released when the call fails.

A call the session cannot fund raises :class:`~.scope.BudgetExhaustedError` before it is
sent, when ``raise_error=True`` (the default); with ``raise_error=False`` the handler only
watches: it logs the refusal and counts it in ``refused``, and LangChain sends the call anyway
(unaccounted: the ledger charges only calls it reserved).

What a callback cannot do is change the request: a model invoked without an output cap is
reserved at the quote but not held to it, and a reply longer than its reservation is charged
in full (the ledger flags it ``over_reservation``). To cap the provider call too, use
:class:`~.chat_model.ChatClear`, ``with_budget`` (binds ``max_tokens`` on models it can
reach) or the agent middleware. :class:`ChatClear` calls are skipped here: they account for
themselves; so are calls inside the agent middleware, which reserves them itself.

Use :class:`ClearBudgetCallbackHandler` with ``invoke`` / ``batch`` / ``stream`` and
:class:`AsyncClearBudgetCallbackHandler` with their async twins (LangChain runs an async
handler's errors on a synchronous run only as log lines, so it could not refuse).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from clear_middleware.session import BudgetSession, CallTicket

from ._convert import output_cap, subtask_of, usage_of_result
from .chat_model import CHAT_CLEAR_TYPE
from .scope import (
    BudgetExhaustedError,
    BudgetScope,
    areserve_call,
    current_scope,
    reserve_call,
)

__all__ = ["AsyncClearBudgetCallbackHandler", "ClearBudgetCallbackHandler"]

logger = logging.getLogger("clear_middleware.integrations.langchain")


class _Bookkeeping:
    """What both handlers share: which runs hold which reservation."""

    def __init__(self, session: BudgetSession, *, kind: str | None) -> None:
        if not isinstance(session, BudgetSession):
            raise TypeError(f"session must be a BudgetSession, got {type(session).__name__}")
        self.session = session
        self.kind = kind
        self.refused = 0
        self._tickets: dict[UUID, tuple[CallTicket, BudgetScope | None]] = {}
        self._lock = threading.Lock()

    def _wanted(self, invocation_params: dict[str, Any]) -> tuple[bool, int | None]:
        """Whether to account this run, and the output cap (tokens) to reserve."""
        if invocation_params.get("_type") == CHAT_CLEAR_TYPE:
            return False, None
        scope = current_scope()
        if scope is not None and scope.managed:
            return False, None
        cap = output_cap(invocation_params)
        if cap is None and scope is not None and scope.session is self.session:
            cap = scope.take_output_tokens()
        return True, cap

    def _args(self, messages: list[list[BaseMessage]], invocation_params: dict[str, Any],
              run_id: UUID):
        scope = current_scope()
        label = scope.subtask_id if scope is not None and scope.subtask_id else "callback"
        kind = self.kind or (scope.kind if scope is not None else None)
        subtask = subtask_of(messages[0], kind=kind, subtask_id=f"{label}/{str(run_id)[:8]}")
        return subtask, invocation_params.get("tools") or None

    def _refused(self, error: BudgetExhaustedError, raise_error: bool) -> None:
        with self._lock:
            self.refused += 1
        if raise_error:
            raise error
        logger.warning("call not funded, sent unaccounted: %s", error)

    def _keep(self, run_id: UUID, ticket: CallTicket) -> None:
        # The scope the call was made in (if any) is told how it ended, at settlement.
        with self._lock:
            self._tickets[run_id] = (ticket, current_scope())

    def _pop(self, run_id: UUID) -> tuple[CallTicket | None, BudgetScope | None]:
        with self._lock:
            return self._tickets.pop(run_id, (None, None))

    @property
    def open_calls(self) -> int:
        """Calls reserved and not yet settled or released."""
        with self._lock:
            return len(self._tickets)


class ClearBudgetCallbackHandler(_Bookkeeping, BaseCallbackHandler):
    """Reserve, settle and release every chat model call of a run on ``session``.

    Args:
        session: the session that pays.
        raise_error: refuse calls the session cannot fund with
            :class:`~.scope.BudgetExhaustedError` (``True``, default); ``False`` = only log
            and count them in ``refused``.
        kind: the task kind given to the curve estimator for these calls (default: the
            open scope's, if any).

    Example:
        >>> from clear_middleware.session import BudgetSession
        >>> session = BudgetSession(budget_tokens=20_000, model="openai/gpt-4o-mini")
        >>> handler = ClearBudgetCallbackHandler(session)
        >>> handler.raise_error, handler.open_calls
        (True, 0)

        Then ``chain.invoke(inputs, config={"callbacks": [handler]})`` with any chat model.
    """

    def __init__(self, session: BudgetSession, *, raise_error: bool = True,
                 kind: str | None = None) -> None:
        _Bookkeeping.__init__(self, session, kind=kind)
        self.raise_error = raise_error

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = invocation_params or kwargs.get("invocation_params") or {}
        wanted, cap = self._wanted(params)
        if not wanted:
            return
        subtask, tools = self._args(messages, params, run_id)
        try:
            ticket = reserve_call(self.session, subtask, tools=tools, output_tokens=cap)
        except BudgetExhaustedError as error:
            self._refused(error, self.raise_error)
            return
        self._keep(run_id, ticket)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        ticket, scope = self._pop(run_id)
        if ticket is not None:
            usage, finish_reason = usage_of_result(response)
            self.session.settle_call(ticket, usage, finish_reason=finish_reason)
            if scope is not None:
                scope.record(usage, finish_reason, ticket.output_tokens)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        ticket, _ = self._pop(run_id)
        if ticket is not None:
            self.session.release_call(ticket)


class AsyncClearBudgetCallbackHandler(_Bookkeeping, AsyncCallbackHandler):
    """Async :class:`ClearBudgetCallbackHandler`, for ``ainvoke`` / ``abatch`` / ``astream``.

    Example:
        >>> from clear_middleware.session import BudgetSession
        >>> session = BudgetSession(budget_tokens=20_000, model="openai/gpt-4o-mini")
        >>> AsyncClearBudgetCallbackHandler(session).raise_error
        True

        Then ``await chain.ainvoke(inputs, config={"callbacks": [handler]})``.
    """

    def __init__(self, session: BudgetSession, *, raise_error: bool = True,
                 kind: str | None = None) -> None:
        _Bookkeeping.__init__(self, session, kind=kind)
        self.raise_error = raise_error

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = invocation_params or kwargs.get("invocation_params") or {}
        wanted, cap = self._wanted(params)
        if not wanted:
            return
        subtask, tools = self._args(messages, params, run_id)
        try:
            ticket = await areserve_call(self.session, subtask, tools=tools, output_tokens=cap)
        except BudgetExhaustedError as error:
            self._refused(error, self.raise_error)
            return
        self._keep(run_id, ticket)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        ticket, scope = self._pop(run_id)
        if ticket is not None:
            usage, finish_reason = usage_of_result(response)
            await self.session.asettle_call(ticket, usage, finish_reason=finish_reason)
            if scope is not None:
                scope.record(usage, finish_reason, ticket.output_tokens)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        ticket, _ = self._pop(run_id)
        if ticket is not None:
            await self.session.arelease_call(ticket)
