"""LiteLLMClient's blocking calls (complete / stream) against the local simulator over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clear_middleware.dispatch.client import LiteLLMClient
from clear_middleware.simulator import SimulatorServer, item_marker
from clear_middleware.usage import Usage

MODEL = "openai/deepscaler-1.5b"
MESSAGES = [{"role": "user", "content": f"{item_marker('aime24/2024-I-1')} Find the answer."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


def test_complete_reads_usage_and_reasoning(sim: SimulatorServer) -> None:
    client = LiteLLMClient(api_base=sim.base_url, api_key="sim")
    completion = client.complete(MODEL, MESSAGES, {"max_tokens": 4096}, seed=1)
    assert completion.text == "The final answer is $\\boxed{204}$."
    assert completion.usage == Usage(23, 2612, 2602)
    assert completion.finish_reason == "stop"
    assert completion.reasoning.startswith("[[run:330]]")


def test_stream_ends_with_usage(sim: SimulatorServer) -> None:
    client = LiteLLMClient(api_base=sim.base_url, api_key="sim")
    chunks = list(client.stream(MODEL, MESSAGES, {"max_tokens": 1500}, seed=1))
    assert Usage.from_response(chunks[-1]) == Usage(23, 1500, 1500)
    assert sim.requests[-1].streamed and sim.requests[-1].cap == 1500


async def test_function_tools_do_not_need_litellm_mcp_extra(sim: SimulatorServer) -> None:
    # LiteLLM imports its MCP gateway (the optional `mcp` package) for any call with tools
    # unless told to skip it; plain function tools must work without that extra.
    tool = {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}}
    client = LiteLLMClient(api_base=sim.base_url, api_key="sim")
    sync = client.complete(MODEL, MESSAGES, {"max_tokens": 64}, tools=[tool], seed=1)
    asynchronous = await client.acomplete(MODEL, MESSAGES, {"max_tokens": 64}, tools=[tool],
                                          seed=1)
    assert sync.usage == asynchronous.usage == Usage(23, 64, 64)
