"""The Lua scripts of the shared session store (shared_sessions.py), and its Redis key names.

Each script is one round trip that reads and writes atomically what two processes could
otherwise interleave: the caps at create, the key binding at lookup, the per-session call cap,
the ownership of a session's stream. A session's keys all start with its hash's key, so a script
given that key finds the others (``<key>:subs`` and so on). The scripts touch keys they compute,
which a single Redis (or a Sentinel-watched one) allows; Redis Cluster would not.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import orjson

__all__ = ["ANNOUNCE_LIST", "ANNOUNCE_UPDATES", "BROADCAST", "CLAIM", "CREATE", "END_POSTS",
           "KEEP_STREAM", "LOOKUP", "LOST_CALL", "OPEN_STREAM", "PROCESSES", "RELEASE_STREAM",
           "RESUME_POST", "SAVE", "SESSIONS_ALL", "TRACK_POST", "call_field", "cap_sets",
           "key_sessions", "process_alive", "process_calls", "process_channel", "process_reaper",
           "session_key", "session_keys", "tenant_namespace", "tenant_sessions"]

# Every session in all, by last use (member: the session's key).
SESSIONS_ALL = "spiral:sessions"
# Every process that serves shared sessions (its heartbeat says whether it still runs).
PROCESSES = "spiral:processes"
# Every process hears this channel: sessions ended, changes to tell listeners.
BROADCAST = "spiral:b"


def session_key(tenant_id: uuid.UUID | str, session_id: str) -> str:
    """The session's hash. The tenant is part of the name: a lookup names the caller's tenant,
    so another tenant's principal cannot even address the key."""
    return f"spiral:t:{tenant_id}:s:{session_id}"


def session_keys(key: str) -> list[str]:
    """The hash and its companions: subscriptions (set), events (stream), calls (hash), the
    mark of the process holding its stream, which POST stream answers which request, and the
    ids of its POST streams, newest first (the streams, ``<key>:post:<id>``, go with it: see
    END_POSTS)."""
    return [key, f"{key}:subs", f"{key}:events", f"{key}:calls", f"{key}:stream",
            f"{key}:posts", f"{key}:postids", f"{key}:resuming"]


def tenant_namespace(tenant_id: uuid.UUID) -> str:
    """Where every key of the tenant's sessions starts (a script finds a session's own in its
    key's name)."""
    return f"spiral:t:{tenant_id}"


@functools.lru_cache(maxsize=4096)
def cap_sets(tenant_id: uuid.UUID, key_id: uuid.UUID) -> tuple[str, str, str, str]:
    """The tenant's and the key's sets of sessions, and the key's and the tenant's ids as the
    hash holds them (made once per key, not per request: a UUID's text costs a microsecond)."""
    return (tenant_sessions(tenant_id), key_sessions(tenant_id, key_id), str(key_id),
            str(tenant_id))


def call_field(session_id: str, request_id: Any) -> bytes:
    """A call's field among its process's calls: the session and the request id."""
    return f"{session_id}:".encode() + orjson.dumps(request_id)


def tenant_sessions(tenant_id: uuid.UUID) -> str:
    return f"spiral:t:{tenant_id}:sessions"


def key_sessions(tenant_id: uuid.UUID, key_id: uuid.UUID) -> str:
    return f"spiral:t:{tenant_id}:k:{key_id}:sessions"


def process_channel(process_id: str) -> str:
    return f"spiral:p:{process_id}"


def process_alive(process_id: str) -> str:
    """The process's heartbeat: gone a few seconds after the process stops renewing it."""
    return f"spiral:p:{process_id}:alive"


def process_calls(process_id: str) -> str:
    """The session tool calls the process runs: what another must answer if it dies."""
    return f"spiral:p:{process_id}:calls"


def process_reaper(process_id: str) -> str:
    """Taken (SET NX) by the one process that answers a dead process's calls."""
    return f"spiral:p:{process_id}:reaper"


_HELPERS = """
local function prune(set)
  for _, m in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    if redis.call('EXISTS', m) == 0 then redis.call('ZREM', set, m) end
  end
end
local function forget(m)
  for _, id in ipairs(redis.call('LRANGE', m .. ':postids', 0, -1)) do
    redis.call('DEL', m .. ':post:' .. id)
  end
  redis.call('DEL', m, m .. ':subs', m .. ':events', m .. ':calls', m .. ':stream',
             m .. ':posts', m .. ':postids', m .. ':resuming')
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZREM', KEYS[3], m)
end
"""

# The subscribers of a URI in a tenant: a set of its sessions' keys, ``<namespace>:r:<hash>``.
# The URI is the client's text: hashed, it cannot make the name of another key (nor, being
# bounded, a long one); a collision would only make the announcer look at another URI's
# subscribers, whose own ``:subs`` it checks. Each entry's TTL is its session's, renewed by
# the stream's holder (REINDEX); an entry whose session has gone is pruned by the announcer.
_SUBSCRIBERS = """
local function namespace(k) return string.match(k, '^spiral:t:[^:]+') end
local function subscribers(ns, uri) return ns .. ':r:' .. redis.sha1hex(uri) end
local function index(set, k, ttl)
  redis.call('SADD', set, k)
  redis.call('PEXPIRE', set, ttl)
end
local function reindex(k, ttl)
  local ns = namespace(k)
  for _, uri in ipairs(redis.call('SMEMBERS', k .. ':subs')) do
    index(subscribers(ns, uri), k, ttl)
  end
end
"""

# KEYS: all, tenant's set, key's set, the new session's hash.
# ARGV: now (ms), cap in all, per tenant, per key, TTL (ms), the hash's fields (JSON object).
# Returns {'ok', ended...} or {'all'|'tenant'|'key'}: the cap that refused.
# At the key's or the tenant's cap, the key's own least recently used session with no stream
# open and no call running is ended (never another key's), as SessionStore._make_room does.
CREATE = _HELPERS + """
local function make_room(set, cap, ended)
  if redis.call('ZCARD', set) < cap then return true end
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if redis.call('EXISTS', m .. ':stream') == 0 and redis.call('HLEN', m .. ':calls') == 0 then
      forget(m)
      table.insert(ended, m)
      return true
    end
  end
  return false
end
prune(KEYS[3])
prune(KEYS[2])
local ended = {}
if not make_room(KEYS[3], tonumber(ARGV[4]), ended) then return {'key'} end
if not make_room(KEYS[2], tonumber(ARGV[3]), ended) then return {'tenant'} end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  prune(KEYS[1])
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {'all'} end
end
for field, value in pairs(cjson.decode(ARGV[6])) do
  redis.call('HSET', KEYS[4], field, value)
end
redis.call('HSET', KEYS[4], 'rev', 1)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
for i = 1, 3 do redis.call('ZADD', KEYS[i], ARGV[1], KEYS[4]) end
local answer = {'ok'}
for _, m in ipairs(ended) do table.insert(answer, m) end
return answer
"""

# KEYS: all, tenant's set, key's set, the session's hash, and (with calls to claim) this
# process's calls hash.
# ARGV: key id, transport, TTL once ready (ms), TTL before (ms), now (ms), the revision the
# caller's copy has ('' for none), how old (ms) the last refresh of the TTLs and the LRU order
# may be, and with tool calls to claim (their places taken as CLAIM does, which saves a round
# trip): the cap, this process, then for each call its field, its process field, its record.
# Returns nil (unknown, expired, another key's or another transport's) or
# {revision, fields, subscriptions, whether a stream is open, each claim's verdict}: fields and
# subscriptions are empty when the caller's revision is current (SAVE moves it with every
# change), so a lookup of an unchanged session moves a few bytes.
# The TTLs and the three sets' order are refreshed when the last refresh is older than ARGV[7]
# (the hash's 'seen'): a second or so of staleness in an order by last use, or in an idle
# timeout of minutes, changes nothing, and it spares four PEXPIREs and three ZADDs per request.
LOOKUP = """
local k = KEYS[4]
local h = redis.call('HMGET', k, 'key_id', 'transport', 'state', 'rev', 'seen')
if not h[1] or h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return nil end
local ttl = ARGV[4]
if h[3] == 'ready' then ttl = ARGV[3] end
local verdicts = {}
local calls = k .. ':calls'
local created = false
for i = 10, #ARGV, 3 do
  if redis.call('HSETNX', calls, ARGV[i], ARGV[9]) == 0 then
    table.insert(verdicts, 'duplicate')
  else
    local running = redis.call('HLEN', calls)
    if running > tonumber(ARGV[8]) then
      redis.call('HDEL', calls, ARGV[i])
      table.insert(verdicts, 'busy')
    else
      redis.call('HSET', KEYS[5], ARGV[i + 1], ARGV[i + 2])
      table.insert(verdicts, 'ok')
      if running == 1 then created = true end
    end
  end
end
if not h[5] or tonumber(ARGV[5]) - tonumber(h[5]) >= tonumber(ARGV[7]) then
  for _, key in ipairs({k, k .. ':subs', k .. ':events', calls}) do
    redis.call('PEXPIRE', key, ttl)
  end
  for i = 1, 3 do redis.call('ZADD', KEYS[i], 'XX', ARGV[5], k) end
  redis.call('HSET', k, 'seen', ARGV[5])
elseif created then
  redis.call('PEXPIRE', calls, ttl)  -- a calls hash made just now expires with the session
end
local rev = h[4] or ''
if rev ~= '' and rev == ARGV[6] then
  return {rev, {}, {}, redis.call('EXISTS', k .. ':stream'), verdicts}
end
return {rev, redis.call('HGETALL', k), redis.call('SMEMBERS', k .. ':subs'),
        redis.call('EXISTS', k .. ':stream'), verdicts}
"""

# KEYS: the session's hash. ARGV: TTL (ms), {fields = {...}, add = [...], remove = [...]} (JSON).
# Writes nothing once the session has ended (another process removed it): no half a session.
# A subscription is also indexed under its URI (the index is the announcer's, ANNOUNCE_UPDATES).
# Returns the session's new revision (0: ended).
SAVE = _SUBSCRIBERS + """
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
local change = cjson.decode(ARGV[2])
for field, value in pairs(change.fields) do redis.call('HSET', k, field, value) end
local ns = namespace(k)
for _, uri in ipairs(change.add) do
  redis.call('SADD', k .. ':subs', uri)
  index(subscribers(ns, uri), k, ARGV[1])
end
for _, uri in ipairs(change.remove) do
  redis.call('SREM', k .. ':subs', uri)
  redis.call('SREM', subscribers(ns, uri), k)
end
for _, key in ipairs({k, k .. ':subs', k .. ':events', k .. ':calls'}) do
  redis.call('PEXPIRE', key, ARGV[1])
end
return redis.call('HINCRBY', k, 'rev', 1)
"""

# KEYS: the session's calls hash, this process's calls hash.
# ARGV: the request id (JSON), this process, cap, TTL (ms), the process's field, the call (JSON).
CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'duplicate' end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 'busy' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
return 'ok'
"""

# KEYS: the session's hash. ARGV: the request id (JSON), the answer (JSON), MAXLEN, TTL (ms).
# A dead process's call answered as failed (if the session lives on), its place freed: on the
# POST's own stream when its answer was one (shared_posts.py), else on the session's stream.
LOST_CALL = """
local k = KEYS[1]
redis.call('HDEL', k .. ':calls', ARGV[1])
if redis.call('EXISTS', k) == 0 then return 0 end
local post = redis.call('HGET', k .. ':posts', ARGV[1])
if post then
  local stream = k .. ':post:' .. post
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[2])
  redis.call('XADD', stream, '*', 'end', '1')
  redis.call('PEXPIRE', stream, ARGV[4])
  redis.call('HDEL', k .. ':posts', ARGV[1])
  return 2
end
local events = k .. ':events'
redis.call('XADD', events, 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[2])
redis.call('PEXPIRE', events, ARGV[4])
return 1
"""

# KEYS: the session's POST stream ids. ARGV: the session's hash's key, a new POST stream's id,
# how many a session keeps, TTL (ms). A client that has many requests answered as streams
# (anything with a progress token is) keeps only its newest ones in Redis, not one per request
# for the idle timeout.
TRACK_POST = """
redis.call('LPUSH', KEYS[1], ARGV[2])
while redis.call('LLEN', KEYS[1]) > tonumber(ARGV[3]) do
  redis.call('DEL', ARGV[1] .. ':post:' .. redis.call('RPOP', KEYS[1]))
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
"""

# KEYS: the session's POST stream resumptions (sorted set: reader → last renewal, ms), its hash.
# ARGV: the reader's token, now (ms), how long a renewal counts (ms), cap. 1: the reader is in
# (or renewed); 0: the session has ended, or as many readers as it may have are reading. Each
# reader waits on Redis with a connection of its own: without a cap, one client resuming a POST
# stream over and over (no 409 as for the GET stream) would take Redis's connections from all.
RESUME_POST = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the session's POST stream ids. ARGV: the session's hash's key. Its POST streams go.
END_POSTS = """
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  redis.call('DEL', ARGV[1] .. ':post:' .. id)
end
"""

# KEYS: the stream's mark, the session's hash. ARGV: token, mark TTL (ms), '1' to take over,
# session TTL (ms). Returns {'ok', the newest event's id} (a new stream starts after it:
# whatever is posted once the mark is seen comes after it), or {'held'} or {'gone'}.
# The session is marked ``streamed`` (list changes are announced to such sessions) and its
# subscriptions indexed again (their entries may have expired while it had no stream).
OPEN_STREAM = _SUBSCRIBERS + """
if redis.call('EXISTS', KEYS[2]) == 0 then return {'gone'} end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  return {'held'}
end
redis.call('HSET', KEYS[2], 'streamed', '1')
reindex(KEYS[2], ARGV[4])
redis.call('SET', KEYS[2] .. ':indexed', '1', 'PX', math.max(1, math.floor(ARGV[4] / 2)))
local newest = redis.call('XREVRANGE', KEYS[2] .. ':events', '+', '-', 'COUNT', 1)
if #newest > 0 then return {'ok', newest[1][1]} end
return {'ok', '0-0'}
"""

# KEYS: the stream's mark, the session's hash. ARGV: token, mark TTL (ms), session TTL (ms).
# 1 while this holder still owns the stream of a live session (both TTLs renewed), else 0.
# Every half TTL (the ``:indexed`` mark, which expires by itself) the subscriptions' index
# entries are renewed too: they outlive the holder by at least half a TTL.
KEEP_STREAM = _SUBSCRIBERS + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local k = KEYS[2]
for _, key in ipairs({k, k .. ':subs', k .. ':events', k .. ':calls'}) do
  redis.call('PEXPIRE', key, ARGV[3])
end
if redis.call('SET', k .. ':indexed', '1', 'PX', math.max(1, math.floor(ARGV[3] / 2)), 'NX') then
  reindex(k, ARGV[3])
end
return 1
"""

# KEYS: the stream's mark. ARGV: token. Deletes the mark only if it is still this holder's.
RELEASE_STREAM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: the tenant's namespace, MAXLEN, events TTL (ms), then (URI, message) pairs.
# A resource update of one tenant, posted to the stream of each of its sessions that subscribed
# to the URI and has (or had) a stream, whichever process holds it or whether one does: a
# client resuming after its holder died misses nothing. Only the namespace's own index is read,
# and a member outside the namespace is never written to (defence in depth: members are only
# ever added by SAVE under their own session's namespace). Returns how many were posted.
ANNOUNCE_UPDATES = _SUBSCRIBERS + """
local ns, posted = ARGV[1], 0
for i = 4, #ARGV, 2 do
  local uri, set = ARGV[i], subscribers(ARGV[1], ARGV[i])
  for _, m in ipairs(redis.call('SMEMBERS', set)) do
    local streamed = redis.call('HMGET', m, 'state', 'streamed')
    if not streamed[1] or namespace(m) ~= ns
        or redis.call('SISMEMBER', m .. ':subs', uri) == 0 then
      redis.call('SREM', set, m)  -- ended, expired or unsubscribed
    elseif streamed[2] == '1' then
      redis.call('XADD', m .. ':events', 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[i + 1])
      redis.call('PEXPIRE', m .. ':events', ARGV[3])
      posted = posted + 1
    end
  end
end
return posted
"""

# KEYS: every session (SESSIONS_ALL). ARGV: the scope, the message, MAXLEN, events TTL (ms).
# A list change, posted to the stream of every ready session whose key holds the scope and that
# has (or had) a stream, whichever process holds it. List changes are rare (a deployment, a
# registry's reload); the walk is bounded by the server's session cap.
ANNOUNCE_LIST = """
local posted = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('HMGET', m, 'state', 'streamed', 'scopes')
  if h[1] == 'ready' and h[2] == '1' then
    for _, scope in ipairs(cjson.decode(h[3] or '[]')) do
      if scope == ARGV[1] then
        redis.call('XADD', m .. ':events', 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[2])
        redis.call('PEXPIRE', m .. ':events', ARGV[4])
        posted = posted + 1
        break
      end
    end
  end
end
return posted
"""
