"""The store protocol: where a ledger's counters, calls and statements live.

One interface, sync and async, implemented by :class:`~clear_middleware.ledger.memory.MemoryStore`
(one process), :class:`~clear_middleware.ledger.sqlite.SQLiteStore` (processes on one host) and
:class:`~clear_middleware.ledger.redis_store.RedisStore` (many hosts). Stores speak integer
units only (tokens, nano-USD, milliseconds); the :class:`~clear_middleware.ledger.ledger.Ledger`
facade validates input and converts USD and seconds at the boundary.

Every method is one atomic step: it applies completely or not at all, and first reclaims
reservations whose lease has expired (a bounded batch; ``reclaim_expired`` does them all).

Semantics every store must follow (``tests/ledger/test_ledger_contract.py`` checks them all
against all three):

* ``reserve``: refuses (records a ``refuse`` entry, raises ``BudgetExceeded``) unless
  ``spent + reserved + amount <= cap`` holds in each unit for the session and every ancestor;
  otherwise holds the amount in all of them. Re-sending the same reserve returns the existing
  reservation; reusing a call id otherwise raises ``CallStateError``.
* ``commit``: charges the given usage (``tokens=None``: no usage was reported, charge the
  reservation) and returns the reservation to the pool. Charged in full even when larger than
  reserved or after the lease expired (it is real spend), flagged ``over_reservation`` /
  ``after_expiry``. A replayed commit returns the first outcome and charges nothing.
* ``release``: returns the reservation; a no-op (``replayed``) on a call already released,
  expired or committed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from clear_middleware.ledger.types import (
    Balance,
    Reservation,
    SessionInfo,
    Settlement,
    StatementEntry,
)

__all__ = ["RECLAIM_BATCH", "LedgerStore"]

#: Expired reservations reclaimed at the start of each operation. Bounded so one operation
#: never stalls on a backlog; a backlog only makes reservations refuse early (never overspend).
RECLAIM_BATCH = 32


@runtime_checkable
class LedgerStore(Protocol):
    """Atomic budget operations in integer units (tokens, nano-USD, milliseconds)."""

    def open_session(
        self,
        session_id: str,
        cap_tokens: int | None,
        cap_nano_usd: int | None,
        parent: str | None,
        lease_ms: int,
    ) -> SessionInfo:
        """Create the session, or return it if it exists with the same caps and parent.

        Raises ``UnknownSession`` (parent missing) or ``SessionConflict``.
        """
        ...

    def session_info(self, session_id: str) -> SessionInfo:
        """The session's caps, parent and default lease. Raises ``UnknownSession``."""
        ...

    def reserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        """Hold ``tokens`` / ``nano_usd`` for ``call_id`` (lease: ``lease_ms`` or the session's)."""
        ...

    def commit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        """Charge actual usage (``tokens=None``: charge the reservation) and settle the call."""
        ...

    def release(self, session_id: str, call_id: str) -> Settlement:
        """Return the call's whole reservation (a failed call)."""
        ...

    def balance(self, session_id: str) -> Balance:
        """Counters and availability of the session (caps of every ancestor applied)."""
        ...

    def statement(self, session_id: str, include_children: bool = False) -> list[StatementEntry]:
        """The session's recorded decisions in order (with its sub-sessions' if asked)."""
        ...

    def reclaim_expired(self, limit: int | None = None) -> int:
        """Expire reservations whose lease ended (all if ``limit`` is None); how many."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    async def aopen_session(
        self,
        session_id: str,
        cap_tokens: int | None,
        cap_nano_usd: int | None,
        parent: str | None,
        lease_ms: int,
    ) -> SessionInfo:
        """Async :meth:`open_session`."""
        ...

    async def asession_info(self, session_id: str) -> SessionInfo:
        """Async :meth:`session_info`."""
        ...

    async def areserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        """Async :meth:`reserve`."""
        ...

    async def acommit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        """Async :meth:`commit`."""
        ...

    async def arelease(self, session_id: str, call_id: str) -> Settlement:
        """Async :meth:`release`."""
        ...

    async def abalance(self, session_id: str) -> Balance:
        """Async :meth:`balance`."""
        ...

    async def astatement(
        self, session_id: str, include_children: bool = False
    ) -> list[StatementEntry]:
        """Async :meth:`statement`."""
        ...

    async def areclaim_expired(self, limit: int | None = None) -> int:
        """Async :meth:`reclaim_expired`."""
        ...

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        ...
