"""Every adapter's docstring example runs as written (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "clear_middleware.integrations.langchain.scope",
    "clear_middleware.integrations.langchain.chat_model",
    "clear_middleware.integrations.langchain.callback",
    "clear_middleware.integrations.langchain.runnable",
    "clear_middleware.integrations.langchain.middleware",
    "clear_middleware.integrations.langgraph",
    "clear_middleware.integrations.litellm_proxy",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
