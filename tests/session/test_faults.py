"""Provider errors release their reservations; retries are reserved, settled and charged to the
same subtask; timeouts free the budget too. Faults are injected in the simulator, over HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from clear_middleware.simulator import SimulatorServer
from clear_middleware.usage import Usage

from .conftest import EASY_ITEMS, alogged, logged, served_ok, server_tokens, subtask

ITEM = EASY_ITEMS[0]  # seed 0: 28 prompt + 750 completion tokens


def _kinds(session) -> list[str]:
    return [e.kind for e in session.statement()]


def test_a_500_is_released_and_retried_for_the_same_subtask(sim, make_session) -> None:
    sim.fail_next(1, status=500)
    session = make_session(budget_tokens=3000)
    [result] = session.run([subtask(ITEM, "easy")], seed=0)

    assert (result.status, result.attempts, result.usage) == ("ok", 2, Usage(28, 750, 740))
    first, retry = result.call_ids
    assert first.endswith("/" + ITEM) and retry.endswith("/" + ITEM + "-retry1")
    assert [(q.status, q.fault) for q in sim.requests] == [(500, "error"), (200, None)]
    entries = session.statement()
    assert [(e.kind, e.call_id) for e in entries] == [
        ("reserve", first), ("release", first), ("reserve", retry), ("commit", retry)]
    assert entries[1].tokens == entries[0].tokens  # the failed attempt cost nothing
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens) == (778, 0)


def test_persistent_500s_end_in_an_error_with_nothing_held(sim, make_session) -> None:
    sim.fail_next(3, status=503)
    session = make_session(budget_tokens=3000, max_retries=2)
    [result] = session.run([subtask(ITEM, "easy")], seed=0)

    assert (result.status, result.attempts, result.usage) == ("error", 3, Usage())
    assert result.error.startswith("ServiceUnavailableError")
    assert result.text is None and len(result.call_ids) == 3
    assert [q.status for q in sim.requests] == [503, 503, 503]
    assert _kinds(session) == ["reserve", "release"] * 3
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens, balance.available_tokens) == (
        0, 0, 3000)


def test_a_non_retryable_error_is_not_retried(sim, make_session) -> None:
    session = make_session(budget_tokens=3000)
    [result] = session.run([subtask("math500/test/no-such-item.json", "easy")], seed=0)
    assert (result.status, result.attempts) == ("error", 1)
    assert result.error.startswith("NotFoundError") and "no-such-item" in result.error
    assert [q.status for q in sim.requests] == [404]
    assert _kinds(session) == ["reserve", "release"]
    assert session.remaining().available_tokens == 3000


def test_a_timeout_releases_its_reservation(sim, make_session) -> None:
    sim.hang_next(1)
    session = make_session(budget_tokens=3000, timeout=1.0, max_retries=0)
    [result] = session.run([subtask(ITEM, "easy")], seed=0)

    assert (result.status, result.attempts) == ("error", 1)
    assert "Timeout" in result.error
    assert _kinds(session) == ["reserve", "release"]
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens) == (0, 0)
    sim.release_hung()
    [hung] = logged(sim, 1)
    assert (hung.fault, hung.status, hung.disconnected) == ("hang", 0, True)


def test_a_timeout_then_a_retry_charges_only_the_answered_call(sim, make_session) -> None:
    sim.hang_next(1)
    session = make_session(budget_tokens=3000, timeout=1.0, max_retries=1)
    [result] = session.run([subtask(ITEM, "easy")], seed=0)

    assert (result.status, result.attempts, result.usage) == ("ok", 2, Usage(28, 750, 740))
    assert _kinds(session) == ["reserve", "release", "reserve", "commit"]
    assert session.remaining().spent_tokens == 778 == server_tokens(served_ok(sim))
    sim.release_hung()
    assert [q.fault for q in logged(sim, 2)] == [None, "hang"]


async def test_faults_in_a_concurrent_batch_leave_the_ledger_exact(sim, make_session) -> None:
    subtasks = [subtask(item, "easy") for item in EASY_ITEMS]
    sim.fail_next(2, status=500)
    sim.delay_next(1, seconds=6.0)  # longer than the timeout: the client gives up
    # The timeout leaves a loaded CI machine room for the answered calls and the retry. A
    # fault goes to whichever request reaches the server next: a quick 500's retry can get
    # there before the last first attempts and take the delay, so a retry may itself fail
    # once (two retries allowed); each fault still costs exactly one extra attempt.
    session = make_session(budget_tokens=12_000, max_concurrency=6, timeout=3.0,
                           max_retries=2)
    results = await session.arun(subtasks, seed=0)

    assert [r.status for r in results] == ["ok"] * 6, [r.error for r in results]
    assert sum(r.attempts for r in results) == 6 + 3  # one more attempt per fault
    kinds = Counter(_kinds(session))
    assert kinds == {"reserve": 9, "release": 3, "commit": 6}
    balance = session.remaining()
    assert balance.reserved_tokens == 0
    # The server logs the delayed request once its delay ends and it finds the client gone.
    log = await alogged(sim, 9)
    assert Counter(q.fault for q in log) == {None: 6, "error": 2, "delay": 1}
    answered = [q for q in served_ok(sim) if not q.disconnected]
    assert len(answered) == 6
    assert balance.spent_tokens == server_tokens(answered) == sum(
        r.usage.total_tokens for r in results)


async def test_a_cancelled_batch_has_released_everything_when_it_returns(
    make_session, tmp_path
) -> None:
    # A server of its own: replies cut short by the cancellation are logged after the test.
    with SimulatorServer(tokens_per_second=2000) as own:  # replies of 0.4-1.2 s
        session = make_session(budget_tokens=12_000, api_base=own.base_url,
                               store=f"sqlite:///{tmp_path / 'budget.db'}")
        batch = [subtask(i, "easy") for i in EASY_ITEMS]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.arun(batch, seed=0), timeout=0.3)
        # No await in between: the reservations were released before arun gave up control.
        balance = session.remaining()
        kinds = Counter(_kinds(session))
    # Nothing stays held: calls that had answered are charged, every other reservation is back.
    assert balance.reserved_tokens == 0
    assert balance.spent_tokens + balance.available_tokens == 12_000
    assert kinds["reserve"] == kinds["release"] + kinds["commit"] and kinds["release"] >= 1
