"""The Lua scripts of the Redis ledger store: the rules of :mod:`clear_middleware.ledger.rules`,
run atomically inside Redis.

Each script is one ledger operation. :func:`scripts` writes a store's key prefix, retention and
reclaim batch into the sources as constants, so a call sends only its own arguments.
"""

from __future__ import annotations

__all__ = ["scripts"]

# ARGV[1] of every script is "now" in ms, or '' for the server clock. Numbers are formatted
# with %d before they reach Redis: Lua numbers are doubles, and their default string form
# turns 1e15 into "1e+15".
PRELUDE = r"""
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

OPEN = PRELUDE + r"""
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

RESERVE = PRELUDE + r"""
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

COMMIT = PRELUDE + r"""
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

RELEASE = PRELUDE + r"""
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

BALANCE = PRELUDE + r"""
reclaim(BATCH)
local rows, missing = chain(ARGV[2])
if not rows then return {'unknown_session', missing} end
local at, _, an, _ = available(rows)
local r = rows[1]
return {'ok', I(r.ct), I(r.cn), r.parent, I(r.lease), I(r.st), I(r.sn), I(r.rt), I(r.rn),
  at and I(at) or '', an and I(an) or ''}
"""

RECLAIM = PRELUDE + r"""
return reclaim(tonumber(ARGV[2]))
"""


def scripts(prefix: str, retention_seconds: int, reclaim_batch: int) -> dict[str, str]:
    """Script sources by operation name, with the store's constants written in.

    ``prefix`` must be safe inside a Lua string literal (the store restricts namespaces).
    """
    constants = {"@PREFIX@": prefix, "@TTL@": str(retention_seconds),
                 "@BATCH@": str(reclaim_batch)}
    sources = {"open": OPEN, "reserve": RESERVE, "commit": COMMIT, "release": RELEASE,
               "balance": BALANCE, "reclaim": RECLAIM}
    for name, source in sources.items():
        for marker, value in constants.items():
            source = source.replace(marker, value)
        sources[name] = source
    return sources
