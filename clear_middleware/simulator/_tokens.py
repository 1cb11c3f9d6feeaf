"""The simulator's own token counting (tiktoken, no network).

A private helper: the package's general token counting lives elsewhere. The simulator needs an
encoding to make its texts and usage agree, and tiktoken must not try to download one, so the
encodings shipped inside LiteLLM's package are used when ``TIKTOKEN_CACHE_DIR`` is not set.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import tiktoken

# Preferred first; cl100k is the fallback when o200k is not in the cache.
ENCODING_NAMES = ("o200k_base", "cl100k_base")

# OpenAI's chat accounting: each message costs 3 tokens of framing (+1 for a ``name``), and
# every reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


def _point_tiktoken_at_litellm_cache() -> None:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return
    cache = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
    if cache.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The encoding used for all simulator counts (o200k_base when available)."""
    _point_tiktoken_at_litellm_cache()
    errors = []
    for name in ENCODING_NAMES:
        try:
            return tiktoken.get_encoding(name)
        except Exception as exc:  # missing from the offline cache: try the next one
            errors.append(f"{name}: {exc}")
    raise RuntimeError("no tiktoken encoding available offline: " + "; ".join(errors))


def count_tokens(text: str) -> int:
    """Tokens in ``text``."""
    return len(encoding().encode(text, disallowed_special=()))


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return str(content)


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request, with OpenAI's per-message framing. The reasoning of
    an assistant message sent back to be continued (``reasoning_content``) is read again by
    the model, so it is prompt too."""
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += count_tokens(str(message.get("role", "")))
        total += count_tokens(message_text(message.get("content")))
        if message.get("reasoning_content"):
            total += count_tokens(str(message["reasoning_content"]))
        if message.get("name"):
            total += TOKENS_PER_NAME + count_tokens(str(message["name"]))
    return total
