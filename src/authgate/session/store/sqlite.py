"""The embedded session store: one SQLite file shared by every worker process of `authgate run`.

Why SQLite in WAL mode: it needs no extra service to install or run; it is crash-safe (a
committed transaction survives the crash of any process; with synchronous=NORMAL an OS crash or
power loss may lose the last few commits but never corrupts the file); several processes may
open the same file safely (file locks, `busy_timeout` for writers that meet each other); and in
WAL mode readers never wait for a writer, so the Check path's reads stay fast while another
worker writes.

Why the stdlib `sqlite3` on one dedicated thread rather than `aiosqlite`: aiosqlite is the same
thing (a thread that owns a `sqlite3` connection, fed through a queue), so it would be one more
dependency for ~20 lines. A single-thread executor serialises every call on one connection per
store object (so per process; a store object used after a fork opens its own), and
`asyncio.wait_for` bounds each call by `timeout_s` even if the file system itself stalls;
`busy_timeout` is a little shorter, so a database locked by another process reports "database
is locked" rather than a bare time-out.

Expired rows (sessions, used tokens, locks) and events older than the retention are pruned at
most every `prune_interval_s`, piggy-backed on a write. A pruning watermark in `meta` lets
`events_since` tell "nothing happened" from "what happened was pruned" exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

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
Mode = Literal["read", "snapshot", "write"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    refreshed_at REAL NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_email ON sessions (email_key);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    sid TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS used_tokens (
    digest TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_tokens_by_expiry ON used_tokens (expires_at);
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""
_SELECT_SESSION = (
    "SELECT sid, user_id, email, data, created_at, expires_at, last_seen, refreshed_at, version"
    " FROM sessions"
)
_GET = _SELECT_SESSION + " WHERE sid = ? AND expires_at > ?"
_GET_ANY = _SELECT_SESSION + " WHERE sid = ?"
_LIST = _SELECT_SESSION + " WHERE expires_at > ? ORDER BY created_at DESC, sid"
_LIST_EMAIL = (
    _SELECT_SESSION + " WHERE expires_at > ? AND email_key = ? ORDER BY created_at DESC, sid"
)
# Errors that say "someone else holds the lock", not "this connection is broken".
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def _record(row: Any) -> SessionRecord:
    sid, user, email, data, created, expires, seen, refreshed, version = row
    return SessionRecord(
        sid=str(sid),
        user=str(user),
        email=str(email),
        data=bytes(data),
        created_at=float(created),
        expires_at=float(expires),
        last_seen=float(seen),
        refreshed_at=float(refreshed),
        version=int(version),
    )


class SqliteStore(SessionStore):
    """Sessions in a SQLite file (WAL), shared by the processes that open the same path."""

    def __init__(
        self,
        path: Path,
        timeout_s: float = 0.5,
        *,
        events_retention_s: float = DEFAULT_EVENTS_RETENTION_S,
        prune_interval_s: float = 60.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.events_retention_s = events_retention_s
        self.prune_interval_s = prune_interval_s
        # Shorter than the call's deadline so a lock held elsewhere surfaces as "locked".
        self._busy_s = timeout_s * 0.8
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authgate-sqlite")
        # Owned by the executor thread only.
        self._conn: sqlite3.Connection | None = None
        self._epoch = ""
        self._next_prune = 0.0
        # Identifies this store object as a lock holder.
        self._owner = secrets.token_hex(16)
        self._closed = False
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], mode: Mode) -> T:
        if self._closed:
            raise StoreUnavailable(f"session store {self.path}: closed")
        if os.getpid() != self._pid:
            self._after_fork()
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._executor, self._call, fn, mode)
        except RuntimeError as e:  # executor shut down
            raise StoreUnavailable(f"session store {self.path}: {e}") from e
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            # The thread may still be stuck in the file system; later calls queue behind it
            # and time out the same way until it returns.
            raise StoreUnavailable(
                f"session store {self.path}: no answer within {self.timeout_s:g}s"
            ) from None

    def _after_fork(self) -> None:
        # A forked child has neither the parent's thread nor a usable copy of its connection
        # (SQLite forbids carrying one across fork): abandon both, never close them here.
        self._pid = os.getpid()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authgate-sqlite")
        self._conn = None

    def _call(self, fn: Callable[[sqlite3.Connection], T], mode: Mode) -> T:
        try:
            conn = self._connect()
            result = self._transaction(conn, fn, mode)
            if mode == "write" and time.monotonic() >= self._next_prune:
                self._prune_quietly(conn)
            return result
        except sqlite3.Error as e:
            # Extended codes (e.g. SQLITE_BUSY_SNAPSHOT) carry the primary code in the low byte.
            if getattr(e, "sqlite_errorcode", 0) & 0xFF not in _BUSY_CODES:
                self._drop()  # reopen on the next call (file replaced, I/O error, ...)
            raise StoreUnavailable(f"session store {self.path}: {e}") from e
        except OSError as e:
            self._drop()
            raise StoreUnavailable(
                f"session store {self.path}: {e.strerror or type(e).__name__}"
            ) from e

    @staticmethod
    def _transaction(
        conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], mode: Mode
    ) -> T:
        if mode == "read":
            return fn(conn)
        # IMMEDIATE takes the write lock up front: no read-to-write upgrade that could fail
        # with SQLITE_BUSY_SNAPSHOT halfway through.
        conn.execute("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        parent = self.path.parent
        if not parent.is_dir():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file 0600 ourselves: SQLite would use the umask, and its -wal/-shm files
        # copy the main file's mode.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        finally:
            os.close(fd)
        conn = sqlite3.connect(
            self.path, timeout=self._busy_s, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode here (got {mode})")
            # NORMAL is durable against process crashes in WAL mode and skips an fsync per commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._transaction(conn, self._create_schema, "write")
            row = conn.execute("SELECT v FROM meta WHERE k = 'epoch'").fetchone()
            if row is None:
                raise sqlite3.OperationalError("schema without an epoch")
            self._epoch = str(row[0])
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        # Another process may have won the race between our check and our write lock.
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        # The epoch ties cursors to this file: a cursor from another (or recreated) file is
        # refused instead of silently skipping events.
        conn.execute(
            "INSERT OR IGNORE INTO meta (k, v) VALUES ('epoch', ?), ('pruned_through', '0')",
            (secrets.token_hex(8),),
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _prune_quietly(self, conn: sqlite3.Connection) -> None:
        self._next_prune = time.monotonic() + self.prune_interval_s
        # The user's write is committed; a failed prune waits for the next interval.
        with contextlib.suppress(sqlite3.Error):
            self._transaction(conn, self._prune, "write")

    def _prune(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM used_tokens WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM locks WHERE expires_at <= ?", (now,))
        (upto,) = conn.execute(
            "SELECT max(seq) FROM events WHERE at < ?", (now - self.events_retention_s,)
        ).fetchone()
        if upto is not None:
            conn.execute("DELETE FROM events WHERE seq <= ?", (upto,))
            conn.execute(
                "UPDATE meta SET v = ? WHERE k = 'pruned_through' AND CAST(v AS INTEGER) < ?",
                (str(upto), upto),
            )

    async def prune(self) -> None:
        """Prune now (normally done every `prune_interval_s` on a write)."""
        await self._run(self._prune, "write")

    @staticmethod
    def _event(conn: sqlite3.Connection, kind: str, sid: str) -> None:
        conn.execute(
            "INSERT INTO events (at, kind, sid) VALUES (?, ?, ?)", (time.time(), kind, sid)
        )

    # -- the interface ----------------------------------------------------------------------

    async def create(self, record: SessionRecord) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO sessions (sid, user_id, email, email_key, data,"
                " created_at, expires_at, last_seen, refreshed_at, version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.sid,
                    record.user,
                    record.email,
                    email_key(record.email),
                    record.data,
                    record.created_at,
                    record.expires_at,
                    record.last_seen,
                    record.refreshed_at,
                    record.version,
                ),
            )

        await self._run(op, "write")

    async def get(self, sid: str) -> SessionRecord | None:
        def op(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute(_GET, (sid, time.time())).fetchone()
            return None if row is None else _record(row)

        return await self._run(op, "read")

    async def update(self, sid: str, *, data: bytes, refreshed_at: float) -> SessionRecord | None:
        def op(conn: sqlite3.Connection) -> SessionRecord | None:
            changed = conn.execute(
                "UPDATE sessions SET data = ?, refreshed_at = ?, version = version + 1"
                " WHERE sid = ? AND expires_at > ?",
                (data, refreshed_at, sid, time.time()),
            ).rowcount
            if not changed:
                return None
            self._event(conn, "updated", sid)
            row = conn.execute(_GET_ANY, (sid,)).fetchone()
            return _record(row)

        return await self._run(op, "write")

    async def touch(self, sid: str, last_seen: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sessions SET last_seen = ? WHERE sid = ? AND expires_at > ?"
                " AND last_seen < ?",
                (last_seen, sid, time.time(), last_seen),
            )

        await self._run(op, "write")

    async def revoke(self, sid: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT expires_at FROM sessions WHERE sid = ?", (sid,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
            if row[0] <= time.time():
                return False  # already expired: nobody may use it, nothing to tell
            self._event(conn, "revoked", sid)
            return True

        return await self._run(op, "write")

    async def revoke_user(self, email: str) -> list[str]:
        key = email_key(email)

        def op(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            rows = conn.execute(
                "SELECT sid, expires_at FROM sessions WHERE email_key = ? ORDER BY created_at",
                (key,),
            ).fetchall()
            conn.execute("DELETE FROM sessions WHERE email_key = ?", (key,))
            live = [str(sid) for sid, expires in rows if expires > now]
            conn.executemany(
                "INSERT INTO events (at, kind, sid) VALUES (?, 'revoked', ?)",
                [(now, sid) for sid in live],
            )
            return live

        return await self._run(op, "write")

    async def list_sessions(self, email: str | None = None) -> list[SessionRecord]:
        def op(conn: sqlite3.Connection) -> list[SessionRecord]:
            if email is None:
                rows = conn.execute(_LIST, (time.time(),))
            else:
                rows = conn.execute(_LIST_EMAIL, (time.time(), email_key(email)))
            return [_record(row) for row in rows]

        return await self._run(op, "read")

    def _parse_cursor(self, cursor: str) -> int:
        epoch, _, pos = cursor.partition(":")
        if epoch != self._epoch or not pos.isdigit() or len(pos) > 19:
            raise CursorExpired(f"session store {self.path}: cursor from another store")
        return int(pos)

    async def events_since(self, cursor: str | None) -> tuple[list[tuple[str, str]], str]:
        def op(conn: sqlite3.Connection) -> tuple[list[tuple[str, str]], str]:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            head = int(row[0]) if row is not None else 0
            if cursor is None:
                return [], f"{self._epoch}:{head}"
            pos = self._parse_cursor(cursor)
            (pruned,) = conn.execute("SELECT v FROM meta WHERE k = 'pruned_through'").fetchone()
            if pos < int(pruned):
                raise CursorExpired(f"session store {self.path}: events after the cursor pruned")
            if pos > head:
                raise CursorExpired(f"session store {self.path}: cursor ahead of the store")
            rows = conn.execute(
                "SELECT seq, kind, sid FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (pos, EVENTS_PAGE),
            ).fetchall()
            last = int(rows[-1][0]) if rows else pos
            return [(str(kind), str(sid)) for _, kind, sid in rows], f"{self._epoch}:{last}"

        return await self._run(op, "snapshot")

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        digest = token_digest(token_id)

        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            if expires_at <= now:
                return False
            # A row past its expiry (not pruned yet) counts as forgotten.
            return bool(
                conn.execute(
                    "INSERT INTO used_tokens (digest, expires_at) VALUES (?, ?)"
                    " ON CONFLICT (digest) DO UPDATE SET expires_at = excluded.expires_at"
                    " WHERE used_tokens.expires_at <= ?",
                    (digest, expires_at, now),
                ).rowcount
                == 1
            )

        return await self._run(op, "write")

    async def acquire_lock(self, name: str, ttl_s: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            return bool(
                conn.execute(
                    "INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                    " expires_at = excluded.expires_at WHERE locks.expires_at <= ?",
                    (name, self._owner, now + max(ttl_s, 0.001), now),
                ).rowcount
                == 1
            )

        return await self._run(op, "write")

    async def release_lock(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, self._owner))

        await self._run(op, "write")

    async def ping(self) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT count(*) FROM meta").fetchone()

        await self._run(op, "read")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._drop), self.timeout_s)
        except TimeoutError:
            pass  # a stuck thread closes nothing; it is abandoned below
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
