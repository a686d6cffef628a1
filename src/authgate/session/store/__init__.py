"""Session stores: the interface, the embedded SQLite store and the Redis store."""

from __future__ import annotations

from pathlib import Path

from authgate.session.store.base import (
    EVENTS_PAGE,
    CursorExpired,
    SessionRecord,
    SessionStore,
    StoreUnavailable,
    email_key,
)
from authgate.session.store.redis import RedisStore, redact_url
from authgate.session.store.sqlite import SqliteStore

__all__ = [
    "EVENTS_PAGE",
    "CursorExpired",
    "RedisStore",
    "SessionRecord",
    "SessionStore",
    "SqliteStore",
    "StoreUnavailable",
    "email_key",
    "open_store",
    "redact_url",
]

# Pomerium's "memory" store is per process; here every worker of one `authgate run` must see the
# same sessions, so it means the embedded file store too.
_EMBEDDED = ("file", "memory")


def open_store(
    kind: str, connection_string: str | None, state_dir: Path, timeout_s: float = 0.5
) -> SessionStore:
    """The store a config names (`databroker_storage_type` / `_connection_string`)."""
    kind = kind.strip().lower()
    if kind == "redis":
        if not connection_string:
            raise ValueError(
                "session store 'redis' needs a connection string, e.g. redis://:PASSWORD@host:6379/0"
            )
        return RedisStore(connection_string, timeout_s=timeout_s)
    if kind in _EMBEDDED:
        path = Path(connection_string) if connection_string else Path(state_dir) / "sessions.db"
        return SqliteStore(path, timeout_s=timeout_s)
    raise ValueError(f"session store kind {kind!r}: expected 'file', 'memory' or 'redis'")
