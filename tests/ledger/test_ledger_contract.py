"""The ledger protocol, held to the same exact outcomes on memory, SQLite and Redis."""

from __future__ import annotations

import math

import pytest
from _checks import assert_statement_matches

from clear_middleware.ledger import (
    Amount,
    BudgetExceeded,
    CallStateError,
    Caps,
    Ledger,
    SessionConflict,
    UnknownCall,
    UnknownSession,
)


def check_books(ledger: Ledger, session_id: str) -> None:
    assert_statement_matches(
        ledger.remaining(session_id), ledger.statement(session_id, include_children=True)
    )


def kinds(ledger: Ledger, session_id: str) -> list[str]:
    return [entry.kind for entry in ledger.statement(session_id)]


# --- sessions ------------------------------------------------------------------------------
def test_open_session_is_idempotent_and_conflicts_are_refused(ledger):
    first = ledger.open_session("s", Caps(tokens=100, usd=1.5), lease_seconds=30)
    assert first.caps == Caps(tokens=100, usd=1.5)
    assert first.parent is None and first.lease_seconds == 30
    assert ledger.open_session("s", Caps(tokens=100, usd=1.5)) == first
    with pytest.raises(SessionConflict, match="already exists"):
        ledger.open_session("s", Caps(tokens=101, usd=1.5))


def test_unknown_parent_and_unknown_session(ledger):
    with pytest.raises(UnknownSession, match="nope"):
        ledger.open_session("child", Caps(tokens=10), parent="nope")
    for call in (
        lambda: ledger.reserve("ghost", "c", Amount(1)),
        lambda: ledger.commit("ghost", "c", Amount(1)),
        lambda: ledger.release("ghost", "c"),
        lambda: ledger.remaining("ghost"),
        lambda: ledger.statement("ghost"),
    ):
        with pytest.raises(UnknownSession, match="ghost"):
            call()


# --- reserve / commit / release ---------------------------------------------------------------
def test_reserve_commit_returns_the_difference(ledger, clock):
    ledger.open_session("s", Caps(tokens=1000), lease_seconds=60)
    held = ledger.reserve("s", "c1", Amount(tokens=700))
    assert (held.tokens, held.expires_at, held.replayed) == (700, clock.now + 60, False)
    assert ledger.remaining("s").available_tokens == 300
    done = ledger.commit("s", "c1", Amount(tokens=420))
    assert (done.charged_tokens, done.reserved_tokens, done.returned_tokens) == (420, 700, 280)
    assert not done.over_reservation and not done.replayed and done.reason == ""
    balance = ledger.remaining("s")
    assert (balance.spent_tokens, balance.reserved_tokens, balance.available_tokens) == (
        420, 0, 580)
    assert kinds(ledger, "s") == ["reserve", "commit"]
    check_books(ledger, "s")


def test_refusal_holds_nothing_and_is_recorded(ledger):
    ledger.open_session("s", Caps(tokens=1000))
    ledger.reserve("s", "a", Amount(600))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("s", "b", Amount(401))
    error = info.value
    assert (error.dimension, error.binding_session_id, error.requested_tokens,
            error.available_tokens) == ("tokens", "s", 401, 400)
    assert error.requested == Amount(401, 0.0)
    assert ledger.remaining("s").reserved_tokens == 600
    ledger.reserve("s", "b", Amount(400))  # the exact remainder fits
    assert ledger.remaining("s").available_tokens == 0
    entries = ledger.statement("s")
    assert [(e.kind, e.call_id, e.tokens) for e in entries] == [
        ("reserve", "a", 600), ("refuse", "b", 401), ("reserve", "b", 400)]
    assert entries[1].reason == "tokens cap of session s"
    check_books(ledger, "s")


def test_release_returns_everything(ledger):
    ledger.open_session("s", Caps(tokens=100))
    ledger.reserve("s", "c", Amount(90))
    released = ledger.release("s", "c")
    assert (released.kind, released.charged_tokens, released.reserved_tokens) == ("release", 0, 90)
    assert ledger.remaining("s").available_tokens == 100
    again = ledger.release("s", "c")
    assert again.replayed and again.reason == "already_released" and again.reserved_tokens == 0
    with pytest.raises(CallStateError, match="released"):
        ledger.commit("s", "c", Amount(10))
    assert kinds(ledger, "s") == ["reserve", "release"]
    check_books(ledger, "s")


def test_commit_replayed_three_times_is_charged_once(ledger):
    ledger.open_session("s", Caps(tokens=1000))
    ledger.reserve("s", "c", Amount(500))
    first = ledger.commit("s", "c", Amount(300))
    replays = [ledger.commit("s", "c", Amount(300)) for _ in range(3)]
    assert all(r.replayed for r in replays)
    assert {r._replace(replayed=False) for r in replays} == {first}
    # Even a replay carrying different numbers changes nothing: the first outcome stands.
    assert ledger.commit("s", "c", Amount(999)).charged_tokens == 300
    assert ledger.remaining("s").spent_tokens == 300
    assert kinds(ledger, "s") == ["reserve", "commit"]
    # Releasing a committed call is a no-op that reports the commit.
    after = ledger.release("s", "c")
    assert after.kind == "commit" and after.replayed and after.charged_tokens == 300
    check_books(ledger, "s")


def test_reserve_replay_and_call_id_reuse(ledger):
    ledger.open_session("s", Caps(tokens=1000))
    first = ledger.reserve("s", "c", Amount(100))
    again = ledger.reserve("s", "c", Amount(100))
    assert again == first._replace(replayed=True)
    assert ledger.remaining("s").reserved_tokens == 100
    with pytest.raises(CallStateError, match="already used"):
        ledger.reserve("s", "c", Amount(101))
    ledger.commit("s", "c", Amount(50))
    with pytest.raises(CallStateError, match="already used"):
        ledger.reserve("s", "c", Amount(100))
    assert kinds(ledger, "s") == ["reserve", "commit"]


def test_unknown_call(ledger):
    ledger.open_session("s", Caps(tokens=10))
    with pytest.raises(UnknownCall, match="'nope'"):
        ledger.commit("s", "nope", Amount(1))
    with pytest.raises(UnknownCall):
        ledger.release("s", "nope")
    assert kinds(ledger, "s") == []


def test_commit_larger_than_reservation_is_charged_in_full_and_flagged(ledger):
    ledger.open_session("s", Caps(tokens=1000))
    ledger.reserve("s", "c1", Amount(900))
    settled = ledger.commit("s", "c1", Amount(1200))
    assert settled.charged_tokens == 1200 and settled.over_reservation
    balance = ledger.remaining("s")
    assert balance.spent_tokens == 1200 and balance.available_tokens == -200 and balance.over_cap
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("s", "c2", Amount(1))
    assert info.value.available_tokens == -200
    entries = ledger.statement("s")
    assert entries[1].kind == "commit" and entries[1].over_reservation
    check_books(ledger, "s")


def test_commit_without_usage_is_charged_its_reservation(ledger, caplog):
    ledger.open_session("s", Caps(tokens=1000, usd=1.0))
    ledger.reserve("s", "c", Amount(400, 0.25))
    with caplog.at_level("WARNING", logger="clear_middleware.ledger"):
        settled = ledger.commit("s", "c", None)
    assert (settled.charged_tokens, settled.charged_nano_usd) == (400, 250_000_000)
    assert settled.reason == "no_usage" and not settled.over_reservation
    assert ledger.remaining("s").spent_usd == 0.25
    assert "no_usage" in caplog.text and "call=c " in caplog.text
    check_books(ledger, "s")


# --- leases ------------------------------------------------------------------------------------
def test_expired_lease_returns_budget_lazily(ledger, clock):
    ledger.open_session("s", Caps(tokens=100), lease_seconds=10)
    ledger.reserve("s", "crashed", Amount(80))
    clock.advance(9.999)
    assert ledger.remaining("s").reserved_tokens == 80
    clock.advance(0.001)
    balance = ledger.remaining("s")  # any operation reclaims due leases first
    assert (balance.reserved_tokens, balance.available_tokens) == (0, 100)
    entries = ledger.statement("s")
    assert [(e.kind, e.tokens) for e in entries] == [("reserve", 80), ("expire", 80)]
    assert entries[1].time == clock.now
    # The call finished after all: real spend is charged in full, flagged.
    late = ledger.commit("s", "crashed", Amount(70))
    assert (late.charged_tokens, late.reserved_tokens, late.reason) == (70, 0, "after_expiry")
    assert ledger.remaining("s").spent_tokens == 70
    assert ledger.release("s", "crashed").kind == "commit"
    check_books(ledger, "s")


def test_release_after_expiry_is_a_noop(ledger, clock):
    ledger.open_session("s", Caps(tokens=100), lease_seconds=1)
    ledger.reserve("s", "c", Amount(50))
    clock.advance(2)
    released = ledger.release("s", "c")
    assert released.replayed and released.reason == "expired"
    assert kinds(ledger, "s") == ["reserve", "expire"]


def test_per_call_lease_and_reclaim_expired(ledger, clock):
    ledger.open_session("s", Caps(tokens=100), lease_seconds=100)
    ledger.reserve("s", "short", Amount(10), lease_seconds=1)
    ledger.reserve("s", "long", Amount(10))
    clock.advance(5)
    assert ledger.reclaim_expired() == 1
    assert ledger.reclaim_expired() == 0
    assert ledger.remaining("s").reserved_tokens == 10


# --- parents -----------------------------------------------------------------------------------
def test_parent_cap_binds_children_atomically(ledger):
    ledger.open_session("agent", Caps(tokens=1000))
    ledger.open_session("sub1", None, parent="agent")
    ledger.open_session("sub2", Caps(tokens=800), parent="agent")
    ledger.reserve("sub1", "a", Amount(600))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("sub2", "b", Amount(500))  # fits sub2's 800, not the agent's 400 left
    assert (info.value.binding_session_id, info.value.available_tokens) == ("agent", 400)
    ledger.reserve("sub2", "b", Amount(400))
    assert ledger.remaining("sub2").available_tokens == 0
    ledger.commit("sub1", "a", Amount(100))
    agent = ledger.remaining("agent")
    assert (agent.spent_tokens, agent.reserved_tokens, agent.available_tokens) == (100, 400, 500)
    sub2 = ledger.remaining("sub2")
    assert (sub2.spent_tokens, sub2.reserved_tokens, sub2.available_tokens) == (0, 400, 400)
    assert ledger.remaining("sub1").available_tokens == 500
    assert [e.call_id for e in ledger.statement("agent")] == []
    tree = ledger.statement("agent", include_children=True)
    assert [(e.session_id, e.kind) for e in tree] == [
        ("sub1", "reserve"), ("sub2", "refuse"), ("sub2", "reserve"), ("sub1", "commit")]
    check_books(ledger, "agent")


def test_grandchild_bound_by_grandparent(ledger):
    ledger.open_session("g", Caps(usd=1.0))
    ledger.open_session("p", Caps(tokens=10_000), parent="g")
    ledger.open_session("c", None, parent="p")
    with pytest.raises(ValueError, match=r"amount\.usd is required"):
        ledger.reserve("c", "x", Amount(10))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("c", "x", Amount(10, 1.000000001))
    assert (info.value.dimension, info.value.binding_session_id) == ("usd", "g")
    ledger.reserve("c", "x", Amount(10, 1.0))
    assert ledger.remaining("p").available_nano_usd == 0


# --- money ---------------------------------------------------------------------------------------
def test_usd_is_exact_in_nano_usd(ledger):
    ledger.open_session("s", Caps(usd=0.3))
    ledger.reserve("s", "a", Amount(1, 0.1))
    ledger.reserve("s", "b", Amount(1, 0.2))  # 0.1 + 0.2 fills 0.3 exactly, no float drift
    with pytest.raises(BudgetExceeded):
        ledger.reserve("s", "c", Amount(1, 1e-9))
    ledger.commit("s", "a", Amount(1, 0.0000025))
    balance = ledger.remaining("s")
    assert balance.spent_nano_usd == 2500 and balance.reserved_nano_usd == 200_000_000
    assert balance.available_nano_usd == 300_000_000 - 2500 - 200_000_000
    check_books(ledger, "s")


def test_unpriced_amounts_refused_under_usd_cap_only(ledger):
    ledger.open_session("usd", Caps(usd=5.0))
    ledger.open_session("tok", Caps(tokens=100))
    with pytest.raises(ValueError, match=r"amount\.usd is required.*never counts as \$0"):
        ledger.reserve("usd", "c", Amount(10))
    ledger.reserve("usd", "c", Amount(10, 0.01))
    with pytest.raises(ValueError, match=r"amount\.usd is required"):
        ledger.commit("usd", "c", Amount(10))
    assert kinds(ledger, "usd") == ["reserve"]  # the bad commit changed nothing
    ledger.reserve("tok", "c", Amount(10))  # no USD cap: pricing optional
    assert ledger.commit("tok", "c", Amount(5)).charged_nano_usd == 0


# --- zero budgets ----------------------------------------------------------------------------
def test_zero_token_budget_refuses_every_call(ledger):
    ledger.open_session("s", Caps(tokens=0))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("s", "c", Amount(1))
    assert info.value.available_tokens == 0
    assert kinds(ledger, "s") == ["refuse"]


def test_zero_usd_budget_admits_only_free_calls(ledger):
    ledger.open_session("s", Caps(usd=0.0))
    with pytest.raises(BudgetExceeded):
        ledger.reserve("s", "paid", Amount(10, 1e-9))
    ledger.reserve("s", "free", Amount(10, 0.0))  # an explicitly free model fits a $0 budget
    assert ledger.remaining("s").available_nano_usd == 0


# --- bad input: clear errors, nothing changed ---------------------------------------------------
@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Amount(-1), ValueError, r"amount\.tokens"),
        (lambda: Amount(1, -0.5), ValueError, r"amount\.usd"),
        (lambda: Amount(1, math.nan), ValueError, r"amount\.usd"),
        (lambda: Amount(1, math.inf), ValueError, r"amount\.usd"),
        (lambda: Amount(1.5), TypeError, r"amount\.tokens"),
        (lambda: Amount(True), TypeError, r"amount\.tokens"),
        (lambda: Caps(tokens=-1), ValueError, r"caps\.tokens"),
        (lambda: Caps(usd=math.nan), ValueError, r"caps\.usd"),
        (lambda: Caps(tokens=2**60), ValueError, r"caps\.tokens"),
    ],
)
def test_bad_amounts_and_caps(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_calls_change_nothing(ledger):
    ledger.open_session("s", Caps(tokens=100))
    ledger.reserve("s", "ok", Amount(10))
    before = (ledger.remaining("s"), ledger.statement("s"))
    bad_calls = [
        (lambda: ledger.reserve("s", "c", Amount(0)), ValueError, r"amount\.tokens must be >= 1"),
        (lambda: ledger.reserve("s", "c", 5), TypeError, "amount must be an Amount"),
        (lambda: ledger.reserve("s", "", Amount(1)), ValueError, "call_id"),
        (lambda: ledger.reserve("s", 7, Amount(1)), TypeError, "call_id"),
        (lambda: ledger.reserve("s", "a\nb", Amount(1)), ValueError, "printable"),
        (lambda: ledger.reserve("s", "sk-abc123", Amount(1)), ValueError, "API key"),
        (lambda: ledger.reserve("s", "c", Amount(1), lease_seconds=0), ValueError, "lease"),
        (lambda: ledger.reserve("s", "c", Amount(1), lease_seconds=math.nan), ValueError,
         "lease"),
        (lambda: ledger.commit("s", "ok", {"tokens": 1}), TypeError, "Amount"),
        (lambda: ledger.open_session("s", {"tokens": 1}), TypeError, "caps"),
        (lambda: ledger.open_session("x", parent="x"), ValueError, "parent"),
    ]
    for call, error, match in bad_calls:
        with pytest.raises(error, match=match):
            call()
    assert (ledger.remaining("s"), ledger.statement("s")) == before


# --- async twins -------------------------------------------------------------------------------
async def test_async_api_matches_sync(ledger, clock):
    await ledger.aopen_session("s", Caps(tokens=500, usd=1.0), lease_seconds=5)
    held = await ledger.areserve("s", "a", Amount(300, 0.5))
    assert held.tokens == 300 and held.nano_usd == 500_000_000
    with pytest.raises(BudgetExceeded):
        await ledger.areserve("s", "b", Amount(201, 0.1))
    done = await ledger.acommit("s", "a", Amount(120, 0.2))
    assert (done.charged_tokens, done.charged_nano_usd) == (120, 200_000_000)
    assert (await ledger.acommit("s", "a", Amount(120, 0.2))).replayed
    await ledger.areserve("s", "b", Amount(50, 0.1))
    assert (await ledger.arelease("s", "b")).reserved_tokens == 50
    await ledger.areserve("s", "c", Amount(10, 0.01))
    clock.advance(6)
    assert await ledger.areclaim_expired() == 1
    balance = await ledger.aremaining("s")
    assert (balance.spent_tokens, balance.reserved_tokens, balance.available_tokens) == (
        120, 0, 380)
    entries = await ledger.astatement("s", include_children=True)
    assert [e.kind for e in entries] == [
        "reserve", "refuse", "commit", "reserve", "release", "reserve", "expire"]
    assert_statement_matches(balance, entries)


def test_entries_hold_ids_and_counts_only(ledger):
    ledger.open_session("s", Caps(tokens=100))
    ledger.reserve("s", "c", Amount(10))
    entry = ledger.statement("s")[0]
    assert set(entry._fields) == {
        "seq", "session_id", "call_id", "kind", "tokens", "nano_usd", "reserved_tokens",
        "reserved_nano_usd", "time", "over_reservation", "reason"}
