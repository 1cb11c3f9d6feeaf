"""In-memory ledger store: one process, thread- and asyncio-safe, the default.

All state sits in dicts guarded by one :class:`threading.Lock`; each operation holds it for a
few microseconds and never awaits, so the async twins run the same code directly (an event
loop is never parked on I/O, and threads cannot interleave inside an operation).
Nothing survives the process: use SQLite or Redis when several processes share a budget or a
crash must not forget spend.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

from clear_middleware.ledger import rules
from clear_middleware.ledger.rules import CallRow, SessionRow
from clear_middleware.ledger.store import RECLAIM_BATCH
from clear_middleware.ledger.types import (
    Balance,
    BudgetExceeded,
    Reservation,
    SessionInfo,
    Settlement,
    StatementEntry,
    UnknownSession,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~clear_middleware.ledger.store.LedgerStore` in this process's memory.

    Args:
        clock: seconds since the epoch (default :func:`time.time`); tests pass a fake one.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionRow] = {}
        self._chains: dict[str, list[SessionRow]] = {}
        self._children: dict[str, list[str]] = {}
        self._calls: dict[tuple[str, str], CallRow] = {}
        # Entries are kept as plain tuples (cheaper to build on the hot path) and become
        # StatementEntry objects when read.
        self._entries: dict[str, list[tuple]] = {}
        # (expires_ms, session_id, call_id) of reservations; settled ones are skipped lazily
        # and the heap is rebuilt when they outnumber the live ones.
        self._leases: list[tuple[int, str, str]] = []
        self._compact_at = 1024
        self._seq = 0
        self.now_ms = 0

    # --- the rules.Txn interface (called with the lock held) ---------------------------------
    def find_session(self, session_id: str) -> SessionRow | None:
        return self._sessions.get(session_id)

    def chain(self, session_id: str) -> list[SessionRow]:
        chain = self._chains.get(session_id)
        if chain is None:
            raise UnknownSession(session_id)
        return chain

    def insert_session(self, row: SessionRow) -> None:
        self._sessions[row.session_id] = row
        parent_chain = [] if row.parent is None else self._chains[row.parent]
        self._chains[row.session_id] = [row, *parent_chain]
        self._entries[row.session_id] = []
        self._children[row.session_id] = []
        if row.parent is not None:
            self._children[row.parent].append(row.session_id)

    def add(
        self, chain: list[SessionRow], spent_tokens: int, spent_nano: int,
        reserved_tokens: int, reserved_nano: int,
    ) -> None:
        for row in chain:
            row.spent_tokens += spent_tokens
            row.spent_nano += spent_nano
            row.reserved_tokens += reserved_tokens
            row.reserved_nano += reserved_nano

    def find_call(self, session_id: str, call_id: str) -> CallRow | None:
        return self._calls.get((session_id, call_id))

    def save_call(self, session_id: str, call_id: str, call: CallRow, new: bool) -> None:
        if new:
            self._calls[(session_id, call_id)] = call
            heapq.heappush(self._leases, (call.expires_ms, session_id, call_id))
            if len(self._leases) > self._compact_at:
                self._compact()

    def due_leases(self, limit: int | None) -> list[tuple[str, str]]:
        due = []
        leases = self._leases
        while leases and leases[0][0] <= self.now_ms and (limit is None or len(due) < limit):
            _, session_id, call_id = heapq.heappop(leases)
            due.append((session_id, call_id))
        return due

    def _compact(self) -> None:
        calls, reserved = self._calls, rules.RESERVED
        self._leases = [lease for lease in self._leases
                        if calls[(lease[1], lease[2])].state == reserved]
        heapq.heapify(self._leases)
        # Amortised O(1): the next rebuild waits until the heap has doubled past the live set.
        self._compact_at = max(1024, 2 * len(self._leases))

    def record(
        self, session_id: str, call_id: str, kind: str, tokens: int, nano: int,
        reserved_tokens: int, reserved_nano: int, over: bool, reason: str,
    ) -> None:
        self._seq += 1
        self._entries[session_id].append(
            (self._seq, session_id, call_id, kind, tokens, nano, reserved_tokens, reserved_nano,
             self.now_ms / 1000, over, reason)
        )

    # --- the store protocol --------------------------------------------------------------------
    def _begin(self) -> None:
        self.now_ms = int(self._clock() * 1000)
        if self._leases and self._leases[0][0] <= self.now_ms:
            rules.reclaim(self, RECLAIM_BATCH)

    def open_session(
        self, session_id: str, cap_tokens: int | None, cap_nano_usd: int | None,
        parent: str | None, lease_ms: int,
    ) -> SessionInfo:
        with self._lock:
            self._begin()
            return rules.open_session(self, session_id, cap_tokens, cap_nano_usd, parent, lease_ms)

    def session_info(self, session_id: str) -> SessionInfo:
        with self._lock:
            return rules.session_info(self, session_id)

    def reserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        with self._lock:
            self._begin()
            result = rules.reserve(self, session_id, call_id, tokens, nano_usd, lease_ms)
        if isinstance(result, BudgetExceeded):
            raise result
        return result

    def commit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        with self._lock:
            self._begin()
            return rules.commit(self, session_id, call_id, tokens, nano_usd)

    def release(self, session_id: str, call_id: str) -> Settlement:
        with self._lock:
            self._begin()
            return rules.release(self, session_id, call_id)

    def balance(self, session_id: str) -> Balance:
        with self._lock:
            self._begin()
            return rules.balance(self, session_id)

    def statement(self, session_id: str, include_children: bool = False) -> list[StatementEntry]:
        with self._lock:
            if session_id not in self._sessions:
                raise UnknownSession(session_id)
            if not include_children:
                rows = list(self._entries[session_id])
            else:
                rows = []
                pending = [session_id]
                while pending:
                    current = pending.pop()
                    rows.extend(self._entries[current])
                    pending.extend(self._children[current])
                rows.sort()
        return [StatementEntry._make(row) for row in rows]

    def reclaim_expired(self, limit: int | None = None) -> int:
        with self._lock:
            self.now_ms = int(self._clock() * 1000)
            return rules.reclaim(self, limit)

    def close(self) -> None:
        """Nothing to release; kept for the common interface."""

    # --- async twins: same code, no awaits inside the lock ----------------------------------
    async def aopen_session(
        self, session_id: str, cap_tokens: int | None, cap_nano_usd: int | None,
        parent: str | None, lease_ms: int,
    ) -> SessionInfo:
        return self.open_session(session_id, cap_tokens, cap_nano_usd, parent, lease_ms)

    async def asession_info(self, session_id: str) -> SessionInfo:
        return self.session_info(session_id)

    async def areserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        return self.reserve(session_id, call_id, tokens, nano_usd, lease_ms)

    async def acommit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        return self.commit(session_id, call_id, tokens, nano_usd)

    async def arelease(self, session_id: str, call_id: str) -> Settlement:
        return self.release(session_id, call_id)

    async def abalance(self, session_id: str) -> Balance:
        return self.balance(session_id)

    async def astatement(
        self, session_id: str, include_children: bool = False
    ) -> list[StatementEntry]:
        return self.statement(session_id, include_children)

    async def areclaim_expired(self, limit: int | None = None) -> int:
        return self.reclaim_expired(limit)

    async def aclose(self) -> None:
        self.close()
