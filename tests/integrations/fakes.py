"""A small tool-calling chat model (LangChain's built-in fakes have no ``bind_tools``)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"nothing new about {query}"


class ToolLoopModel(BaseChatModel):
    """Asks for the ``lookup`` tool whenever it is offered one, else answers.

    Reports ``usage_metadata``: ``input_tokens`` fixed, ``output_tokens`` = the smaller of its
    ``max_tokens`` and ``output_tokens``. Records what each call was sent in ``calls``.
    """

    input_tokens: int = 50
    output_tokens: int = 300
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "tool-loop"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        cap = kwargs.get("max_tokens")
        self.calls.append({"max_tokens": cap, "tools": bool(kwargs.get("tools")),
                           "last": messages[-1].content})
        out = min(cap if cap is not None else 10**9, self.output_tokens)
        n = len(self.calls)
        calls = ([{"name": "lookup", "args": {"query": f"q{n}"}, "id": f"call-{n}"}]
                 if kwargs.get("tools") else [])
        message = AIMessage(
            content="" if calls else "Final answer: 42", tool_calls=calls,
            usage_metadata={"input_tokens": self.input_tokens, "output_tokens": out,
                            "total_tokens": self.input_tokens + out},
            response_metadata={"finish_reason": "tool_calls" if calls else "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
