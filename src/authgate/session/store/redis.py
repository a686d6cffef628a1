"""The Redis session store, for several authgate replicas (redis-py's asyncio client).

Layout, under `key_prefix`:

* `s:<sid>`: a hash per session (user, email, data, times, version), expiring at expires_at;
* `e:<email key>`: the sids of one email (a set; stale members are skipped and expire with it);
* `idx`: every sid scored by expires_at, for `list_sessions()` without a full key scan;
* `events`: a stream of ("updated" | "revoked", sid); the cursor is a stream id, with the
  stream's epoch (`events:epoch`, new whenever the stream is recreated, e.g. after a Redis
  restart without persistence) so a cursor never silently skips what a lost stream held, and
  the stream's entries-added count at that id, which tells exactly whether trimming (MAXLEN ~
  on every append, MINID ~ for the retention) removed anything after it;
* `t:<sha256>`: used single-use tokens (SET NX PX); `lock:<name>`: locks (SET NX PX + owner).

Every change and its event happen in one Lua script, so no reader ever sees a revocation
without its event. The scripts touch keys they compute (a user's sessions): one Redis, or a
Sentinel-managed primary; not Redis Cluster.

Bounded time: socket and connect time-outs are `timeout_s`, redis-py retries only once and only
a connection error (a stale pooled connection after a Redis restart), with no back-off, and
each call runs under `asyncio.timeout(timeout_s)`; every error becomes `StoreUnavailable`,
whose message never holds the password (`redact_url`). A broken connection is dropped by
redis-py, so the same object reconnects by itself once Redis is back. A retried script may have
run once already: an update then counts twice, a revoke or first_use answers "not there" /
False (the safe side).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from authgate.session.store.base import (
    DEFAULT_EVENTS_RETENTION_S,
    EVENTS_PAGE,
    CursorExpired,
    SessionRecord,
    SessionStore,
    StoreUnavailable,
    email_key,
    token_digest,
)

T = TypeVar("T")
StreamId = tuple[int, int]

SCHEMES = ("redis", "rediss", "unix")

# Appends an event; recreating the stream (or losing the epoch) starts a new epoch, so older
# cursors expire. MAXLEN ~ bounds memory in a storm; MINID ~ keeps about `retention` of events.
_APPEND_EVENTS = """
local function append_events(stream, epoch_key, new_epoch, maxlen, retention_ms, kind, sids)
  if #sids == 0 then return end
  if redis.call('EXISTS', stream) == 0 or redis.call('EXISTS', epoch_key) == 0 then
    redis.call('SET', epoch_key, new_epoch)
  end
  for _, sid in ipairs(sids) do
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'k', kind, 's', sid)
  end
  local t = redis.call('TIME')
  local minid = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(retention_ms)
  if minid > 0 then
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', minid))
  end
end
"""

# KEYS: session, email set, idx. ARGV: sid, ttl_ms, now, expires_at, then the fields.
_CREATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'u', ARGV[5], 'e', ARGV[6], 'k', ARGV[7], 'd', ARGV[8],
  'c', ARGV[9], 'x', ARGV[4], 'l', ARGV[10], 'r', ARGV[11], 'v', ARGV[12])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""

# KEYS: session, stream, epoch. ARGV: data, refreshed_at, now, sid, epoch, maxlen, retention.
_UPDATE = (
    _APPEND_EVENTS
    + """
local x = redis.call('HGET', KEYS[1], 'x')
if not x or tonumber(x) <= tonumber(ARGV[3]) then return false end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'r', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'v', 1)
append_events(KEYS[2], KEYS[3], ARGV[5], ARGV[6], ARGV[7], 'updated', {ARGV[4]})
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: session. ARGV: last_seen, now.
_TOUCH = """
local f = redis.call('HMGET', KEYS[1], 'x', 'l')
if not f[1] or tonumber(f[1]) <= tonumber(ARGV[2]) then return 0 end
if not f[2] or tonumber(f[2]) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'l', ARGV[1])
end
return 1
"""

# KEYS: session, idx, stream, epoch. ARGV: sid, now, prefix, epoch, maxlen, retention.
_REVOKE = (
    _APPEND_EVENTS
    + """
local f = redis.call('HMGET', KEYS[1], 'x', 'k')
redis.call('ZREM', KEYS[2], ARGV[1])
if not f[1] then return 0 end
redis.call('DEL', KEYS[1])
if f[2] then redis.call('SREM', ARGV[3] .. 'e:' .. f[2], ARGV[1]) end
if tonumber(f[1]) <= tonumber(ARGV[2]) then return 0 end
append_events(KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[6], 'revoked', {ARGV[1]})
return 1
"""
)

# KEYS: email set, idx, stream, epoch. ARGV: prefix, now, email key, epoch, maxlen, retention.
_REVOKE_USER = (
    _APPEND_EVENTS
    + """
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local skey = ARGV[1] .. 's:' .. sid
  local f = redis.call('HMGET', skey, 'x', 'k')
  if not f[1] then
    redis.call('ZREM', KEYS[2], sid)
  elseif f[2] == ARGV[3] then
    redis.call('DEL', skey)
    redis.call('ZREM', KEYS[2], sid)
    if tonumber(f[1]) > tonumber(ARGV[2]) then out[#out + 1] = sid end
  end
end
redis.call('DEL', KEYS[1])
append_events(KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[6], 'revoked', out)
return out
"""
)

# KEYS: stream, epoch. ARGV: new epoch, cursor id ('' for the head), count.
# Creates an empty stream if there is none (XADD + XDEL) so the head and epoch exist. Returns
# what tells whether anything after the cursor was trimmed: entries-added (Redis >= 7; the
# stream always holds the newest `length` of them) or, on older servers, the first entry.
_EVENTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local id = redis.call('XADD', KEYS[1], '*', 'k', 'init', 's', '')
  redis.call('XDEL', KEYS[1], id)
  redis.call('SET', KEYS[2], ARGV[1])
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1])
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, added, length, first = false, false, 0, false
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then last = info[i + 1]
  elseif k == 'entries-added' then added = info[i + 1]
  elseif k == 'length' then length = info[i + 1]
  elseif k == 'first-entry' and info[i + 1] then first = info[i + 1][1]
  end
end
local entries = {}
if ARGV[2] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {redis.call('GET', KEYS[2]), last, added, length, first, entries}
"""

# KEYS: stream. ARGV: retention_ms. Exact trim (the appends trim approximately).
_PRUNE_EVENTS = """
local t = redis.call('TIME')
local minid = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
if minid > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', minid))
end
return 0
"""

# KEYS: lock. ARGV: owner. Deletes only our own lock.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redact_url(url: str) -> str:
    """The URL without its password (userinfo or `?password=`), for messages and repr."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}{':***' if colon else ''}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparsable redis URL>"


def _url_password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        for k, v in parse_qsl(parts.query):
            if k.lower() == "password" and v:
                return v
        return parts.password or None
    except ValueError:
        return None


def _parse_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _record(sid: str, fields: Mapping[bytes, bytes]) -> SessionRecord | None:
    try:
        return SessionRecord(
            sid=sid,
            user=fields[b"u"].decode(),
            email=fields[b"e"].decode(),
            data=bytes(fields[b"d"]),
            created_at=float(fields[b"c"]),
            expires_at=float(fields[b"x"]),
            last_seen=float(fields[b"l"]),
            refreshed_at=float(fields[b"r"]),
            version=int(fields[b"v"]),
        )
    except (KeyError, ValueError):
        return None  # a half-written or foreign hash: treat as no session


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


class RedisStore(SessionStore):
    """Sessions in Redis, shared by every replica that points at the same server and prefix."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 0.5,
        key_prefix: str = "authgate:",
        *,
        events_maxlen: int = 1_000_000,
        events_retention_s: float = DEFAULT_EVENTS_RETENTION_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self._safe_url = redact_url(url)
        self._password = _url_password(url)
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in SCHEMES:
            raise ValueError(
                f"session store URL {self._safe_url!r}: expected redis://, rediss:// or unix://"
            )
        self.timeout_s = timeout_s
        self.key_prefix = key_prefix
        self.events_maxlen = events_maxlen
        self.events_retention_s = events_retention_s
        try:
            self._redis: Redis = Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # One immediate retry, on connection errors only: a pooled connection that a
                # Redis restart closed fails once and reconnects. No back-off, no retry on a
                # time-out: either would stretch the bound.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                # RESP2: the reply shapes the scripts and the decoding below expect.
                protocol=2,
                decode_responses=False,
                client_name="authgate",
            )
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"session store URL {self._safe_url!r}: {self._scrub(str(e))}"
            ) from None
        self._stream = f"{key_prefix}events"
        self._epoch_key = f"{key_prefix}events:epoch"
        self._idx = f"{key_prefix}idx"
        self._owner = secrets.token_hex(16)  # identifies this store object as a lock holder
        r = self._redis
        self._create = r.register_script(_CREATE)
        self._update = r.register_script(_UPDATE)
        self._touch = r.register_script(_TOUCH)
        self._revoke = r.register_script(_REVOKE)
        self._revoke_user = r.register_script(_REVOKE_USER)
        self._events = r.register_script(_EVENTS)
        self._prune_events = r.register_script(_PRUNE_EVENTS)
        self._release = r.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"RedisStore({self._safe_url!r}, key_prefix={self.key_prefix!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    async def _do(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await fn()
        except TimeoutError:
            raise StoreUnavailable(
                f"session store {self._safe_url}: no answer within {self.timeout_s:g}s"
            ) from None
        except CursorExpired:
            raise
        except (RedisError, OSError, ValueError, IndexError, TypeError) as e:
            # ValueError & co: an unexpected reply (not Redis, or a different version).
            raise StoreUnavailable(
                f"session store {self._safe_url}: {type(e).__name__}: {self._scrub(str(e))}"
            ) from None

    def _skey(self, sid: str) -> str:
        return f"{self.key_prefix}s:{sid}"

    def _ekey(self, key: str) -> str:
        return f"{self.key_prefix}e:{key}"

    def _event_args(self) -> list[str | int]:
        return [
            secrets.token_hex(8),
            self.events_maxlen,
            max(0, int(self.events_retention_s * 1000)),
        ]

    # -- the interface ----------------------------------------------------------------------

    async def create(self, record: SessionRecord) -> None:
        now = time.time()
        ttl_ms = math.ceil((record.expires_at - now) * 1000)
        if ttl_ms <= 0:
            return  # already expired: get() would never return it
        key = email_key(record.email)
        args: list[Any] = [
            record.sid,
            ttl_ms,
            repr(now),
            repr(record.expires_at),
            record.user,
            record.email,
            key,
            record.data,
            repr(record.created_at),
            repr(record.last_seen),
            repr(record.refreshed_at),
            record.version,
        ]
        keys = [self._skey(record.sid), self._ekey(key), self._idx]
        await self._do(lambda: self._create(keys=keys, args=args))

    async def get(self, sid: str) -> SessionRecord | None:
        fields = await self._do(lambda: self._redis.hgetall(self._skey(sid)))
        record = _record(sid, fields) if fields else None  # type: ignore[arg-type]
        # Redis expires the key on its own clock; ours decides.
        if record is None or record.expires_at <= time.time():
            return None
        return record

    async def update(self, sid: str, *, data: bytes, refreshed_at: float) -> SessionRecord | None:
        keys = [self._skey(sid), self._stream, self._epoch_key]
        args: list[Any] = [data, repr(refreshed_at), repr(time.time()), sid, *self._event_args()]
        flat = await self._do(lambda: self._update(keys=keys, args=args))
        return None if not flat else _record(sid, _pairs(flat))

    async def touch(self, sid: str, last_seen: float) -> None:
        keys = [self._skey(sid)]
        args = [repr(last_seen), repr(time.time())]
        await self._do(lambda: self._touch(keys=keys, args=args))

    async def revoke(self, sid: str) -> bool:
        keys = [self._skey(sid), self._idx, self._stream, self._epoch_key]
        args = [sid, repr(time.time()), self.key_prefix, *self._event_args()]
        return bool(await self._do(lambda: self._revoke(keys=keys, args=args)))

    async def revoke_user(self, email: str) -> list[str]:
        key = email_key(email)
        keys = [self._ekey(key), self._idx, self._stream, self._epoch_key]
        args = [self.key_prefix, repr(time.time()), key, *self._event_args()]
        sids = await self._do(lambda: self._revoke_user(keys=keys, args=args))
        return sorted(_text(s) for s in sids)

    async def list_sessions(self, email: str | None = None) -> list[SessionRecord]:
        async def op() -> list[SessionRecord]:
            now = time.time()
            raw: Any
            if email is None:
                raw = await self._redis.zrangebyscore(self._idx, f"({now!r}", "+inf")
            else:
                raw = await self._redis.smembers(self._ekey(email_key(email)))
            sids = sorted(_text(s) for s in raw)
            pipe = self._redis.pipeline(transaction=False)
            for sid in sids:
                pipe.hgetall(self._skey(sid))
            found = await pipe.execute() if sids else []
            out = []
            for sid, fields in zip(sids, found, strict=True):
                record = _record(sid, fields) if fields else None
                if record is None or record.expires_at <= now:
                    continue
                if email is not None and email_key(record.email) != email_key(email):
                    continue  # a stale member (sid reused for another email)
                out.append(record)
            out.sort(key=lambda r: (-r.created_at, r.sid))
            return out

        return await self._do(op)

    async def events_since(self, cursor: str | None) -> tuple[list[tuple[str, str]], str]:
        # The cursor is "<epoch>:<stream id>:<entries added up to it>".
        since: StreamId | None = None
        since_added = 0
        cursor_epoch = ""
        if cursor is not None:
            cursor_epoch, _, rest = cursor.partition(":")
            id_text, _, added_text = rest.partition(":")
            try:
                since = _parse_id(id_text)
                since_added = int(added_text)
            except ValueError:
                raise CursorExpired(f"session store {self._safe_url}: unreadable cursor") from None
        since_text = "" if since is None else f"{since[0]}-{since[1]}"
        keys = [self._stream, self._epoch_key]
        args: list[Any] = [secrets.token_hex(8), since_text, EVENTS_PAGE]
        epoch_raw, last_raw, added_raw, length, first_raw, entries = await self._do(
            lambda: self._events(keys=keys, args=args)
        )
        epoch = _text(epoch_raw)
        last = _parse_id(last_raw)
        added = int(added_raw) if added_raw else 0
        if since is None:
            return [], f"{epoch}:{last[0]}-{last[1]}:{added}"
        expired = CursorExpired(f"session store {self._safe_url}: events after the cursor lost")
        if cursor_epoch != epoch or since > last or since_added < 0:
            raise expired
        if added_raw:
            # Trimming only removes the oldest entries: everything added after the cursor is
            # still there iff it fits in the stream's length.
            if since_added > added or added - since_added > int(length):
                raise expired
        elif first_raw and since < _parse_id(first_raw):
            raise expired  # Redis < 7: assume the gap before the first entry was trimmed
        events: list[tuple[str, str]] = []
        head = since
        for entry_id, flat in entries:
            fields = _pairs(flat)
            kind = _text(fields.get(b"k", b""))
            if kind in ("updated", "revoked"):
                events.append((kind, _text(fields.get(b"s", b""))))
            head = _parse_id(entry_id)
        return events, f"{epoch}:{head[0]}-{head[1]}:{since_added + len(entries)}"

    async def prune(self) -> None:
        """Trim events older than the retention exactly (appends trim only approximately)."""
        args = [max(0, int(self.events_retention_s * 1000))]
        await self._do(lambda: self._prune_events(keys=[self._stream], args=args))

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        ttl_ms = math.ceil((expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            return False
        key = f"{self.key_prefix}t:{token_digest(token_id)}"
        return bool(await self._do(lambda: self._redis.set(key, b"1", nx=True, px=ttl_ms)))

    async def acquire_lock(self, name: str, ttl_s: float) -> bool:
        key = f"{self.key_prefix}lock:{name}"
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        return bool(await self._do(lambda: self._redis.set(key, self._owner, nx=True, px=ttl_ms)))

    async def release_lock(self, name: str) -> None:
        key = f"{self.key_prefix}lock:{name}"
        await self._do(lambda: self._release(keys=[key], args=[self._owner]))

    async def ping(self) -> None:
        await self._do(self._redis.ping)

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._redis.aclose()
        except (TimeoutError, RedisError, OSError):
            pass  # closing a dead connection has nothing left to release
