"""The exact JSON LiteLLM sends for ``provider_settings(...).kwargs``, per provider family.

Each call goes through ``litellm.completion`` to a recording server on 127.0.0.1 that answers
in the provider's own format, so these tests pin the request bodies the real APIs would get.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from clear_middleware.dispatch import provider_settings

from .recording_server import RecordingServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def _send(recorder: RecordingServer, model: str, budget: int) -> tuple[str, dict[str, Any]]:
    """Call LiteLLM with the settings for ``budget``; the path and body it sent, sans prompt."""
    import litellm

    settings = provider_settings(model, budget)
    response = litellm.completion(
        model=model, messages=MESSAGES, api_base=recorder.url, api_key="test", **settings.kwargs
    )
    assert response.choices[0].message.content == "ok"
    sent = recorder.requests[-1]
    body = {k: v for k, v in sent.body.items() if k not in ("messages", "contents")}
    return sent.path.split("?", 1)[0], body


def test_openai_o_series(recorder: RecordingServer) -> None:
    path, body = _send(recorder, "openai/o4-mini", 5000)
    assert path == "/chat/completions"
    assert body == {"model": "o4-mini", "max_completion_tokens": 5000, "reasoning_effort": "medium"}


def test_openai_gpt5_minimal_effort(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "openai/gpt-5-mini", 800)
    assert body == {
        "model": "gpt-5-mini",
        "max_completion_tokens": 800,
        "reasoning_effort": "minimal",
    }


def test_openai_clipped_to_model_limit(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "openai/o3-mini", 250_000)
    assert body == {
        "model": "o3-mini",
        "max_completion_tokens": 100_000,
        "reasoning_effort": "high",
    }


def test_anthropic_extended_thinking(recorder: RecordingServer) -> None:
    path, body = _send(recorder, "anthropic/claude-sonnet-4-5", 4096)
    assert path == "/v1/messages"
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 3072},
    }


def test_anthropic_small_budget_sends_no_thinking(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "anthropic/claude-sonnet-4-5", 1500)
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 1500}


def test_anthropic_adaptive_model(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "anthropic/claude-opus-4-7", 8000)
    assert body == {
        "model": "claude-opus-4-7",
        "max_tokens": 8000,
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": "medium"},
    }


def test_gemini_thinking_budget(recorder: RecordingServer) -> None:
    path, body = _send(recorder, "gemini/gemini-2.5-flash", 4096)
    assert path == "/models/gemini-2.5-flash:generateContent"
    assert body == {
        "generationConfig": {
            "max_output_tokens": 4096,
            "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 3072},
        }
    }


def test_gemini_thinking_switched_off(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "gemini/gemini-2.5-flash", 500)
    assert body == {
        "generationConfig": {"max_output_tokens": 500, "thinkingConfig": {"thinkingBudget": 0}}
    }


def test_plain_model_gets_max_tokens(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "openai/gpt-4o-mini", 20000)
    assert body == {"model": "gpt-4o-mini", "max_tokens": 16384}


def test_self_hosted_model_gets_max_tokens(recorder: RecordingServer) -> None:
    _, body = _send(recorder, "openai/deepscaler-1.5b", 3000)
    assert body == {"model": "deepscaler-1.5b", "max_tokens": 3000}
