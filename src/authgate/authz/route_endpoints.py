"""Endpoints authgate serves on every route host: /.pomerium/* and /.well-known/pomerium/*."""

import html
import json
import time
from urllib.parse import quote

from authgate.authz import pages
from authgate.authz.access import current_session, login_redirect
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.redirects import safe_redirect
from authgate.authz.state import SIGNOUT_TTL_S, AuthzState
from authgate.config import RouteRuntime
from authgate.contract import JWKS_PATH, Endpoint, route_host_endpoint
from authgate.session import Session, same_text
from authgate.session.cookies import clear_cookie, first_cookie, set_cookie

CROSS_SITE = frozenset({"cross-site", "same-site"})


def jwks(state: AuthzState) -> Respond:
    return Respond(
        status=200,
        headers=(
            ("content-type", "application/json"),
            ("cache-control", "public, max-age=300"),
            ("access-control-allow-origin", "*"),
        ),
        body=state.signer.jwks_json.decode(),
    )


def well_known(state: AuthzState, origin: str) -> Respond:
    doc = {
        "issuer": state.cfg.assertion_issuer,
        "jwks_uri": f"{origin}{JWKS_PATH}",
        "authentication_callback_endpoint": f"{state.cfg.authenticate_origin}/oauth2/callback",
        "frontchannel_logout_uri": f"{origin}/.pomerium/sign_out",
    }
    return Respond(
        status=200,
        headers=(("content-type", "application/json"), ("cache-control", "public, max-age=300")),
        body=json.dumps(doc),
    )


def _bad_handoff(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    return pages.html_page(
        400,
        "Sign-in link expired",
        f"<p>This sign-in link is invalid, expired or was already used.</p>"
        f'<p><a href="{html.escape(route.origin)}/">Sign in again</a></p>',
        cookies=(clear_cookie(state.login_cookie, secure=state.secure),),
    )


def callback(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    """Accept a hand-off from the authenticate service and set this host's session cookie."""
    token = ctx.param("handoff")
    data = state.handoff_box.open(token or "", bound_to=route.netloc)
    now = time.time()
    if (
        data is None
        or not isinstance(data.get("exp"), int)
        or data["exp"] < now
        or not isinstance(data.get("jti"), str)
        # Spent on its first presentation, whatever follows: a hand-off shown by the wrong
        # browser (an attacker's sign-in link opened by a victim) is dead for everyone.
        or not state.seen_handoffs.first_use(data["jti"], data["exp"])
    ):
        return _bad_handoff(state, route, ctx)
    nonce = first_cookie(ctx.cookies, state.login_cookie)
    if (
        not nonce
        or not same_text(str(data.get("n", "")), nonce)
        or not isinstance(data.get("s"), dict)
    ):
        return _bad_handoff(state, route, ctx)
    session = Session.from_payload(data["s"])
    target = safe_redirect(str(data.get("t", "")), route.origin)
    if session is None or not session.valid(now) or target is None:
        return _bad_handoff(state, route, ctx)
    cookie = set_cookie(
        state.session_cookie,
        state.sessions.encode(session, route.netloc),
        max_age=max(0, session.expires_at - int(now)),
        secure=state.secure,
    )
    return pages.redirect(
        target, cookies=(cookie, clear_cookie(state.login_cookie, secure=state.secure))
    )


def _csrf_token(state: AuthzState, route: RouteRuntime, sid: str) -> str:
    return state.csrf_box.seal({"sid": sid, "exp": int(time.time()) + 3600}, route.netloc)


def _csrf_ok(state: AuthzState, route: RouteRuntime, ctx: RequestContext, sid: str) -> bool:
    if ctx.headers.get("sec-fetch-site", "same-origin") in CROSS_SITE:
        return False
    origin = ctx.headers.get("origin")
    if origin is not None and origin.lower() != route.origin:
        return False
    data = state.csrf_box.open(ctx.param("csrf") or "", route.netloc)
    return (
        data is not None
        and data.get("sid") == sid
        and isinstance(data.get("exp"), int)
        and data["exp"] >= time.time()
    )


async def sign_out(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    """GET shows a confirmation form; only a same-origin POST with its token signs out."""
    session = current_session(state, route, ctx)
    sid = session.sid if session else "-"
    rd = safe_redirect(ctx.param("pomerium_redirect_uri"), route.origin) or f"{route.origin}/"
    if ctx.method != "POST":
        action = (
            f"/.pomerium/sign_out?csrf={_csrf_token(state, route, sid)}"
            f"&pomerium_redirect_uri={quote(rd, safe='')}"
        )
        who = html.escape(session.identity.email) if session else "you"
        # The POST redirects to the authenticate host, which redirects to the IdP's logout.
        idp = await state.oidc.end_session_origin()
        return pages.html_page(
            200,
            "Sign out",
            (
                f"<p>Sign {who} out of {html.escape(route.origin)}?</p>"
                f'<form method="post" action="{html.escape(action)}">'
                '<button type="submit">Sign out</button></form>'
            ),
            form_targets=(state.cfg.authenticate_origin, *((idp,) if idp else ())),
        )
    if not _csrf_ok(state, route, ctx, sid):
        return pages.error(
            ctx,
            403,
            "Sign-out refused",
            "The sign-out request did not come from this site.",
            "csrf",
        )
    # `sid` lets the authenticate host tell this browser's sign-out from another's link.
    request = state.signout_box.seal(
        {"rd": rd, "sid": sid, "exp": int(time.time()) + SIGNOUT_TTL_S},
        bound_to=state.cfg.authenticate_netloc,
    )
    return pages.redirect(
        f"{state.cfg.authenticate_origin}/.pomerium/sign_out?req={request}",
        cookies=(clear_cookie(state.session_cookie, secure=state.secure),),
    )


def user_info(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    session = current_session(state, route, ctx)
    if session is None:
        return login_redirect(state, route, ctx)
    ident = session.identity
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in (
            ("email", ident.email),
            ("user", ident.user),
            ("name", ident.name),
            ("groups", ", ".join(ident.groups)),
        )
    )
    return pages.html_page(
        200,
        "Signed in",
        (f'<table>{rows}</table><p><a href="/.pomerium/sign_out">Sign out</a></p>'),
    )


async def handle_internal(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> Respond:
    match route_host_endpoint(ctx.path_only):
        case Endpoint.JWKS:
            return jwks(state)
        case Endpoint.WELL_KNOWN:
            return well_known(state, route.origin)
        case Endpoint.ROUTE_CALLBACK:
            return callback(state, route, ctx)
        case Endpoint.ROUTE_SIGN_OUT:
            return await sign_out(state, route, ctx)
        case Endpoint.USER_INFO:
            return user_info(state, route, ctx)
        case _:
            return pages.error(ctx, 404, "Not found", "No such authgate endpoint.", "not_found")
