"""The OpenAI chat-completions wire format of the simulator: reading requests, writing replies.

Request fields the simulator reads (all others are accepted and ignored):

- ``model``: a sweep model, bare (``"deepscaler-1.5b"``) or as ``"sim/deepscaler-1.5b"``;
- ``messages``: the item is named by a marker ``[[item:<benchmark>/<item_id>]]`` anywhere in the
  last user message, e.g. ``[[item:math500/test/precalculus/807.json]]`` or
  ``[[item:aime24/2024-I-1]]``; or by a body field ``sim_item`` (top level, or inside
  ``metadata``; LiteLLM forwards both through ``extra_body``). Without either, the item is
  picked deterministically from a hash of the last user message;
- ``max_completion_tokens`` (preferred) or ``max_tokens``: the cap in tokens, an integer >= 1,
  clipped to the model's largest sweep cap (its simulated output limit; also the default);
- ``seed``: selects among the item's runs; without it, a hash of the messages does;
- ``stream`` and ``stream_options.include_usage``;
- ``continue_final_message: true`` with a final assistant message: continue that partial answer
  (its tokens are counted as already generated and the run marker in it names the run).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clear_middleware.simulator._tokens import count_prompt_tokens, count_tokens, message_text
from clear_middleware.simulator.catalog import ReplayPlan, RunCatalog
from clear_middleware.simulator.replay import ReplayText, last_run_marker

ITEM_MARKER = re.compile(r"\[\[item:([^\]\s]+)\]\]")
MODEL_PREFIX = "sim/"


class RequestError(Exception):
    """A request the simulator rejects; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.kind = kind

    def body(self) -> bytes:
        error = {"message": str(self), "type": self.kind, "code": None}
        return json.dumps({"error": error}).encode()


@dataclass(frozen=True)
class SimRequest:
    """A parsed chat-completions request.

    Attributes:
        model: the model name as sent (echoed back).
        sweep_model: the sweep model it names.
        item: the item key ``"<benchmark>/<item_id>"``.
        requested_cap: the cap asked for, in tokens, or ``None``.
        cap: the cap applied, in tokens (clipped to the model's output limit).
        seed_key: what orders the item's runs (from ``seed`` or the messages).
        prompt_tokens: tokens of the messages, continued assistant text included.
        already: tokens of the continued assistant message (0 if not a continuation).
        prefer_run_id: the run named by the continued text's marker, if any.
        stream, include_usage: streaming options.
    """

    model: str
    sweep_model: str
    item: str
    requested_cap: int | None
    cap: int
    seed_key: str
    prompt_tokens: int
    already: int
    prefer_run_id: int | None
    stream: bool
    include_usage: bool

    @property
    def continued(self) -> bool:
        return self.already > 0 or self.prefer_run_id is not None


def parse_request(body: Any, catalog: RunCatalog) -> SimRequest:
    """Validate a request body against the catalog; ``RequestError`` on bad input."""
    if not isinstance(body, Mapping):
        raise RequestError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "model must be a non-empty string")
    sweep_model = model.removeprefix(MODEL_PREFIX)
    if sweep_model not in catalog.models():
        raise RequestError(
            404, f"model {model!r} is not simulated; known: {catalog.models()}", kind="not_found"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list")
    if not all(isinstance(m, Mapping) for m in messages):
        raise RequestError(400, "each message must be a JSON object")
    if body.get("n", 1) != 1:
        raise RequestError(400, "n must be 1: the simulator returns one choice")

    continuing = bool(body.get("continue_final_message"))
    if continuing and messages[-1].get("role") != "assistant":
        raise RequestError(400, "continue_final_message needs a final assistant message")
    prior_text = ""
    already = 0
    if continuing:
        last = messages[-1]
        reasoning = message_text(last.get("reasoning_content"))
        content = message_text(last.get("content"))
        prior_text = reasoning + content
        already = count_tokens(reasoning) + count_tokens(content)

    item = _item(body, messages, sweep_model, catalog)
    requested = _cap(body)
    limit = catalog.max_cap(sweep_model)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, "seed must be an integer")
    seed_key = f"seed:{seed}" if seed is not None else "messages:" + _digest(messages)
    options = body.get("stream_options") or {}
    return SimRequest(
        model=model,
        sweep_model=sweep_model,
        item=item,
        requested_cap=requested,
        cap=min(requested, limit) if requested is not None else limit,
        seed_key=seed_key,
        prompt_tokens=count_prompt_tokens(messages),
        already=already,
        prefer_run_id=last_run_marker(prior_text) if continuing else None,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(options, Mapping) and options.get("include_usage")),
    )


def _item(body: Mapping[str, Any], messages: list, model: str, catalog: RunCatalog) -> str:
    metadata = body.get("metadata")
    named = body.get("sim_item")
    if named is None and isinstance(metadata, Mapping):
        named = metadata.get("sim_item")
    user_text = next(
        (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    if named is None:
        found = ITEM_MARKER.findall(user_text)
        named = found[-1] if found else None
    if named is None:
        text = user_text or json.dumps(messages, sort_keys=True)
        return catalog.item_for_text(model, text)
    if not isinstance(named, str) or named not in catalog.items(model):
        raise RequestError(
            404,
            f"item {named!r} has no runs for model {model!r}; name items as "
            "'<benchmark>/<item_id>', e.g. 'math500/test/precalculus/807.json'",
            kind="not_found",
        )
    return named


def _cap(body: Mapping[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(400, f"{field} must be an integer >= 1, got {value!r}")
        return value
    return None


def _digest(messages: list) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def finish_reason(plan: ReplayPlan) -> str:
    return "stop" if plan.finished else "length"


def completion_body(
    request_id: str, request: SimRequest, plan: ReplayPlan, text: ReplayText
) -> dict[str, Any]:
    """A ``chat.completion`` object; reasoning goes in ``reasoning_content`` (as vLLM does)."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text.answer,
                    "reasoning_content": text.reasoning,
                },
                "logprobs": None,
                "finish_reason": finish_reason(plan),
            }
        ],
        "usage": usage(request.prompt_tokens, text.completion_tokens, text.reasoning_tokens),
    }


def chunk_body(
    request_id: str,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with a single choice."""
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk_body(request_id: str, model: str, usage_fields: dict[str, Any]) -> dict[str, Any]:
    """The final chunk of a stream with ``include_usage``: no choices, the usage."""
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": usage_fields,
    }


def models_body(catalog: RunCatalog) -> dict[str, Any]:
    """``GET /v1/models``: each sweep model with its output limit (tokens)."""
    return {
        "object": "list",
        "data": [
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": "clear-middleware-simulator",
                "max_output_tokens": catalog.max_cap(model),
            }
            for model in catalog.models()
        ],
    }
