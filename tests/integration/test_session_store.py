"""The session store contract, one suite run against both stores (ids `[sqlite]` and `[redis]`).

Real backends only: a SQLite file in a temporary directory (several store objects, and a second
process, on the same file) and Debian's `redis-server` on a free 127.0.0.1 port (one per module,
a fresh key prefix per test; the outage tests start their own).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from authgate.session.store import (
    EVENTS_PAGE,
    CursorExpired,
    RedisStore,
    SessionRecord,
    SessionStore,
    SqliteStore,
    StoreUnavailable,
    open_store,
)
from tests.support.redis_server import RedisServer, TlsFiles, redis_server_available

KINDS = ["sqlite", "redis"]
# The outage tests' bound, and what "within ~timeout" allows on a busy 2-core CI machine.
TIMEOUT_S = 0.3
SLACK_S = 0.7
# The functional tests check answers, not speed: bulk steps (10_000 sessions revoked in one
# call, hundreds of concurrent clients) must not turn into time-outs on a loaded machine.
FUNCTIONAL_TIMEOUT_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def new_sid() -> str:
    return secrets.token_urlsafe(24)


def record(
    email: str = "alice@example.com",
    *,
    sid: str | None = None,
    ttl_s: float = 3600.0,
    created_at: float | None = None,
    data: bytes = b"sealed",
) -> SessionRecord:
    now = time.time()
    created = now if created_at is None else created_at
    return SessionRecord(
        sid=sid or new_sid(),
        user="sub-" + email.casefold(),
        email=email,
        data=data,
        created_at=created,
        expires_at=now + ttl_s,
        last_seen=created,
        refreshed_at=created,
        version=1,
    )


def groups_blob(n: int = 500) -> bytes:
    """What 500 IdP groups look like sealed: ~30 KB of JSON-ish bytes."""
    groups = [f"cn=team-{i:04d}-{secrets.token_hex(12)},ou=groups,dc=example" for i in range(n)]
    return json.dumps({"groups": groups}).encode()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not redis_server_available():
        pytest.fail("Debian's redis-server is missing: run `make system-deps`")
    with RedisServer() as server:
        yield server


@dataclass
class Backend:
    """One backend, and a way to open more store objects on it."""

    kind: str
    target: str  # the file path or the Redis URL
    prefix: str = ""
    stores: list[SessionStore] = field(default_factory=list)

    def make(self, timeout_s: float = FUNCTIONAL_TIMEOUT_S, **kw: Any) -> SessionStore:
        store: SessionStore
        if self.kind == "sqlite":
            store = SqliteStore(Path(self.target), timeout_s=timeout_s, **kw)
        else:
            store = RedisStore(self.target, timeout_s=timeout_s, key_prefix=self.prefix, **kw)
        self.stores.append(store)
        return store

    def spec(self) -> dict[str, str]:
        """What a child process needs to open a store on the same backend."""
        return {"kind": self.kind, "target": self.target, "prefix": self.prefix}


async def _close_all(b: Backend) -> None:
    for store in b.stores:
        await store.close()


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend("sqlite", str(tmp_path / "state" / "sessions.db"))
    yield b
    await _close_all(b)


@pytest.fixture
async def redis_backend(redis_server: RedisServer) -> AsyncIterator[Backend]:
    b = Backend("redis", redis_server.url, prefix=f"t{secrets.token_hex(4)}:")
    yield b
    await _close_all(b)


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """The same contract for both: `[sqlite]` and `[redis]` in the test ids."""
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    return b


@pytest.fixture
async def store(backend: Backend) -> SessionStore:
    return backend.make()


async def drain(store: SessionStore, cursor: str) -> tuple[list[tuple[str, str]], str]:
    """Every event after `cursor`, calling again while pages come back full."""
    out: list[tuple[str, str]] = []
    while True:
        events, cursor = await store.events_since(cursor)
        out += events
        if len(events) < EVENTS_PAGE:
            return out, cursor


# -- create / get / update / events --------------------------------------------------------


async def test_create_get_update_version_events(store: SessionStore) -> None:
    _, head = await store.events_since(None)
    rec = record()
    await store.create(rec)
    assert await store.get(rec.sid) == rec
    assert await store.events_since(head) == ([], head), "create appends no event"

    updated = await store.update(rec.sid, data=b"refreshed claims", refreshed_at=rec.created_at + 5)
    assert updated == replace(
        rec, data=b"refreshed claims", refreshed_at=rec.created_at + 5, version=2
    )
    assert await store.get(rec.sid) == updated
    again = await store.update(rec.sid, data=b"third", refreshed_at=rec.created_at + 9)
    assert again is not None and again.version == 3

    events, cursor = await store.events_since(head)
    assert events == [("updated", rec.sid), ("updated", rec.sid)]
    assert await store.events_since(cursor) == ([], cursor)

    assert await store.update(new_sid(), data=b"x", refreshed_at=0.0) is None
    assert await store.events_since(cursor) == ([], cursor), "no event for an unknown sid"


async def test_get_never_returns_a_record_past_expires_at(store: SessionStore) -> None:
    _, head = await store.events_since(None)
    gone = record(ttl_s=-1.0)
    await store.create(gone)
    assert await store.get(gone.sid) is None

    short = record(ttl_s=0.4)
    await store.create(short)
    assert await store.get(short.sid) == short
    await asyncio.sleep(0.5)
    assert await store.get(short.sid) is None
    assert await store.update(short.sid, data=b"x", refreshed_at=time.time()) is None
    await store.touch(short.sid, time.time())
    assert await store.revoke(short.sid) is False
    assert short.sid not in {r.sid for r in await store.list_sessions()}
    assert await store.events_since(head) == ([], head)


async def test_touch_moves_last_seen_forward_without_an_event(store: SessionStore) -> None:
    rec = record()
    await store.create(rec)
    _, head = await store.events_since(None)
    await store.touch(rec.sid, rec.last_seen + 30)
    got = await store.get(rec.sid)
    assert got is not None and got.last_seen == rec.last_seen + 30 and got.version == 1
    await store.touch(rec.sid, rec.last_seen + 10)  # a late touch from another worker
    got = await store.get(rec.sid)
    assert got is not None and got.last_seen == rec.last_seen + 30
    unknown = new_sid()
    await store.touch(unknown, time.time())
    assert await store.get(unknown) is None, "touch never creates a session"
    assert await store.events_since(head) == ([], head)


# -- revocation ----------------------------------------------------------------------------


async def test_revoke(store: SessionStore) -> None:
    a, b = record(), record()
    await store.create(a)
    await store.create(b)
    _, head = await store.events_since(None)
    assert await store.revoke(a.sid) is True
    assert await store.get(a.sid) is None
    assert await store.get(b.sid) == b
    events, cursor = await store.events_since(head)
    assert events == [("revoked", a.sid)]
    assert await store.revoke(a.sid) is False
    assert await store.revoke(new_sid()) is False
    assert await store.events_since(cursor) == ([], cursor)


async def test_revoke_user_is_case_insensitive(store: SessionStore) -> None:
    alice = [
        record("Alice@Example.com"),
        record("alice@example.COM"),
        record("ÉLODIE.alice@example.com"),
    ]
    other = [record("élodie.ALICE@example.com"), record("bob@example.com")]
    for rec in alice[:2] + other:
        await store.create(rec)
    await store.create(alice[2])
    _, head = await store.events_since(None)

    revoked = await store.revoke_user("ALICE@example.com")
    assert sorted(revoked) == sorted(r.sid for r in alice[:2])
    events, cursor = await store.events_since(head)
    assert sorted(events) == sorted(("revoked", r.sid) for r in alice[:2])
    for rec in alice[:2]:
        assert await store.get(rec.sid) is None
    assert await store.get(other[1].sid) == other[1]

    # Not only ASCII: SQLite's own lower() would miss these.
    revoked = await store.revoke_user("élodie.alice@EXAMPLE.com")
    assert sorted(revoked) == sorted([alice[2].sid, other[0].sid])
    assert await store.revoke_user("alice@example.com") == []
    events, _ = await store.events_since(cursor)
    assert sorted(events) == sorted([("revoked", alice[2].sid), ("revoked", other[0].sid)])


async def test_list_sessions_newest_first_and_by_email(store: SessionStore) -> None:
    t = time.time() - 100
    old = record("alice@example.com", created_at=t)
    mid = record("bob@example.com", created_at=t + 1)
    new = record("Alice@Example.com", created_at=t + 2)
    expired = record("alice@example.com", created_at=t + 3, ttl_s=-1)
    for rec in (mid, new, expired, old):
        await store.create(rec)
    assert [r.sid for r in await store.list_sessions()] == [new.sid, mid.sid, old.sid]
    assert await store.list_sessions("ALICE@example.COM") == [new, old]
    assert await store.list_sessions("nobody@example.com") == []
    await store.revoke(new.sid)
    assert await store.list_sessions("alice@example.com") == [old]


# -- the event feed --------------------------------------------------------------------------


async def test_events_since_none_is_the_head_without_events(store: SessionStore) -> None:
    recs = [record() for _ in range(3)]
    for rec in recs:
        await store.create(rec)
        await store.update(rec.sid, data=b"v2", refreshed_at=time.time())
    await store.revoke(recs[0].sid)
    events, head = await store.events_since(None)
    assert events == []
    assert await store.events_since(head) == ([], head)
    await store.revoke(recs[1].sid)
    assert (await store.events_since(head))[0] == [("revoked", recs[1].sid)]


async def test_events_in_order_and_bounded_per_call(store: SessionStore) -> None:
    _, head = await store.events_since(None)
    recs = [record() for _ in range(40)]
    expected: list[tuple[str, str]] = []
    for i, rec in enumerate(recs):
        await store.create(rec)
        if i % 3 == 0:
            await store.revoke(rec.sid)
            expected.append(("revoked", rec.sid))
        else:
            await store.update(rec.sid, data=b"x", refreshed_at=time.time())
            expected.append(("updated", rec.sid))
    events, cursor = await store.events_since(head)
    assert events == expected

    # More than one page: one revoke_user of EVENTS_PAGE + 5 sessions.
    email = f"many-{secrets.token_hex(3)}@example.com"
    many = [record(email) for _ in range(EVENTS_PAGE + 5)]
    sem = asyncio.Semaphore(16)

    async def create(rec: SessionRecord) -> None:
        async with sem:
            await store.create(rec)

    await asyncio.gather(*(create(rec) for rec in many))
    await store.update(recs[1].sid, data=b"before", refreshed_at=time.time())
    revoked = await store.revoke_user(email)
    assert len(revoked) == len(many)
    await store.update(recs[2].sid, data=b"after", refreshed_at=time.time())

    page, next_cursor = await store.events_since(cursor)
    assert len(page) == EVENTS_PAGE
    assert page[0] == ("updated", recs[1].sid)
    rest, end = await store.events_since(next_cursor)
    assert len(rest) == 1 + len(many) + 1 - EVENTS_PAGE
    assert rest[-1] == ("updated", recs[2].sid)
    assert sorted(page[1:] + rest[:-1]) == sorted(("revoked", sid) for sid in revoked)
    assert await store.events_since(end) == ([], end)
    assert (await drain(store, cursor))[0] == page + rest


async def test_cursor_expired(backend: Backend, store: SessionStore) -> None:
    assert issubclass(CursorExpired, StoreUnavailable)
    rec = record()
    await store.create(rec)
    _, old = await store.events_since(None)
    await store.update(rec.sid, data=b"x", refreshed_at=time.time())
    for garbage in ("", "garbage", "zz:-1", old + "x", old.partition(":")[2]):
        with pytest.raises(CursorExpired):
            await store.events_since(garbage)

    # A cursor from another store (file or prefix) would silently skip events: refused.
    other = (
        Backend("sqlite", str(Path(backend.target).with_name("other.db")))
        if backend.kind == "sqlite"
        else Backend("redis", backend.target, prefix=backend.prefix + "other:")
    )
    foreign = other.make()
    try:
        _, foreign_cursor = await foreign.events_since(None)
    finally:
        await foreign.close()
    with pytest.raises(CursorExpired):
        await store.events_since(foreign_cursor)

    # Events older than the retention are pruned: a cursor before them has missed something.
    events, current = await store.events_since(old)
    assert events == [("updated", rec.sid)]
    await asyncio.sleep(0.01)
    pruner = backend.make(events_retention_s=0.0)
    assert isinstance(pruner, SqliteStore | RedisStore)
    await pruner.prune()
    with pytest.raises(CursorExpired):
        await store.events_since(old)
    assert await store.events_since(current) == ([], current)
    await store.revoke(rec.sid)
    assert (await store.events_since(current))[0] == [("revoked", rec.sid)]


# -- single-use tokens and locks ---------------------------------------------------------------


async def test_first_use_exactly_once(store: SessionStore) -> None:
    token = secrets.token_urlsafe(16)
    exp = time.time() + 60
    results = await asyncio.gather(*(store.first_use(token, exp) for _ in range(20)))
    assert results.count(True) == 1
    assert await store.first_use(token, exp) is False
    assert await store.first_use(secrets.token_urlsafe(16), exp) is True
    assert await store.first_use(secrets.token_urlsafe(16), time.time() - 1) is False


async def test_first_use_across_store_objects(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    tokens = [secrets.token_urlsafe(12) for _ in range(100)]
    exp = time.time() + 60
    ra, rb = await asyncio.gather(
        asyncio.gather(*(a.first_use(t, exp) for t in tokens)),
        asyncio.gather(*(b.first_use(t, exp) for t in reversed(tokens))),
    )
    firsts = [x + y for x, y in zip(ra, reversed(rb), strict=True)]
    assert firsts == [1] * len(tokens)


CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from authgate.session.store import RedisStore, SqliteStore

async def main():
    spec = json.loads(sys.argv[1])
    tokens = json.loads(sys.argv[2])
    if spec["kind"] == "sqlite":
        store = SqliteStore(Path(spec["target"]), timeout_s=5)
    else:
        store = RedisStore(spec["target"], timeout_s=5, key_prefix=spec["prefix"])
    await store.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    exp = time.time() + 60
    results = [await store.first_use(t, exp) for t in tokens]
    await store.close()
    print(json.dumps(results), flush=True)

asyncio.run(main())
"""


async def test_first_use_across_processes(backend: Backend) -> None:
    store = backend.make(timeout_s=5)
    await store.ping()  # creates the schema before the race
    tokens = [secrets.token_urlsafe(12) for _ in range(300)]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(backend.spec()),
        json.dumps(tokens),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), 20)
        assert ready.strip() == b"ready"
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        exp = time.time() + 60
        mine = [await store.first_use(t, exp) for t in reversed(tokens)]
        out = await asyncio.wait_for(child.stdout.readline(), 20)
        theirs = json.loads(out)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    firsts = [x + y for x, y in zip(theirs, reversed(mine), strict=True)]
    assert firsts == [1] * len(tokens)
    assert 0 < sum(theirs) < len(tokens), "both processes won some (they really raced)"


async def test_locks_are_exclusive_and_expire(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    assert await a.acquire_lock("refresh-jwks", 5) is True
    assert await b.acquire_lock("refresh-jwks", 5) is False
    assert await a.acquire_lock("refresh-jwks", 5) is False, "not re-entrant"
    await b.release_lock("refresh-jwks")  # not the holder: nothing happens
    assert await b.acquire_lock("refresh-jwks", 5) is False
    await a.release_lock("refresh-jwks")
    assert await b.acquire_lock("refresh-jwks", 5) is True
    assert await a.acquire_lock("other", 5) is True, "locks are per name"

    assert await a.acquire_lock("short", 0.3) is True
    assert await b.acquire_lock("short", 5) is False
    await asyncio.sleep(0.4)
    assert await b.acquire_lock("short", 5) is True, "a dead holder's lock expires by itself"
    await a.release_lock("short")  # an expired holder cannot release the new holder's lock
    assert await a.acquire_lock("short", 5) is False

    results = await asyncio.gather(*(s.acquire_lock("race", 5) for s in (a, b) * 5))
    assert results.count(True) == 1


async def test_large_data_round_trips(store: SessionStore) -> None:
    blob = groups_blob()
    assert 25_000 < len(blob) < 60_000
    rec = record(data=blob)
    await store.create(rec)
    assert await store.get(rec.sid) == rec
    bigger = blob + groups_blob(100)
    updated = await store.update(rec.sid, data=bigger, refreshed_at=time.time())
    assert updated is not None and updated.data == bigger
    assert [r.data for r in await store.list_sessions(rec.email)] == [bigger]


# -- outages ---------------------------------------------------------------------------------


def every_call(
    rec: SessionRecord, cursor: str
) -> list[tuple[str, Callable[[SessionStore], Awaitable[object]]]]:
    return [
        ("create", lambda s: s.create(record())),
        ("get", lambda s: s.get(rec.sid)),
        ("update", lambda s: s.update(rec.sid, data=b"y", refreshed_at=time.time())),
        ("touch", lambda s: s.touch(rec.sid, time.time())),
        ("revoke", lambda s: s.revoke(rec.sid)),
        ("revoke_user", lambda s: s.revoke_user(rec.email)),
        ("list_sessions", lambda s: s.list_sessions()),
        ("events_since", lambda s: s.events_since(cursor)),
        ("events_since(None)", lambda s: s.events_since(None)),
        ("first_use", lambda s: s.first_use(secrets.token_hex(8), time.time() + 60)),
        ("acquire_lock", lambda s: s.acquire_lock("l", 5)),
        ("release_lock", lambda s: s.release_lock("l")),
        ("ping", lambda s: s.ping()),
    ]


async def assert_every_call_unavailable(
    store: SessionStore, rec: SessionRecord, cursor: str, secret: str | None = None
) -> None:
    for name, call in every_call(rec, cursor):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            await call(store)
        elapsed = time.monotonic() - start
        assert elapsed < TIMEOUT_S + SLACK_S, f"{name} took {elapsed:.2f}s"
        if secret:
            assert secret not in str(err.value) and secret not in repr(err.value)


async def assert_intact(store: SessionStore, rec: SessionRecord, cursor: str, token: str) -> None:
    await store.ping()
    assert await store.get(rec.sid) == rec
    assert await store.first_use(token, time.time() + 60) is False, "used tokens survive"
    events, _ = await store.events_since(cursor)
    assert events == [("updated", rec.sid)], "the cursor still reads the same feed"
    assert await store.update(rec.sid, data=rec.data, refreshed_at=rec.refreshed_at) is not None


@pytest.fixture
def outage(
    backend: Backend, tmp_path: Path
) -> Iterator[tuple[Backend, Callable[[], None], Callable[[], None]]]:
    """(backend, take it down, bring it back) with persistence, so nothing stored is lost."""
    if backend.kind == "redis":
        server = RedisServer(password=f"pw-{secrets.token_hex(8)}", appendonly=True)
        server.start()
        try:
            yield Backend("redis", server.url, prefix="o:"), server.kill, server.start
        finally:
            server.close()
        return
    blocker: list[sqlite3.Connection] = []

    def lock() -> None:
        # An exclusive lock on the file: no other connection can read or write it.
        conn = sqlite3.connect(backend.target, isolation_level=None)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("UPDATE meta SET v = v WHERE k = 'epoch'")
        conn.execute("COMMIT")
        blocker.append(conn)

    def unlock() -> None:
        blocker.pop().close()

    yield backend, lock, unlock
    while blocker:
        blocker.pop().close()


async def test_unavailable_within_timeout_then_recovers(
    outage: tuple[Backend, Callable[[], None], Callable[[], None]],
) -> None:
    backend, down, up = outage
    writer = backend.make(TIMEOUT_S)
    rec = record(data=groups_blob())
    await writer.create(rec)
    _, cursor = await writer.events_since(None)
    await writer.update(rec.sid, data=b"v2", refreshed_at=time.time())
    got = await writer.get(rec.sid)
    assert got is not None and got.version == 2
    rec = got
    token = secrets.token_hex(8)
    assert await writer.first_use(token, time.time() + 60)
    if backend.kind == "sqlite":
        await writer.close()  # its open connection would keep the lock below from being taken
    store = backend.make(TIMEOUT_S)  # opened before the outage, first used during it

    down()
    password = urlsplit(backend.target).password if backend.kind == "redis" else None
    await assert_every_call_unavailable(store, rec, cursor, password)
    if backend.kind == "redis":
        await assert_every_call_unavailable(writer, rec, cursor, password)
    up()

    await assert_intact(store, rec, cursor, token)
    if backend.kind == "redis":
        # Pooled connections that the restart closed reconnect by themselves.
        assert await writer.get(rec.sid) is not None
    for s in backend.stores:
        await s.close()


async def test_redis_hung_server_times_out_then_recovers() -> None:
    """Redis's worst outage: the kernel accepts connections and nothing answers."""
    with RedisServer() as server:
        store = RedisStore(server.url, timeout_s=TIMEOUT_S)
        rec = record()
        await store.create(rec)
        _, cursor = await store.events_since(None)
        server.pause()
        try:
            for name, call in every_call(rec, cursor)[1::3]:  # a few: each one waits it out
                start = time.monotonic()
                with pytest.raises(StoreUnavailable, match="no answer within"):
                    await call(store)
                assert time.monotonic() - start < TIMEOUT_S + SLACK_S, name
        finally:
            server.resume()
        assert await store.get(rec.sid) == rec
        await store.close()


async def test_redis_restart_without_persistence_expires_cursors() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url, timeout_s=TIMEOUT_S)
        rec = record()
        await store.create(rec)
        _, cursor = await store.events_since(None)
        server.kill()
        server.start()  # everything is gone, including the event stream
        with pytest.raises(CursorExpired):
            await store.events_since(cursor)
        assert await store.get(rec.sid) is None
        await store.close()


async def test_sqlite_write_lock_held_elsewhere(sqlite_backend: Backend) -> None:
    backend = sqlite_backend
    store = backend.make(TIMEOUT_S)
    rec = record()
    await store.create(rec)
    other = sqlite3.connect(backend.target, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.update(rec.sid, data=b"x", refreshed_at=time.time())
        assert time.monotonic() - start < TIMEOUT_S + SLACK_S
        with pytest.raises(StoreUnavailable):
            await store.revoke(rec.sid)
        assert await store.get(rec.sid) == rec, "WAL: readers do not wait for a writer"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await store.revoke(rec.sid) is True


async def test_sqlite_unusable_path_then_fixed(tmp_path: Path) -> None:
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("not a directory")
    store = SqliteStore(blocker / "sessions.db", timeout_s=TIMEOUT_S)
    rec = record()
    await assert_every_call_unavailable(store, rec, "x:0")
    blocker.unlink()  # the operator fixes it; the same object opens the file by itself
    await store.create(rec)
    assert await store.get(rec.sid) == rec
    await store.close()


async def test_sqlite_file_and_dir_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sessions.db"
    store = SqliteStore(path)
    await store.create(record())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for p in (path, path.with_name("sessions.db-wal"), path.with_name("sessions.db-shm")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    await store.close()
    os.chmod(path, 0o644)
    store = SqliteStore(path)
    await store.ping()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "tightened when reopened"
    await store.close()


async def test_redis_password_never_in_messages_or_repr(redis_server: RedisServer) -> None:
    # (`redis_server`: fails with the install hint when redis-server is missing.)
    password = f"hunter-{secrets.token_hex(6)}"
    with RedisServer(password=password) as server:
        good = RedisStore(server.url, timeout_s=TIMEOUT_S)
        await good.ping()
        assert password not in repr(good)
        wrong = RedisStore(server.url.replace(password, password + "x"), timeout_s=TIMEOUT_S)
        with pytest.raises(StoreUnavailable) as err:
            await wrong.ping()
        assert password not in str(err.value)
        query = RedisStore(
            f"redis://127.0.0.1:{server.port}/0?password={password}", timeout_s=TIMEOUT_S
        )
        await query.ping()
        assert password not in repr(query)
        server.kill()
        for s in (good, query):
            with pytest.raises(StoreUnavailable) as err:
                await s.get("x")
            assert password not in str(err.value)
        for s in (good, wrong, query):
            await s.close()
    with pytest.raises(ValueError) as bad:
        RedisStore(f"http://:{password}@127.0.0.1:1/0")
    assert password not in str(bad.value)


async def test_redis_tls(redis_server: RedisServer, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    with RedisServer(tls=files, password="tls-pw") as server:
        assert server.url.startswith("rediss://")
        store = RedisStore(server.url, timeout_s=TIMEOUT_S)
        rec = record()
        await store.create(rec)
        assert await store.get(rec.sid) == rec
        await store.close()
        # Without our CA the certificate is refused: TLS is really verified.
        untrusted = RedisStore(server.url.partition("?")[0], timeout_s=TIMEOUT_S)
        with pytest.raises(StoreUnavailable):
            await untrusted.ping()
        await untrusted.close()
        plain = RedisStore(server.url.replace("rediss://", "redis://"), timeout_s=TIMEOUT_S)
        with pytest.raises(StoreUnavailable):
            await plain.ping()
        await plain.close()


def test_open_store(tmp_path: Path) -> None:
    embedded = open_store("file", None, tmp_path)
    assert isinstance(embedded, SqliteStore) and embedded.path == tmp_path / "sessions.db"
    memory = open_store("memory", None, tmp_path, timeout_s=2)
    assert isinstance(memory, SqliteStore) and memory.timeout_s == 2
    custom = open_store("file", str(tmp_path / "x" / "s.db"), tmp_path)
    assert isinstance(custom, SqliteStore) and custom.path == tmp_path / "x" / "s.db"
    redis = open_store("redis", "rediss://:pw@redis.internal:6380/2", tmp_path)
    assert isinstance(redis, RedisStore) and "pw" not in repr(redis)
    with pytest.raises(ValueError, match="connection string"):
        open_store("redis", None, tmp_path)
    with pytest.raises(ValueError, match="expected"):
        open_store("postgres", "postgres://x", tmp_path)


async def test_sqlite_store_object_used_after_fork(sqlite_backend: Backend) -> None:
    store = sqlite_backend.make(timeout_s=2)
    rec = record()
    await store.create(rec)  # the parent's thread and connection now exist
    pid = os.fork()
    if pid == 0:  # the child: a new loop, the inherited store object
        code = 1
        try:
            got = asyncio.run(store.get(rec.sid))
            code = 0 if got == rec else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert await store.get(rec.sid) == rec, "the parent's connection is untouched"
