"""Turn a funded output-token budget into the request settings a provider accepts.

A CLEAR allocation funds each call with a budget ``b`` in tokens: a hard cap on everything the
model generates, reasoning included. Providers spell that cap (and how much of it may go to
thinking) differently; this module is the one place that knows how, for a LiteLLM model name.
``provider_settings(model, b).kwargs`` is passed as is to ``litellm.completion(...)``.

The decision table (first matching rule wins; model facts come from LiteLLM's model map;
``cap`` is the budget clipped to the model's ``max_output_tokens`` when LiteLLM knows it, and
``reserve = max(512, ceil(cap / 4))`` tokens are kept out of an explicit thinking budget for the
visible answer):

- ``openai_reasoning`` (o-series and gpt-5 family on ``openai``/``azure``):
  ``max_completion_tokens=cap`` and a ``reasoning_effort`` chosen by ``EFFORT_BY_BUDGET``.
- ``anthropic_adaptive`` (Claude models that accept only adaptive thinking, e.g. Opus 4.7):
  ``max_tokens=cap`` and ``reasoning_effort`` by budget, which LiteLLM sends as
  ``thinking={"type": "adaptive"}`` plus ``output_config.effort``.
- ``anthropic_thinking`` (other reasoning Claude models): ``max_tokens=cap`` and, when
  ``cap - reserve >= 1024`` (Anthropic's minimum), ``thinking={"type": "enabled",
  "budget_tokens": cap - reserve}``, which is then always below ``max_tokens``; else no thinking.
- ``gemini_thinking_level`` (Gemini 3+): ``max_tokens=cap`` and ``reasoning_effort`` by budget,
  which LiteLLM maps to ``thinkingConfig.thinkingLevel``.
- ``gemini_thinking_budget`` (Gemini 2.5 on ``gemini``/``vertex_ai``): ``max_tokens=cap`` and
  ``thinking={"type": "enabled", "budget_tokens": t}``, which LiteLLM maps to
  ``thinkingConfig.thinkingBudget``; ``t = cap - reserve`` clamped to the model's range, and
  ``0`` (thinking off) when that is below the range and the model allows switching it off.
- ``plain`` (everything else, including models LiteLLM does not know): ``max_tokens=cap``.

The result says whether the budget was clipped. An unknown model is not an error.

Why not LiteLLM's own ``reasoning_effort`` for legacy-thinking Claude: it maps to a fixed
``budget_tokens`` (e.g. 4096 for "high") whatever ``max_tokens`` is, and Anthropic rejects
``budget_tokens >= max_tokens``; the budget is therefore computed here from the cap.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal[
    "openai_reasoning",
    "anthropic_adaptive",
    "anthropic_thinking",
    "gemini_thinking_level",
    "gemini_thinking_budget",
    "plain",
]
Effort = Literal["minimal", "low", "medium", "high"]

# Effort by budget (tokens, reasoning included): a level is chosen only once the budget covers
# the reasoning such a level typically spends, so the cap rarely cuts the model's own stopping
# point. Ordered from the largest threshold down; the last row catches every budget >= 1.
EFFORT_BY_BUDGET: tuple[tuple[int, Effort], ...] = (
    (16384, "high"),
    (4096, "medium"),
    (1024, "low"),
    (1, "minimal"),
)

# Anthropic requires thinking.budget_tokens >= 1024 and strictly below max_tokens.
ANTHROPIC_MIN_THINKING_TOKENS = 1024
# Tokens kept out of a thinking budget for the visible answer: at least ANSWER_FLOOR_TOKENS,
# or ANSWER_SHARE of the cap when larger, so a long think cannot starve the answer.
ANSWER_FLOOR_TOKENS = 512
ANSWER_SHARE = 0.25


@dataclass(frozen=True)
class _GeminiThinkingRange:
    """A Gemini 2.5 model's accepted ``thinkingBudget`` (tokens), per Google's documentation."""

    min_tokens: int
    max_tokens: int
    can_disable: bool  # a budget of 0 switches thinking off


# Matched against the model name in this order ("flash-lite" before "flash").
GEMINI_25_THINKING_RANGES: tuple[tuple[str, _GeminiThinkingRange], ...] = (
    ("flash-lite", _GeminiThinkingRange(512, 24576, can_disable=True)),
    ("flash", _GeminiThinkingRange(1, 24576, can_disable=True)),
    ("pro", _GeminiThinkingRange(128, 32768, can_disable=False)),
)


@dataclass(frozen=True)
class ProviderSettings:
    """The request settings for one call, and what was decided.

    Attributes:
        model: the LiteLLM model name the settings are for.
        family: the decision-table row that applied (see the module docstring).
        budget_tokens: the funded budget asked for (tokens, reasoning included).
        output_cap_tokens: the hard cap on generated tokens actually sent (``<= budget``).
        thinking_budget_tokens: explicit thinking budget sent (tokens), ``0`` when thinking was
            explicitly switched off, ``None`` when none was sent.
        reasoning_effort: the effort level sent, or ``None``.
        clipped: the budget exceeded the model's output limit and was lowered to it.
        model_max_output_tokens: the model's output limit from LiteLLM's model map, if known.
        kwargs: keyword arguments for ``litellm.completion`` / ``acompletion``.
    """

    model: str
    family: Family
    budget_tokens: int
    output_cap_tokens: int
    thinking_budget_tokens: int | None
    reasoning_effort: Effort | None
    clipped: bool
    model_max_output_tokens: int | None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _ModelFacts:
    """What LiteLLM knows about a model name (all optional: unknown models get defaults)."""

    name: str  # without the provider prefix
    provider: str | None
    max_output_tokens: int | None
    supports_reasoning: bool
    supports_minimal_effort: bool
    adaptive_only: bool  # Claude that accepts only adaptive thinking (no budget_tokens)


def provider_settings(
    model: str,
    budget_tokens: int,
    *,
    answer_floor_tokens: int = ANSWER_FLOOR_TOKENS,
    answer_share: float = ANSWER_SHARE,
) -> ProviderSettings:
    """Settings that cap ``model``'s generated tokens at ``budget_tokens``.

    Args:
        model: a LiteLLM model name, e.g. ``"openai/o4-mini"``, ``"anthropic/claude-sonnet-4-5"``.
        budget_tokens: funded output budget in tokens (reasoning included), an integer >= 1.
        answer_floor_tokens: minimum tokens (>= 0) kept out of an explicit thinking budget for
            the answer.
        answer_share: share of the cap in [0, 1) kept for the answer when that is larger than
            ``answer_floor_tokens``.

    Raises:
        ValueError: naming the field, for an empty model name, a budget that is not an integer
            >= 1, or an answer reserve out of range.

    Example:
        >>> provider_settings("anthropic/claude-sonnet-4-5", 4096).kwargs
        {'max_tokens': 4096, 'thinking': {'type': 'enabled', 'budget_tokens': 3072}}
    """
    budget = _check_inputs(model, budget_tokens, answer_floor_tokens, answer_share)
    facts = _model_facts(model)
    limit = facts.max_output_tokens
    cap = min(budget, limit) if limit is not None else budget
    reserve = max(answer_floor_tokens, math.ceil(cap * answer_share))
    decision = _decide(facts, cap, reserve)
    return ProviderSettings(
        model=model,
        family=decision.family,
        budget_tokens=budget,
        output_cap_tokens=cap,
        thinking_budget_tokens=decision.thinking,
        reasoning_effort=decision.effort,
        clipped=cap < budget,
        model_max_output_tokens=limit,
        kwargs=decision.kwargs,
    )


def effort_for_budget(budget_tokens: int, *, minimal_supported: bool = True) -> Effort:
    """The reasoning effort for a budget (tokens) per ``EFFORT_BY_BUDGET``.

    Models without a "minimal" level get "low" instead.
    """
    for threshold, effort in EFFORT_BY_BUDGET:
        if budget_tokens >= threshold:
            if effort == "minimal" and not minimal_supported:
                return "low"
            return effort
    raise ValueError(f"budget_tokens must be >= 1, got {budget_tokens}")


@dataclass(frozen=True)
class _Decision:
    family: Family
    kwargs: dict[str, Any]
    thinking: int | None = None
    effort: Effort | None = None


def _decide(facts: _ModelFacts, cap: int, reserve: int) -> _Decision:
    """Apply the decision table to a model and a cap (tokens)."""
    name, provider = facts.name.lower(), facts.provider
    if not facts.supports_reasoning:
        return _Decision("plain", {"max_tokens": cap})

    if provider in ("openai", "azure") and _OPENAI_REASONING.match(name) and "chat" not in name:
        effort = effort_for_budget(cap, minimal_supported=facts.supports_minimal_effort)
        kwargs = {"max_completion_tokens": cap, "reasoning_effort": effort}
        return _Decision("openai_reasoning", kwargs, effort=effort)

    if provider == "anthropic" or "claude" in name:
        if facts.adaptive_only:
            # Anthropic's adaptive effort levels start at "low".
            effort = effort_for_budget(cap, minimal_supported=False)
            kwargs = {"max_tokens": cap, "reasoning_effort": effort}
            return _Decision("anthropic_adaptive", kwargs, effort=effort)
        thinking = cap - reserve
        if thinking < ANTHROPIC_MIN_THINKING_TOKENS:
            return _Decision("anthropic_thinking", {"max_tokens": cap})
        kwargs = {"max_tokens": cap, "thinking": {"type": "enabled", "budget_tokens": thinking}}
        return _Decision("anthropic_thinking", kwargs, thinking=thinking)

    gemini_version = _gemini_version(name)
    if gemini_version is not None and gemini_version >= 3:
        effort = effort_for_budget(cap, minimal_supported=facts.supports_minimal_effort)
        kwargs = {"max_tokens": cap, "reasoning_effort": effort}
        return _Decision("gemini_thinking_level", kwargs, effort=effort)
    if gemini_version is not None and gemini_version >= 2.5:
        span = _gemini_range(name)
        if span is not None:
            thinking = _clamp_gemini_thinking(cap - reserve, span)
            kwargs = {"max_tokens": cap, "thinking": {"type": "enabled", "budget_tokens": thinking}}
            return _Decision("gemini_thinking_budget", kwargs, thinking=thinking)

    return _Decision("plain", {"max_tokens": cap})


_OPENAI_REASONING = re.compile(r"^(o\d|gpt-5)")
_GEMINI_VERSION = re.compile(r"gemini-(\d+(?:\.\d+)?)")


def _gemini_version(name: str) -> float | None:
    match = _GEMINI_VERSION.search(name)
    return float(match.group(1)) if match else None


def _gemini_range(name: str) -> _GeminiThinkingRange | None:
    for marker, span in GEMINI_25_THINKING_RANGES:
        if marker in name:
            return span
    return None


def _clamp_gemini_thinking(wanted: int, span: _GeminiThinkingRange) -> int:
    if wanted < span.min_tokens:
        # Too little room to think: switch thinking off where allowed, else think the least.
        return 0 if span.can_disable else span.min_tokens
    return min(wanted, span.max_tokens)


def _check_inputs(model: object, budget: object, floor: object, share: object) -> int:
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty LiteLLM model name, got {model!r}")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"budget_tokens must be an integer number of tokens, got {budget!r}")
    if budget < 1:
        raise ValueError(f"budget_tokens must be >= 1, got {budget}")
    if isinstance(floor, bool) or not isinstance(floor, numbers.Integral) or floor < 0:
        raise ValueError(f"answer_floor_tokens must be an integer >= 0, got {floor!r}")
    if not isinstance(share, numbers.Real) or not 0 <= float(share) < 1:
        raise ValueError(f"answer_share must be in [0, 1), got {share!r}")
    return int(budget)


def _model_facts(model: str) -> _ModelFacts:
    """Look the model up in LiteLLM's model map; unknown models get empty facts."""
    litellm = _import_litellm()
    try:
        name, provider, _, _ = litellm.get_llm_provider(model)
    except Exception:  # LiteLLM cannot route it: nothing to learn, fall back to max_tokens
        return _ModelFacts(model, None, None, False, False, False)
    try:
        info = litellm.get_model_info(model)
    except Exception:  # routable but not in the model map (self-hosted, new model)
        return _ModelFacts(name, provider, None, False, False, False)
    limit = info.get("max_output_tokens") or info.get("max_tokens")
    return _ModelFacts(
        name=name,
        provider=provider,
        max_output_tokens=int(limit) if limit else None,
        supports_reasoning=bool(info.get("supports_reasoning")),
        supports_minimal_effort=bool(info.get("supports_minimal_reasoning_effort")),
        adaptive_only=bool(info.get("supports_adaptive_thinking"))
        and not info.get("supports_legacy_thinking"),
    )


def _import_litellm() -> Any:
    # Imported on first use: it takes seconds, and without this flag it fetches the model map
    # over the network at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm
