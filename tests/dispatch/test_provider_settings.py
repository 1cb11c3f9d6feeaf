"""Decisions of ``provider_settings``: caps, thinking budgets and effort levels, in tokens."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_middleware.dispatch import ProviderSettings, effort_for_budget, provider_settings


def test_anthropic_budget_becomes_thinking_plus_answer_reserve() -> None:
    got = provider_settings("anthropic/claude-sonnet-4-5", 4096)
    assert got == ProviderSettings(
        model="anthropic/claude-sonnet-4-5",
        family="anthropic_thinking",
        budget_tokens=4096,
        output_cap_tokens=4096,
        thinking_budget_tokens=3072,  # 4096 - max(512, 4096 / 4)
        reasoning_effort=None,
        clipped=False,
        model_max_output_tokens=64000,
        kwargs={"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 3072}},
    )


@pytest.mark.parametrize(
    ("budget", "expected_kwargs"),
    [
        # 1535 - 512 = 1023 < 1024: too small for extended thinking.
        (1535, {"max_tokens": 1535}),
        (1536, {"max_tokens": 1536, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        # The 512-token floor rules up to 2048; the 25% share beyond.
        (2048, {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1536}}),
        (10001, {"max_tokens": 10001, "thinking": {"type": "enabled", "budget_tokens": 7500}}),
        (1, {"max_tokens": 1}),
    ],
)
def test_anthropic_thinking_threshold(budget: int, expected_kwargs: dict) -> None:
    assert provider_settings("anthropic/claude-sonnet-4-5", budget).kwargs == expected_kwargs


def test_anthropic_budget_above_model_limit_is_clipped_and_reported() -> None:
    got = provider_settings("anthropic/claude-sonnet-4-5", 100_000)
    assert (got.output_cap_tokens, got.clipped, got.thinking_budget_tokens) == (64000, True, 48000)
    assert got.kwargs == {
        "max_tokens": 64000,
        "thinking": {"type": "enabled", "budget_tokens": 48000},
    }


@settings(max_examples=300, deadline=None)
@given(budget=st.integers(min_value=1, max_value=200_000))
def test_anthropic_thinking_budget_is_always_valid(budget: int) -> None:
    got = provider_settings("anthropic/claude-haiku-4-5", budget)
    cap = got.kwargs["max_tokens"]
    assert cap == min(budget, 64000)
    thinking = got.kwargs.get("thinking")
    if thinking is None:
        assert cap - max(512, -(-cap // 4)) < 1024
    else:
        assert 1024 <= thinking["budget_tokens"] < cap
        assert cap - thinking["budget_tokens"] >= 512


def test_adaptive_only_claude_gets_an_effort_not_a_budget() -> None:
    got = provider_settings("anthropic/claude-opus-4-7", 8000)
    assert got.family == "anthropic_adaptive"
    assert got.kwargs == {"max_tokens": 8000, "reasoning_effort": "medium"}
    # Anthropic has no "minimal" adaptive level.
    assert provider_settings("anthropic/claude-opus-4-7", 500).reasoning_effort == "low"


def test_claude_46_still_takes_a_legacy_thinking_budget() -> None:
    got = provider_settings("anthropic/claude-sonnet-4-6", 8000)
    assert got.kwargs == {
        "max_tokens": 8000,
        "thinking": {"type": "enabled", "budget_tokens": 6000},
    }


@pytest.mark.parametrize(
    ("model", "budget", "expected"),
    [
        ("openai/o4-mini", 500, {"max_completion_tokens": 500, "reasoning_effort": "low"}),
        ("openai/o4-mini", 1024, {"max_completion_tokens": 1024, "reasoning_effort": "low"}),
        ("openai/o4-mini", 4095, {"max_completion_tokens": 4095, "reasoning_effort": "low"}),
        ("openai/o4-mini", 4096, {"max_completion_tokens": 4096, "reasoning_effort": "medium"}),
        ("o3-mini", 16384, {"max_completion_tokens": 16384, "reasoning_effort": "high"}),
        ("openai/gpt-5-mini", 1023, {"max_completion_tokens": 1023, "reasoning_effort": "minimal"}),
        ("azure/o4-mini", 2000, {"max_completion_tokens": 2000, "reasoning_effort": "low"}),
    ],
)
def test_openai_reasoning_models(model: str, budget: int, expected: dict) -> None:
    got = provider_settings(model, budget)
    assert got.family == "openai_reasoning"
    assert got.kwargs == expected
    assert got.reasoning_effort == expected["reasoning_effort"]


def test_openai_budget_above_limit_is_clipped() -> None:
    got = provider_settings("openai/o4-mini", 250_000)
    assert got.kwargs == {"max_completion_tokens": 100_000, "reasoning_effort": "high"}
    assert got.clipped and got.budget_tokens == 250_000 and got.model_max_output_tokens == 100_000


@pytest.mark.parametrize(
    ("model", "budget", "thinking"),
    [
        ("gemini/gemini-2.5-flash", 4096, 3072),
        ("gemini/gemini-2.5-flash", 600, 88),
        ("gemini/gemini-2.5-flash", 512, 0),  # no room: thinking switched off
        ("gemini/gemini-2.5-flash", 60000, 24576),  # the model's maximum thinking budget
        ("gemini/gemini-2.5-flash-lite", 1000, 0),  # 488 < its minimum of 512: off
        ("gemini/gemini-2.5-flash-lite", 1100, 588),
        ("gemini/gemini-2.5-pro", 300, 128),  # cannot switch off: the least thinking
        ("gemini/gemini-2.5-pro", 65536, 32768),
        ("vertex_ai/gemini-2.5-flash", 4096, 3072),
    ],
)
def test_gemini_25_thinking_budget(model: str, budget: int, thinking: int) -> None:
    got = provider_settings(model, budget)
    assert got.family == "gemini_thinking_budget"
    assert got.thinking_budget_tokens == thinking
    assert got.kwargs == {
        "max_tokens": budget,
        "thinking": {"type": "enabled", "budget_tokens": thinking},
    }


def test_gemini_3_gets_an_effort_level() -> None:
    got = provider_settings("gemini/gemini-3-pro-preview", 9000)
    assert got.family == "gemini_thinking_level"
    assert got.kwargs == {"max_tokens": 9000, "reasoning_effort": "medium"}


@pytest.mark.parametrize(
    ("model", "budget", "cap", "limit"),
    [
        ("openai/gpt-4o-mini", 20000, 16384, 16384),
        ("openai/gpt-4o-mini", 300, 300, 16384),
        ("ollama/llama3", 9000, 8192, 8192),
        ("openai/deepscaler-1.5b", 3000, 3000, None),  # self-hosted: unknown to LiteLLM
        ("hosted_vllm/qwen3-1.7b", 3000, 3000, None),
    ],
)
def test_everything_else_gets_max_tokens(
    model: str, budget: int, cap: int, limit: int | None
) -> None:
    got = provider_settings(model, budget)
    assert got.family == "plain"
    assert got.kwargs == {"max_tokens": cap}
    assert (got.output_cap_tokens, got.clipped, got.model_max_output_tokens) == (
        cap,
        cap < budget,
        limit,
    )
    assert got.thinking_budget_tokens is None and got.reasoning_effort is None


def test_numpy_integer_budget_is_accepted() -> None:
    assert provider_settings("openai/gpt-4o-mini", np.int64(700)).kwargs == {"max_tokens": 700}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "openai/gpt-4o-mini", "budget_tokens": 0}, "budget_tokens"),
        ({"model": "openai/gpt-4o-mini", "budget_tokens": -5}, "budget_tokens"),
        ({"model": "openai/gpt-4o-mini", "budget_tokens": 100.0}, "budget_tokens"),
        ({"model": "openai/gpt-4o-mini", "budget_tokens": "100"}, "budget_tokens"),
        ({"model": "openai/gpt-4o-mini", "budget_tokens": True}, "budget_tokens"),
        ({"model": "", "budget_tokens": 100}, "model"),
        ({"model": None, "budget_tokens": 100}, "model"),
        (
            {"model": "openai/gpt-4o-mini", "budget_tokens": 100, "answer_floor_tokens": -1},
            "answer_floor_tokens",
        ),
        (
            {"model": "openai/gpt-4o-mini", "budget_tokens": 100, "answer_share": 1.0},
            "answer_share",
        ),
    ],
)
def test_bad_input_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        provider_settings(**kwargs)


def test_answer_reserve_is_configurable() -> None:
    got = provider_settings(
        "anthropic/claude-sonnet-4-5", 4096, answer_floor_tokens=2048, answer_share=0.0
    )
    assert got.thinking_budget_tokens == 2048


@pytest.mark.parametrize(
    ("budget", "minimal", "effort"),
    [
        (1, True, "minimal"),
        (1023, True, "minimal"),
        (1023, False, "low"),
        (1024, True, "low"),
        (4096, True, "medium"),
        (16383, True, "medium"),
        (16384, True, "high"),
    ],
)
def test_effort_thresholds(budget: int, minimal: bool, effort: str) -> None:
    assert effort_for_budget(budget, minimal_supported=minimal) == effort
