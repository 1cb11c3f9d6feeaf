"""Count prompt tokens offline with tiktoken, the way OpenAI's chat API counts them.

Offline set-up: tiktoken downloads its encoding files on first use. LiteLLM ships three of them
(``cl100k_base``, ``o200k_base``, ``p50k_base``) named by tiktoken's cache key, so we point
``TIKTOKEN_CACHE_DIR`` at that folder, found with :func:`importlib.util.find_spec` so LiteLLM is
never imported here (that takes seconds). A ``TIKTOKEN_CACHE_DIR`` the user already set wins.

Model -> encoding: ``o200k_base`` for the gpt-4o, gpt-4.1, gpt-4.5, o-series, gpt-5 and gpt-oss
families; ``cl100k_base`` for gpt-4 / gpt-3.5 / embeddings; ``p50k_base`` for the legacy
davinci-002/003 and code models. Every other model (Claude, Gemini, Llama, ...) gets
``cl100k_base`` as a documented approximation: their tokenizers differ, and the learned margin
in :mod:`clear_middleware.prompt_margin` absorbs the difference.

Chat counting follows the rules OpenAI published in its cookbook ("How to count tokens with
tiktoken"): 3 tokens per message (``<|start|>{role}\\n ... <|end|>``), +1 per ``name`` field,
+3 priming the reply (``<|start|>assistant<|message|>``); gpt-3.5-turbo-0301 used 4 per message
and -1 per name. Tool schemas follow the cookbook's empirical formula (see
:func:`count_tool_tokens`); the cookbook's own reported counts are the fixtures of
``tests/test_tokens.py``, where our error against the API is 0 tokens on every published
example.

>>> count_message_tokens([{"role": "user", "content": "Hello!"}], "gpt-4o")
9
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "SHIPPED_ENCODINGS",
    "EncodingUnavailable",
    "configure_tiktoken_cache",
    "count_message_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "encoding_name_for_model",
    "get_encoding",
    "is_exact_encoding",
]

#: The encodings LiteLLM ships files for; any other would need the network.
SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base", "p50k_base")
_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

#: Tokens a non-text content part (an image) is counted as: a 1024x1024 image at "high" detail
#: (85 base + 4 tiles x 170). Deliberately high: under-estimating a prompt risks the cap,
#: over-estimating only holds a little more in reserve until commit.
IMAGE_PART_TOKENS = 765

_lock = threading.Lock()


class EncodingUnavailable(LookupError):
    """The encoding file is not in the tiktoken cache and we must not download it."""


def _litellm_tokenizer_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


def configure_tiktoken_cache() -> Path | None:
    """Point ``TIKTOKEN_CACHE_DIR`` at LiteLLM's bundled encodings unless the user set it.

    Returns the cache folder tiktoken will read, or ``None`` if neither is available.
    """
    with _lock:
        current = os.environ.get("TIKTOKEN_CACHE_DIR")
        if current:
            return Path(current)
        folder = _litellm_tokenizer_dir()
        if folder is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        return folder


@lru_cache(maxsize=8)
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` (one of :data:`SHIPPED_ENCODINGS`), loaded offline.

    Raises:
        ValueError: ``name`` is not a shipped encoding.
        EncodingUnavailable: its file is missing from the cache folder (we refuse to let
            tiktoken reach for the network, which would hang or fail later and less clearly).
    """
    if name not in SHIPPED_ENCODINGS:
        raise ValueError(f"encoding must be one of {SHIPPED_ENCODINGS}, got {name!r}")
    folder = configure_tiktoken_cache()
    cache_key = hashlib.sha1(_URL.format(name).encode()).hexdigest()
    if folder is None or not (folder / cache_key).is_file():
        raise EncodingUnavailable(
            f"tiktoken encoding {name!r} not found offline: expected file {cache_key} in "
            f"TIKTOKEN_CACHE_DIR={folder} (LiteLLM ships it in "
            "litellm/litellm_core_utils/tokenizers/; is litellm installed?)"
        )
    import tiktoken

    return tiktoken.get_encoding(name)


_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "codex-")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-")
_P50K_PREFIXES = ("text-davinci-002", "text-davinci-003", "code-davinci", "code-cushman")


def _bare_model(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be a non-empty str, got {model!r}")
    # "openai/gpt-4o", "azure/eu/gpt-4o", "ft:gpt-4o-mini:org::id" all name the base model last
    # or right after "ft:".
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return name


def _is_o_series(name: str) -> bool:
    # o1, o1-mini, o3, o3-pro, o4-mini ... but not e.g. "omni-moderation".
    return len(name) >= 2 and name[0] == "o" and name[1].isdigit()


def encoding_name_for_model(model: str) -> str:
    """The tiktoken encoding used to count ``model``'s tokens (exact or approximate).

    ``o200k_base`` for gpt-4o / gpt-4.1 / gpt-4.5 / o-series / gpt-5 / gpt-oss, ``cl100k_base``
    for gpt-4 and gpt-3.5, ``p50k_base`` for legacy completions models, and ``cl100k_base`` as
    an approximation for every non-OpenAI model (see :func:`is_exact_encoding`).
    A provider prefix (``openai/``, ``azure/``) and a fine-tune wrapper (``ft:``) are ignored.
    """
    name = _bare_model(model)
    if name.startswith(_O200K_PREFIXES) or _is_o_series(name):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    if name.startswith(_P50K_PREFIXES):
        return "p50k_base"
    return "cl100k_base"


def is_exact_encoding(model: str) -> bool:
    """True when ``model`` is an OpenAI model whose own tokenizer we use; False = approximation."""
    name = _bare_model(model)
    return (
        name.startswith(_O200K_PREFIXES + _CL100K_PREFIXES + _P50K_PREFIXES)
        or _is_o_series(name)
    )


def count_text_tokens(text: str, model: str) -> int:
    """Tokens in ``text`` under ``model``'s encoding (special-token strings count as text)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    encoding = get_encoding(encoding_name_for_model(model))
    # User text may contain "<|endoftext|>"; the API tokenizes it as plain text, and
    # tiktoken would raise on it by default.
    return len(encoding.encode(text, disallowed_special=()))


def _value_tokens(encoding: tiktoken.Encoding, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(encoding.encode(value, disallowed_special=()))
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        total = 0
        for part in value:
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
                total += _value_tokens(encoding, part.get("text"))
            elif isinstance(part, Mapping) and str(part.get("type", "")).startswith(
                ("image", "input_image")
            ):
                total += IMAGE_PART_TOKENS
            else:
                total += _value_tokens(encoding, json.dumps(part, separators=(",", ":")))
        return total
    # tool_calls and other structured fields: their compact JSON is what the model reads,
    # to within a few tokens of framing.
    return len(encoding.encode(json.dumps(value, separators=(",", ":"), default=str)))


def count_message_tokens(
    messages: Sequence[Mapping[str, Any]],
    model: str,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Prompt tokens of a chat request, counted as OpenAI's chat API counts them.

    Args:
        messages: chat messages (``role``, ``content``, optional ``name``, ``tool_calls``...).
            ``content`` may be a string or a list of parts: text parts are counted, image parts
            as :data:`IMAGE_PART_TOKENS` each.
        model: model name; picks the encoding and the per-message overhead.
        tools: optional OpenAI tool schemas, counted by :func:`count_tool_tokens`.

    Returns:
        Estimated prompt tokens (>= 3). Exact on the cookbook's published examples for the
        gpt-3.5 / gpt-4 / gpt-4o families; an estimate elsewhere.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise TypeError("messages must be a sequence of dicts with 'role' and 'content'")
    encoding = get_encoding(encoding_name_for_model(model))
    legacy = _bare_model(model).startswith("gpt-3.5-turbo-0301")
    per_message, per_name = (4, -1) if legacy else (3, 1)
    total = 0
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{index}] must be a dict, got {type(message).__name__}")
        total += per_message
        for key, value in message.items():
            total += _value_tokens(encoding, value)
            if key == "name":
                total += per_name
    total += 3  # every reply is primed with <|start|>assistant<|message|>
    if tools:
        total += count_tool_tokens(tools, model)
    return total


def count_tool_tokens(tools: Sequence[Mapping[str, Any]], model: str) -> int:
    """Approximate prompt tokens added by OpenAI tool (function) schemas.

    The cookbook's empirical formula, which matched the API on its example: per function
    7 tokens (10 on cl100k models) plus ``name:description``; per property list 3, per
    property 3 plus ``name:type:description``; enums -3 plus 3 + the item per value; 12 to
    close the list. Trailing periods of descriptions are dropped as the API's rendering does.
    Nested object schemas and anything the formula does not cover are counted as their compact
    JSON: an approximation, corrected over time by the learned prompt margin.
    """
    encoding = get_encoding(encoding_name_for_model(model))
    func_init = 7 if encoding.name == "o200k_base" else 10
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12

    def enc(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    total = 0
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or "name" not in function:
            raise TypeError(f"each tool must be an OpenAI function schema with a name: {tool!r}")
        total += func_init
        description = str(function.get("description") or "").removesuffix(".")
        total += enc(f"{function['name']}:{description}")
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            total += prop_init
            for key, spec in properties.items():
                total += prop_key
                spec = spec if isinstance(spec, Mapping) else {}
                if "enum" in spec:
                    total += enum_init
                    for item in spec["enum"]:
                        total += enum_item + enc(str(item))
                p_type = spec.get("type", "")
                if not isinstance(p_type, str):
                    p_type = json.dumps(p_type, separators=(",", ":"))
                p_desc = str(spec.get("description") or "").removesuffix(".")
                total += enc(f"{key}:{p_type}:{p_desc}")
                nested = {k: v for k, v in spec.items() if k in ("properties", "items")}
                if nested:
                    total += enc(json.dumps(nested, separators=(",", ":")))
    if tools:
        total += func_end
    return total
