"""Property tests: random reserve / commit / release / clock sequences.

1. Invariants (memory store, many sequences): after every step, for the parent and the child
   session, ``spent + reserved <= cap + excess`` where ``excess`` is what commits charged beyond
   their (still held) reservation, so with no excess the cap is never crossed; the statement
   adds up exactly to the counters.
2. Differential: the same sequence on memory, SQLite and Redis gives identical results,
   errors and statements.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from _checks import assert_statement_matches
from conftest import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clear_middleware.ledger import (
    Amount,
    Caps,
    Ledger,
    LedgerError,
    MemoryStore,
    SQLiteStore,
)
from clear_middleware.ledger.redis_store import RedisStore
from tests.redis_server import RedisServer

SESSIONS = ["root", "child"]
CAPS = {"root": Caps(tokens=1000, usd=0.001), "child": Caps(tokens=600)}

nano = st.integers(0, 400_000)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.sampled_from(SESSIONS), st.integers(0, 7),
                  st.integers(1, 400), nano),
        st.tuples(st.just("commit"), st.sampled_from(SESSIONS), st.integers(0, 7),
                  st.one_of(st.none(), st.integers(0, 500)), nano),
        st.tuples(st.just("release"), st.sampled_from(SESSIONS), st.integers(0, 7)),
        st.tuples(st.just("advance"), st.integers(0, 20)),
        st.tuples(st.just("reclaim")),
    ),
    max_size=40,
)


def apply(ledger: Ledger, clock: FakeClock, op: tuple) -> object:
    """Run one op; return a comparable outcome (result or error type and message)."""
    try:
        if op[0] == "reserve":
            _, session, call, tokens, usd_nano = op
            return ledger.reserve(session, f"c{call}", Amount(tokens, usd_nano / 1e9))
        if op[0] == "commit":
            _, session, call, tokens, usd_nano = op
            usage = None if tokens is None else Amount(tokens, usd_nano / 1e9)
            return ledger.commit(session, f"c{call}", usage)
        if op[0] == "release":
            return ledger.release(op[1], f"c{op[2]}")
        if op[0] == "advance":
            clock.advance(op[1])
            return None
        return ledger.reclaim_expired()
    except LedgerError as error:
        return (type(error).__name__, str(error))


def open_sessions(ledger: Ledger) -> None:
    ledger.open_session("root", CAPS["root"], lease_seconds=10)
    ledger.open_session("child", CAPS["child"], parent="root", lease_seconds=10)


def excess_of(ledger: Ledger, session: str) -> tuple[int, int]:
    tokens = nano_usd = 0
    for e in ledger.statement(session, include_children=True):
        if e.kind == "commit":
            tokens += max(0, e.tokens - e.reserved_tokens)
            nano_usd += max(0, e.nano_usd - e.reserved_nano_usd)
    return tokens, nano_usd


@settings(max_examples=300, deadline=None)
@given(ops)
def test_invariants_hold_after_every_step(sequence):
    clock = FakeClock()
    ledger = Ledger(MemoryStore(clock=clock))
    open_sessions(ledger)
    for op in sequence:
        apply(ledger, clock, op)
        for session in SESSIONS:
            balance = ledger.remaining(session)
            excess_tokens, excess_nano = excess_of(ledger, session)
            own = CAPS[session]
            used_tokens = balance.spent_tokens + balance.reserved_tokens
            assert used_tokens <= own.tokens + excess_tokens
            if own.nano_usd is not None:
                used_nano = balance.spent_nano_usd + balance.reserved_nano_usd
                assert used_nano <= own.nano_usd + excess_nano
            assert_statement_matches(balance, ledger.statement(session, include_children=True))
    # A child's use also counts in its parent.
    root, child = ledger.remaining("root"), ledger.remaining("child")
    assert root.spent_tokens >= child.spent_tokens
    assert root.reserved_tokens >= child.reserved_tokens


_server: RedisServer | None = None


def redis_url() -> str:
    global _server
    if _server is None:
        _server = RedisServer(Path(tempfile.mkdtemp(prefix="clear-redis-prop-")),
                              appendfsync="no")
        _server.start()
    return _server.url


def teardown_module() -> None:
    if _server is not None:
        _server.stop()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_all_stores_agree(sequence):
    clocks = [FakeClock() for _ in range(3)]
    with tempfile.TemporaryDirectory() as folder:
        ledgers = [
            Ledger(MemoryStore(clock=clocks[0])),
            Ledger(SQLiteStore(Path(folder) / "p.db", clock=clocks[1])),
            Ledger(RedisStore(redis_url(), namespace=f"p-{uuid.uuid4().hex}", clock=clocks[2])),
        ]
        try:
            for ledger in ledgers:
                open_sessions(ledger)
            for op in sequence:
                outcomes = [apply(ledger, clock, op) for ledger, clock in zip(ledgers, clocks,
                                                                               strict=True)]
                assert outcomes[0] == outcomes[1] == outcomes[2], op
            for session in SESSIONS:
                balances = [ledger.remaining(session) for ledger in ledgers]
                assert balances[0] == balances[1] == balances[2]
                statements = [ledger.statement(session, include_children=True)
                              for ledger in ledgers]
                assert statements[0] == statements[1] == statements[2]
        finally:
            for ledger in ledgers:
                ledger.close()
