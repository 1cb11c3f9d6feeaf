"""``ChatClear``: a LangChain chat model that sends through a session's LiteLLM dispatch.

A drop-in for any LiteLLM model name (``ChatClear(model="anthropic/claude-sonnet-4-5")``):
tools, streaming, async and ``usage_metadata`` work as in LangChain's own chat models. Given a
:class:`~clear_middleware.session.BudgetSession` (or called inside a budget scope opened by
``with_budget``, the agent middleware or the LangGraph helpers) every call is funded first:

1. its output cap is the scope's planned cap, an explicit ``max_tokens`` (``bind`` or agent
   ``model_settings``), or the session's quote at its current price, in that order, and never
   above the model's own ``max_tokens``;
2. prompt plus cap are reserved in the ledger (a call that does not fit raises
   :class:`~.scope.BudgetExhaustedError` and is never sent);
3. the cap becomes the provider's own settings
   (:func:`~clear_middleware.dispatch.provider_settings`: ``max_completion_tokens`` and
   ``reasoning_effort`` for OpenAI reasoning models, a thinking budget for Claude and Gemini);
4. the provider-reported usage settles the reservation; a failed call releases it; a stream
   the consumer abandons is charged what it reported, or its whole reservation.

A call cut at its cap leaves its partial answer in the budget scope
(:class:`~.scope.CallOutcome`). When the scope asks the call to continue a partial answer
(:attr:`~.scope.BudgetScope.resume`: ``with_budget``'s progressive batches do, for an input cut
in an earlier round) and the session's provider can
(:attr:`~clear_middleware.session.BudgetSession.continuation` is not ``"restart"``), the call
is sent as :func:`~clear_middleware.dispatch.continuation.continue_request` builds it, capped
at the scope's cap for the *new* tokens; it reserves the prompt, the re-read partial answer and
that cap, and answers with the partial text followed by the new text (usage: this call's).

Without a session ChatClear is a plain LiteLLM chat model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from clear_middleware.dispatch import provider_settings
from clear_middleware.dispatch.client import Completion, LiteLLMClient
from clear_middleware.dispatch.continuation import continue_request, reread_tokens
from clear_middleware.session import BudgetSession, CallTicket, Subtask
from clear_middleware.usage import Usage

from ._convert import CAP_PARAMETERS, openai_messages, output_cap
from .scope import (
    BudgetExhaustedError,
    BudgetScope,
    PartialAnswer,
    areserve_call,
    current_scope,
    reserve_call,
)

__all__ = ["CHAT_CLEAR_TYPE", "ChatClear"]

#: ``_llm_type`` of :class:`ChatClear`; the callback handler skips these runs (ChatClear
#: accounts its own calls).
CHAT_CLEAR_TYPE = "clear-chat"


@dataclass
class _Call:
    """One prepared call: where it goes, with what, and who pays for it."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    extra: dict[str, Any]
    client: LiteLLMClient
    session: BudgetSession | None
    subtask: Subtask | None
    output_tokens: int | None
    accounted: bool  # this model reserves and settles (no outer adapter does)
    kind: str | None = None
    scope: BudgetScope | None = None  # the open budget scope, told how the call ended
    resume: PartialAnswer | None = None  # the partial answer this call continues
    reread: int = 0  # tokens of that partial answer, re-read as prompt

    def record(self, usage: Usage | None, finish_reason: str | None, text: str,
               reasoning: str) -> None:
        if self.scope is None:
            return
        answer = None
        if finish_reason == "length":  # cut: leave the whole answer so far to continue
            prefix = self.resume or PartialAnswer()
            new = usage.completion_tokens if usage is not None else (self.output_tokens or 0)
            answer = PartialAnswer(prefix.text + text, prefix.reasoning + reasoning,
                                   prefix.tokens + new)
        self.scope.record(usage, finish_reason, self.output_tokens, answer=answer,
                          continued=self.resume is not None)

    def reserved(self, ticket: CallTicket) -> CallTicket:
        """The ticket as settled: a continued call's re-read partial answer is prompt (the
        prompt-margin learner compares it with the reported prompt), its cap the new tokens'."""
        if not self.reread:
            return ticket
        return replace(ticket, prompt_estimate=ticket.prompt_estimate + self.reread,
                       prompt_tokens=ticket.prompt_tokens + self.reread,
                       output_tokens=ticket.output_tokens - self.reread,
                       already_tokens=self.resume.tokens if self.resume else 0)

    def settings(self, output_tokens: int | None) -> dict[str, Any]:
        if output_tokens is None:
            return {}
        if self.session is None:
            return {"max_tokens": output_tokens}
        provider_model = self.session.client.provider_model(self.model)
        return dict(provider_settings(provider_model, output_tokens).kwargs)


class ChatClear(BaseChatModel):
    """A chat model that calls any LiteLLM model, funded by a :class:`BudgetSession`.

    Args:
        model: a LiteLLM model name (``"openai/o4-mini"``, ``"anthropic/claude-sonnet-4-5"``,
            or a model group of the session's router). Default: the session's model.
        session: the session that pays for each call; ``None`` = no budget (a plain LiteLLM
            chat model), unless a budget scope is open around the call.
        max_tokens: the most output tokens (reasoning included) any call may be sent with;
            ``None`` = no limit beyond the budget's.
        temperature, stop, timeout (seconds), max_retries: the standard LangChain parameters,
            passed to LiteLLM (``max_retries`` as ``num_retries``; failed attempts release
            their reservation and are not charged).
        api_key, api_base: passed to LiteLLM (otherwise the session's, or LiteLLM's
            environment variables).
        streaming: ``invoke`` streams under the hood (LangChain's convention).
        model_kwargs: any other LiteLLM argument, sent with every call.

    Example:
        >>> from clear_middleware.session import BudgetSession
        >>> session = BudgetSession(budget_tokens=50_000, model="openai/o4-mini")
        >>> llm = ChatClear(session=session)
        >>> llm.model, llm._llm_type
        ('openai/o4-mini', 'clear-chat')

        ``llm.invoke("Prove that sqrt(2) is irrational")`` then sends one call capped at the
        session's quote and settles its usage; ``session.remaining()`` shows the balance.
    """

    model: str = ""
    session: BudgetSession | None = Field(default=None, exclude=True)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    max_retries: int = Field(default=0, ge=0)
    api_key: SecretStr | None = None
    api_base: str | None = Field(default=None, alias="base_url")
    streaming: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    _client: LiteLLMClient | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if not self.model:
            if self.session is None:
                raise ValueError("ChatClear needs a model name (or a session to take it from)")
            self.model = self.session.model

    # -- LangChain's model metadata -----------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return CHAT_CLEAR_TYPE

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "session_id": None if self.session is None else self.session.session_id}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model") if isinstance(kwargs.get("model"), str) else self.model
        params = LangSmithParams(
            ls_provider=model.split("/", 1)[0] if "/" in model else "litellm",
            ls_model_name=model, ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if (cap := output_cap(kwargs) or self.max_tokens) is not None:
            params["ls_max_tokens"] = cap
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def with_budget(self, session: BudgetSession) -> ChatClear:
        """A copy of this model whose calls ``session`` funds (the ``.with_*`` style).

        Example:
            >>> from clear_middleware.session import BudgetSession
            >>> session = BudgetSession(budget_tokens=20_000, model="openai/o4-mini")
            >>> ChatClear(model="openai/o4-mini").with_budget(session).session is session
            True
        """
        if not isinstance(session, BudgetSession):
            raise TypeError(f"session must be a BudgetSession, got {type(session).__name__}")
        return self.model_copy(update={"session": session})

    # -- tools --------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, pydantic models, functions or OpenAI schemas).

        ``tool_choice``: ``"auto"``, ``"none"``, ``"any"``/``"required"`` (must call one), a
        tool name, ``True`` (the single tool), or an OpenAI ``tool_choice`` dict.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        if tool_choice is not None and tool_choice is not False:
            if tool_choice == "any":
                tool_choice = "required"
            elif tool_choice is True:
                tool_choice = {"type": "function",
                               "function": {"name": formatted[0]["function"]["name"]}}
            elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none",
                                                                       "required"):
                tool_choice = {"type": "function", "function": {"name": tool_choice}}
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    # -- preparing and funding one call -------------------------------------------------------
    def _own_client(self) -> LiteLLMClient:
        if self._client is None:
            self._client = LiteLLMClient()
        return self._client

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None,
                 kwargs: dict[str, Any]) -> _Call:
        kwargs = dict(kwargs)
        kwargs.pop("ls_structured_output_format", None)
        model = kwargs.pop("model", None) or self.model
        explicit = output_cap(kwargs)
        for name in CAP_PARAMETERS:
            kwargs.pop(name, None)
        tools = kwargs.pop("tools", None) or None
        scope = current_scope()
        session = scope.session if scope is not None else self.session
        planned, resume = scope.take_call() if scope is not None else (None, None)
        cap = explicit if explicit is not None else planned
        if cap is None and session is None:
            cap = self.max_tokens
        elif cap is not None and self.max_tokens is not None:
            cap = min(cap, self.max_tokens)
        extra: dict[str, Any] = {**self.model_kwargs, **kwargs}
        for name, value in (("temperature", self.temperature), ("stop", stop or self.stop),
                            ("timeout", self.timeout), ("api_base", self.api_base),
                            ("tools", tools)):
            if value is not None and name not in extra:
                extra[name] = value
        if self.api_key is not None:
            extra.setdefault("api_key", self.api_key.get_secret_value())
        if self.max_retries:
            extra.setdefault("num_retries", self.max_retries)
        oa_messages = openai_messages(messages)
        sent, reread = oa_messages, 0
        if resume is not None and (session is None or session.continuation == "restart"
                                   or not (resume.text or resume.reasoning)):
            resume = None  # nothing to continue, or a provider that cannot: sent as it is
        if resume is not None:
            assert session is not None
            request = continue_request(session.continuation, oa_messages, resume.text,
                                       resume.reasoning)
            sent = request.messages
            for name, value in request.extra.items():
                if isinstance(value, dict) and isinstance(extra.get(name), dict):
                    value = {**extra[name], **value}
                extra[name] = value
            reread = reread_tokens(request, oa_messages, session.provider_model)
        kind = scope.kind if scope is not None else None
        return _Call(
            model=model, messages=sent, tools=tools, extra=extra,
            client=session.client if session is not None else self._own_client(),
            session=session,
            subtask=None if session is None else Subtask(
                tuple(oa_messages), kind=kind,
                id=(scope.subtask_id if scope is not None else None) or "chat"),
            output_tokens=cap, accounted=session is not None and not (scope and scope.managed),
            kind=kind, scope=scope, resume=resume, reread=reread,
        )

    def _quoted_cap(self, call: _Call, quote_cap: int) -> int:
        return quote_cap if self.max_tokens is None else min(quote_cap, self.max_tokens)

    def _reserve(self, call: _Call) -> CallTicket | None:
        if not call.accounted:
            return None
        assert call.session is not None and call.subtask is not None
        if call.output_tokens is None:
            quote = call.session.quote(call.subtask, tools=call.tools)
            if not quote.funded:
                raise BudgetExhaustedError(call.session.session_id, price=quote.price)
            call.output_tokens = self._quoted_cap(call, quote.output_tokens)
        return call.reserved(reserve_call(call.session, call.subtask, tools=call.tools,
                                          output_tokens=call.output_tokens + call.reread))

    async def _areserve(self, call: _Call) -> CallTicket | None:
        if not call.accounted:
            return None
        assert call.session is not None and call.subtask is not None
        if call.output_tokens is None:
            quote = await call.session.aquote(call.subtask, tools=call.tools)
            if not quote.funded:
                raise BudgetExhaustedError(call.session.session_id, price=quote.price)
            call.output_tokens = self._quoted_cap(call, quote.output_tokens)
        return call.reserved(await areserve_call(
            call.session, call.subtask, tools=call.tools,
            output_tokens=call.output_tokens + call.reread))

    # -- calls --------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            from langchain_core.language_models.chat_models import generate_from_stream

            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        call = self._prepare(messages, stop, kwargs)
        ticket = self._reserve(call)
        try:
            completion = call.client.complete(call.model, call.messages,
                                              call.settings(call.output_tokens), **call.extra)
        except BaseException:
            if ticket is not None and call.session is not None:
                call.session.release_call(ticket)
            raise
        if ticket is not None and call.session is not None:
            call.session.settle_call(ticket, completion.usage,
                                     finish_reason=completion.finish_reason)
        call.record(completion.usage, completion.finish_reason, completion.text,
                    completion.reasoning)
        return _chat_result(completion, call.model, call.resume)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            from langchain_core.language_models.chat_models import agenerate_from_stream

            return await agenerate_from_stream(
                self._astream(messages, stop, run_manager, **kwargs))
        call = self._prepare(messages, stop, kwargs)
        ticket = await self._areserve(call)
        try:
            completion = await call.client.acomplete(
                call.model, call.messages, call.settings(call.output_tokens), **call.extra)
        except BaseException:
            if ticket is not None and call.session is not None:
                await call.session.arelease_call(ticket)
            raise
        if ticket is not None and call.session is not None:
            await call.session.asettle_call(ticket, completion.usage,
                                            finish_reason=completion.finish_reason)
        call.record(completion.usage, completion.finish_reason, completion.text,
                    completion.reasoning)
        return _chat_result(completion, call.model, call.resume)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs)
        ticket = self._reserve(call)
        reader = _StreamReader(call.model)
        settled = False
        try:
            if call.resume is not None:  # the answer goes on from the partial one
                chunk = _prefix_chunk(call.resume)
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            for raw in call.client.stream(call.model, call.messages,
                                          call.settings(call.output_tokens), **call.extra):
                chunk = reader.read(raw)
                if chunk is not None:
                    if run_manager is not None:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            if ticket is not None and call.session is not None:
                call.session.settle_call(ticket, reader.usage, finish_reason=reader.finish)
            settled = True
            call.record(reader.usage, reader.finish, reader.text, reader.reasoning)
            yield reader.last()
        except GeneratorExit:  # the consumer stopped early: charge what the provider reported
            if not settled and ticket is not None and call.session is not None:
                call.session.settle_call(ticket, reader.usage, finish_reason=reader.finish)
            raise
        except BaseException:
            if not settled and ticket is not None and call.session is not None:
                call.session.release_call(ticket)
            raise

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs)
        ticket = await self._areserve(call)
        reader = _StreamReader(call.model)
        settled = False
        try:
            if call.resume is not None:
                chunk = _prefix_chunk(call.resume)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            async for raw in call.client.astream(call.model, call.messages,
                                                 call.settings(call.output_tokens),
                                                 **call.extra):
                chunk = reader.read(raw)
                if chunk is not None:
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            if ticket is not None and call.session is not None:
                await call.session.asettle_call(ticket, reader.usage,
                                                finish_reason=reader.finish)
            settled = True
            call.record(reader.usage, reader.finish, reader.text, reader.reasoning)
            yield reader.last()
        except GeneratorExit:
            if not settled and ticket is not None and call.session is not None:
                call.session.settle_call(ticket, reader.usage, finish_reason=reader.finish)
            raise
        except BaseException:
            if not settled and ticket is not None and call.session is not None:
                await call.session.arelease_call(ticket)
            raise


def _usage_metadata(usage: Usage | None) -> UsageMetadata | None:
    if usage is None:
        return None
    return UsageMetadata(
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        output_token_details={"reasoning": usage.reasoning_tokens},
    )


def _prefix_chunk(partial: PartialAnswer) -> ChatGenerationChunk:
    """The partial answer a continued stream goes on from, as its first chunk."""
    return ChatGenerationChunk(message=AIMessageChunk(
        content=partial.text,
        additional_kwargs={"reasoning_content": partial.reasoning} if partial.reasoning else {},
    ))


def _chat_result(completion: Completion, model: str,
                 prefix: PartialAnswer | None = None) -> ChatResult:
    tool_calls, invalid = [], []
    for raw in completion.tool_calls:
        try:
            tool_calls.append(parse_tool_call(dict(raw), return_id=True))
        except OutputParserException as error:
            invalid.append(make_invalid_tool_call(dict(raw), str(error)))
    metadata: dict[str, Any] = {"model_name": model, "finish_reason": completion.finish_reason}
    prefix = prefix or PartialAnswer()
    text, reasoning = prefix.text + completion.text, prefix.reasoning + completion.reasoning
    message = AIMessage(
        content=text,
        additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
        tool_calls=[call for call in tool_calls if call is not None],
        invalid_tool_calls=invalid,
        usage_metadata=_usage_metadata(completion.usage),
        response_metadata=metadata,
        id=getattr(completion.raw, "id", None),
    )
    return ChatResult(generations=[ChatGeneration(
        message=message, generation_info={"finish_reason": completion.finish_reason})])


class _StreamReader:
    """Turns LiteLLM stream chunks into LangChain chunks; keeps the usage and finish reason."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.text = ""
        self.reasoning = ""

    def read(self, raw: Any) -> ChatGenerationChunk | None:
        self.usage = Usage.from_response(raw) or self.usage
        choices = getattr(raw, "choices", None) or []
        if not choices:
            return None
        choice = choices[0]
        self.finish = getattr(choice, "finish_reason", None) or self.finish
        delta = getattr(choice, "delta", None)
        if delta is None:
            return None
        content = getattr(delta, "content", None) or ""
        reasoning = getattr(delta, "reasoning_content", None)
        self.text += content if isinstance(content, str) else ""
        self.reasoning += reasoning if isinstance(reasoning, str) else ""
        calls = [
            tool_call_chunk(
                name=getattr(call.function, "name", None),
                args=getattr(call.function, "arguments", None),
                id=getattr(call, "id", None), index=getattr(call, "index", None),
            )
            for call in (getattr(delta, "tool_calls", None) or [])
        ]
        if not content and not reasoning and not calls:
            return None
        return ChatGenerationChunk(message=AIMessageChunk(
            content=content,
            additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
            tool_call_chunks=calls,
            id=getattr(raw, "id", None),
        ))

    def last(self) -> ChatGenerationChunk:
        """The closing chunk: usage, model name and finish reason, once."""
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="", usage_metadata=_usage_metadata(self.usage),
                response_metadata={"model_name": self.model, "finish_reason": self.finish},
                chunk_position="last",
            ),
            generation_info={"finish_reason": self.finish},
        )
