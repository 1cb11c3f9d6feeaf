"""The simulator through LiteLLM, the way the middleware will call it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from clear_middleware.dispatch import provider_settings
from clear_middleware.simulator import SimulatorServer, item_marker

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "openai/deepscaler-1.5b"  # LiteLLM's OpenAI-compatible route; sends "deepscaler-1.5b"
MESSAGES = [{"role": "user", "content": f"{item_marker('aime24/2024-I-1')} Find the answer."}]
ANSWER = "The final answer is $\\boxed{204}$."


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


def _kwargs(sim: SimulatorServer) -> dict:
    return {"model": MODEL, "api_base": sim.base_url, "api_key": "sim", "messages": MESSAGES}


def test_completion_usage_and_reasoning(sim: SimulatorServer) -> None:
    import litellm

    response = litellm.completion(**_kwargs(sim), max_tokens=4096, seed=1)
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == ANSWER
    assert choice.message.reasoning_content.startswith("[[run:330]]")
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (23, 2612, 2635)
    assert usage.completion_tokens_details.reasoning_tokens == 2602


def test_provider_settings_cap_the_simulated_call(sim: SimulatorServer) -> None:
    import litellm

    settings = provider_settings(MODEL, 1500)
    assert settings.kwargs == {"max_tokens": 1500}
    response = litellm.completion(**_kwargs(sim), seed=1, **settings.kwargs)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 1500
    assert sim.requests[-1].cap == 1500


def test_stream_with_usage(sim: SimulatorServer) -> None:
    import litellm

    stream = litellm.completion(
        **_kwargs(sim),
        max_tokens=4096,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert chunks[-1].usage.completion_tokens == 2612
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 2602
    assert sim.requests[-1].streamed and sim.requests[-1].sent_tokens == 2612


def test_continuation_through_extra_body(sim: SimulatorServer) -> None:
    import litellm

    first = litellm.completion(**_kwargs(sim), max_tokens=1024, seed=1)
    assert first.choices[0].finish_reason == "length"
    partial = first.choices[0].message.reasoning_content
    rest = litellm.completion(
        model=MODEL,
        api_base=sim.base_url,
        api_key="sim",
        messages=[*MESSAGES, {"role": "assistant", "content": partial}],
        max_tokens=8192,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert rest.choices[0].finish_reason == "stop"
    assert rest.choices[0].message.content == ANSWER
    assert first.usage.completion_tokens + rest.usage.completion_tokens == 2612


def test_item_through_extra_body_metadata(sim: SimulatorServer) -> None:
    import litellm

    litellm.completion(
        model="openai/qwen3-1.7b",
        api_base=sim.base_url,
        api_key="sim",
        messages=[{"role": "user", "content": "no marker"}],
        max_tokens=64,
        extra_body={"metadata": {"sim_item": "math500/test/precalculus/807.json"}},
    )
    assert sim.requests[-1].item == "math500/test/precalculus/807.json"


async def test_async_completion(sim: SimulatorServer) -> None:
    import litellm

    response = await litellm.acompletion(**_kwargs(sim), max_tokens=4096, seed=1)
    assert response.usage.completion_tokens == 2612


def test_server_errors_reach_litellm(sim: SimulatorServer) -> None:
    import litellm

    sim.fail_next(1, status=500)
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(**_kwargs(sim), max_tokens=10, max_retries=0)
    assert sim.requests[-1].fault == "error"
