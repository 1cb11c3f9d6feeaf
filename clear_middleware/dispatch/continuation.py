"""Continuing a cut-off generation, per provider family: the capability table.

Progressive CLEAR advances a run in steps. Where the provider can continue a partial answer,
the next step sends the conversation with the partial answer as a final assistant message and
the provider's flag to continue it; where it cannot, the step restarts the call with a larger
cap and the tokens already generated are spent again.

========================  ==========================================================  =========
family                    how the partial answer is continued                         thinking
========================  ==========================================================  =========
``continue_final``        OpenAI-compatible self-hosted servers (vLLM, SGLang, the     any
                          local simulator): final assistant message +
                          ``continue_final_message: true``,
                          ``add_generation_prompt: false`` (request body)
``deepseek_prefix``       DeepSeek prefix completion: final assistant message with     no
                          ``"prefix": true``
``anthropic_prefill``     Anthropic assistant prefill: final assistant message         no
                          (not with extended thinking, which a prefill disables)
``restart``               everything else (OpenAI's and Google's hosted APIs): run     -
                          again with a larger cap
========================  ==========================================================  =========

Re-sent partial text is billed as prompt tokens: a continued step of ``d`` tokens after ``s``
costs ``s`` input tokens (cheap per token, often cached) plus ``d`` output tokens; a restart
costs ``s + d`` output tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..tokens import count_message_tokens

Continuation = Literal["continue_final", "deepseek_prefix", "anthropic_prefill", "restart"]
CONTINUATIONS: tuple[Continuation, ...] = (
    "continue_final", "deepseek_prefix", "anthropic_prefill", "restart")

_SELF_HOSTED_PREFIXES = ("hosted_vllm/", "vllm/", "sglang/", "openai_like/", "custom_openai/")


def continuation_for(model: str, *, api_base: str | None = None,
                     thinking: bool = False) -> Continuation:
    """The continuation family of a LiteLLM model name (see the module table).

    Args:
        model: LiteLLM model name.
        api_base: the endpoint, if not the provider's own: an ``openai/...`` model served from a
            custom ``api_base`` is taken to be an OpenAI-compatible self-hosted server.
        thinking: the call uses extended thinking (rules out prefill-style continuation).
    """
    name = model.lower()
    if name.startswith(_SELF_HOSTED_PREFIXES):
        return "continue_final"
    if name.startswith("openai/") and api_base and "api.openai.com" not in api_base:
        return "continue_final"
    if name.startswith("deepseek/") and not thinking and "reasoner" not in name:
        return "deepseek_prefix"
    if name.startswith("anthropic/") and not thinking:
        return "anthropic_prefill"
    return "restart"


@dataclass(frozen=True)
class ContinuedRequest:
    """Messages and extra request fields that continue ``partial`` under a family's rules."""

    messages: list[dict[str, Any]]
    extra: dict[str, Any]


def reread_tokens(request: ContinuedRequest, messages: Sequence[Mapping[str, Any]],
                  model: str) -> int:
    """Prompt tokens ``request`` adds to ``messages``: the partial answer it sends back (text
    and reasoning, re-read by the model and billed as prompt) and its message framing."""
    return max(count_message_tokens(request.messages, model)
               - count_message_tokens(list(messages), model), 0)


def continue_request(
    family: Continuation, messages: Sequence[Mapping[str, Any]], partial: str,
    reasoning: str = "",
) -> ContinuedRequest:
    """The request that continues a partial answer (``partial`` visible text, ``reasoning``
    the reasoning text returned separately, if any)."""
    base = [dict(m) for m in messages]
    if family == "restart" or not (partial or reasoning):
        return ContinuedRequest(base, {})
    if family == "continue_final":
        last = {"role": "assistant", "content": partial}
        if reasoning:
            last["reasoning_content"] = reasoning
        return ContinuedRequest([*base, last], {"extra_body": {
            "continue_final_message": True, "add_generation_prompt": False}})
    if family == "deepseek_prefix":
        return ContinuedRequest(
            [*base, {"role": "assistant", "content": reasoning + partial, "prefix": True}], {})
    if family == "anthropic_prefill":
        return ContinuedRequest([*base, {"role": "assistant", "content": reasoning + partial}], {})
    raise ValueError(f"family must be one of {list(CONTINUATIONS)}; got {family!r}")
