"""Sending one funded call through LiteLLM (or a LiteLLM ``Router``), and reading it back.

This module and :mod:`.provider_settings` are the only places that know provider payloads.
LiteLLM is imported lazily: importing it takes seconds.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..usage import Usage

# Errors after which the same call may succeed: server errors, timeouts, rate limits and
# dropped connections (LiteLLM's exception classes, looked up by name to stay lazy).
_RETRYABLE = (
    "InternalServerError", "ServiceUnavailableError", "Timeout", "RateLimitError",
    "APIConnectionError", "BadGatewayError",
)


def import_litellm() -> Any:
    """LiteLLM, with the offline settings this package relies on."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def is_retryable(error: BaseException) -> bool:
    """Whether a provider error may go away on a retry."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names.intersection(_RETRYABLE)) or isinstance(error, TimeoutError)


@dataclass(frozen=True)
class Completion:
    """One provider reply, reduced to what a session settles.

    Attributes:
        text: the visible answer.
        reasoning: reasoning text the provider returned separately (``""`` if none).
        usage: provider-reported usage, or ``None`` when it reported none.
        finish_reason: ``"stop"``, ``"length"`` (cut at the cap), ``"tool_calls"``, ...
        tool_calls: tool calls in OpenAI format (empty if none).
        raw: the LiteLLM response object.
    """

    text: str
    reasoning: str
    usage: Usage | None
    finish_reason: str | None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    raw: Any = None


def _completion(response: Any) -> Completion:
    choice = response.choices[0]
    message = choice.message
    tool_calls = tuple(
        call.model_dump() if hasattr(call, "model_dump") else dict(call)
        for call in (getattr(message, "tool_calls", None) or ())
    )
    return Completion(
        text=message.content or "",
        reasoning=getattr(message, "reasoning_content", None) or "",
        usage=Usage.from_response(response),
        finish_reason=choice.finish_reason,
        tool_calls=tool_calls,
        raw=response,
    )


class LiteLLMClient:
    """Calls a model through ``litellm.acompletion`` or a ``litellm.Router``.

    Args:
        router: a ``litellm.Router``, or its ``model_list`` (a list of deployments), or the path
            of a LiteLLM config file (YAML or JSON with a ``model_list``). ``model`` is then a
            model group name of that list.
        **litellm_kwargs: passed to every call (``api_base``, ``api_key``, ``timeout``, ...).
    """

    def __init__(self, router: Any = None, **litellm_kwargs: Any) -> None:
        self._router = _make_router(router) if router is not None else None
        self.litellm_kwargs = dict(litellm_kwargs)

    @property
    def router(self) -> Any:
        return self._router

    def provider_model(self, model: str) -> str:
        """The provider model name behind ``model`` (a Router group resolves to its first
        deployment's ``litellm_params.model``), for choosing provider settings."""
        if self._router is None:
            return model
        for deployment in self._router.model_list:
            if deployment.get("model_name") == model:
                return deployment.get("litellm_params", {}).get("model", model)
        return model

    def _kwargs(self, settings: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {**self.litellm_kwargs, **settings, **extra}
        # The session retries itself (so retries are charged to the same subtask).
        kwargs.setdefault("num_retries", 0)
        # LiteLLM routes any call with tools through its MCP gateway check, which imports the
        # optional `mcp` package (its [mcp] extra); plain function tools never need it.
        tools = kwargs.get("tools")
        if tools and not any(isinstance(t, Mapping) and t.get("type") == "mcp" for t in tools):
            kwargs.setdefault("_skip_mcp_handler", True)
        if self._router is None:
            kwargs.setdefault("max_retries", 0)
        return kwargs

    async def acomplete(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        settings: Mapping[str, Any],
        **extra: Any,
    ) -> Completion:
        """One non-streaming call with the provider settings of its allocation."""
        kwargs = self._kwargs(settings, extra)
        if self._router is not None:
            response = await self._router.acompletion(model=model, messages=list(messages),
                                                      **kwargs)
        else:
            response = await import_litellm().acompletion(model=model, messages=list(messages),
                                                          **kwargs)
        return _completion(response)

    def complete(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        settings: Mapping[str, Any],
        **extra: Any,
    ) -> Completion:
        """Blocking :meth:`acomplete` (``litellm.completion`` / ``Router.completion``), for
        callers that have no event loop (a synchronous LangChain chat model)."""
        kwargs = self._kwargs(settings, extra)
        if self._router is not None:
            response = self._router.completion(model=model, messages=list(messages), **kwargs)
        else:
            response = import_litellm().completion(model=model, messages=list(messages),
                                                   **kwargs)
        return _completion(response)

    def stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        settings: Mapping[str, Any],
        **extra: Any,
    ) -> Iterator[Any]:
        """Blocking :meth:`astream`: a streaming call asking for a final usage chunk."""
        kwargs = self._kwargs(settings, extra)
        kwargs["stream"] = True
        kwargs["stream_options"] = {**kwargs.get("stream_options", {}), "include_usage": True}
        if self._router is not None:
            stream = self._router.completion(model=model, messages=list(messages), **kwargs)
        else:
            stream = import_litellm().completion(model=model, messages=list(messages), **kwargs)
        try:
            yield from stream
        finally:
            # LiteLLM's sync stream wrapper has no close(); its provider stream does (it closes
            # the HTTP response, so a consumer that stops early does not leave it open).
            close = getattr(stream, "close", None) or getattr(
                getattr(stream, "completion_stream", None), "close", None)
            if close is not None:
                close()

    async def astream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        settings: Mapping[str, Any],
        **extra: Any,
    ) -> AsyncIterator[Any]:
        """A streaming call asking for a final usage chunk; yields LiteLLM chunks."""
        kwargs = self._kwargs(settings, extra)
        kwargs["stream"] = True
        kwargs["stream_options"] = {**kwargs.get("stream_options", {}), "include_usage": True}
        if self._router is not None:
            stream = await self._router.acompletion(model=model, messages=list(messages),
                                                    **kwargs)
        else:
            stream = await import_litellm().acompletion(model=model, messages=list(messages),
                                                        **kwargs)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()


def _make_router(router: Any) -> Any:
    if isinstance(router, str | Path):
        path = Path(router)
        router = _read_config(path).get("model_list")
        if not router:
            raise ValueError(f"router config {str(path)!r} has no model_list")
    if isinstance(router, list):
        litellm = import_litellm()
        return litellm.Router(model_list=router)
    if hasattr(router, "acompletion") and hasattr(router, "model_list"):
        return router
    raise TypeError("router must be a litellm.Router, a model_list, or a config file path")


def _read_config(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # LiteLLM depends on PyYAML

        return yaml.safe_load(text) or {}
    import json

    return json.loads(text)
