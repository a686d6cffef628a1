"""The session store interface: one small async API, implemented by SQLite (embedded) and Redis.

The session layer keeps only a sealed reference in the cookie; everything else lives here. Every
method either answers or raises `StoreUnavailable` within the store's `timeout_s`, so the caller
can fail closed instead of hanging a Check.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal

EventKind = Literal["updated", "revoked"]

# Contract constants shared by both implementations (and their tests).
EVENTS_PAGE: Final = 10_000  # events_since() returns at most this many per call
EVENTS_MIN_RETENTION_S: Final = 600.0  # events are kept at least this long
DEFAULT_EVENTS_RETENTION_S: Final = 900.0  # what the stores keep by default (margin over 600)


class StoreUnavailable(Exception):
    """The backend cannot be reached or did not answer in time.

    str() is safe to log (no secrets, no password).
    """


class CursorExpired(StoreUnavailable):
    """The cursor points before the oldest kept event (or into another store, or is garbage).

    The caller cannot know what it missed: drop every cache and start again from
    `events_since(None)`.
    """


@dataclass(frozen=True, slots=True)
class SessionRecord:
    sid: str  # random, URL-safe
    user: str  # the IdP's `sub`
    email: str  # for `authgate sessions list/revoke --user EMAIL` (compared case-insensitively)
    data: bytes  # opaque to the store (sealed claims, groups, refresh token); may be ~30 KB
    created_at: float  # unix seconds
    expires_at: float  # absolute end; get() never returns the record after it
    last_seen: float
    refreshed_at: float
    version: int  # 1 at create; +1 at every update()


def email_key(email: str) -> str:
    """The case-insensitive form both stores index emails by.

    casefold() rather than SQLite's lower(), which only folds ASCII.
    """
    return email.strip().casefold()


def token_digest(token_id: str) -> str:
    """What is stored for a single-use token: a digest, so reading the store gives no usable
    token (OAuth state, hand-off ids) and keys have a bounded length."""
    return hashlib.sha256(token_id.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore(ABC):
    """Async session store. All methods raise `StoreUnavailable` (only that) when the backend is
    down or slow, within the `timeout_s` given at construction, and work again by themselves
    once it is back."""

    @abstractmethod
    async def create(self, record: SessionRecord) -> None:
        """Store a new session (a record with the same sid is replaced; sids are random)."""

    @abstractmethod
    async def get(self, sid: str) -> SessionRecord | None:
        """The live session, or None: unknown, revoked or past expires_at."""

    @abstractmethod
    async def update(self, sid: str, *, data: bytes, refreshed_at: float) -> SessionRecord | None:
        """Replace data, bump version, append ("updated", sid). None if the session is gone."""

    @abstractmethod
    async def touch(self, sid: str, last_seen: float) -> None:
        """Idle-timeout bookkeeping: last_seen only moves forward. No event; no-op if gone."""

    @abstractmethod
    async def revoke(self, sid: str) -> bool:
        """Remove the session and append ("revoked", sid). False if it was not there."""

    @abstractmethod
    async def revoke_user(self, email: str) -> list[str]:
        """Revoke every session of that email (case-insensitive), one event each; their sids."""

    @abstractmethod
    async def list_sessions(self, email: str | None = None) -> list[SessionRecord]:
        """Live sessions (of that email, case-insensitive, if given), newest created first."""

    @abstractmethod
    async def events_since(self, cursor: str | None) -> tuple[list[tuple[str, str]], str]:
        """Events after `cursor`, oldest first, as (kind, sid), and the cursor to pass next.

        cursor None: no events, just the current head. At most `EVENTS_PAGE` per call (call
        again if you got that many). Raises `CursorExpired` if the cursor is older than what is
        kept (>= 10 minutes), belongs to another store, or cannot be parsed.
        """

    @abstractmethod
    async def first_use(self, token_id: str, expires_at: float) -> bool:
        """True the first time this token id is seen (across workers and replicas) only.

        Remembered until expires_at; a token already past expires_at is never "first" (False),
        since the store could not remember it.
        """

    @abstractmethod
    async def acquire_lock(self, name: str, ttl_s: float) -> bool:
        """Take the named lock for ttl_s (one holder across workers and replicas). Not
        re-entrant: a holder asking again gets False until it releases or the ttl passes."""

    @abstractmethod
    async def release_lock(self, name: str) -> None:
        """Release the lock if this store object holds it (never someone else's)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the backend answers."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads. The object is not used afterwards."""
