"""Signing in: the route host sends the browser to the authenticate host with a sealed request;
there the user logs in at the IdP (or already is), and the session is handed to the route host.

Route host: `start_login` (302 to the authenticate host, the login nonce cookie set).
Authenticate host: `sign_in` (hand off, or begin the IdP login) and `oauth_callback`.
"""

import secrets

import structlog

from authgate.authn.errors import (
    IdpRefused,
    IdpUnavailable,
    IdTokenRejected,
    InvalidToken,
    IssuerMismatch,
    LoginError,
)
from authgate.authn.handoff import hand_off
from authgate.authn.programmatic import programmatic_target
from authgate.authn.tokens import LoginState, SignInRequest
from authgate.authz import pages
from authgate.authz.context import RequestContext
from authgate.authz.cookie_session import session_from_cookies
from authgate.authz.decision import Respond
from authgate.authz.redirects import safe_redirect
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import SIGN_IN_PATH
from authgate.oidc import GrantRevoked, IdpError, TokenRejected
from authgate.ops.metrics import LOGINS
from authgate.session import Session, same_text
from authgate.session.cookies import clear_cookie, first_cookie, set_cookie

log = structlog.get_logger("authgate.authn")


def _nonce_of(state: AuthzState, ctx: RequestContext) -> str:
    """This browser's login nonce: kept while it is well formed, so parallel tabs agree."""
    nonce = first_cookie(ctx.cookies, state.login_cookie)
    if not nonce or len(nonce) != 32 or not nonce.isascii() or not nonce.isalnum():
        nonce = secrets.token_hex(16)
    return nonce


def start_login(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    """Send the browser to the authenticate service, bound to this browser by a nonce cookie."""
    nonce = _nonce_of(state, ctx)
    request = SignInRequest(target=route.origin + ctx.path, nonce=nonce, route_netloc=route.netloc)
    sealed = state.sign_in_box.seal(request, bound_to=state.cfg.authenticate_netloc)
    cookie = set_cookie(
        state.login_cookie, nonce, max_age=state.sign_in_box.ttl_s, secure=state.secure
    )
    location = f"{state.cfg.authenticate_origin}{SIGN_IN_PATH}?req={sealed}"
    return pages.redirect(location, cookies=(cookie,))


def open_sign_in(state: AuthzState, sealed: str | None) -> SignInRequest:
    """A sign-in request we sealed, still fresh, for a route host, returning to that host."""
    request = state.sign_in_box.open(sealed, bound_to=state.cfg.authenticate_netloc).value
    route = state.cfg.hosts.get(request.route_netloc)
    if route is None:
        raise InvalidToken("not a route host")
    if request.programmatic:  # a CLI's loopback listener, checked again against the config
        target = programmatic_target(state, request.target)
    else:
        target = safe_redirect(request.target, route.origin)
    if target is None:
        raise InvalidToken("the return address leaves the route")
    return SignInRequest(target, request.nonce, route.netloc, request.programmatic)


async def authn_session(state: AuthzState, ctx: RequestContext) -> Session | None:
    return await session_from_cookies(state, ctx, state.cfg.authenticate_netloc)


async def sign_in(state: AuthzState, ctx: RequestContext) -> Respond:
    try:
        request = open_sign_in(state, ctx.param("req"))
    except InvalidToken:
        stale = state.sign_in_box.open_expired(ctx.param("req"), state.cfg.authenticate_netloc)
        raise InvalidToken(
            "This sign-in link is invalid or expired. Open the application again to sign in.",
            retry=_start_over(state, stale),
        ) from None
    session = await authn_session(state, ctx)
    if session is not None:
        return hand_off(state, request, session)
    try:
        login = await state.oidc.begin_login()
    except IdpError as exc:
        raise IdpUnavailable(f"The identity provider is unavailable: {exc}") from None
    sealed = state.login_box.seal(
        LoginState(
            state=login.state,
            nonce=login.nonce,
            code_verifier=login.code_verifier,
            request=request,
        ),
        bound_to=state.cfg.authenticate_netloc,
    )
    cookie = set_cookie(
        state.authn_login_cookie, sealed, max_age=state.login_box.ttl_s, secure=state.secure
    )
    return pages.redirect(login.url, cookies=(cookie,))


async def _login_state(state: AuthzState, ctx: RequestContext) -> LoginState:
    raw = first_cookie(ctx.cookies, state.authn_login_cookie)
    try:
        opened = state.login_box.open(raw, bound_to=state.cfg.authenticate_netloc)
        login: LoginState | None = opened.value
    except InvalidToken:
        login = None
    got_state = ctx.param("state") or ""
    if login is None or not got_state or not same_text(login.state, got_state):
        stale = state.login_box.open_expired(raw, bound_to=state.cfg.authenticate_netloc)
        raise InvalidToken(
            "This sign-in attempt is unknown or expired (state mismatch). "
            "Open the application again.",
            retry=_start_over(state, stale.request if stale else None),
        )
    # One use per login, across workers and replicas: a replayed callback is refused.
    if not await state.sessions.store.first_use(f"oauth-state:{login.state}", opened.expires_at):
        raise InvalidToken("This sign-in attempt was already used. Open the application again.")
    return login


def _start_over(state: AuthzState, request: SignInRequest | None) -> str:
    """The first URL of a sign-in we sealed (even an expired one), if it is on its route."""
    route = state.cfg.hosts.get(request.route_netloc) if request else None
    if request is None or route is None:
        return ""
    return safe_redirect(request.target, route.origin) or ""


async def oauth_callback(state: AuthzState, ctx: RequestContext) -> Respond:
    """The IdP's answer: code -> ID token -> session here, then the hand-off. The login-state
    cookie goes once the login succeeded; after a failure (the IdP down) the same callback may
    be tried again."""
    answer = await _complete_login(state, ctx)
    clear_login = clear_cookie(state.authn_login_cookie, secure=state.secure)
    return Respond(answer.status, answer.headers, answer.body, (*answer.cookies, clear_login))


def error_page(ctx: RequestContext, error: LoginError) -> Respond:
    """A login error as a page (or JSON), with a way to start over."""
    links = (("Try again", error.retry),) if error.retry else ()
    return pages.error(ctx, error.status, error.title, str(error), error.code, links=links)


async def _complete_login(state: AuthzState, ctx: RequestContext) -> Respond:
    try:
        login = await _login_state(state, ctx)
    except LoginError:
        LOGINS.labels("failure").inc()  # ops metrics
        raise
    try:
        answer = await _exchange(state, ctx, login)
    except LoginError as error:
        LOGINS.labels("failure").inc()
        error.retry = error.retry or login.request.target
        raise
    LOGINS.labels("success").inc()
    return answer


async def _check_response_issuer(state: AuthzState, ctx: RequestContext) -> None:
    """RFC 9207 before the code goes anywhere: a response naming another issuer (an IdP
    mix-up) is refused and logged."""
    try:
        if len(ctx.query.get("iss") or ()) > 1:
            raise TokenRejected("the authorization response has several `iss`")
        await state.oidc.check_response_issuer(ctx.param("iss"))
    except IdpError as exc:
        raise IdpUnavailable(f"The identity provider is unavailable: {exc}") from None
    except TokenRejected as exc:
        log.warning("idp_response_issuer_rejected", reason=str(exc), host=ctx.host)
        raise IssuerMismatch(f"The sign-in answer was refused: {exc}.") from None


async def _exchange(state: AuthzState, ctx: RequestContext, login: LoginState) -> Respond:
    if ctx.param("error"):
        desc = ctx.param("error_description") or ctx.param("error") or ""
        raise IdpRefused(f"The identity provider refused the sign-in: {desc}")
    code = ctx.param("code")
    if not code:
        raise LoginError("The identity provider sent no authorization code.")
    await _check_response_issuer(state, ctx)
    try:
        result = await state.oidc.complete_login(code, login.code_verifier, login.nonce)
    except IdpError as exc:
        raise IdpUnavailable(f"The identity provider is unavailable: {exc}") from None
    except (TokenRejected, GrantRevoked) as exc:
        raise IdTokenRejected(f"The identity provider's answer was rejected: {exc}") from None
    session = await state.sessions.start(result.claims, result.tokens, state.session_lifetime_s)
    authn_cookie = set_cookie(
        state.session_cookie,
        state.sessions.cookie_value(session, state.cfg.authenticate_netloc),
        max_age=state.session_lifetime_s,
        secure=state.secure,
        **state.session_cookie_flags,
    )
    answer = hand_off(state, login.request, session)
    return Respond(status=answer.status, headers=answer.headers, cookies=(authn_cookie,))
