"""Sessions for tests that call authz in-process: real records in a real (SQLite) store."""

from __future__ import annotations

import asyncio
from typing import Any

from authgate.authz.state import AuthzState
from authgate.session import Session
from authgate.session.record import IdpTokens


async def mint(
    state: AuthzState,
    host: str,
    claims: dict[str, Any],
    lifetime_s: int = 3600,
    now: float | None = None,
) -> tuple[Session, str]:
    """A session in the state's store, and its cookie value for `host`."""
    session = await state.sessions.start(claims, IdpTokens(), lifetime_s, now=now)
    return session, state.sessions.cookie_value(session, host)


def mint_sync(
    state: AuthzState,
    host: str,
    claims: dict[str, Any],
    lifetime_s: int = 3600,
    now: float | None = None,
) -> tuple[Session, str]:
    """`mint` from synchronous code (no event loop running)."""
    return asyncio.run(mint(state, host, claims, lifetime_s, now))


async def fresh(state: AuthzState) -> None:
    """Poll the store's event feed once, as a worker's feed task does: while it is fresh (1 s),
    the worker may use its caches and kept answers."""
    await state.sessions.poll()


def previous_format(session: Session) -> dict[str, Any]:
    """What the releases before the session store sealed into the cookie ("authgate session
    v1"): the whole session. Only for tests showing such cookies are no session now."""
    ident = session.identity
    return {
        "sid": session.sid,
        "iat": session.issued_at,
        "exp": session.expires_at,
        "claims": ident.claims,
        "user": ident.user,
        "email": ident.email,
        "name": ident.name,
        "groups": list(ident.groups),
    }
