"""LangChain's own standard test suites for ChatClear (package ``langchain-tests``).

``ChatModelUnitTests`` runs as is. ``ChatModelIntegrationTests`` runs against the local
simulator over HTTP, through a budgeted session, so every call of the suite is also quoted,
reserved and settled. Capabilities declared unsupported are justified where they are declared.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from clear_middleware.datasets.reasoning_sweep import sweep_rows
from clear_middleware.integrations.langchain import ChatClear
from clear_middleware.session import BudgetSession
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

MODEL = "openai/deepscaler-1.5b"


def _write_finishing_items(path: Path) -> None:
    """The bundled sweep's rows of the items (of every model) none of whose replayable runs is
    cut at its cap."""
    catalog = load_catalog()
    finishing = {
        (model, item)
        for model in catalog.models()
        for item in catalog.items(model)
        if not any(weight > 0 and run.censored for run, weight in
                   zip(catalog.runs(model, item), catalog.replay_weights(model, item),
                       strict=True))
    }
    rows = [row for row in sweep_rows()
            if (row["model"], f"{row['benchmark']}/{row['item_id']}") in finishing]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class TestChatClearUnit(ChatModelUnitTests):
    """The unit suite. Two of its tests skip, each saying why:

    - ``test_init_from_env``: ChatClear reads no environment variable of its own; provider
      keys are LiteLLM's (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...), read at call time.
    - ``test_serdes``: ChatClear is not LangChain-serializable on purpose: it holds a live
      ``BudgetSession`` (a ledger connection), which a serialized config could not restore.
    """

    @property
    def chat_model_class(self) -> type[ChatClear]:
        return ChatClear

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL}


class TestChatClearIntegration(ChatModelIntegrationTests):
    """The integration suite against the simulator, each call funded by a session.

    Declared unsupported, with the reason:

    - tool calling, tool choice and (so) structured output: the simulator replays recorded
      runs of small reasoning models, which contain no tool calls. ChatClear does bind and
      parse tools (plain and streamed): ``test_langchain_chat_model.py`` tests that against a
      loopback server that calls tools.
    - image, audio, PDF and Anthropic-format inputs, JSON mode: the simulated models are
      text-only; ChatClear passes such content through to LiteLLM unchanged.
    - VCR (``test_stream_time``): there is nothing to record; the server is local.
    """

    sim: SimulatorServer

    @pytest.fixture(scope="class", autouse=True)
    def _simulator(self, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory):
        # The suite's prompts carry no item marker, so each maps to an item by a hash of its
        # text. A replayed run cut at its cap answers with reasoning only (empty content), which
        # the suite rejects as no answer: it gets a sweep of the items whose runs all finish.
        sweep = tmp_path_factory.mktemp("sweep") / "finishing_items.csv"
        _write_finishing_items(sweep)
        with SimulatorServer(sweep_path=str(sweep)) as sim:
            request.cls.sim = sim
            yield sim

    @property
    def chat_model_class(self) -> type[ChatClear]:
        return ChatClear

    @property
    def chat_model_params(self) -> dict[str, Any]:
        session = BudgetSession(budget_tokens=10_000_000, model=MODEL,
                                api_base=self.sim.base_url, api_key="sim")
        return {"session": session}

    @property
    def has_tool_calling(self) -> bool:
        return False  # see the class docstring

    @property
    def has_tool_choice(self) -> bool:
        return False  # see the class docstring

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "openai/qwen3-1.7b"

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:
        return {"invoke": ["reasoning_output"], "stream": ["reasoning_output"]}

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        model = ChatClear(**self.chat_model_params)
        prompt = f"{item_marker('aime24/2024-I-3')} Find the answer."
        if not stream:
            return model.invoke(prompt)
        full = None
        for chunk in model.stream(prompt):
            full = chunk if full is None else full + chunk
        assert full is not None
        return AIMessage(content=full.content, usage_metadata=full.usage_metadata)
