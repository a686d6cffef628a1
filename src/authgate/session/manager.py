"""Sessions kept in the store, with what a worker may cache of them and for how long.

A session lives in the store (claims, groups, the IdP's tokens, sealed); the browser holds a
sealed reference per host. A worker caches sessions it has read, and learns of every change
(a refresh, a revocation) from the store's event feed, polled every FEED_INTERVAL_S: a
revocation reaches every worker and replica within about that. While the feed is not fresh
(the store does not answer), nothing cached is trusted: each request reads the store, and when
the store is down that fails (StoreUnavailable, a 503 page), never an allow from a stale cache.

Refresh: a session whose claims are older than `refresh_interval_s` is refreshed from the IdP in
the background (one worker at a time, by a lock in the store); the new claims reach all workers
through the feed. The IdP's "no" (invalid_grant, a deleted account) ends the session; the IdP
down keeps the last claims until `grace_s` past the refresh time.
"""

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from authgate.ops.metrics import SESSION_REFRESHES, CacheCounter
from authgate.session.model import Session, identity_from_claims, new_session_id
from authgate.session.record import IdpTokens, RecordSealer, SessionData
from authgate.session.reference import ReferenceCodec, SessionRef
from authgate.session.store import CursorExpired, SessionRecord, SessionStore, StoreUnavailable

log = structlog.get_logger("authgate.sessions")

FEED_INTERVAL_S = 0.2
_LOOKUPS = CacheCounter("session")  # ops metrics
_REFRESHES = SESSION_REFRESHES
STALE_AFTER_S = 1.0  # no successful poll for this long: caches are not trusted
REFRESH_RETRY_S = 30.0  # after a failed refresh (IdP down), wait this long before the next try
REFRESH_LOCK_S = 30.0


class AccountGone(Exception):
    """The IdP says the session's grant or account is no more (invalid_grant, deleted user)."""


@dataclass(frozen=True, slots=True)
class Refreshed:
    claims: dict[str, Any]
    tokens: IdpTokens


# Given the session's tokens: fresh claims and tokens; AccountGone when the IdP says no;
# None when there is nothing to refresh with; any other exception means "IdP unavailable".
Refresher = Callable[[IdpTokens], Awaitable[Refreshed | None]]


@dataclass(slots=True)
class _Cached:
    session: Session | None  # None: gone (revoked, unknown, ended)
    refreshed_at: float = 0.0
    last_seen: float = 0.0  # as far as this worker knows
    touched_at: float = 0.0  # when this worker last wrote last_seen to the store
    retry_refresh_at: float = 0.0


class SessionManager:
    def __init__(
        self,
        master: bytes,
        store: SessionStore,
        *,
        refresh_interval_s: float,
        idle_timeout_s: float = 0.0,
        refresher: Refresher | None = None,
        cache_size: int = 10_000,
        on_change: Callable[[str], None] | None = None,
        keep_tokens: bool = False,
    ) -> None:
        self.store = store
        self.refs = ReferenceCodec(master)
        self._sealer = RecordSealer(master)
        self.refresh_interval_s = refresh_interval_s
        self.grace_s = max(15 * 60.0, 3 * refresh_interval_s)
        self.idle_timeout_s = idle_timeout_s
        # How often a worker records "still in use" for the idle timeout.
        self.touch_every_s = idle_timeout_s / 4 if idle_timeout_s > 0 else float("inf")
        self._refresher = refresher
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_size = cache_size
        self._on_change = on_change  # told the sid of every session that changed (memo)
        self.keep_tokens = keep_tokens  # the IdP tokens in cached sessions (else not kept)
        self._cursor: str | None = None
        self._fed_at = 0.0  # monotonic time of the last successful poll
        self._tasks: set[asyncio.Task[None]] = set()
        self._refreshing: set[str] = set()

    # ---------------------------------------------------------------- cookies

    def cookie_value(self, session: Session, host: str) -> str:
        ref = SessionRef(session.sid, session.issued_at, session.expires_at)
        return self.refs.encode(ref, host)

    def reference(self, value: str, host: str) -> SessionRef | None:
        return self.refs.decode(value, host)

    # ---------------------------------------------------------------- sessions

    async def start(
        self, claims: dict[str, Any], tokens: IdpTokens, lifetime_s: int, now: float | None = None
    ) -> Session:
        """A new session in the store (a new id: never one the browser chose)."""
        now = time.time() if now is None else now
        identity = identity_from_claims(claims)
        session = Session(
            sid=new_session_id(),
            identity=identity,
            issued_at=int(now),
            expires_at=int(now) + lifetime_s,
            tokens=tokens.for_headers() if self.keep_tokens else {},
        )
        record = SessionRecord(
            sid=session.sid,
            user=identity.user,
            email=identity.email,
            data=self._sealer.seal(session.sid, SessionData(identity, tokens)),
            created_at=now,
            expires_at=float(session.expires_at),
            last_seen=now,
            refreshed_at=now,
            version=1,
        )
        await self.store.create(record)
        self._remember(record.sid, _Cached(session, now, now, now))
        return session

    async def load(self, ref: SessionRef, now: float | None = None) -> Session | None:
        """The session behind a reference, or None (revoked, unknown, ended). Raises
        StoreUnavailable when the store must be asked and does not answer."""
        now = time.time() if now is None else now
        cached = self._cache.get(ref.sid) if self.fresh() else None
        if cached is None:
            _LOOKUPS.miss()
            cached = await self._read(ref.sid)
        else:
            _LOOKUPS.hit()
            self._cache.move_to_end(ref.sid)
        session = cached.session
        if session is None or session.issued_at != ref.issued_at:
            return None
        if not session.valid(now):
            return None
        if self.idle_timeout_s > 0 and now - cached.last_seen > self.idle_timeout_s:
            cached = await self._read(ref.sid)  # another worker may have seen it since
            if cached.session is None or now - cached.last_seen > self.idle_timeout_s:
                self._spawn(self._end(ref.sid, "idle"))
                return None
        if now - cached.touched_at >= self.touch_every_s:
            cached.touched_at = cached.last_seen = now
            self._spawn(self._touch(ref.sid, now))
        if now - cached.refreshed_at >= self.refresh_interval_s:
            if now - cached.refreshed_at > self.refresh_interval_s + self.grace_s:
                log.warning("session_refresh_overdue", sid_hint=ref.sid[:6])
                self._spawn(self._end(ref.sid, "refresh overdue"))
                return None
            self._maybe_refresh(ref.sid, cached, now)
        return session

    def keep_until(self, sid: str) -> float:
        """Until when an answer built from this session may be reused: the next refresh or
        idle-timeout write is due then, and both must go through `load`."""
        cached = self._cache.get(sid)
        if cached is None or cached.session is None:
            return 0.0
        return min(
            cached.refreshed_at + self.refresh_interval_s, cached.touched_at + self.touch_every_s
        )

    async def revoke(self, sid: str) -> None:
        """End a session everywhere: the store's event reaches every worker and replica."""
        await self.store.revoke(sid)
        self._forget(sid, gone=True)

    # ---------------------------------------------------------------- the event feed

    def fresh(self) -> bool:
        return time.monotonic() - self._fed_at < STALE_AFTER_S

    async def poll(self) -> None:
        """Apply the store's events since the last poll. Raises StoreUnavailable."""
        try:
            while True:
                events, self._cursor = await self.store.events_since(self._cursor)
                for _kind, sid in events:
                    self._forget(sid, gone=False)
                if len(events) < 10_000:
                    break
        except CursorExpired:
            # Too far behind to know what changed: trust nothing cached.
            self._cache.clear()
            if self._on_change is not None:
                self._on_change("")
            self._cursor = None
            raise
        self._fed_at = time.monotonic()

    async def run_feed(self) -> None:
        """Poll the feed for as long as the worker runs."""
        failing = False
        while True:
            try:
                await self.poll()
                if failing:
                    log.info("session_store_back")
                failing = False
            except StoreUnavailable as exc:
                if not failing:
                    log.error("session_store_unavailable", error=str(exc))
                failing = True
            await asyncio.sleep(FEED_INTERVAL_S)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.store.close()

    # ---------------------------------------------------------------- internals

    def _remember(self, sid: str, cached: _Cached) -> None:
        self._cache[sid] = cached
        self._cache.move_to_end(sid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _forget(self, sid: str, gone: bool) -> None:
        if gone:
            self._remember(sid, _Cached(None))
        else:
            self._cache.pop(sid, None)
        if self._on_change is not None:
            self._on_change(sid)

    async def _read(self, sid: str) -> _Cached:
        record = await self.store.get(sid)
        data = self._sealer.open(sid, record.data) if record is not None else None
        if record is None or data is None:
            cached = _Cached(None)
        else:
            session = Session(
                sid=sid,
                identity=data.identity,
                issued_at=int(record.created_at),
                expires_at=int(record.expires_at),
                tokens=data.tokens.for_headers() if self.keep_tokens else {},
            )
            cached = _Cached(
                session,
                record.refreshed_at,
                record.last_seen,
                record.last_seen,  # a touch is due when the store's last_seen is old
            )
        if self.fresh():
            self._remember(sid, cached)
        return cached

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, sid: str, now: float) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.store.touch(sid, now)

    async def _end(self, sid: str, why: str) -> None:
        log.info("session_ended", sid_hint=sid[:6], why=why)
        with contextlib.suppress(StoreUnavailable):
            await self.revoke(sid)

    def _maybe_refresh(self, sid: str, cached: _Cached, now: float) -> None:
        if self._refresher is None or sid in self._refreshing or now < cached.retry_refresh_at:
            return
        cached.retry_refresh_at = now + REFRESH_RETRY_S
        self._refreshing.add(sid)
        self._spawn(self._refresh(sid))

    async def _refresh(self, sid: str) -> None:
        assert self._refresher is not None
        lock = f"refresh:{sid}"
        try:
            if not await self.store.acquire_lock(lock, REFRESH_LOCK_S):
                return  # another worker or replica is at it
            try:
                await self._refresh_locked(sid)
            finally:
                await self.store.release_lock(lock)
        except StoreUnavailable as exc:
            log.warning("session_refresh_store_unavailable", error=str(exc))
        finally:
            self._refreshing.discard(sid)

    async def _refresh_locked(self, sid: str) -> None:
        assert self._refresher is not None
        record = await self.store.get(sid)
        data = self._sealer.open(sid, record.data) if record is not None else None
        if record is None or data is None:
            return
        if time.time() - record.refreshed_at < self.refresh_interval_s:
            return  # refreshed meanwhile
        try:
            result = await self._refresher(data.tokens)
        except AccountGone as exc:
            _REFRESHES.labels("revoked").inc()
            log.info("session_ended", sid_hint=sid[:6], why=f"identity provider: {exc}")
            await self.revoke(sid)
            return
        except Exception as exc:  # the IdP is down or answered nonsense: keep, within grace
            _REFRESHES.labels("failure").inc()
            log.warning("session_refresh_failed", sid_hint=sid[:6], error=str(exc)[:200])
            return
        now = time.time()
        if result is None:  # nothing to refresh with: the claims stay, the clock restarts
            await self.store.update(sid, data=record.data, refreshed_at=now)
            return
        identity = identity_from_claims(result.claims)
        if identity.user != data.identity.user:
            log.warning("session_refresh_other_user", sid_hint=sid[:6])
            await self.revoke(sid)
            return
        tokens = replace(
            result.tokens, refresh_token=result.tokens.refresh_token or data.tokens.refresh_token
        )
        blob = self._sealer.seal(sid, SessionData(identity, tokens))
        await self.store.update(sid, data=blob, refreshed_at=now)
        _REFRESHES.labels("success").inc()
        log.info("session_refreshed", sid_hint=sid[:6], groups=len(identity.groups))

