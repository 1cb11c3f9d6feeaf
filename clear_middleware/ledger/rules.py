"""The ledger's rules, written once for the stores that run Python inside a transaction.

:class:`~clear_middleware.ledger.memory.MemoryStore` (under a lock) and
:class:`~clear_middleware.ledger.sqlite.SQLiteStore` (inside ``BEGIN IMMEDIATE``) implement the
small :class:`Txn` interface and call these functions; Redis runs the same rules as Lua scripts
in :mod:`clear_middleware.ledger.redis_store`. The contract tests hold all three to the same
outcomes.

Every function validates before it mutates, so an exception leaves the store unchanged even
without a rollback. A refusal is *returned* (not raised) so the store can persist its
``refuse`` entry before raising it.
"""

from __future__ import annotations

from typing import Protocol

from clear_middleware.ledger.types import (
    Balance,
    BudgetExceeded,
    CallStateError,
    Caps,
    Reservation,
    SessionConflict,
    SessionInfo,
    Settlement,
    UnknownCall,
    UnknownSession,
    nano_to_usd,
)

__all__ = [
    "COMMITTED",
    "EXPIRED",
    "RELEASED",
    "RESERVED",
    "CallRow",
    "SessionRow",
    "Txn",
    "balance",
    "commit",
    "info",
    "open_session",
    "reclaim",
    "release",
    "reserve",
    "session_info",
]

RESERVED, COMMITTED, RELEASED, EXPIRED = "reserved", "committed", "released", "expired"


class SessionRow:
    """A session's settings and counters (counters include its sub-sessions)."""

    __slots__ = (
        "cap_nano",
        "cap_tokens",
        "lease_ms",
        "parent",
        "reserved_nano",
        "reserved_tokens",
        "session_id",
        "spent_nano",
        "spent_tokens",
    )

    def __init__(
        self,
        session_id: str,
        parent: str | None,
        cap_tokens: int | None,
        cap_nano: int | None,
        lease_ms: int,
        spent_tokens: int = 0,
        spent_nano: int = 0,
        reserved_tokens: int = 0,
        reserved_nano: int = 0,
    ) -> None:
        self.session_id = session_id
        self.parent = parent
        self.cap_tokens = cap_tokens
        self.cap_nano = cap_nano
        self.lease_ms = lease_ms
        self.spent_tokens = spent_tokens
        self.spent_nano = spent_nano
        self.reserved_tokens = reserved_tokens
        self.reserved_nano = reserved_nano


class CallRow:
    """One call: its reservation, state and (once committed) the outcome replays return."""

    __slots__ = (
        "charged_nano",
        "charged_tokens",
        "expires_ms",
        "nano",
        "over",
        "reason",
        "settled_nano",
        "settled_tokens",
        "state",
        "tokens",
    )

    def __init__(
        self,
        state: str,
        tokens: int,
        nano: int,
        expires_ms: int,
        charged_tokens: int = 0,
        charged_nano: int = 0,
        settled_tokens: int = 0,
        settled_nano: int = 0,
        over: bool = False,
        reason: str = "",
    ) -> None:
        self.state = state
        self.tokens = tokens
        self.nano = nano
        self.expires_ms = expires_ms
        self.charged_tokens = charged_tokens
        self.charged_nano = charged_nano
        self.settled_tokens = settled_tokens
        self.settled_nano = settled_nano
        self.over = over
        self.reason = reason


class Txn(Protocol):
    """What a store provides inside one atomic step."""

    now_ms: int

    def find_session(self, session_id: str) -> SessionRow | None: ...

    def chain(self, session_id: str) -> list[SessionRow]:
        """The session then its ancestors up to the root; raises ``UnknownSession``."""
        ...

    def insert_session(self, row: SessionRow) -> None: ...

    def add(
        self, chain: list[SessionRow], spent_tokens: int, spent_nano: int,
        reserved_tokens: int, reserved_nano: int,
    ) -> None:
        """Add the deltas to every session of ``chain`` (the rows and the storage)."""
        ...

    def find_call(self, session_id: str, call_id: str) -> CallRow | None: ...

    def save_call(self, session_id: str, call_id: str, call: CallRow, new: bool) -> None: ...

    def due_leases(self, limit: int | None) -> list[tuple[str, str]]:
        """(session_id, call_id) of reservations whose lease ended by ``now_ms``."""
        ...

    def record(
        self, session_id: str, call_id: str, kind: str, tokens: int, nano: int,
        reserved_tokens: int, reserved_nano: int, over: bool, reason: str,
    ) -> None:
        """Append a statement entry (the store assigns ``seq`` and stamps ``now_ms``)."""
        ...


def _caps(row: SessionRow) -> Caps:
    return Caps(row.cap_tokens, None if row.cap_nano is None else nano_to_usd(row.cap_nano))


def info(row: SessionRow) -> SessionInfo:
    """The public settings of a session row."""
    return SessionInfo(row.session_id, _caps(row), row.parent, row.lease_ms / 1000)


def session_info(txn: Txn, session_id: str) -> SessionInfo:
    row = txn.find_session(session_id)
    if row is None:
        raise UnknownSession(session_id)
    return info(row)


def open_session(
    txn: Txn, session_id: str, cap_tokens: int | None, cap_nano: int | None,
    parent: str | None, lease_ms: int,
) -> SessionInfo:
    existing = txn.find_session(session_id)
    if existing is not None:
        settings = (existing.cap_tokens, existing.cap_nano, existing.parent)
        if settings != (cap_tokens, cap_nano, parent):
            raise SessionConflict(
                f"session {session_id!r} already exists with caps "
                f"(tokens={existing.cap_tokens}, nano_usd={existing.cap_nano}) and parent "
                f"{existing.parent!r}; got (tokens={cap_tokens}, nano_usd={cap_nano}), "
                f"parent {parent!r}"
            )
        return info(existing)
    if parent is not None and txn.find_session(parent) is None:
        raise UnknownSession(parent)
    row = SessionRow(session_id, parent, cap_tokens, cap_nano, lease_ms)
    txn.insert_session(row)
    return info(row)


def _available(chain: list[SessionRow]) -> tuple[int | None, str, int | None, str]:
    """Least headroom in each unit over the chain, and the session that sets it."""
    avail_tokens: int | None = None
    avail_nano: int | None = None
    bind_tokens = bind_nano = ""
    for row in chain:
        if row.cap_tokens is not None:
            left = row.cap_tokens - row.spent_tokens - row.reserved_tokens
            if avail_tokens is None or left < avail_tokens:
                avail_tokens, bind_tokens = left, row.session_id
        if row.cap_nano is not None:
            left = row.cap_nano - row.spent_nano - row.reserved_nano
            if avail_nano is None or left < avail_nano:
                avail_nano, bind_nano = left, row.session_id
    return avail_tokens, bind_tokens, avail_nano, bind_nano


def reclaim(txn: Txn, limit: int | None) -> int:
    """Expire due reservations: their amounts go back to the pool, as ``expire`` entries."""
    reclaimed = 0
    for session_id, call_id in txn.due_leases(limit):
        call = txn.find_call(session_id, call_id)
        if call is None or call.state != RESERVED or call.expires_ms > txn.now_ms:
            continue
        if txn.find_session(session_id) is None:
            continue
        txn.add(txn.chain(session_id), 0, 0, -call.tokens, -call.nano)
        call.state = EXPIRED
        txn.save_call(session_id, call_id, call, False)
        txn.record(session_id, call_id, "expire", call.tokens, call.nano,
                   call.tokens, call.nano, False, "")
        reclaimed += 1
    return reclaimed


def reserve(
    txn: Txn, session_id: str, call_id: str, tokens: int, nano: int, lease_ms: int | None
) -> Reservation | BudgetExceeded:
    chain = txn.chain(session_id)
    call = txn.find_call(session_id, call_id)
    if call is not None:
        if call.state == RESERVED and (call.tokens, call.nano) == (tokens, nano):
            return Reservation(session_id, call_id, tokens, nano, call.expires_ms / 1000, True)
        raise CallStateError(
            f"call id {call_id!r} of session {session_id!r} is already used ({call.state}, "
            f"{call.tokens} tokens, {call.nano} nano-USD); use a new call id per call"
        )
    avail_tokens, bind_tokens, avail_nano, bind_nano = _available(chain)
    refused = None
    if avail_tokens is not None and tokens > avail_tokens:
        refused = ("tokens", bind_tokens)
    elif avail_nano is not None and nano > avail_nano:
        refused = ("usd", bind_nano)
    if refused is not None:
        dimension, binding = refused
        txn.record(session_id, call_id, "refuse", tokens, nano, 0, 0, False,
                   f"{dimension} cap of session {binding}")
        return BudgetExceeded(
            session_id=session_id, call_id=call_id, binding_session_id=binding,
            dimension=dimension,  # type: ignore[arg-type]
            requested_tokens=tokens, requested_nano_usd=nano,
            available_tokens=avail_tokens, available_nano_usd=avail_nano,
        )
    expires_ms = txn.now_ms + (chain[0].lease_ms if lease_ms is None else lease_ms)
    txn.add(chain, 0, 0, tokens, nano)
    txn.save_call(session_id, call_id, CallRow(RESERVED, tokens, nano, expires_ms), True)
    txn.record(session_id, call_id, "reserve", tokens, nano, tokens, nano, False, "")
    return Reservation(session_id, call_id, tokens, nano, expires_ms / 1000)


def _settlement(session_id: str, call_id: str, call: CallRow, replayed: bool) -> Settlement:
    return Settlement(
        session_id, call_id, "commit", call.charged_tokens, call.charged_nano,
        call.settled_tokens, call.settled_nano, call.over, call.reason, replayed,
    )


def commit(
    txn: Txn, session_id: str, call_id: str, tokens: int | None, nano: int
) -> Settlement:
    chain = txn.chain(session_id)
    call = txn.find_call(session_id, call_id)
    if call is None:
        raise UnknownCall(session_id, call_id)
    if call.state == COMMITTED:
        return _settlement(session_id, call_id, call, True)
    if call.state == RELEASED:
        raise CallStateError(
            f"call {call_id!r} of session {session_id!r} was released; a released call "
            "cannot be committed (reserve a new call id)"
        )
    reasons = []
    settled_tokens, settled_nano = (call.tokens, call.nano) if call.state == RESERVED else (0, 0)
    if call.state == EXPIRED:
        reasons.append("after_expiry")
    if tokens is None:
        tokens, nano = call.tokens, call.nano
        reasons.append("no_usage")
    call.over = tokens > call.tokens or nano > call.nano
    txn.add(chain, tokens, nano, -settled_tokens, -settled_nano)
    call.state = COMMITTED
    call.charged_tokens, call.charged_nano = tokens, nano
    call.settled_tokens, call.settled_nano = settled_tokens, settled_nano
    call.reason = ",".join(reasons)
    txn.save_call(session_id, call_id, call, False)
    txn.record(session_id, call_id, "commit", tokens, nano, settled_tokens, settled_nano,
               call.over, call.reason)
    return _settlement(session_id, call_id, call, False)


def release(txn: Txn, session_id: str, call_id: str) -> Settlement:
    chain = txn.chain(session_id)
    call = txn.find_call(session_id, call_id)
    if call is None:
        raise UnknownCall(session_id, call_id)
    if call.state == COMMITTED:
        return _settlement(session_id, call_id, call, True)
    if call.state != RESERVED:
        reason = "already_released" if call.state == RELEASED else "expired"
        return Settlement(session_id, call_id, "release", 0, 0, 0, 0, False, reason, True)
    txn.add(chain, 0, 0, -call.tokens, -call.nano)
    call.state = RELEASED
    txn.save_call(session_id, call_id, call, False)
    txn.record(session_id, call_id, "release", call.tokens, call.nano,
               call.tokens, call.nano, False, "")
    return Settlement(session_id, call_id, "release", 0, 0, call.tokens, call.nano)


def balance(txn: Txn, session_id: str) -> Balance:
    chain = txn.chain(session_id)
    row = chain[0]
    avail_tokens, _, avail_nano, _ = _available(chain)
    return Balance(
        session_id, _caps(row), row.parent, row.spent_tokens, row.spent_nano,
        row.reserved_tokens, row.reserved_nano, avail_tokens, avail_nano,
    )
