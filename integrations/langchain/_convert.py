"""Between LangChain messages and what the session counts and settles (OpenAI-shaped dicts,
:class:`~clear_middleware.usage.Usage`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from clear_middleware.session import Subtask
from clear_middleware.usage import Usage

# Invocation parameters in which chat models spell their output cap (tokens): OpenAI,
# LiteLLM and Anthropic (max_tokens), OpenAI reasoning models (max_completion_tokens), Google
# (max_output_tokens) and Ollama (num_predict).
CAP_PARAMETERS = ("max_completion_tokens", "max_tokens", "max_output_tokens", "num_predict")


def openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat dicts (what the session counts prompts in)."""
    converted = convert_to_openai_messages(list(messages))
    return [converted] if isinstance(converted, dict) else list(converted)


def subtask_of(messages: Sequence[BaseMessage], *, kind: str | None = None,
               subtask_id: str | None = None) -> Subtask:
    """A :class:`Subtask` for one model call."""
    return Subtask(tuple(openai_messages(messages)), kind=kind, id=subtask_id)


def openai_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Tools in OpenAI function format (LangChain tools, pydantic models, functions, dicts)."""
    if not tools:
        return None
    return [convert_to_openai_tool(tool) for tool in tools]


def output_cap(params: Mapping[str, Any]) -> int | None:
    """The output cap (tokens) a model was invoked with, if its parameters name one."""
    for name in CAP_PARAMETERS:
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def usage_of_message(message: Any) -> Usage | None:
    """Provider usage from an ``AIMessage``'s ``usage_metadata`` (``None`` if it has none).

    LangChain's ``output_tokens`` already include reasoning tokens, as OpenAI's
    ``completion_tokens`` do; ``output_token_details.reasoning`` is their breakdown.
    """
    metadata = getattr(message, "usage_metadata", None)
    if not metadata:
        return None
    prompt = int(metadata.get("input_tokens") or 0)
    output = int(metadata.get("output_tokens") or 0)
    details = metadata.get("output_token_details") or {}
    reasoning = min(int(details.get("reasoning") or 0), output)
    return Usage(prompt, output, reasoning)


def finish_reason_of(message: Any) -> str | None:
    metadata = getattr(message, "response_metadata", None) or {}
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    return "length" if reason in ("length", "max_tokens", "MAX_TOKENS") else reason


def usage_of_result(result: LLMResult) -> tuple[Usage | None, str | None]:
    """Usage and finish reason of a chat model run's result (invoke or a merged stream)."""
    for generations in result.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                usage = usage_of_message(generation.message)
                if usage is not None:
                    reason = finish_reason_of(generation.message) or (
                        (generation.generation_info or {}).get("finish_reason"))
                    return usage, reason
    token_usage = (result.llm_output or {}).get("token_usage") or (
        (result.llm_output or {}).get("usage"))
    return Usage.from_response({"usage": token_usage}) if token_usage else None, None


def last_ai_message(messages: Sequence[Any]) -> AIMessage | None:
    for message in reversed(list(messages)):
        if isinstance(message, AIMessage):
            return message
    return None
