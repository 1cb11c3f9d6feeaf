"""Token usage reported by a provider for one call, read from OpenAI / LiteLLM response shapes.

Convention (OpenAI's, which LiteLLM normalises every provider to): ``completion_tokens``
already INCLUDES ``reasoning_tokens``. Reasoning tokens are a breakdown of the output, not an
addition to it, so ``total_tokens == prompt_tokens + completion_tokens`` and pricing charges
``completion_tokens`` at the output price once (see :mod:`clear_middleware.pricing`).

>>> Usage.from_response({"usage": {"prompt_tokens": 12, "completion_tokens": 30,
...     "completion_tokens_details": {"reasoning_tokens": 20}}})
Usage(prompt_tokens=12, completion_tokens=30, reasoning_tokens=20)
>>> Usage.from_response({"choices": []}) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Usage"]


def _check_count(name: str, value: object) -> int:
    # bool is an int subclass; True tokens is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0 (tokens), got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0 (tokens), got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed, as the provider reported them.

    Attributes:
        prompt_tokens: input tokens billed (>= 0).
        completion_tokens: output tokens billed (>= 0), reasoning tokens included.
        reasoning_tokens: the part of ``completion_tokens`` spent on hidden reasoning
            (0 <= reasoning_tokens <= completion_tokens).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        _check_count("prompt_tokens", self.prompt_tokens)
        _check_count("completion_tokens", self.completion_tokens)
        _check_count("reasoning_tokens", self.reasoning_tokens)
        if self.reasoning_tokens > self.completion_tokens:
            raise ValueError(
                "reasoning_tokens must be <= completion_tokens (completion_tokens includes "
                f"reasoning tokens), got reasoning_tokens={self.reasoning_tokens} > "
                f"completion_tokens={self.completion_tokens}"
            )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens (reasoning is inside completion; not added twice)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def visible_completion_tokens(self) -> int:
        """Output tokens the caller actually sees: completion minus reasoning."""
        return self.completion_tokens - self.reasoning_tokens

    @classmethod
    def from_response(cls, response: object) -> Usage | None:
        """Read usage from a response object or dict; ``None`` when it reports no usage.

        Accepts a whole response (``response.usage`` / ``response["usage"]``) or the usage
        object itself, in the Chat Completions shape (``prompt_tokens``,
        ``completion_tokens``, ``completion_tokens_details.reasoning_tokens``) or the
        Responses / Anthropic shape (``input_tokens``, ``output_tokens``,
        ``output_tokens_details.reasoning_tokens``). Missing or ``None`` counts read as 0,
        but a usage block with no token count at all reads as ``None`` (no usage reported),
        so the ledger charges the reservation instead of zero.

        A provider that reports reasoning tokens *beside* the completion tokens (reasoning
        larger than completion) is normalised to the OpenAI convention by adding them.
        """
        if response is None:
            return None
        usage = _field(response, "usage")
        if usage is None:
            # Perhaps we were handed the usage block itself.
            usage = response if _has_any(response, _PROMPT_KEYS + _OUTPUT_KEYS) else None
        if usage is None or not _has_any(usage, _PROMPT_KEYS + _OUTPUT_KEYS):
            return None
        prompt = _first_count(usage, _PROMPT_KEYS)
        completion = _first_count(usage, _OUTPUT_KEYS)
        reasoning = 0
        for details_key in ("completion_tokens_details", "output_tokens_details"):
            details = _field(usage, details_key)
            if details is not None:
                reasoning = _first_count(details, ("reasoning_tokens",))
                if reasoning:
                    break
        if reasoning > completion:
            completion += reasoning
        return cls(prompt, completion, reasoning)


_PROMPT_KEYS = ("prompt_tokens", "input_tokens")
_OUTPUT_KEYS = ("completion_tokens", "output_tokens")


def _field(obj: object, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _has_any(obj: object, keys: tuple[str, ...]) -> bool:
    return any(_field(obj, key) is not None for key in keys)


def _first_count(obj: object, keys: tuple[str, ...]) -> int:
    for key in keys:
        value = _field(obj, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"usage.{key} must be a number of tokens, got {value!r}")
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise ValueError(f"usage.{key} must be a whole number >= 0 (tokens), got {value!r}")
        return int(value)
    return 0
