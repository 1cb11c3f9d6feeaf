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

# Scripts are built per store with its key prefix, retention and reclaim batch written in as
# constants (fewer arguments to send on every call). ARGV[1] is "now" in ms, or '' for the
# server clock. Numbers are formatted with %d before they reach Redis: Lua numbers are doubles,
# and their default string form turns 1e15 into "1e+15".
_PRELUDE = r"""
local P, TTL, BATCH = '@PREFIX@', @TTL@, @BATCH@
local NOW
if ARGV[1] ~= '' then NOW = tonumber(ARGV[1]) else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local LEASES, SEQ = P .. ':leases', P .. ':seq'
local function I(x) return string.format('%d', x) end
local function skey(sid) return P .. ':s:' .. sid end
-- "<session>\0<call>": ties in lease end then sort by (session, call) as in the other stores
-- (ids are printable, so never contain NUL).
local function lease_member(sid, cid) return sid .. '\0' .. cid end

-- A call lives in its session's hash as field "c:<call>" =
-- "state|reserved tokens|reserved nano|lease end|charged tokens|charged nano|settled tokens|
--  settled nano|over|reason".
local function unpack_call(v)
  if not v then return nil end
  local s, t, n, e, ct, cn, st, sn, ov, rs = string.match(v,
    '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {state = s, t = tonumber(t), n = tonumber(n), exp = tonumber(e), ct = ct, cn = cn,
    st = st, sn = sn, ov = ov, rs = rs}
end
local function pack_call(c)
  return string.format('%s|%d|%d|%d|%s|%s|%s|%s|%s|%s', c.state, c.t, c.n, c.exp, c.ct, c.cn,
    c.st, c.sn, c.ov, c.rs)
end

-- The session and its ancestors (and, when cid is given, the call from the session's hash,
-- read in the same HMGET).
local function chain(sid, cid)
  local rows, cur, call = {}, sid, nil
  for depth = 1, 128 do
    local v
    if depth == 1 and cid then
      v = redis.call('HMGET', skey(cur), 'parent', 'ct', 'cn', 'lease', 'st', 'sn', 'rt', 'rn',
        'tch', 'c:' .. cid)
      call = unpack_call(v[10])
    else
      v = redis.call('HMGET', skey(cur), 'parent', 'ct', 'cn', 'lease', 'st', 'sn', 'rt', 'rn',
        'tch')
    end
    if not v[4] then return nil, cur end
    rows[#rows + 1] = {id = cur, parent = v[1], ct = tonumber(v[2]), cn = tonumber(v[3]),
      lease = tonumber(v[4]), st = tonumber(v[5]), sn = tonumber(v[6]),
      rt = tonumber(v[7]), rn = tonumber(v[8]), tch = tonumber(v[9]) or 0}
    if v[1] == '' then return rows, nil, call end
    cur = v[1]
  end
  return nil, cur
end

-- Refresh TTLs at most every TTL/10 per session (its hash, statement and sub-session set),
-- instead of three EXPIREs on every operation.
local function touch(r, extra)
  if NOW - r.tch < TTL * 100 then return end
  r.tch = NOW
  extra[#extra + 1] = 'tch'
  extra[#extra + 1] = I(NOW)
  redis.call('EXPIRE', skey(r.id), TTL)
  redis.call('EXPIRE', P .. ':l:' .. r.id, TTL)
  redis.call('EXPIRE', P .. ':k:' .. r.id, TTL)
  redis.call('EXPIRE', LEASES, TTL)
  redis.call('EXPIRE', SEQ, TTL)
end

-- Apply counter deltas to every session of the chain, one HSET each; the first session's
-- HSET also writes the call (cid, packed) when given.
local function add(rows, st, sn, rt, rn, cid, packed, refresh)
  for i, r in ipairs(rows) do
    r.st, r.sn, r.rt, r.rn = r.st + st, r.sn + sn, r.rt + rt, r.rn + rn
    local extra = {}
    if refresh then touch(r, extra) end
    if i == 1 and cid then
      extra[#extra + 1] = 'c:' .. cid
      extra[#extra + 1] = packed
    end
    redis.call('HSET', skey(r.id), 'st', I(r.st), 'sn', I(r.sn), 'rt', I(r.rt), 'rn', I(r.rn),
      unpack(extra))
  end
end

local function record(sid, cid, kind, t, n, rt, rn, over, reason)
  local seq = redis.call('INCR', SEQ)
  redis.call('RPUSH', P .. ':l:' .. sid, string.format('%d|%s|%d|%d|%d|%d|%d|%d|%d|', seq, kind,
    t, n, rt, rn, NOW, over, #reason) .. reason .. cid)
end

local function available(rows)
  local at, bt, an, bn = nil, '', nil, ''
  for _, r in ipairs(rows) do
    if r.ct >= 0 then
      local left = r.ct - r.st - r.rt
      if at == nil or left < at then at, bt = left, r.id end
    end
    if r.cn >= 0 then
      local left = r.cn - r.sn - r.rn
      if an == nil or left < an then an, bn = left, r.id end
    end
  end
  return at, bt, an, bn
end

local function reclaim(limit)
  local due
  if limit < 0 then due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW)
  else due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, limit) end
  local count = 0
  for _, m in ipairs(due) do
    redis.call('ZREM', LEASES, m)
    local cut = string.find(m, '\0', 1, true)
    local sid, cid = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
    local rows, _, c = chain(sid, cid)
    if rows and c and c.state == 'reserved' and c.exp <= NOW then
      c.state = 'expired'
      add(rows, 0, 0, -c.t, -c.n, cid, pack_call(c), false)
      record(sid, cid, 'expire', c.t, c.n, c.t, c.n, 0, '')
      count = count + 1
    end
  end
  return count
end
"""

_OPEN = _PRELUDE + r"""
local sid, ct, cn, parent, lease = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local k = skey(sid)
local v = redis.call('HMGET', k, 'ct', 'cn', 'parent', 'lease')
if v[4] then
  if v[1] ~= ct or v[2] ~= cn or v[3] ~= parent then return {'conflict', v[1], v[2], v[3]} end
  return {'ok', v[1], v[2], v[3], v[4]}
end
if parent ~= '' and redis.call('EXISTS', skey(parent)) == 0 then
  return {'unknown_session', parent}
end
redis.call('HSET', k, 'ct', ct, 'cn', cn, 'parent', parent, 'lease', lease,
  'st', 0, 'sn', 0, 'rt', 0, 'rn', 0, 'tch', I(NOW))
redis.call('EXPIRE', k, TTL)
if parent ~= '' then
  redis.call('SADD', P .. ':k:' .. parent, sid)
  redis.call('EXPIRE', P .. ':k:' .. parent, TTL)
end
return {'ok', ct, cn, parent, lease}
"""

_RESERVE = _PRELUDE + r"""
reclaim(BATCH)
local sid, cid, t, n = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rows, missing, c = chain(sid, cid)
if not rows then return {'unknown_session', missing} end
if c then
  if c.state == 'reserved' and c.t == t and c.n == n then return {'ok', I(c.exp), 1} end
  return {'call_state', c.state, I(c.t), I(c.n)}
end
local at, bt, an, bn = available(rows)
local dim, binding
if at ~= nil and t > at then dim, binding = 'tokens', bt
elseif an ~= nil and n > an then dim, binding = 'usd', bn end
if dim then
  record(sid, cid, 'refuse', t, n, 0, 0, 0, dim .. ' cap of session ' .. binding)
  return {'refused', dim, binding, at and I(at) or '', an and I(an) or ''}
end
local lease = rows[1].lease
if ARGV[6] ~= '' then lease = tonumber(ARGV[6]) end
local exp = NOW + lease
local call = {state = 'reserved', t = t, n = n, exp = exp, ct = 0, cn = 0, st = 0, sn = 0,
  ov = 0, rs = ''}
add(rows, 0, 0, t, n, cid, pack_call(call), true)
redis.call('ZADD', LEASES, I(exp), lease_member(sid, cid))
record(sid, cid, 'reserve', t, n, t, n, 0, '')
return {'ok', I(exp), 0}
"""

_COMMIT = _PRELUDE + r"""
reclaim(BATCH)
local sid, cid = ARGV[2], ARGV[3]
local rows, missing, c = chain(sid, cid)
if not rows then return {'unknown_session', missing} end
if not c then return {'unknown_call'} end
if c.state == 'committed' then return {'replay', c.ct, c.cn, c.st, c.sn, c.ov, c.rs} end
if c.state == 'released' then return {'call_state', 'released'} end
local rt, rn = 0, 0
local reasons = {}
if c.state == 'reserved' then rt, rn = c.t, c.n else reasons[#reasons + 1] = 'after_expiry' end
local t, n
if ARGV[4] == '' then
  t, n = c.t, c.n
  reasons[#reasons + 1] = 'no_usage'
else
  t, n = tonumber(ARGV[4]), tonumber(ARGV[5])
end
local over = 0
if t > c.t or n > c.n then over = 1 end
local reason = table.concat(reasons, ',')
if c.state == 'reserved' then redis.call('ZREM', LEASES, lease_member(sid, cid)) end
c.state, c.ct, c.cn, c.st, c.sn, c.ov, c.rs = 'committed', I(t), I(n), I(rt), I(rn), over, reason
add(rows, t, n, -rt, -rn, cid, pack_call(c), false)
record(sid, cid, 'commit', t, n, rt, rn, over, reason)
return {'ok', I(t), I(n), I(rt), I(rn), over, reason}
"""

_RELEASE = _PRELUDE + r"""
reclaim(BATCH)
local sid, cid = ARGV[2], ARGV[3]
local rows, missing, c = chain(sid, cid)
if not rows then return {'unknown_session', missing} end
if not c then return {'unknown_call'} end
if c.state == 'committed' then return {'replay', c.ct, c.cn, c.st, c.sn, c.ov, c.rs} end
if c.state ~= 'reserved' then return {'noop', c.state} end
redis.call('ZREM', LEASES, lease_member(sid, cid))
c.state = 'released'
add(rows, 0, 0, -c.t, -c.n, cid, pack_call(c), false)
record(sid, cid, 'release', c.t, c.n, c.t, c.n, 0, '')
return {'ok', I(c.t), I(c.n)}
"""

_BALANCE = _PRELUDE + r"""
reclaim(BATCH)
local rows, missing = chain(ARGV[2])
if not rows then return {'unknown_session', missing} end
local at, _, an, _ = available(rows)
local r = rows[1]
return {'ok', I(r.ct), I(r.cn), r.parent, I(r.lease), I(r.st), I(r.sn), I(r.rt), I(r.rn),
  at and I(at) or '', an and I(an) or ''}
"""

_RECLAIM = _PRELUDE + r"""
return reclaim(tonumber(ARGV[2]))
"""


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
        constants = {"@PREFIX@": self._prefix, "@TTL@": str(retention_seconds),
                     "@BATCH@": str(RECLAIM_BATCH)}
        self._scripts = {}
        for name, body in (("open", _OPEN), ("reserve", _RESERVE), ("commit", _COMMIT),
                           ("release", _RELEASE), ("balance", _BALANCE), ("reclaim", _RECLAIM)):
            for marker, value in constants.items():
                body = body.replace(marker, value)
            self._scripts[name] = self._sync.register_script(body)
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
