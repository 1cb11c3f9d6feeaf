"""The simulator over real HTTP on 127.0.0.1: replies, usage, streaming, faults, concurrency."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog
from clear_middleware.simulator._tokens import count_tokens

ITEM = "aime24/2024-I-1"
# deepscaler-1.5b on aime24/2024-I-1 with seed 1 replays run 330 of the sweep: finished after
# 2612 tokens with the correct answer (204). Its answer sentence is 10 tokens.
RUN_330 = {"run_id": 330, "length": 2612, "gold": "204"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture
def fresh_sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


def _body(cap: int | None = 4096, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "deepscaler-1.5b",
        "seed": 1,
        "messages": [{"role": "user", "content": f"{item_marker(ITEM)} Find the answer."}],
    }
    if cap is not None:
        body["max_tokens"] = cap
    body.update(extra)
    return body


def _post(server: SimulatorServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, **kwargs)


def _events(response: httpx.Response) -> list[Any]:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_the_replayed_run_matches_the_data() -> None:
    run = load_catalog().run(RUN_330["run_id"])
    assert run is not None
    assert (run.model, run.item, run.length, run.censored, run.correct, run.gold) == (
        "deepscaler-1.5b",
        ITEM,
        2612,
        False,
        True,
        "204",
    )


def test_finished_run_reply(sim: SimulatorServer) -> None:
    reply = _post(sim, _body(4096))
    assert reply.status_code == 200
    data = reply.json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "The final answer is $\\boxed{204}$."
    assert data["model"] == "deepscaler-1.5b"
    assert data["usage"] == {
        "prompt_tokens": 23,  # 3 + 3 + 1 ("user") + 16 (the text)
        "completion_tokens": 2612,
        "total_tokens": 2635,
        "completion_tokens_details": {"reasoning_tokens": 2602},
    }
    reasoning = choice["message"]["reasoning_content"]
    assert reasoning.startswith("[[run:330]] think think")
    assert count_tokens(reasoning) == 2602
    served = sim.requests[-1]
    assert (served.item, served.run_id, served.cap, served.completion_tokens) == (
        ITEM,
        330,
        4096,
        2612,
    )
    assert (served.sent_tokens, served.finish_reason, served.correct, served.streamed) == (
        2612,
        "stop",
        True,
        False,
    )


def test_cap_cuts_the_run(sim: SimulatorServer) -> None:
    data = _post(sim, _body(1000)).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["choices"][0]["message"]["content"] == ""
    assert data["usage"]["completion_tokens"] == 1000
    assert data["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1000}
    assert sim.requests[-1].correct is False


def test_max_completion_tokens_wins_over_max_tokens(sim: SimulatorServer) -> None:
    data = _post(sim, _body(4096, max_completion_tokens=700)).json()
    assert data["usage"]["completion_tokens"] == 700
    assert (sim.requests[-1].requested_cap, sim.requests[-1].cap) == (700, 700)


def test_cap_is_clipped_to_the_model_limit(sim: SimulatorServer) -> None:
    body = _body(50_000, model="sim/qwen3-0.6b", seed=4)
    data = _post(sim, body).json()
    served = sim.requests[-1]
    assert (served.requested_cap, served.cap) == (50_000, 4096)
    assert data["model"] == "sim/qwen3-0.6b"
    assert data["usage"]["completion_tokens"] <= 4096
    no_cap = _post(sim, _body(None, model="qwen3-0.6b", seed=4)).json()
    assert sim.requests[-1].cap == 4096 and sim.requests[-1].requested_cap is None
    assert no_cap["usage"] == data["usage"]


def test_item_named_in_the_body(sim: SimulatorServer) -> None:
    item = "math500/test/precalculus/807.json"
    messages = [{"role": "user", "content": "no marker here"}]
    _post(sim, {"model": "qwen3-1.7b", "messages": messages, "sim_item": item})
    assert sim.requests[-1].item == item
    _post(sim, {"model": "qwen3-1.7b", "messages": messages, "metadata": {"sim_item": item}})
    assert sim.requests[-1].item == item


def test_without_marker_or_seed_the_reply_is_reproducible(sim: SimulatorServer) -> None:
    body = {"model": "qwen3-1.7b", "messages": [{"role": "user", "content": "What is 6 x 7?"}]}
    first = _post(sim, body).json()
    one = sim.requests[-1]
    second = _post(sim, body).json()
    two = sim.requests[-1]
    assert (one.item, one.run_id) == (two.item, two.run_id)
    assert one.item == load_catalog().item_for_text("qwen3-1.7b", "What is 6 x 7?")
    assert first["choices"] == second["choices"]


def test_seeds_select_different_runs(sim: SimulatorServer) -> None:
    runs = set()
    for seed in range(30):
        _post(sim, _body(1024, seed=seed))
        runs.add(sim.requests[-1].run_id)
    assert len(runs) >= 8  # all 14 runs of the item are informative at 1024


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}, 404, "gpt-nope"),
        (_body(messages=[{"role": "user", "content": "[[item:aime24/none]]"}]), 404, "none"),
        (_body(0), 400, "max_tokens"),
        (_body(max_completion_tokens=2.5), 400, "max_completion_tokens"),
        (_body(n=2), 400, "n must be 1"),
        (_body(messages=[]), 400, "messages"),
        (_body(continue_final_message=True), 400, "assistant"),
        (_body(seed="x"), 400, "seed"),
    ],
)
def test_bad_requests(sim: SimulatorServer, body: dict, status: int, fragment: str) -> None:
    reply = _post(sim, body)
    assert reply.status_code == status
    assert fragment in reply.json()["error"]["message"]
    assert sim.requests[-1].status == status


def test_invalid_json_is_a_400(sim: SimulatorServer) -> None:
    reply = httpx.post(f"{sim.base_url}/chat/completions", content=b"{not json")
    assert reply.status_code == 400


def test_models_and_routes(sim: SimulatorServer) -> None:
    models = httpx.get(f"{sim.base_url}/models").json()["data"]
    assert len(models) == 10
    assert {"id": "qwen3-0.6b", "max_output_tokens": 4096}.items() <= models[7].items()
    assert httpx.get(f"{sim.url}/models").status_code == 200
    assert httpx.post(f"{sim.url}/chat/completions", json=_body(100)).status_code == 200
    assert httpx.post(f"{sim.url}/v1/embeddings", json={}).status_code == 404


def test_keep_alive_reuses_the_connection(sim: SimulatorServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        sockets = []
        for body in (_body(100), _body(100, stream=True), _body(100)):
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body))
            response = conn.getresponse()
            payload = response.read()
            assert response.status == 200 and payload
            sockets.append(conn.sock)
        assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2]
    finally:
        conn.close()


def test_stream_matches_the_plain_reply(sim: SimulatorServer) -> None:
    plain = _post(sim, _body(4096)).json()
    body = _body(4096, stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{sim.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = _events(response)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"] for e in events[1:-3]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    assert reasoning == plain["choices"][0]["message"]["reasoning_content"]
    assert content == "The final answer is $\\boxed{204}$."
    assert len(deltas) == 82 + 1  # ceil(2602 / 32) reasoning chunks, one answer chunk
    assert events[-3]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert events[-2]["choices"] == []
    assert events[-2]["usage"] == plain["usage"]
    served = sim.requests[-1]
    assert (served.streamed, served.sent_tokens, served.reasoning_tokens) == (True, 2612, 2602)


def test_stream_without_usage_has_no_usage_chunk(sim: SimulatorServer) -> None:
    with httpx.stream("POST", f"{sim.base_url}/chat/completions", json=_body(64, stream=True)) as r:
        events = _events(r)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert len(events) == 1 + 2 + 1 + 1  # role, two 32-token chunks, finish, [DONE]


def test_continuation_replays_the_same_run(sim: SimulatorServer) -> None:
    first = _post(sim, _body(1024)).json()
    prior = first["choices"][0]["message"]["reasoning_content"]
    messages = [*_body()["messages"], {"role": "assistant", "content": prior}]
    body = {
        "model": "deepscaler-1.5b",
        "messages": messages,
        "max_tokens": 8192,
        "continue_final_message": True,
    }
    rest = _post(sim, body).json()
    assert rest["usage"]["completion_tokens"] == 2612 - 1024
    assert rest["choices"][0]["finish_reason"] == "stop"
    assert rest["choices"][0]["message"]["content"] == "The final answer is $\\boxed{204}$."
    served = sim.requests[-1]
    assert (served.run_id, served.already_tokens, served.continued) == (330, 1024, True)
    assert served.prompt_tokens == 23 + 3 + 1 + 1024  # the partial answer is prompt too


def test_client_disconnect_mid_stream(fresh_sim: SimulatorServer) -> None:
    fresh_sim.tokens_per_second = 3200.0  # a 32-token chunk every 10 ms
    body = _body(4096, stream=True)
    with httpx.stream("POST", f"{fresh_sim.base_url}/chat/completions", json=body) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # role chunk, two content chunks (with blanks)
    assert got[0].startswith("data: ")
    served = _wait_for_log(fresh_sim, 1)[0]
    assert served.disconnected is True
    assert served.completion_tokens == 2612
    assert 64 <= served.sent_tokens < 2612
    assert served.sent_tokens % 32 == 0
    # The server carries on.
    fresh_sim.tokens_per_second = None
    assert _post(fresh_sim, _body(100)).status_code == 200


def test_injected_errors(fresh_sim: SimulatorServer) -> None:
    fresh_sim.fail_next(2, status=503)
    assert [_post(fresh_sim, _body(10)).status_code for _ in range(3)] == [503, 503, 200]
    assert [(r.status, r.fault) for r in fresh_sim.requests] == [
        (503, "error"),
        (503, "error"),
        (200, None),
    ]


def test_injected_delay_trips_a_client_timeout(fresh_sim: SimulatorServer) -> None:
    fresh_sim.delay_next(1, seconds=0.6)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _post(fresh_sim, _body(10), timeout=0.2)
    served = _wait_for_log(fresh_sim, 1)[0]
    assert time.monotonic() - start >= 0.6
    assert (served.fault, served.disconnected, served.sent_tokens) == ("delay", True, 0)
    fresh_sim.delay_next(1, seconds=0.2)
    start = time.monotonic()
    assert _post(fresh_sim, _body(10), timeout=5).status_code == 200
    assert time.monotonic() - start >= 0.2


def test_injected_hang_until_released(fresh_sim: SimulatorServer) -> None:
    fresh_sim.hang_next(1)
    with pytest.raises(httpx.ReadTimeout):
        _post(fresh_sim, _body(10), timeout=0.3)
    assert fresh_sim.wait_for_arrivals(1, timeout_s=1)
    assert fresh_sim.requests == []  # still held
    fresh_sim.release_hung()
    served = _wait_for_log(fresh_sim, 1)[0]
    assert (served.status, served.fault) == (0, "hang")
    assert _post(fresh_sim, _body(10)).status_code == 200


def test_stop_does_not_wait_for_hung_requests() -> None:
    server = SimulatorServer().start()
    server.hang_next(1)
    sock = socket.create_connection(("127.0.0.1", server.port))
    payload = json.dumps(_body(10)).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    assert server.wait_for_arrivals(1, timeout_s=2)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    sock.settimeout(2)
    assert sock.recv(100) == b""  # closed without a response
    sock.close()


async def test_many_concurrent_requests() -> None:
    async with SimulatorServer() as server:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def one(k: int) -> dict:
                body = _body(2048, seed=k, stream=k % 2 == 0)
                body["stream_options"] = {"include_usage": True}
                url = f"{server.base_url}/chat/completions"
                if k % 2:
                    reply = await client.post(url, json=body)
                    assert reply.status_code == 200
                    return reply.json()["usage"]
                async with client.stream("POST", url, json=body) as response:
                    events = [
                        json.loads(line[6:])
                        async for line in response.aiter_lines()
                        if line.startswith("data: {")
                    ]
                return events[-1]["usage"]

            usages = await asyncio.gather(*(one(k) for k in range(250)))
        served = server.requests
    assert len(served) == 250
    assert all(r.status == 200 and not r.disconnected for r in served)
    by_seq = {r.seq: r for r in served}
    assert sum(u["completion_tokens"] for u in usages) == sum(r.sent_tokens for r in served)
    assert all(r.completion_tokens == r.sent_tokens for r in by_seq.values())


def _wait_for_log(server: SimulatorServer, count: int, timeout_s: float = 5.0) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        served = server.requests
        if len(served) >= count:
            return served
        time.sleep(0.01)
    raise AssertionError(f"the simulator logged {len(server.requests)} < {count} requests")
