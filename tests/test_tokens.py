"""Offline token counting, checked against the prompt-token counts the OpenAI API reported.

Fixtures: OpenAI cookbook "How to count tokens with tiktoken" (examples/How_to_count_tokens_
with_tiktoken.ipynb), sections 6 and 7: the example messages and, per model, the
``usage.prompt_tokens`` the API returned for them. Measured error of ``count_message_tokens``:
0 tokens on all 12 published (model, request) pairs. The one published mismatch is a model
snapshot change: in the 2023 run, the alias "gpt-3.5-turbo" pointed at the 0301 snapshot, which
the API counted as 127 while the 0613 rules give 129 (+2 tokens, +1.6%, an over-estimate);
that is exactly the provider-side drift the learned prompt margin exists to absorb.
"""

import os
import subprocess
import sys

import pytest

from clear_middleware import tokens
from clear_middleware.tokens import (
    count_message_tokens,
    count_text_tokens,
    encoding_name_for_model,
    is_exact_encoding,
)

CHAT_EXAMPLE = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that "
     "translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user",
     "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant",
     "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user",
     "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
     "for increased leverage."},
    {"role": "system", "name": "example_assistant",
     "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean "
     "for the client deliverable."},
]

# (model, prompt_tokens reported by the OpenAI API) as published in the cookbook.
API_REPORTED_CHAT = [
    ("gpt-3.5-turbo-0301", 127),
    ("gpt-3.5-turbo-0613", 129),
    ("gpt-3.5-turbo", 129),  # 2024 run (alias -> 0125)
    ("gpt-4-0314", 129),
    ("gpt-4-0613", 129),
    ("gpt-4", 129),
    ("gpt-4o", 124),
    ("gpt-4o-mini", 124),
]

TOOLS_EXAMPLE = [{
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string",
                             "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return",
                         "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}]
TOOLS_MESSAGES = [
    {"role": "system",
     "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
API_REPORTED_TOOLS = [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]


@pytest.mark.parametrize(("model", "reported"), API_REPORTED_CHAT)
def test_chat_count_matches_api_reported_prompt_tokens(model, reported):
    assert count_message_tokens(CHAT_EXAMPLE, model) == reported


@pytest.mark.parametrize(("model", "reported"), API_REPORTED_TOOLS)
def test_tool_schema_count_matches_api_reported_prompt_tokens(model, reported):
    assert count_message_tokens(TOOLS_MESSAGES, model, tools=TOOLS_EXAMPLE) == reported


def test_measured_error_over_all_published_examples_is_zero():
    errors = [count_message_tokens(CHAT_EXAMPLE, m) - r for m, r in API_REPORTED_CHAT]
    errors += [count_message_tokens(TOOLS_MESSAGES, m, TOOLS_EXAMPLE) - r
               for m, r in API_REPORTED_TOOLS]
    assert errors == [0] * 12
    # The 2023 alias drift: the API said 127 for "gpt-3.5-turbo" (then 0301), we say 129.
    assert count_message_tokens(CHAT_EXAMPLE, "gpt-3.5-turbo") - 127 == 2


def test_cookbook_text_examples():
    assert count_text_tokens("tiktoken is great!", "gpt-4") == 6
    assert count_text_tokens("antidisestablishmentarianism", "gpt-4") == 6
    assert count_text_tokens("antidisestablishmentarianism", "text-davinci-003") == 5
    assert count_text_tokens("お誕生日おめでとう", "gpt-4") == 9
    assert count_text_tokens("お誕生日おめでとう", "gpt-4o") == 8


def test_special_token_text_counts_as_text():
    assert count_text_tokens("<|endoftext|>", "gpt-4") > 1


@pytest.mark.parametrize(
    ("model", "encoding", "exact"),
    [
        ("gpt-4o", "o200k_base", True),
        ("openai/gpt-4o-mini", "o200k_base", True),
        ("azure/eu/gpt-4.1", "o200k_base", True),
        ("o1", "o200k_base", True),
        ("o3-mini", "o200k_base", True),
        ("o4-mini", "o200k_base", True),
        ("gpt-5", "o200k_base", True),
        ("gpt-5-nano", "o200k_base", True),
        ("ft:gpt-4o-mini:org::abc", "o200k_base", True),
        ("gpt-4", "cl100k_base", True),
        ("gpt-4-turbo", "cl100k_base", True),
        ("gpt-3.5-turbo", "cl100k_base", True),
        ("text-davinci-003", "p50k_base", True),
        ("claude-sonnet-4-5", "cl100k_base", False),
        ("gemini/gemini-2.5-pro", "cl100k_base", False),
        ("omni-moderation-latest", "cl100k_base", False),
    ],
)
def test_model_to_encoding(model, encoding, exact):
    assert encoding_name_for_model(model) == encoding
    assert is_exact_encoding(model) is exact


def test_content_parts_and_images():
    text_only = [{"role": "user", "content": "Describe this."}]
    with_parts = [{"role": "user", "content": [
        {"type": "text", "text": "Describe this."},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
    ]}]
    base = count_message_tokens(text_only, "gpt-4o")
    assert count_message_tokens(with_parts, "gpt-4o") == base + tokens.IMAGE_PART_TOKENS


def test_none_content_and_tool_calls_are_counted_not_crashing():
    messages = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
    assert count_message_tokens(messages, "gpt-4o") > 6


@pytest.mark.parametrize("bad", ["hello", None, 3])
def test_bad_messages_raise_type_error(bad):
    with pytest.raises(TypeError, match="messages"):
        count_message_tokens(bad, "gpt-4o")


def test_unknown_encoding_name_rejected():
    with pytest.raises(ValueError, match="encoding must be one of"):
        tokens.get_encoding("r50k_base")


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=os.getcwd(), timeout=60)


def test_offline_setup_does_not_import_litellm_and_finds_shipped_files():
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    code = (
        "import os, sys\n"
        "from clear_middleware.tokens import count_text_tokens\n"
        "assert count_text_tokens('hello world', 'gpt-4o') == 2\n"
        "assert count_text_tokens('hello world', 'text-davinci-003') == 2\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
        "print(os.environ['TIKTOKEN_CACHE_DIR'])\n"
    )
    done = _run(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(os.path.join("litellm_core_utils", "tokenizers"))


def test_user_cache_dir_is_respected(tmp_path):
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path))
    code = (
        "from clear_middleware.tokens import count_text_tokens, EncodingUnavailable\n"
        "try:\n    count_text_tokens('x', 'gpt-4o')\n"
        "except EncodingUnavailable as e:\n    print('unavailable', e)\n"
    )
    done = _run(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unavailable") and str(tmp_path) in done.stdout


def test_docstring_examples_run():
    import doctest

    import clear_middleware.tokens as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
