"""The hand-off: the authenticate host gives a route host the session, in a sealed, short-lived,
single-use token that only the browser holding the route host's login nonce can use."""

import html
import secrets
import time

from authgate.authn.errors import InvalidToken
from authgate.authn.programmatic import redirect_with_token
from authgate.authn.tokens import HandOff, SignInRequest
from authgate.authz import pages
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.redirects import safe_redirect
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import ROUTE_CALLBACK_PATH
from authgate.session import Session, same_text
from authgate.session.cookies import clear_cookie, first_cookie, set_cookie
from authgate.session.reference import SessionRef


def hand_off(state: AuthzState, request: SignInRequest, session: Session) -> Respond:
    if request.programmatic:
        return redirect_with_token(state, request, session)
    route = state.cfg.hosts[request.route_netloc]
    sealed = state.handoff_box.seal(
        HandOff(
            session=SessionRef(session.sid, session.issued_at, session.expires_at).to_wire(),
            target=request.target,
            nonce=request.nonce,
            token_id=secrets.token_urlsafe(16),
        ),
        bound_to=route.netloc,
    )
    return pages.redirect(f"{route.origin}{ROUTE_CALLBACK_PATH}?handoff={sealed}")


def _bad_handoff(state: AuthzState, route: RouteRuntime) -> Respond:
    return pages.html_page(
        400,
        "Sign-in link expired",
        f"<p>This sign-in link is invalid, expired or was already used.</p>"
        f'<p><a href="{html.escape(route.origin)}/">Sign in again</a></p>',
        cookies=(clear_cookie(state.login_cookie, secure=state.secure),),
    )


async def _redeem(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> tuple[Session, str]:
    opened = state.handoff_box.open(ctx.param("handoff"), bound_to=route.netloc)
    handoff = opened.value
    # Spent on its first presentation, whatever follows: a hand-off shown by the wrong browser
    # (an attacker's sign-in link opened by a victim) is dead for everyone. Across workers and
    # replicas: the session store remembers it.
    token = f"handoff:{handoff.token_id}"
    if not await state.sessions.store.first_use(token, opened.expires_at):
        raise InvalidToken("already used")
    nonce = first_cookie(ctx.cookies, state.login_cookie)
    if not nonce or not same_text(handoff.nonce, nonce):
        raise InvalidToken("another browser's hand-off")
    ref = SessionRef.from_wire(handoff.session)
    session = (
        await state.sessions.load(ref) if ref is not None and ref.valid(time.time()) else None
    )
    target = safe_redirect(handoff.target, route.origin)
    if session is None or target is None:
        raise InvalidToken("no session to hand off")
    return session, target


async def accept_hand_off(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> Respond:
    """The route host's callback: set this host's session cookie and go to the first URL."""
    try:
        session, target = await _redeem(state, route, ctx)
    except InvalidToken:
        return _bad_handoff(state, route)
    cookie = set_cookie(
        state.session_cookie,
        state.sessions.cookie_value(session, route.cookie_binding),
        max_age=max(0, session.expires_at - int(time.time())),
        secure=state.secure,
        domain=route.cookie_domain,
        **state.session_cookie_flags,
    )
    cookies = (cookie, clear_cookie(state.login_cookie, secure=state.secure))
    if state.session_cookie_flags["same_site"].lower() == "strict":
        return pages.continue_to(target, cookies)
    return pages.redirect(target, cookies)
