"""The signed-in session a request carries, read from its session cookie(s)."""

from authgate.authz.context import RequestContext
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.session import Session

# A client may send the session cookie several times; a few tries, then no session.
MAX_SESSION_CANDIDATES = 4


def session_from_cookies(state: AuthzState, ctx: RequestContext, netloc: str) -> Session | None:
    """The first session cookie (in any Cookie header, any spelling) that opens for `netloc`."""
    for value in ctx.cookie_values(state.session_cookie)[:MAX_SESSION_CANDIDATES]:
        session = state.sessions.decode(value, netloc)
        if session is not None:
            return session
    return None


def current_session(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Session | None:
    return session_from_cookies(state, ctx, route.netloc)
