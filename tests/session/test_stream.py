"""``BudgetSession.astream``: usage settled from the final usage chunk, early stops and failures
charged at the reservation (never less than what the server sent), unfunded calls never sent."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from clear_middleware.session import UnfundedSubtasks
from clear_middleware.simulator import SimulatorServer

from .conftest import EASY_ITEMS, HARD_ITEMS, alogged, served_ok, subtask

ITEM = EASY_ITEMS[0]  # seed 0: a 750-token run ending in the gold answer
ANSWER = "The final answer is $\\boxed{4}$."


def _entries(session) -> list[tuple[str, int, str]]:
    return [(e.kind, e.tokens, e.reason) for e in session.statement()]


async def test_stream_settles_the_reported_usage(sim, make_session) -> None:
    session = make_session(budget_tokens=3000)
    parts = [text async for text in session.astream(subtask(ITEM, "easy"), seed=0)]

    assert "".join(parts) == ANSWER  # the visible answer; the reasoning is not streamed
    [served] = sim.requests
    assert served.streamed and not served.disconnected
    assert (served.prompt_tokens, served.completion_tokens, served.sent_tokens) == (28, 750, 750)
    # Reserved: 42 prompt tokens (28 locally counted x 1.5 margin) + the funded cap.
    cap = served.requested_cap
    assert _entries(session) == [("reserve", 42 + cap, ""), ("commit", 28 + 750, "")]
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens) == (778, 0)


async def test_stream_stopped_early_is_charged_its_reservation(sim, make_session) -> None:
    sim.stream_chunk_tokens = 4  # the 10-token answer arrives in three pieces
    session = make_session(budget_tokens=3000)
    stream = session.astream(subtask(ITEM, "easy"), seed=0)
    async with contextlib.aclosing(stream):
        async for first in stream:  # noqa: B007 - the piece is checked below
            break  # the consumer stops after the first piece of the answer
    assert ANSWER.startswith(first) and first != ANSWER
    # The server logs a reply the client hung up on once it notices the hang-up.
    [served] = await alogged(sim, 1)
    reserve, commit = session.statement()
    # No usage chunk was read: the call is charged its whole reservation, which covers
    # everything the server could have sent (prompt + cap).
    assert (commit.kind, commit.tokens, commit.reason) == ("commit", reserve.tokens, "no_usage")
    assert commit.tokens >= served.prompt_tokens + served.completion_tokens
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens) == (reserve.tokens, 0)


async def test_stream_cancelled_while_reasoning_hangs_up_and_is_charged(
    sim, make_session
) -> None:
    sim.tokens_per_second = 1500  # 750 tokens: 0.5 s, all reasoning but the last 10
    sim.stream_chunk_tokens = 8
    session = make_session(budget_tokens=3000)
    stream = session.astream(subtask(ITEM, "easy"), seed=0)
    with pytest.raises(TimeoutError):  # the consumer gives up before the first answer text
        await asyncio.wait_for(anext(stream), timeout=0.25)
    [served] = await alogged(sim, 1)
    assert served.disconnected and 0 < served.sent_tokens < served.completion_tokens
    reserve, commit = session.statement()
    assert (commit.kind, commit.tokens, commit.reason) == ("commit", reserve.tokens, "no_usage")
    assert commit.tokens >= served.prompt_tokens + served.sent_tokens


async def test_stream_failing_mid_stream_is_charged_not_released(make_session) -> None:
    # A server of its own: the stall below is triggered by its first arrival.
    with SimulatorServer(tokens_per_second=1500, stream_chunk_tokens=8) as own:  # 0.5 s reply
        session = make_session(budget_tokens=3000, timeout=0.4, api_base=own.base_url)

        def stall() -> None:  # once tokens flow, the server stalls past the read timeout
            own.wait_for_arrivals(1, 5.0)
            threading.Event().wait(0.15)
            own.tokens_per_second = 10  # 0.8 s per 8-token chunk

        staller = threading.Thread(target=stall)
        staller.start()
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            async for _ in session.astream(subtask(ITEM, "easy"), seed=0):
                pass
        staller.join()
        [served] = await alogged(own, 1)
    assert served.disconnected and served.sent_tokens > 0  # generated, and billable
    reserve, commit = session.statement()
    assert (commit.kind, commit.tokens, commit.reason) == ("commit", reserve.tokens, "no_usage")
    assert commit.tokens >= served.prompt_tokens + served.sent_tokens


async def test_unfunded_stream_raises_and_sends_nothing(sim, make_session) -> None:
    session = make_session(budget_tokens=3000)
    with pytest.raises(UnfundedSubtasks) as refused:
        async for _ in session.astream(subtask(HARD_ITEMS[0], "hard"), seed=0):
            pass
    assert refused.value.indices == [0]
    assert refused.value.plan.price > 0
    assert sim.requests == [] and session.statement() == []
    assert served_ok(sim) == []
