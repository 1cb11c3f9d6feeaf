"""The simulator's synthetic probe models: an item's median correct length times known noise."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest

from clear_middleware.simulator import SimulatorServer, item_marker, target_marker


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(probe_models={"exact": 0.0, "noisy": 0.5, "wild": 1.0}) as server:
        yield server


def _ask(sim: SimulatorServer, model: str, item: str, target: str | None = "deepscaler-1.5b",
         **body) -> httpx.Response:
    text = f"{item_marker(item)} How many tokens?"
    if target is not None:
        text += " " + target_marker(target)
    return httpx.post(f"{sim.base_url}/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": text}], **body})


def test_the_exact_probe_answers_the_median_correct_length(sim) -> None:
    reply = _ask(sim, "exact", "aime24/2024-I-1", target="openai/deepscaler-1.5b").json()
    assert reply["choices"][0]["message"]["content"] == "2792"
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 2  # "279", "2"
    assert sim.catalog.median_correct_length("deepscaler-1.5b", "aime24/2024-I-1") == 2792.0
    logged = sim.requests[-1]
    assert (logged.model, logged.item, logged.completion_tokens) == (
        "exact", "aime24/2024-I-1", 2)
    # No run solved this item: the answer is the target's output limit.
    unsolved = _ask(sim, "exact", "aime24/2024-I-10").json()
    assert unsolved["choices"][0]["message"]["content"] == "16384"


def test_noise_is_log_normal_with_the_configured_sigma_and_deterministic(sim) -> None:
    items = sim.catalog.items("deepscaler-1.5b")
    solved = [i for i in items if sim.catalog.median_correct_length("deepscaler-1.5b", i)]
    errors = {}
    for model in ("noisy", "wild"):
        logs = []
        for item in solved:
            answer = int(_ask(sim, model, item).json()["choices"][0]["message"]["content"])
            median = sim.catalog.median_correct_length("deepscaler-1.5b", item)
            logs.append(math.log(answer / median))
        errors[model] = logs
    # Over the ~140 solved items the root-mean-square log-error is the configured sigma.
    for model, sigma in (("noisy", 0.5), ("wild", 1.0)):
        logs = errors[model]
        sd = math.sqrt(sum(x * x for x in logs) / len(logs))
        assert 0.8 * sigma < sd < 1.2 * sigma, (model, sd, len(logs))
    again = _ask(sim, "noisy", solved[0]).json()["choices"][0]["message"]["content"]
    assert int(again) == round(math.exp(errors["noisy"][0]) * sim.catalog.median_correct_length(
        "deepscaler-1.5b", solved[0]))


def test_seed_and_target_are_configurable() -> None:
    with SimulatorServer(probe_models={"p": 0.5}, probe_target="qwen3-1.7b",
                         probe_seed=1) as one, SimulatorServer(probe_models={"p": 0.5},
                                                               probe_target="qwen3-1.7b") as two:
        item = "aime24/2024-I-1"
        a = _ask(one, "p", item, target=None).json()["choices"][0]["message"]["content"]
        b = _ask(two, "p", item, target=None).json()["choices"][0]["message"]["content"]
        assert a != b
        # The server's target wins over a marker in the prompt.
        c = _ask(two, "sim/p", item, target="deepscaler-1.5b").json()
        assert c["choices"][0]["message"]["content"] == b


def test_the_cap_cuts_the_answer(sim) -> None:
    reply = _ask(sim, "exact", "aime24/2024-I-1", max_tokens=1).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 1
    assert reply["choices"][0]["message"]["content"] == "279"


@pytest.mark.parametrize(("body", "target", "status", "message"), [
    ({}, None, 400, "must name its target model"),
    ({}, "gpt-9", 404, "target model 'gpt-9' is not simulated"),
    ({"stream": True}, "deepscaler-1.5b", 400, "probe models do not stream"),
    ({"max_tokens": 0}, "deepscaler-1.5b", 400, "max_tokens must be an integer >= 1"),
])
def test_bad_probe_requests(sim, body, target, status, message) -> None:
    reply = _ask(sim, "exact", "aime24/2024-I-1", target=target, **body)
    assert reply.status_code == status
    assert message in reply.json()["error"]["message"]


def test_unknown_item_and_bad_server_options(sim) -> None:
    reply = _ask(sim, "exact", "aime24/nope")
    assert reply.status_code == 404 and "has no runs" in reply.json()["error"]["message"]
    with pytest.raises(ValueError, match=r"probe_models\['p'\] \(noise sigma, natural log\)"):
        SimulatorServer(probe_models={"p": -1.0})
    with pytest.raises(ValueError, match="probe_models keys must be model names"):
        SimulatorServer(probe_models={"a/b": 0.1})
    with pytest.raises(ValueError, match="probe_seed must be an integer"):
        SimulatorServer(probe_seed=1.5)  # type: ignore[arg-type]
