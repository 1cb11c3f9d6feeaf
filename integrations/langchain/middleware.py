"""Agent middleware for LangChain v1 ``create_agent``: every model call on a session's budget.

Each agent step (one model call) is priced before it is sent: the session plans it as the
first of the calls the agent still expects to make in this run (``expected_calls`` minus the
steps already taken), on what the session has left minus a reserve kept for a final answer.
The step goes out with its cap as model settings (``request.override(model_settings=...)``),
is reserved in the ledger at prompt plus cap, and is settled from the reply's
``usage_metadata``. When a step cannot be funded the run ends, like the built-in
``ModelCallLimitMiddleware``, by ``exit_behavior``:

- ``"end"``: one last call, paid from the reserve, asks the model for its best final answer
  without tools (the wrap-up); its tool calls, if it makes any, are dropped so the agent
  stops. Without a reserve (``wrap_up_tokens=None``), or when even the reserve is gone, the
  run ends with a fixed AI message instead, and nothing is sent;
- ``"error"``: :class:`~.scope.BudgetExhaustedError` is raised before anything is sent.

Progressive mode (``BudgetSession(..., mode="progressive")``): each model call is spent in
steps. It goes out with a step's cap
(:meth:`~clear_middleware.session.BudgetSession.quote_step`, planned with the calls still
expected); when the reply is cut at its cap (finish reason ``"length"`` in its
``response_metadata``) it is sent again with a larger cap, the tokens it used plus the next
step, priced at the session's *current* price with the call's curve conditioned on those
tokens (the partial reply is discarded: its tokens were charged, and a restart generates them
again, which the step's price includes). This goes on until the reply finishes, the call
reaches its largest output (the last reply is kept, as a one-shot call cut at its cap would
be), or the next step is priced out: then ``exit_behavior`` applies as above. Agents sharing
a session (``agent.batch``, a parallel fan-out) re-quote every step at the live price, so
their calls compete step by step.

The middleware does the accounting for any chat model; :class:`~.chat_model.ChatClear` and the
callback handler see the call as managed and do not count it twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage

from clear_middleware.ledger import BudgetExceeded
from clear_middleware.session import BudgetSession, CallQuote, CallTicket, StepQuote, Subtask
from clear_middleware.session.progressive import MAX_ROUNDS
from clear_middleware.tokens import count_message_tokens

from ._convert import finish_reason_of, last_ai_message, openai_tools, subtask_of, usage_of_message
from .scope import BudgetExhaustedError, BudgetScope, budget_scope

__all__ = ["DEFAULT_WRAP_UP_PROMPT", "ClearBudgetMiddleware"]

DEFAULT_WRAP_UP_PROMPT = (
    "The token budget for this task is spent. Do not call any more tools: give your best "
    "final answer now, from what you already have."
)


def _steps_this_run(messages: Sequence[AnyMessage]) -> int:
    """Model calls already made in this run: AI messages after the last human message."""
    steps = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, AIMessage):
            steps += 1
    return steps


def _stop_message(session: BudgetSession) -> str:
    balance = session.remaining()
    spent, cap = balance.spent_tokens, balance.caps.tokens
    of_cap = "" if cap is None else f" of {cap}"
    return (f"Stopped: the token budget of this session is spent ({spent}{of_cap} tokens); "
            "no final answer could be funded.")


def _default_settings(model: BaseChatModel, output_tokens: int) -> dict[str, Any]:
    return {"max_tokens": output_tokens}


def _outcome(response: ModelResponse | AIMessage, output_tokens: int) -> int | None:
    """Output tokens of a reply cut at its cap (its cap when it reported no usage), or
    ``None`` when it finished."""
    result = response.result if isinstance(response, ModelResponse) else [response]
    message = last_ai_message(result)
    if finish_reason_of(message) != "length":
        return None
    usage = usage_of_message(message)
    return output_tokens if usage is None else usage.completion_tokens


@dataclass(frozen=True)
class _Step:
    subtask: Subtask
    tools: list[dict[str, Any]] | None
    remaining_calls: int


class ClearBudgetMiddleware(AgentMiddleware):
    """Prices, caps and settles every model call of an agent on a :class:`BudgetSession`.

    Args:
        session: the session that pays (one per agent session / thread).
        expected_calls: model calls an agent run is expected to make (>= 1); step ``k`` of a
            run is planned as the first of ``max(1, expected_calls - k)`` calls.
        wrap_up_tokens: output cap (tokens) of the final answer kept in reserve: every step is
            priced as if this much (plus the prompt) were already spent; ``None`` = keep no
            reserve (an unfundable step then ends the run without a final call).
        exit_behavior: what to do when a step cannot be funded:
            ``"end"`` (wrap up and end gracefully) or ``"error"`` (raise
            :class:`~.scope.BudgetExhaustedError`).
        wrap_up_prompt: the instruction appended (for that call only) to ask for the final
            answer.
        kind: the task kind of agent steps, for the curve estimator (give a curve for it with
            ``StaticEstimator({"agent-step": ...})``).
        model_settings: how a cap (tokens) becomes model settings for a chat model; default
            ``{"max_tokens": cap}``, which ``ChatClear``, ``ChatOpenAI`` (sent as
            ``max_completion_tokens`` to reasoning models), ``ChatAnthropic`` and
            ``ChatLiteLLM`` all accept.

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> from clear_middleware.session import BudgetSession
        >>> session = BudgetSession(budget_tokens=50_000, model="openai/o4-mini")
        >>> budget = ClearBudgetMiddleware(session, expected_calls=3, wrap_up_tokens=256)
        >>> agent = create_agent(GenericFakeChatModel(messages=iter(["Paris."])),
        ...                      middleware=[budget])
        >>> agent.invoke({"messages": [("user", "Capital of France?")]})["messages"][-1].content
        'Paris.'
    """

    def __init__(
        self,
        session: BudgetSession,
        *,
        expected_calls: int = 4,
        wrap_up_tokens: int | None = 256,
        exit_behavior: Literal["end", "error"] = "end",
        wrap_up_prompt: str = DEFAULT_WRAP_UP_PROMPT,
        kind: str | None = "agent-step",
        model_settings: Callable[[BaseChatModel, int], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(session, BudgetSession):
            raise TypeError(f"session must be a BudgetSession, got {type(session).__name__}")
        if isinstance(expected_calls, bool) or not isinstance(expected_calls, int) or (
                expected_calls < 1):
            raise ValueError(f"expected_calls must be an int >= 1, got {expected_calls!r}")
        if wrap_up_tokens is not None and (isinstance(wrap_up_tokens, bool) or not isinstance(
                wrap_up_tokens, int) or wrap_up_tokens < 1):
            raise ValueError(f"wrap_up_tokens must be an int >= 1 or None, got {wrap_up_tokens!r}")
        if exit_behavior not in ("end", "error"):
            raise ValueError(f"exit_behavior must be 'end' or 'error', got {exit_behavior!r}")
        self.session = session
        self.expected_calls = expected_calls
        self.wrap_up_tokens = wrap_up_tokens
        self.exit_behavior = exit_behavior
        self.wrap_up_prompt = wrap_up_prompt
        self.kind = kind
        self.model_settings = model_settings or _default_settings

    # -- what a step looks like to the session ------------------------------------------------
    def _step(self, request: ModelRequest) -> _Step:
        messages = list(request.messages)
        if request.system_message is not None:
            messages = [request.system_message, *messages]
        return _Step(
            subtask_of(messages, kind=self.kind,
                       subtask_id=f"agent-step-{_steps_this_run(request.messages)}"),
            openai_tools(request.tools),
            max(1, self.expected_calls - _steps_this_run(request.messages)),
        )

    def _wrap_up(self, request: ModelRequest) -> tuple[ModelRequest, Subtask]:
        wrapped = request.override(
            tools=[], tool_choice=None,
            messages=[*request.messages, HumanMessage(self.wrap_up_prompt)],
        )
        messages = list(wrapped.messages)
        if wrapped.system_message is not None:
            messages = [wrapped.system_message, *messages]
        return wrapped, subtask_of(messages, kind=self.kind, subtask_id="agent-wrap-up")

    def _held_tokens(self) -> int:
        """Output tokens to hold for the wrap-up: its cap plus its extra instruction's tokens
        (the rest of its prompt is this step's, which the quote holds already)."""
        if not self.wrap_up_tokens:
            return 0
        instruction = count_message_tokens([{"role": "user", "content": self.wrap_up_prompt}],
                                           self.session.provider_model)
        return self.wrap_up_tokens + self.session.prompt_margin.reserve_tokens(
            self.session.model, instruction)

    def _capped(self, request: ModelRequest, ticket: CallTicket) -> ModelRequest:
        settings = self.model_settings(request.model, ticket.output_tokens)
        return request.override(model_settings={**request.model_settings, **settings})

    def _scope(self, ticket: CallTicket) -> BudgetScope:
        return BudgetScope(self.session, output_tokens=ticket.output_tokens, kind=self.kind,
                           managed=True)

    def _refuse(self, quote: CallQuote) -> BudgetExhaustedError:
        balance = self.session.remaining()
        return BudgetExhaustedError(
            self.session.session_id, available_tokens=balance.available_tokens,
            price=quote.price,
            reason=f"an agent step cannot be funded with {quote.held_tokens} tokens held for "
                   f"a final answer (available {balance.available_tokens})")

    def _settle_args(self, response: ModelResponse | AIMessage):
        result = response.result if isinstance(response, ModelResponse) else [response]
        message = last_ai_message(result)
        return usage_of_message(message), finish_reason_of(message)

    @staticmethod
    def _final(response: ModelResponse | AIMessage) -> ModelResponse:
        """The wrap-up's reply with its tool calls dropped (the agent must stop here)."""
        result = response.result if isinstance(response, ModelResponse) else [response]
        cleaned = [
            m.model_copy(update={
                "tool_calls": [], "invalid_tool_calls": [],
                "response_metadata": {**m.response_metadata, "clear_budget": "wrap_up"}})
            if isinstance(m, AIMessage) else m
            for m in result
        ]
        structured = response.structured_response if isinstance(response, ModelResponse) else None
        return ModelResponse(result=cleaned, structured_response=structured)

    def _ended(self) -> ModelResponse:
        return ModelResponse(result=[AIMessage(
            content=_stop_message(self.session),
            response_metadata={"clear_budget": "exhausted"})])

    # -- sync ---------------------------------------------------------------------------------
    def _send(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse],
              ticket: CallTicket) -> ModelResponse:
        with budget_scope(self._scope(ticket)):
            try:
                response = handler(self._capped(request, ticket))
            except BaseException:
                self.session.release_call(ticket)
                raise
        usage, finish_reason = self._settle_args(response)
        self.session.settle_call(ticket, usage, finish_reason=finish_reason)
        return response

    def _reserve(self, subtask: Subtask, output_tokens: int,
                 tools: list[dict[str, Any]] | None = None) -> CallTicket | None:
        try:
            return self.session.reserve_call(subtask, output_tokens=output_tokens, tools=tools)
        except BudgetExceeded:
            return None  # another caller took the tokens since the quote

    def _quote_step(self, step: _Step, used_tokens: int) -> StepQuote:
        return self.session.quote_step(step.subtask, used_tokens=used_tokens, tools=step.tools,
                                       expected_calls=step.remaining_calls,
                                       final_answer_tokens=self._held_tokens())

    async def _aquote_step(self, step: _Step, used_tokens: int) -> StepQuote:
        return await self.session.aquote_step(
            step.subtask, used_tokens=used_tokens, tools=step.tools,
            expected_calls=step.remaining_calls, final_answer_tokens=self._held_tokens())

    def _progressive(self, request: ModelRequest,
                     handler: Callable[[ModelRequest], ModelResponse]
                     ) -> tuple[ModelResponse | None, CallQuote]:
        """Send the call in steps, restarting it with a larger cap while it is cut at its cap.

        Returns the reply to keep (``None`` when it was priced out before finishing) and the
        last quote.
        """
        step = self._step(request)
        used, last = 0, None
        for _ in range(MAX_ROUNDS):
            quote = self._quote_step(step, used)
            if not quote.funded:
                # At the call's largest output the last reply is kept as it is (as a one-shot
                # call cut at its cap would be); priced out, it is dropped.
                return (last if quote.at_limit else None), quote
            ticket = self._reserve(step.subtask, quote.output_tokens, step.tools)
            if ticket is None:
                return None, quote
            response = self._send(request, handler, ticket)
            outcome = _outcome(response, quote.output_tokens)
            if outcome is None or outcome <= used:
                return response, quote  # finished (or cut where a larger cap cannot help)
            used, last = outcome, response
        return None, quote

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        """Price the step, send it capped, settle it; wrap up when it cannot be funded.

        In progressive mode the call goes out with a step's cap and is re-sent with a larger
        one, re-priced at the live price, while it is cut at its cap (see the module
        docstring).
        """
        if self.session.mode == "progressive":
            response, quote = self._progressive(request, handler)
            if response is not None:
                return response
        else:
            step = self._step(request)
            quote = self.session.quote(step.subtask, tools=step.tools,
                                       expected_calls=step.remaining_calls,
                                       final_answer_tokens=self._held_tokens())
            if quote.funded:
                ticket = self._reserve(step.subtask, quote.output_tokens, step.tools)
                if ticket is not None:
                    return self._send(request, handler, ticket)
        if self.exit_behavior == "error":
            raise self._refuse(quote)
        if self.wrap_up_tokens:
            wrapped, subtask = self._wrap_up(request)
            ticket = self._reserve(subtask, self.wrap_up_tokens)
            if ticket is not None:
                return self._final(self._send(wrapped, handler, ticket))
        return self._ended()

    # -- async --------------------------------------------------------------------------------
    async def _asend(self, request: ModelRequest,
                     handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
                     ticket: CallTicket) -> ModelResponse:
        with budget_scope(self._scope(ticket)):
            try:
                response = await handler(self._capped(request, ticket))
            except BaseException:
                await self.session.arelease_call(ticket)
                raise
        usage, finish_reason = self._settle_args(response)
        await self.session.asettle_call(ticket, usage, finish_reason=finish_reason)
        return response

    async def _areserve(self, subtask: Subtask, output_tokens: int,
                        tools: list[dict[str, Any]] | None = None) -> CallTicket | None:
        try:
            return await self.session.areserve_call(subtask, output_tokens=output_tokens,
                                                    tools=tools)
        except BudgetExceeded:
            return None

    async def _aprogressive(self, request: ModelRequest,
                            handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
                            ) -> tuple[ModelResponse | None, CallQuote]:
        """Async :meth:`_progressive`."""
        step = self._step(request)
        used, last = 0, None
        for _ in range(MAX_ROUNDS):
            quote = await self._aquote_step(step, used)
            if not quote.funded:
                # At the call's largest output the last reply is kept as it is (as a one-shot
                # call cut at its cap would be); priced out, it is dropped.
                return (last if quote.at_limit else None), quote
            ticket = await self._areserve(step.subtask, quote.output_tokens, step.tools)
            if ticket is None:
                return None, quote
            response = await self._asend(request, handler, ticket)
            outcome = _outcome(response, quote.output_tokens)
            if outcome is None or outcome <= used:
                return response, quote
            used, last = outcome, response
        return None, quote

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        """Async :meth:`wrap_model_call`."""
        if self.session.mode == "progressive":
            response, quote = await self._aprogressive(request, handler)
            if response is not None:
                return response
        else:
            step = self._step(request)
            quote = await self.session.aquote(step.subtask, tools=step.tools,
                                              expected_calls=step.remaining_calls,
                                              final_answer_tokens=self._held_tokens())
            if quote.funded:
                ticket = await self._areserve(step.subtask, quote.output_tokens, step.tools)
                if ticket is not None:
                    return await self._asend(request, handler, ticket)
        if self.exit_behavior == "error":
            raise self._refuse(quote)
        if self.wrap_up_tokens:
            wrapped, subtask = self._wrap_up(request)
            ticket = await self._areserve(subtask, self.wrap_up_tokens)
            if ticket is not None:
                return self._final(await self._asend(wrapped, handler, ticket))
        return self._ended()
