"""The authenticate service host: sign-in, the OAuth callback, sign-out.

Flow: a route host sends the browser to /.pomerium/sign_in with a sealed request; we log the user
in at the IdP (or reuse this host's session), then hand the session to the route host's
/.pomerium/callback in a sealed, short-lived, single-use token bound to the browser's nonce.
"""

import html
import secrets
import time

from authgate.authz import pages
from authgate.authz.access import session_from_cookies
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.redirects import safe_redirect
from authgate.authz.route_endpoints import jwks, well_known
from authgate.authz.state import HANDOFF_TTL_S, LOGIN_TTL_S, SIGNOUT_TTL_S, AuthzState
from authgate.contract import Endpoint, authenticate_host_endpoint
from authgate.oidc import IdpError, TokenRejected
from authgate.policy import PolicyInput
from authgate.routing import select
from authgate.session import Session, same_text
from authgate.session.cookies import clear_cookie, first_cookie, set_cookie


def _login_state_cookie(state: AuthzState) -> str:
    return state.authn_login_cookie


def _authn_session(state: AuthzState, ctx: RequestContext) -> Session | None:
    return session_from_cookies(state, ctx, state.cfg.authenticate_netloc)


def _open_sign_in(state: AuthzState, token: str | None) -> dict[str, str] | None:
    """A sign-in request is valid only if we sealed it, it is fresh, and targets a route host."""
    data = state.sign_in_box.open(token or "", bound_to=state.cfg.authenticate_netloc)
    if data is None or not isinstance(data.get("exp"), int) or data["exp"] < time.time():
        return None
    route = state.cfg.hosts.get(str(data.get("h", "")))
    nonce = data.get("n")
    if route is None or not isinstance(nonce, str):
        return None
    target = safe_redirect(str(data.get("t", "")), route.origin)
    if target is None:
        return None
    return {"t": target, "n": nonce, "h": route.netloc}


def _hand_off(state: AuthzState, request: dict[str, str], session: Session) -> Respond:
    route = state.cfg.hosts[request["h"]]
    token = state.handoff_box.seal(
        {
            "s": session.to_payload(),
            "t": request["t"],
            "n": request["n"],
            "exp": int(time.time()) + HANDOFF_TTL_S,
            "jti": secrets.token_urlsafe(16),
        },
        bound_to=route.netloc,
    )
    return pages.redirect(f"{route.origin}/.pomerium/callback?handoff={token}")


def _login_error(ctx: RequestContext, status: int, detail: str) -> Respond:
    return pages.error(ctx, status, "Sign-in failed", detail, "login_failed")


async def sign_in(state: AuthzState, ctx: RequestContext) -> Respond:
    request = _open_sign_in(state, ctx.param("req"))
    if request is None:
        return _login_error(
            ctx,
            400,
            "This sign-in link is invalid or expired. Open the application again to sign in.",
        )
    session = _authn_session(state, ctx)
    if session is not None:
        return _hand_off(state, request, session)
    try:
        login = await state.oidc.begin_login()
    except IdpError as exc:
        return _login_error(ctx, 502, f"The identity provider is unavailable: {exc}")
    cookie_value = state.login_box.seal(
        {
            "state": login.state,
            "nonce": login.nonce,
            "pkce": login.code_verifier,
            "req": request,
            "exp": int(time.time()) + LOGIN_TTL_S,
        },
        bound_to=state.cfg.authenticate_netloc,
    )
    cookie = set_cookie(
        _login_state_cookie(state), cookie_value, max_age=LOGIN_TTL_S, secure=state.secure
    )
    return pages.redirect(login.url, cookies=(cookie,))


async def oauth_callback(state: AuthzState, ctx: RequestContext) -> Respond:
    clear_login = clear_cookie(_login_state_cookie(state), secure=state.secure)
    raw = first_cookie(ctx.cookies, _login_state_cookie(state))
    login = state.login_box.open(raw or "", bound_to=state.cfg.authenticate_netloc)
    got_state = ctx.param("state") or ""
    if (
        login is None
        or not isinstance(login.get("exp"), int)
        or login["exp"] < time.time()
        or not got_state
        or not same_text(str(login.get("state", "")), got_state)
        or not isinstance(login.get("req"), dict)
    ):
        return _login_error(
            ctx,
            400,
            "This sign-in attempt is unknown or expired "
            "(state mismatch). Open the application again.",
        )
    if ctx.param("error"):
        desc = ctx.param("error_description") or ctx.param("error") or ""
        return _login_error(ctx, 403, f"The identity provider refused the sign-in: {desc}")
    code = ctx.param("code")
    if not code:
        return _login_error(ctx, 400, "The identity provider sent no authorization code.")
    try:
        claims = await state.oidc.complete_login(code, str(login["pkce"]), str(login["nonce"]))
    except IdpError as exc:
        return _login_error(ctx, 502, f"The identity provider is unavailable: {exc}")
    except TokenRejected as exc:
        return _login_error(ctx, 401, f"The identity provider's answer was rejected: {exc}")
    session = Session.from_claims(claims, state.session_lifetime_s)
    authn_cookie = set_cookie(
        state.session_cookie,
        state.sessions.encode(session, state.cfg.authenticate_netloc),
        max_age=state.session_lifetime_s,
        secure=state.secure,
    )
    answer = _hand_off(state, login["req"], session)
    return Respond(
        status=answer.status, headers=answer.headers, cookies=(authn_cookie, clear_login)
    )


def _same_origin(ctx: RequestContext, origin: str) -> bool:
    """A request a page of `origin` made: Fetch metadata and Origin agree, and one is present."""
    site = ctx.headers.get("sec-fetch-site")
    sent_origin = ctx.headers.get("origin")
    if site is None and sent_origin is None:
        return False
    return (site is None or site == "same-origin") and (
        sent_origin is None or sent_origin.lower() == origin
    )


async def _confirm_sign_out(state: AuthzState, request: str, rd: str) -> Respond:
    action = f"/.pomerium/sign_out?req={request}"
    # The POST redirects to the IdP's logout, or straight back to the route without one.
    idp = await state.oidc.end_session_origin()
    route = state.cfg.route_for_origin(rd) if rd else None
    return pages.html_page(
        200,
        "Sign out",
        "<p>Sign out of every application behind this sign-in?</p>"
        f'<form method="post" action="{html.escape(action)}">'
        '<button type="submit">Sign out</button></form>',
        form_targets=tuple(origin for origin in (idp, route and route.origin) if origin),
    )


def _sign_out_request(state: AuthzState, rd: str, sid: str) -> str:
    return state.signout_box.seal(
        {"rd": rd, "sid": sid, "exp": int(time.time()) + SIGNOUT_TTL_S},
        bound_to=state.cfg.authenticate_netloc,
    )


async def _sign_out_here(state: AuthzState, ctx: RequestContext) -> Respond:
    """Sign-out opened on the authenticate host itself: ask, then sign this browser out."""
    session = _authn_session(state, ctx)
    if session is None:
        return pages.html_page(200, "Signed out", "<p>You are signed out.</p>")
    return await _confirm_sign_out(state, _sign_out_request(state, "", session.sid), "")


async def sign_out(state: AuthzState, ctx: RequestContext) -> Respond:
    """End the sign-in here, then at the IdP.

    The request is sealed by a route host's sign-out (a same-origin form POST there) and names
    the session it signed out. Anyone can get such a request from their own browser, so it ends
    this browser's sign-in only if it names this browser's session; otherwise (another browser's
    link, or an old one) we ask first, and only the POST of our own page goes on.
    """
    request = ctx.param("req") or ""
    if not request and ctx.method != "POST":
        return await _sign_out_here(state, ctx)
    data = state.signout_box.open(request, bound_to=state.cfg.authenticate_netloc)
    if data is None or not isinstance(data.get("exp"), int) or data["exp"] < time.time():
        return pages.error(
            ctx, 400, "Sign-out link expired", "Sign out again from the application.", "bad_request"
        )
    if ctx.method == "POST":
        if not _same_origin(ctx, state.cfg.authenticate_origin):
            return pages.error(
                ctx,
                403,
                "Sign-out refused",
                "The sign-out request did not come from this site.",
                "csrf",
            )
    else:
        session = _authn_session(state, ctx)
        if session is not None and not same_text(str(data.get("sid", "")), session.sid):
            return await _confirm_sign_out(state, request, str(data.get("rd", "")))
    rd = str(data.get("rd", ""))
    clear = clear_cookie(state.session_cookie, secure=state.secure)
    back = state.signout_box.seal(
        {"rd": rd, "exp": int(time.time()) + SIGNOUT_TTL_S},
        bound_to=f"{state.cfg.authenticate_netloc}/signed_out",
    )
    idp_url = await state.oidc.end_session_url(
        f"{state.cfg.authenticate_origin}/.pomerium/signed_out", back
    )
    return pages.redirect(idp_url or rd, cookies=(clear,))


def signed_out(state: AuthzState, ctx: RequestContext) -> Respond:
    data = state.signout_box.open(
        ctx.param("state") or "", bound_to=f"{state.cfg.authenticate_netloc}/signed_out"
    )
    rd = str(data.get("rd", "")) if data else ""
    route = state.cfg.route_for_origin(rd) if rd else None
    target = safe_redirect(rd, route.origin) if route else None
    if target:
        return pages.redirect(target)
    return pages.html_page(200, "Signed out", "<p>You are signed out.</p>")


def home(state: AuthzState, ctx: RequestContext) -> Respond:
    """Strangers learn nothing here; a signed-in user sees the applications they may open."""
    session = _authn_session(state, ctx)
    if session is None:
        return pages.html_page(
            200, "authgate", "<p>Open an application to sign in.</p>"
        )
    links = "".join(
        f'<li><a href="{html.escape(origin)}/">{html.escape(origin)}</a></li>'
        for origin in reachable_origins(state, ctx, session)
    )
    listing = f"<p>Applications:</p><ul>{links}</ul>" if links else ""
    who = html.escape(session.identity.email or session.identity.user)
    return pages.html_page(200, "authgate", f"<p>Signed in as {who}.</p>{listing}")


def reachable_origins(state: AuthzState, ctx: RequestContext, session: Session) -> list[str]:
    """Route hosts whose front page (`/`) this user's identity may open."""
    origins = []
    for rt in state.cfg.hosts.values():
        front = select(state.cfg, rt.netloc, "/").route
        inp = PolicyInput(
            identity=session.identity,
            method="GET",
            path="/",
            source_ip=ctx.source_ip,
            now=state.clock(),
            headers={},
        )
        if front is not None and front.policy.allowed(inp):
            origins.append(rt.origin)
    return origins


async def handle_authenticate(state: AuthzState, ctx: RequestContext) -> Respond:
    match authenticate_host_endpoint(ctx.path_only):
        case Endpoint.OAUTH_CALLBACK:
            return await oauth_callback(state, ctx)
        case Endpoint.SIGN_IN:
            return await sign_in(state, ctx)
        case Endpoint.SIGN_OUT:
            return await sign_out(state, ctx)
        case Endpoint.SIGNED_OUT:
            return signed_out(state, ctx)
        case Endpoint.JWKS:
            return jwks(state)
        case Endpoint.WELL_KNOWN:
            return well_known(state, state.cfg.authenticate_origin)
        case Endpoint.HOME:
            return home(state, ctx)
        case _:
            return pages.error(ctx, 404, "Not found", "No such authgate endpoint.", "not_found")
