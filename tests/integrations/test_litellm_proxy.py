"""The LiteLLM proxy hook: the pre-call hook as the proxy calls it, then the real LiteLLM call
to the simulator over HTTP, whose logging events settle or release the reservation."""

from __future__ import annotations

import asyncio
import copy

import litellm
import pytest
from litellm.proxy._types import UserAPIKeyAuth

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.integrations.litellm_proxy import ClearBudgetRefused, ClearProxyBudget

from .conftest import MODEL, questions

ALICE = UserAPIKeyAuth(token="hashed-key-alice")
BOB = UserAPIKeyAuth(token="hashed-key-bob")


@pytest.fixture(scope="module")
def hook():
    # One hook per process, as in a proxy (LiteLLM registers equal hooks only once); each test
    # uses its own session names.
    hook = ClearProxyBudget(budget_tokens=30_000)
    saved = litellm.callbacks
    litellm.callbacks = [hook]
    yield hook
    litellm.callbacks = saved
    for name in ("_async_success_callback", "_async_failure_callback", "success_callback",
                 "failure_callback", "input_callback", "service_callback"):
        registered = getattr(litellm, name, None)
        if isinstance(registered, list) and hook in registered:
            registered.remove(hook)


def _request(session: str | None, text: str, **extra) -> dict:
    data = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    if session is not None:
        data["metadata"] = {"clear_session_id": session}
    return data


async def _send(hook: ClearProxyBudget, sim, user, data: dict):
    data = await hook.async_pre_call_hook(user, None, copy.deepcopy(data), "acompletion")
    response = await litellm.acompletion(**data, api_base=sim.base_url, api_key="sim")
    for _ in range(200):  # LiteLLM runs its success callbacks in the background
        if hook.open_calls == 0:
            break
        await asyncio.sleep(0.01)
    return data, response


async def test_the_hook_caps_reserves_and_settles_a_session_call(sim, hook):
    question = questions(1)[0]
    session = hook.session_for("key:hashed-key-alice", "run-1", MODEL)
    quote = session.quote(question)
    data, response = await _send(hook, sim, ALICE, _request("run-1", question))
    assert data["max_tokens"] == quote.output_tokens == sim.requests[-1].requested_cap
    assert hook.open_calls == 0
    reserve, commit = session.statement()
    assert reserve.tokens == quote.prompt_tokens + quote.output_tokens
    assert commit.tokens == response.usage.total_tokens


async def test_a_smaller_client_cap_is_kept(sim, hook):
    data, _ = await _send(hook, sim, ALICE, _request("run-2", questions(1)[0], max_tokens=300))
    assert data["max_tokens"] == 300 == sim.requests[-1].requested_cap


async def test_naming_another_tenants_session_never_draws_on_its_budget(sim, hook):
    question = questions(2)[1]
    await _send(hook, sim, ALICE, _request("shared-name", question))
    alice = hook.session_for("key:hashed-key-alice", "shared-name", MODEL)
    alice_balance = alice.remaining()
    assert alice_balance.spent_tokens > 0
    # Bob names the same session: he gets his own, with the full budget, and spends from it.
    await _send(hook, sim, BOB, _request("shared-name", question))
    bob = hook.session_for("key:hashed-key-bob", "shared-name", MODEL)
    assert bob.session_id != alice.session_id
    assert bob.remaining().spent_tokens == alice_balance.spent_tokens  # the same call
    assert alice.remaining() == alice_balance  # untouched
    assert "hashed-key" not in alice.session_id + bob.session_id


async def test_keys_of_one_team_share_the_team_session(sim, hook):
    first = UserAPIKeyAuth(token="hashed-key-1", team_id="team-a")
    second = UserAPIKeyAuth(token="hashed-key-2", team_id="team-a")
    await _send(hook, sim, first, _request("team-run", questions(1)[0]))
    await _send(hook, sim, second, _request("team-run", questions(1)[0]))
    team = hook.session_for("team:team-a", "team-run", MODEL)
    assert [e.kind for e in team.statement()] == ["reserve", "commit"] * 2


async def test_an_unfundable_call_is_refused_with_429_before_any_provider(sim):
    # Calls are worth nothing below 6,000 output tokens; each session has 1,000.
    hard = StaticEstimator(default=ShiftedSurge(ceiling=0.9, threshold=6_000, rate=1 / 500))
    hook = ClearProxyBudget(budget_tokens=1_000, estimator=hard)
    before = len(sim.requests)
    with pytest.raises(ClearBudgetRefused) as refused:
        await hook.async_pre_call_hook(ALICE, None, _request("poor", questions(1)[0]),
                                       "acompletion")
    assert refused.value.status_code == 429 and refused.value.price > 0
    assert len(sim.requests) == before
    session = hook.session_for("key:hashed-key-alice", "poor", MODEL)
    assert session.statement() == [] and hook.open_calls == 0


async def test_a_failed_call_is_released(sim, hook):
    sim.fail_next(1, status=400)
    data = await hook.async_pre_call_hook(ALICE, None, _request("run-3", questions(1)[0]),
                                          "acompletion")
    with pytest.raises(litellm.BadRequestError):
        await litellm.acompletion(**data, api_base=sim.base_url, api_key="sim")
    await hook.async_post_call_failure_hook(data, RuntimeError("failed"), ALICE)
    session = hook.session_for("key:hashed-key-alice", "run-3", MODEL)
    assert session.remaining().available_tokens == 30_000
    assert [e.kind for e in session.statement()] == ["reserve", "release"]


async def test_requests_without_a_session_or_an_owner(hook):
    plain = _request(None, "hello")
    assert await hook.async_pre_call_hook(ALICE, None, copy.deepcopy(plain),
                                          "acompletion") == plain
    assert await hook.async_pre_call_hook(ALICE, None, _request("s", "hi"),
                                          "aembedding") == _request("s", "hi")
    with pytest.raises(ClearBudgetRefused) as anonymous:
        await hook.async_pre_call_hook(UserAPIKeyAuth(), None, _request("s", "hi"),
                                       "acompletion")
    assert anonymous.value.status_code == 401
    with pytest.raises(ClearBudgetRefused) as bad:
        await hook.async_pre_call_hook(ALICE, None, _request("s", "hi") | {
            "metadata": {"clear_session_id": "s", "clear_expected_calls": 0}}, "acompletion")
    assert bad.value.status_code == 400
