"""Redis ledger store: one budget shared by processes on many hosts.

Every operation is one Lua script, so Redis runs it atomically: no other client sees or
changes the counters between "is there room?" and "hold it". The scripts follow the same rules
as :mod:`clear_middleware.ledger.rules` (the contract tests run both). Time comes from the
Redis server (``TIME``), so hosts with skewed clocks agree on when a lease ends.

Keys (all under ``namespace``, default ``"clear-ledger"``, inside one ``{hash tag}`` so a
cluster keeps them in one slot; the scripts derive a session's ancestors' keys at run time, so
use a single primary or a cluster slot, not keys spread over shards):

* ``{ns}:s:<session>`` hash: caps, parent, lease, counters, and one field ``c:<call>`` per
  call (state, reservation, outcome), so an operation reads and writes its session in one
  command each;
* ``{ns}:l:<session>`` list: the statement; ``{ns}:k:<session>`` set: sub-sessions;
* ``{ns}:leases`` sorted set of open reservations by lease end (member ``session NUL call``);
  ``{ns}:seq``: entry counter.

Every key carries a TTL (``retention_seconds``, default 30 days), refreshed by reservations at
most every tenth of it, so abandoned sessions disappear on their own; a settled call stays
idempotent as long as its session is kept. Durability is Redis's: configure AOF
(``appendonly yes``; ``appendfsync always`` so an acknowledged commit survives a crash).
While Redis is unreachable every operation raises ``StoreUnavailable``; retrying with the same
call id is safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from clear_middleware.ledger.redis_scripts import scripts
from clear_middleware.ledger.store import RECLAIM_BATCH
from clear_middleware.ledger.types import (
    Balance,
    BudgetExceeded,
    CallStateError,
    Caps,
    Reservation,
    SessionConflict,
    SessionInfo,
    Settlement,
    StatementEntry,
    StoreUnavailable,
    UnknownCall,
    UnknownSession,
    nano_to_usd,
)

__all__ = ["RedisStore"]

_INFO_FIELDS = ["ct", "cn", "parent", "lease"]
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _int_or_none(raw: bytes | str) -> int | None:
    return None if raw in (b"", "", b"-1", "-1") else int(raw)


def _caps(cap_tokens: bytes, cap_nano: bytes) -> Caps:
    nano = _int_or_none(cap_nano)
    return Caps(_int_or_none(cap_tokens), None if nano is None else nano_to_usd(nano))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _parse_entry(session_id: str, raw: bytes) -> StatementEntry:
    seq, kind, t, n, rt, rn, now, over, reason_len, rest = raw.split(b"|", 9)
    cut = int(reason_len)
    return StatementEntry(
        int(seq), session_id, rest[cut:].decode(), kind.decode(),  # type: ignore[arg-type]
        int(t), int(n), int(rt), int(rn), int(now) / 1000, over == b"1", rest[:cut].decode(),
    )


class RedisStore:
    """A :class:`~clear_middleware.ledger.store.LedgerStore` on a Redis server.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix://`` for a socket).
        namespace: key prefix, so several ledgers can share one database.
        retention_seconds: TTL of every key, refreshed on each write (> 0; default 30 days).
        clock: ``None`` (default) uses the Redis server's clock; tests may pass a function
            returning epoch seconds.
        socket_timeout_seconds: per-command timeout before ``StoreUnavailable``.
        max_async_connections: connections the async client opens at most; further
            concurrent tasks wait for a free one (up to the socket timeout).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "clear-ledger",
        retention_seconds: int = 30 * 24 * 3600,
        clock: Callable[[], float] | None = None,
        socket_timeout_seconds: float = 5.0,
        max_async_connections: int = 64,
    ) -> None:
        try:
            import redis
            import redis.asyncio
        except ImportError as error:  # pragma: no cover - depends on the install
            raise ImportError(
                "RedisStore needs redis-py: pip install 'clear-middleware[redis]'"
            ) from error
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace must be 1-64 characters of A-Z a-z 0-9 _ . : -, got {namespace!r}"
            )
        if isinstance(retention_seconds, bool) or not isinstance(retention_seconds, int) or (
            retention_seconds <= 0
        ):
            raise ValueError(f"retention_seconds must be an int > 0, got {retention_seconds!r}")
        self.url = url
        self._prefix = "{" + namespace + "}"
        self._clock = clock
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout_seconds,
            "socket_connect_timeout": socket_timeout_seconds,
        }
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError)
        self._sync = redis.Redis.from_url(url, **options)
        self._max_async = max_async_connections
        self._async_options = options
        self._async: Any = None
        self._async_loop: Any = None
        self._scripts = {
            name: self._sync.register_script(source)
            for name, source in scripts(self._prefix, retention_seconds, RECLAIM_BATCH).items()
        }
        self._async_scripts: dict[str, Any] = {}

    # --- plumbing --------------------------------------------------------------------------
    def _now(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    def _call(self, name: str, *args: Any) -> list[Any]:
        try:
            return self._scripts[name](args=[self._now(), *args])
        except self._errors as error:
            raise StoreUnavailable(f"Redis ledger at {self.url} unavailable: {error}") from error

    def _async_client(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        # An asyncio client's connections belong to one event loop: a new loop gets its own.
        if self._async is None or self._async_loop is not loop:
            import redis.asyncio

            # Blocking pool: a burst of tasks queues for a connection instead of failing with
            # "Too many connections".
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, max_connections=self._max_async,
                timeout=self._async_options["socket_timeout"], **self._async_options,
            )
            self._async = redis.asyncio.Redis(connection_pool=pool)
            self._async_loop = loop
            self._async_scripts = {
                name: self._async.register_script(script.script)
                for name, script in self._scripts.items()
            }
        return self._async

    async def _acall(self, name: str, *args: Any) -> list[Any]:
        self._async_client()
        try:
            return await self._async_scripts[name](args=[self._now(), *args])
        except self._errors as error:
            raise StoreUnavailable(f"Redis ledger at {self.url} unavailable: {error}") from error

    # --- reply decoding (shared by sync and async) ------------------------------------------
    @staticmethod
    def _fail(reply: list[Any], session_id: str, call_id: str = "") -> None:
        status = reply[0]
        if status == b"unknown_session":
            raise UnknownSession(_text(reply[1]))
        if status == b"unknown_call":
            raise UnknownCall(session_id, call_id)
        if status == b"conflict":
            raise SessionConflict(
                f"session {session_id!r} already exists with caps (tokens={_text(reply[1])}, "
                f"nano_usd={_text(reply[2])}) and parent {_text(reply[3]) or None!r}"
            )
        if status == b"call_state":
            if len(reply) == 2:  # from commit: the call was released
                raise CallStateError(
                    f"call {call_id!r} of session {session_id!r} was released; a released call "
                    "cannot be committed (reserve a new call id)"
                )
            raise CallStateError(
                f"call id {call_id!r} of session {session_id!r} is already used "
                f"({_text(reply[1])}, {_text(reply[2])} tokens, {_text(reply[3])} nano-USD); "
                "use a new call id per call"
            )

    def _open_reply(self, reply: list[Any], session_id: str) -> SessionInfo:
        self._fail(reply, session_id)
        parent = _text(reply[3]) or None
        return SessionInfo(session_id, _caps(reply[1], reply[2]), parent, int(reply[4]) / 1000)

    def _reserve_reply(
        self, reply: list[Any], session_id: str, call_id: str, tokens: int, nano: int
    ) -> Reservation:
        if reply[0] == b"refused":
            raise BudgetExceeded(
                session_id=session_id, call_id=call_id, binding_session_id=_text(reply[2]),
                dimension=_text(reply[1]),  # type: ignore[arg-type]
                requested_tokens=tokens, requested_nano_usd=nano,
                available_tokens=_int_or_none(reply[3]),
                available_nano_usd=_int_or_none(reply[4]),
            )
        self._fail(reply, session_id, call_id)
        return Reservation(session_id, call_id, tokens, nano, int(reply[1]) / 1000, reply[2] == 1)

    def _settle_reply(
        self, reply: list[Any], session_id: str, call_id: str, kind: str
    ) -> Settlement:
        self._fail(reply, session_id, call_id)
        status = reply[0]
        if status == b"replay" or (status == b"ok" and kind == "commit"):
            return Settlement(
                session_id, call_id, "commit", int(reply[1]), int(reply[2]), int(reply[3]),
                int(reply[4]), int(reply[5]) == 1, _text(reply[6]), status == b"replay",
            )
        if status == b"noop":
            reason = "already_released" if reply[1] == b"released" else "expired"
            return Settlement(session_id, call_id, "release", 0, 0, 0, 0, False, reason, True)
        return Settlement(session_id, call_id, "release", 0, 0, int(reply[1]), int(reply[2]))

    def _balance_reply(self, reply: list[Any], session_id: str) -> Balance:
        self._fail(reply, session_id)
        return Balance(
            session_id, _caps(reply[1], reply[2]), _text(reply[3]) or None,
            int(reply[5]), int(reply[6]), int(reply[7]), int(reply[8]),
            _int_or_none(reply[9]), _int_or_none(reply[10]),
        )

    @staticmethod
    def _open_args(
        session_id: str, cap_tokens: int | None, cap_nano: int | None, parent: str | None,
        lease_ms: int,
    ) -> list[Any]:
        return [session_id, -1 if cap_tokens is None else cap_tokens,
                -1 if cap_nano is None else cap_nano, parent or "", lease_ms]

    # --- sync API ---------------------------------------------------------------------------
    def open_session(
        self, session_id: str, cap_tokens: int | None, cap_nano_usd: int | None,
        parent: str | None, lease_ms: int,
    ) -> SessionInfo:
        args = self._open_args(session_id, cap_tokens, cap_nano_usd, parent, lease_ms)
        return self._open_reply(self._call("open", *args), session_id)

    def session_info(self, session_id: str) -> SessionInfo:
        try:
            raw = self._sync.hmget(f"{self._prefix}:s:{session_id}", _INFO_FIELDS)
        except self._errors as error:
            raise StoreUnavailable(f"Redis ledger at {self.url} unavailable: {error}") from error
        return self._info_reply(raw, session_id)

    @staticmethod
    def _info_reply(raw: list[Any], session_id: str) -> SessionInfo:
        if raw[3] is None:
            raise UnknownSession(session_id)
        return SessionInfo(
            session_id, _caps(raw[0], raw[1]), _text(raw[2]) or None, int(raw[3]) / 1000
        )

    def reserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        reply = self._call("reserve", session_id, call_id, tokens, nano_usd,
                           "" if lease_ms is None else lease_ms)
        return self._reserve_reply(reply, session_id, call_id, tokens, nano_usd)

    def commit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        reply = self._call("commit", session_id, call_id, "" if tokens is None else tokens,
                           nano_usd)
        return self._settle_reply(reply, session_id, call_id, "commit")

    def release(self, session_id: str, call_id: str) -> Settlement:
        reply = self._call("release", session_id, call_id)
        return self._settle_reply(reply, session_id, call_id, "release")

    def balance(self, session_id: str) -> Balance:
        return self._balance_reply(self._call("balance", session_id), session_id)

    def statement(self, session_id: str, include_children: bool = False) -> list[StatementEntry]:
        try:
            if not self._sync.exists(f"{self._prefix}:s:{session_id}"):
                raise UnknownSession(session_id)
            entries: list[StatementEntry] = []
            pending = [session_id]
            while pending:
                current = pending.pop()
                raw = self._sync.lrange(f"{self._prefix}:l:{current}", 0, -1)
                entries.extend(_parse_entry(current, item) for item in raw)
                if include_children:
                    kids = self._sync.smembers(f"{self._prefix}:k:{current}")
                    pending.extend(_text(kid) for kid in kids)
        except self._errors as error:
            raise StoreUnavailable(f"Redis ledger at {self.url} unavailable: {error}") from error
        return sorted(entries, key=lambda entry: entry.seq) if include_children else entries

    def reclaim_expired(self, limit: int | None = None) -> int:
        return int(self._call("reclaim", -1 if limit is None else limit))

    def close(self) -> None:
        self._sync.close()

    # --- async API --------------------------------------------------------------------------
    async def aopen_session(
        self, session_id: str, cap_tokens: int | None, cap_nano_usd: int | None,
        parent: str | None, lease_ms: int,
    ) -> SessionInfo:
        args = self._open_args(session_id, cap_tokens, cap_nano_usd, parent, lease_ms)
        return self._open_reply(await self._acall("open", *args), session_id)

    async def asession_info(self, session_id: str) -> SessionInfo:
        client = self._async_client()
        try:
            raw = await client.hmget(f"{self._prefix}:s:{session_id}", _INFO_FIELDS)
        except self._errors as error:
            raise StoreUnavailable(f"Redis ledger at {self.url} unavailable: {error}") from error
        return self._info_reply(raw, session_id)

    async def areserve(
        self, session_id: str, call_id: str, tokens: int, nano_usd: int, lease_ms: int | None
    ) -> Reservation:
        reply = await self._acall("reserve", session_id, call_id, tokens, nano_usd,
                                  "" if lease_ms is None else lease_ms)
        return self._reserve_reply(reply, session_id, call_id, tokens, nano_usd)

    async def acommit(
        self, session_id: str, call_id: str, tokens: int | None, nano_usd: int
    ) -> Settlement:
        reply = await self._acall("commit", session_id, call_id,
                                  "" if tokens is None else tokens, nano_usd)
        return self._settle_reply(reply, session_id, call_id, "commit")

    async def arelease(self, session_id: str, call_id: str) -> Settlement:
        reply = await self._acall("release", session_id, call_id)
        return self._settle_reply(reply, session_id, call_id, "release")

    async def abalance(self, session_id: str) -> Balance:
        reply = await self._acall("balance", session_id)
        return self._balance_reply(reply, session_id)

    async def astatement(
        self, session_id: str, include_children: bool = False
    ) -> list[StatementEntry]:
        client = self._async_client()
        try:
            if not await client.exists(f"{self._prefix}:s:{session_id}"):
                raise UnknownSession(session_id)
            entries: list[StatementEntry] = []
            pending = [session_id]
            while pending:
                current = pending.pop()
                raw = await client.lrange(f"{self._prefix}:l:{current}", 0, -1)
                entries.extend(_parse_entry(current, item) for item in raw)
                if include_children:
                    kids = await client.smembers(f"{self._prefix}:k:{current}")
                    pending.extend(_text(kid) for kid in kids)
        except self._errors as error:
            raise StoreUnavailable(f"Redis ledger at {self.url} unavailable: {error}") from error
        return sorted(entries, key=lambda entry: entry.seq) if include_children else entries

    async def areclaim_expired(self, limit: int | None = None) -> int:
        return int(await self._acall("reclaim", -1 if limit is None else limit))

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self._sync.close()
