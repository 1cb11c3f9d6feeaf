"""A synthetic probe model: estimates of the tokens an item needs, with a known log-normal noise.

The dev data holds no small model's estimates of needed tokens, so a real probe (TALE) cannot be
replayed. Instead the simulator serves *probe models* of known quality: for a request about an
item, one answers ``median * exp(sigma * z)`` tokens, where ``median`` is the median correct
length of the target model's replayed runs of that item (where its censoring-aware accuracy
curve reaches half its ceiling: :meth:`RunCatalog.median_correct_length`), ``sigma`` the probe
model's configured noise (natural-log units) and ``z`` a standard normal drawn from a hash of
(probe seed, probe model, target model, item): the same question always gets the same answer,
as from a deterministic probe that misjudges some problems consistently. An item that no run of
the target model solved is answered with the target's output limit (its largest sweep cap)
times the same noise: "longer than anything measured".

This measures what a probe *of a given quality* is worth; it says nothing about what any real
small model achieves.

Request fields read: ``model`` (a configured probe model name, bare or ``sim/``-prefixed);
the item marker ``[[item:...]]`` in the last user message (or ``sim_item``); the target model,
from the server's ``probe_target``, else a marker ``[[target:<model>]]`` in the last user message
(a provider prefix such as ``openai/`` is ignored), else a body field ``sim_target``;
``max_completion_tokens`` / ``max_tokens`` (the answer is cut to it, finish ``length``).
The reply's content is the integer; usage counts its tokens.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clear_middleware.simulator._tokens import count_prompt_tokens, encoding, message_text
from clear_middleware.simulator.catalog import RunCatalog
from clear_middleware.simulator.protocol import ITEM_MARKER, MODEL_PREFIX, RequestError, _cap

TARGET_MARKER = re.compile(r"\[\[target:([^\]\s]+)\]\]")
DEFAULT_PROBE_MODELS = {"probe-oracle": 0.5}
"""Probe models served by default: name -> log-normal noise sigma."""


def target_marker(model: str) -> str:
    """The marker naming the target model in a probe prompt, e.g. ``[[target:qwen3-1.7b]]``."""
    return f"[[target:{model}]]"


@dataclass(frozen=True)
class ProbeAnswer:
    """One probe reply: the text, its token counts and what it was about."""

    model: str
    item: str
    target: str
    estimate: float
    content: str
    prompt_tokens: int
    completion_tokens: int
    requested_cap: int | None
    cap: int | None
    finish_reason: str


def probe_model_name(model: Any, probe_models: Mapping[str, float]) -> str | None:
    """The configured probe model a request's ``model`` names, or ``None``."""
    if not isinstance(model, str):
        return None
    name = model.removeprefix(MODEL_PREFIX)
    return name if name in probe_models else None


def answer(
    body: Mapping[str, Any], name: str, sigma: float, catalog: RunCatalog, *,
    target: str | None, seed: int,
) -> ProbeAnswer:
    """The probe's reply to a validated request body (``RequestError`` on bad input)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, Mapping) for m in messages):
        raise RequestError(400, "messages must be a non-empty list of JSON objects")
    if body.get("stream"):
        raise RequestError(400, "probe models do not stream")
    user_text = next((message_text(m.get("content")) for m in reversed(messages)
                      if m.get("role") == "user"), "")
    if target is None:
        found = TARGET_MARKER.findall(user_text)
        target = found[-1] if found else body.get("sim_target")
    if not isinstance(target, str) or not target:
        raise RequestError(400, "a probe request must name its target model: the server's "
                                "probe_target, a [[target:<model>]] marker, or sim_target")
    target = target.rsplit("/", 1)[-1]
    if target not in catalog.models():
        raise RequestError(404, f"target model {target!r} is not simulated; known: "
                                f"{catalog.models()}", kind="not_found")
    item = body.get("sim_item")
    if item is None:
        found = ITEM_MARKER.findall(user_text)
        item = found[-1] if found else None
    if not isinstance(item, str) or item not in catalog.items(target):
        raise RequestError(404, f"item {item!r} has no runs for model {target!r}; name it "
                                "with a marker [[item:<benchmark>/<item_id>]]", kind="not_found")
    median = catalog.median_correct_length(target, item)
    base = float(catalog.max_cap(target)) if median is None else median
    digest = hashlib.sha256(f"{seed}|{name}|{target}|{item}".encode()).digest()
    z = float(np.random.default_rng(int.from_bytes(digest[:8], "big")).standard_normal())
    estimate = base * math.exp(sigma * z)
    content = str(max(1, round(estimate)))
    tokens = encoding().encode(content)
    requested = _cap(body)
    finish = "stop"
    if requested is not None and len(tokens) > requested:
        tokens, finish = tokens[:requested], "length"
        content = encoding().decode(tokens)
    return ProbeAnswer(name, item, target, estimate, content, count_prompt_tokens(messages),
                       len(tokens), requested, requested, finish)


def completion_body(request_id: str, reply: ProbeAnswer, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object carrying the probe's answer."""
    import time

    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.content},
            "logprobs": None,
            "finish_reason": reply.finish_reason,
        }],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }
