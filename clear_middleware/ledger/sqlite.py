"""SQLite ledger store: the embedded default for several processes on one host.

Each operation is one ``BEGIN IMMEDIATE`` transaction, which takes the database's write lock
up front, so two processes can never both read "room for one more call" and both reserve it.
WAL journaling lets readers (statements) proceed while a writer holds the lock.
``synchronous=NORMAL`` (default) survives any process crash; pass ``synchronous="FULL"`` to
also survive power loss at the cost of an fsync per operation.

Connections are per thread and per process (sqlite3 connections must not cross either);
the async twins run the sync code in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from clear_middleware.ledger import rules
from clear_middleware.ledger.rules import CallRow, SessionRow
from clear_middleware.ledger.store import RECLAIM_BATCH
from clear_middleware.ledger.types import (
    Balance,
    LedgerError,
    Reservation,
    SessionInfo,
    Settlement,
    StatementEntry,
    StoreUnavailable,
    UnknownSession,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    parent TEXT,
    cap_tokens INTEGER,
    cap_nano INTEGER,
    lease_ms INTEGER NOT NULL,
    spent_tokens INTEGER NOT NULL DEFAULT 0,
    spent_nano INTEGER NOT NULL DEFAULT 0,
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_nano INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_parent ON sessions(parent);
CREATE TABLE IF NOT EXISTS calls (
    session_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    nano INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    charged_tokens INTEGER NOT NULL DEFAULT 0,
    charged_nano INTEGER NOT NULL DEFAULT 0,
    settled_tokens INTEGER NOT NULL DEFAULT 0,
    settled_nano INTEGER NOT NULL DEFAULT 0,
    over INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_id, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS calls_due ON calls(expires_ms) WHERE state = 'reserved';
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    nano INTEGER NOT NULL,
    reserved_tokens INTEGER NOT NULL,
    reserved_nano INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    over INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_session ON entries(session_id, seq);
"""

_SESSION_COLUMNS = (
    "id, parent, cap_tokens, cap_nano, lease_ms, "
    "spent_tokens, spent_nano, reserved_tokens, reserved_nano"
)
_CALL_COLUMNS = (
    "state, tokens, nano, expires_ms, charged_tokens, charged_nano, "
    "settled_tokens, settled_nano, over, reason"
)
_ENTRY_COLUMNS = (
    "seq, session_id, call_id, kind, tokens, nano, reserved_tokens, reserved_nano, "
    "time_ms, over, reason"
)


def _entry(row: tuple[Any, ...]) -> StatementEntry:
    return StatementEntry(*row[:8], row[8] / 1000, bool(row[9]), row[10])


class _Txn:
    """rules.Txn over one connection inside BEGIN IMMEDIATE."""

    def __init__(self, conn: sqlite3.Connection, now_ms: int, chains: dict[str, tuple[str, ...]]):
        self.conn = conn
        self.now_ms = now_ms
        self._chains = chains

    def find_session(self, session_id: str) -> SessionRow | None:
        row = self.conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return None if row is None else SessionRow(*row)

    def chain(self, session_id: str) -> list[SessionRow]:
        ids = self._chains.get(session_id)
        if ids is None:
            # Parents never change once a session exists, so the id chain is cached for good.
            walk, current = [], session_id
            while current is not None:
                row = self.find_session(current)
                if row is None:
                    raise UnknownSession(current)
                walk.append(current)
                current = row.parent
            ids = self._chains[session_id] = tuple(walk)
        if len(ids) == 1:
            row = self.find_session(session_id)
            if row is None:
                raise UnknownSession(session_id)
            return [row]
        marks = ",".join("?" * len(ids))
        found = {
            row[0]: SessionRow(*row)
            for row in self.conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id IN ({marks})", ids
            )
        }
        if len(found) != len(ids):
            raise UnknownSession(next(i for i in ids if i not in found))
        return [found[i] for i in ids]

    def insert_session(self, row: SessionRow) -> None:
        self.conn.execute(
            "INSERT INTO sessions (id, parent, cap_tokens, cap_nano, lease_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (row.session_id, row.parent, row.cap_tokens, row.cap_nano, row.lease_ms),
        )

    def add(
        self, chain: list[SessionRow], spent_tokens: int, spent_nano: int,
        reserved_tokens: int, reserved_nano: int,
    ) -> None:
        ids = [row.session_id for row in chain]
        self.conn.execute(
            "UPDATE sessions SET spent_tokens = spent_tokens + ?, spent_nano = spent_nano + ?, "
            "reserved_tokens = reserved_tokens + ?, reserved_nano = reserved_nano + ? "
            f"WHERE id IN ({','.join('?' * len(ids))})",
            (spent_tokens, spent_nano, reserved_tokens, reserved_nano, *ids),
        )
        for row in chain:
            row.spent_tokens += spent_tokens
            row.spent_nano += spent_nano
            row.reserved_tokens += reserved_tokens
            row.reserved_nano += reserved_nano

    def find_call(self, session_id: str, call_id: str) -> CallRow | None:
        row = self.conn.execute(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE session_id = ? AND call_id = ?",
            (session_id, call_id),
        ).fetchone()
        if row is None:
            return None
        call = CallRow(*row)
        call.over = bool(call.over)
        return call

    def save_call(self, session_id: str, call_id: str, call: CallRow, new: bool) -> None:
        values = (
            call.state, call.tokens, call.nano, call.expires_ms, call.charged_tokens,
            call.charged_nano, call.settled_tokens, call.settled_nano, int(call.over),
            call.reason,
        )
        if new:
            self.conn.execute(
                f"INSERT INTO calls (session_id, call_id, {_CALL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, call_id, *values),
            )
        else:
            self.conn.execute(
                "UPDATE calls SET state = ?, tokens = ?, nano = ?, expires_ms = ?, "
                "charged_tokens = ?, charged_nano = ?, settled_tokens = ?, settled_nano = ?, "
                "over = ?, reason = ? WHERE session_id = ? AND call_id = ?",
                (*values, session_id, call_id),
            )

    def due_leases(self, limit: int | None) -> list[tuple[str, str]]:
        return self.conn.execute(
            "SELECT session_id, call_id FROM calls WHERE state = 'reserved' AND expires_ms <= ? "
            "ORDER BY expires_ms, session_id, call_id LIMIT ?",
            (self.now_ms, -1 if limit is None else limit),
        ).fetchall()

    def record(
        self, session_id: str, call_id: str, kind: str, tokens: int, nano: int,
        reserved_tokens: int, reserved_nano: int, over: bool, reason: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO entries (session_id, call_id, kind, tokens, nano, reserved_tokens, "
            "reserved_nano, time_ms, over, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, call_id, kind, tokens, nano, reserved_tokens, reserved_nano,
             self.now_ms, int(over), reason),
        )


class SQLiteStore:
    """A :class:`~clear_middleware.ledger.store.LedgerStore` in one SQLite file.

    Args:
        path: database file (created if missing). ``":memory:"`` is refused: each connection
            would see its own empty database; use ``MemoryStore`` instead.
        clock: seconds since the epoch (default :func:`time.time`); tests pass a fake one.
        synchronous: ``"NORMAL"`` (crash-safe, default) or ``"FULL"`` (power-loss safe).
        busy_timeout_seconds: how long an operation waits for another writer (> 0) before
            failing with ``StoreUnavailable``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        if str(path) in ("", ":memory:"):
            raise ValueError("path must be a file; for an in-process ledger use MemoryStore")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not busy_timeout_seconds > 0:
            raise ValueError(f"busy_timeout_seconds must be > 0, got {busy_timeout_seconds!r}")
        self.path = Path(path)
        self._clock = clock
        self._synchronous = synchronous
        self._timeout = float(busy_timeout_seconds)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._chains: dict[str, tuple[str, ...]] = {}
        self._closed = False
        self._write_lock = threading.Lock()
        conn = self._conn()
        try:
            self._retrying(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            self._begin(conn)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            message = f"cannot initialise SQLite ledger {self.path}: {error}"
            raise StoreUnavailable(message) from error

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"SQLite ledger store at {self.path} is closed")
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            try:
                # timeout=0: no SQLite busy handler; _retrying does the waiting.
                conn = sqlite3.connect(
                    self.path, timeout=0, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"cannot open SQLite ledger {self.path}: {error}") from error
            local.conn, local.pid = conn, os.getpid()
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def _write(
        self, operation: Callable[..., Any], *args: Any, reclaim_first: bool = True
    ) -> Any:
        conn = self._conn()
        try:
            # Threads of this process queue on a lock (fair and cheap); processes compete for
            # SQLite's write lock in _begin.
            with self._write_lock:
                result = self._transaction(conn, operation, args, reclaim_first)
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite ledger {self.path} unavailable: {error}") from error
        if isinstance(result, LedgerError):
            raise result
        return result

    def _retrying(self, step: Callable[[], Any]) -> Any:
        """Run ``step``, retrying while the database is locked, until the busy timeout.

        SQLite's own busy handler sleeps 1, 2, 5, ... 100 ms between attempts, so under
        contention one process can lose every race for seconds; polling every <= 2 ms (with
        jitter) keeps waits short and fair enough.
        """
        deadline = time.monotonic() + self._timeout
        attempt = 0
        while True:
            try:
                return step()
            except sqlite3.OperationalError as error:
                text = str(error)
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
            attempt += 1
            time.sleep(random.uniform(0, min(0.002, 0.00005 * 2**attempt)))

    def _begin(self, conn: sqlite3.Connection) -> None:
        self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))

    def _transaction(
        self, conn: sqlite3.Connection, operation: Callable[..., Any], args: tuple[Any, ...],
        reclaim_first: bool,
    ) -> Any:
        self._begin(conn)
        try:
            txn = _Txn(conn, int(self._clock() * 1000), self._chains)
            if reclaim_first:
                rules.reclaim(txn, RECLAIM_BATCH)
            try:
                result = operation(txn, *args)
            except LedgerError as error:
                # The rules validate before they mutate, so all this transaction changed is
                # the lease reclaim, which must stand (as in the other stores).
                result = error
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._conn()
        try:
            return self._retrying(lambda: conn.execute(sql, args).fetchall())
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite ledger {self.path} unavailable: {error}") from error

    def open_session(
        self, session_id: str, cap_tokens: int | None, cap_nano_usd: int | None,
        parent: str | None, lease_ms: int,
    ) -> SessionInfo:
        return self._write(
            rules.open_session, session_id, cap_tokens, cap_nano_usd, parent, lease_ms
        )

    def session_info(self, session_id: str) -> SessionInfo:
        rows = self._read(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise UnknownSession(session_id)
        return rules.info(SessionRow(*rows[0]))

    def reserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        return self._write(rules.reserve, session_id, call_id, tokens, nano_usd, lease_ms)

    def commit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        return self._write(rules.commit, session_id, call_id, tokens, nano_usd)

    def release(self, session_id: str, call_id: str) -> Settlement:
        return self._write(rules.release, session_id, call_id)

    def balance(self, session_id: str) -> Balance:
        return self._write(rules.balance, session_id)

    def statement(self, session_id: str, include_children: bool = False) -> list[StatementEntry]:
        if not self._read("SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
            raise UnknownSession(session_id)
        if include_children:
            sql = (
                "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL "
                "SELECT s.id FROM sessions s JOIN tree t ON s.parent = t.id) "
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id IN tree ORDER BY seq"
            )
        else:
            sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? ORDER BY seq"
        return [_entry(row) for row in self._read(sql, (session_id,))]

    def reclaim_expired(self, limit: int | None = None) -> int:
        return self._write(rules.reclaim, limit, reclaim_first=False)

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            # A connection in use by another thread right now raises; it dies with its thread.
            with contextlib.suppress(sqlite3.ProgrammingError):
                conn.close()

    async def aopen_session(
        self, session_id: str, cap_tokens: int | None, cap_nano_usd: int | None,
        parent: str | None, lease_ms: int,
    ) -> SessionInfo:
        return await asyncio.to_thread(
            self.open_session, session_id, cap_tokens, cap_nano_usd, parent, lease_ms
        )

    async def asession_info(self, session_id: str) -> SessionInfo:
        return await asyncio.to_thread(self.session_info, session_id)

    async def areserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        return await asyncio.to_thread(
            self.reserve, session_id, call_id, tokens, nano_usd, lease_ms
        )

    async def acommit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        return await asyncio.to_thread(self.commit, session_id, call_id, tokens, nano_usd)

    async def arelease(self, session_id: str, call_id: str) -> Settlement:
        return await asyncio.to_thread(self.release, session_id, call_id)

    async def abalance(self, session_id: str) -> Balance:
        return await asyncio.to_thread(self.balance, session_id)

    async def astatement(
        self, session_id: str, include_children: bool = False
    ) -> list[StatementEntry]:
        return await asyncio.to_thread(self.statement, session_id, include_children)

    async def areclaim_expired(self, limit: int | None = None) -> int:
        return await asyncio.to_thread(self.reclaim_expired, limit)

    async def aclose(self) -> None:
        self.close()
