"""The signed-in session a request carries: its session cookie(s), then the session store."""

from authgate.authz.context import RequestContext
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.session import Session

# A client may send the session cookie several times; a few tries, then no session.
MAX_SESSION_CANDIDATES = 4


async def session_from_cookies(
    state: AuthzState, ctx: RequestContext, netloc: str
) -> Session | None:
    """The first session cookie (in any Cookie header, any spelling) that opens for `netloc`
    and names a live session. Raises StoreUnavailable when the store must answer and can't."""
    for value in ctx.cookie_values(state.session_cookie)[:MAX_SESSION_CANDIDATES]:
        ref = state.sessions.reference(value, netloc)
        if ref is None:
            continue
        session = await state.sessions.load(ref)
        if session is not None:
            return session
    return None


async def current_session(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> Session | None:
    return await session_from_cookies(state, ctx, route.cookie_binding)
