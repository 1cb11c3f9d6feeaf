"""Faults: a worker SIGKILLed between reserve and commit, Redis killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from _checks import assert_statement_matches

from clear_middleware.ledger import (
    Amount,
    BudgetExceeded,
    Caps,
    Ledger,
    StoreUnavailable,
    store_from_uri,
)
from clear_middleware.ledger.redis_store import RedisStore
from tests.redis_server import RedisServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_worker_killed_between_reserve_and_commit(kind, tmp_path, request):
    if kind == "sqlite":
        uri, options = f"sqlite:///{tmp_path / 'crash.db'}", {}
    else:
        uri = request.getfixturevalue("redis_server").url
        options = {"namespace": f"crash-{uuid.uuid4().hex}"}
    ledger = Ledger(store_from_uri(uri, **options))
    ledger.open_session("s", Caps(tokens=1000))
    lease = 1.0
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "_worker.py"), "hold", uri, json.dumps(options), "s",
         "doomed", "800", str(lease)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        line = worker.stdout.readline()
        assert line.strip() == "reserved", worker.stderr.read()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    held = ledger.remaining("s")
    assert (held.reserved_tokens, held.available_tokens) == (800, 200)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("s", "survivor-early", Amount(300))
    expires_at = ledger.statement("s")[0].time + lease
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    ledger.reserve("s", "survivor", Amount(300))  # the dead worker's lease came back
    entries = ledger.statement("s")
    assert [(e.kind, e.call_id, e.tokens) for e in entries] == [
        ("reserve", "doomed", 800), ("refuse", "survivor-early", 300),
        ("expire", "doomed", 800), ("reserve", "survivor", 300)]
    assert_statement_matches(ledger.remaining("s"), entries)
    ledger.close()


def _retry(operation, failures: list[str], deadline: float):
    """Retry an idempotent ledger operation while Redis is down."""
    while True:
        try:
            return operation()
        except StoreUnavailable as error:
            failures.append(str(error))
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_redis_restart_loses_no_committed_spend(tmp_path):
    server = RedisServer(tmp_path / "redis-restart", appendfsync="always")
    server.start()
    store = RedisStore(server.url, socket_timeout_seconds=1.0)
    ledger = Ledger(store)
    try:
        ledger.open_session("s", Caps(tokens=10_000_000, usd=100.0))
        calls = 600
        amounts = [(i % 97) + 1 for i in range(calls)]
        failures: list[str] = []
        progress = {"done": 0}
        deadline = time.monotonic() + 60

        def client() -> None:
            for i, used in enumerate(amounts):
                _retry(lambda i=i: ledger.reserve("s", f"c{i}", Amount(200, 2e-4)),
                       failures, deadline)
                spent = Amount(used, used * 1e-6)
                _retry(lambda i=i, spent=spent: ledger.commit("s", f"c{i}", spent),
                       failures, deadline)
                progress["done"] = i + 1

        thread = threading.Thread(target=client)
        thread.start()
        while progress["done"] < calls // 3:
            time.sleep(0.005)
        server.kill()  # crash: no shutdown, no save; AOF (fsync always) holds every write
        killed_at = progress["done"]
        # While Redis is down, calls fail clearly and quickly.
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            ledger.remaining("s")
        assert time.monotonic() - started < 5
        time.sleep(0.3)
        server.start()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert failures, "the client must have seen the outage"
        assert killed_at < calls
        balance = ledger.remaining("s")
        # Every acknowledged commit survived, none was charged twice, nothing is left held.
        assert balance.spent_tokens == sum(amounts)
        assert balance.spent_nano_usd == sum(amounts) * 1000
        assert balance.reserved_tokens == 0
        entries = ledger.statement("s")
        assert sum(e.kind == "commit" for e in entries) == calls
        assert sum(e.kind == "reserve" for e in entries) == calls
        assert_statement_matches(balance, entries)
    finally:
        ledger.close()
        server.stop()


def test_sqlite_locked_too_long_fails_clearly(tmp_path):
    import sqlite3

    path = tmp_path / "locked.db"
    ledger = Ledger(store_from_uri(f"sqlite:///{path}", busy_timeout_seconds=0.2))
    ledger.open_session("s", Caps(tokens=100))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            ledger.reserve("s", "c", Amount(10))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ledger.reserve("s", "c", Amount(10))  # the failed attempt changed nothing
    assert [e.kind for e in ledger.statement("s")] == ["reserve"]
    ledger.close()
