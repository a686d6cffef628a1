"""Signing out: on a route host (a confirmed, same-origin POST), then on the authenticate host,
then at the IdP, and back to the route.

Browsers apply a page's CSP `form-action` to every redirect after a form's submission, so each
sign-out page names the origins its POST goes through.
"""

import html
from urllib.parse import quote, urlsplit

from authgate.authn.errors import ExpiredToken, InvalidToken, SignOutRefused
from authgate.authn.sign_in import authn_session
from authgate.authn.tokens import CsrfToken, SignedOutState, SignOutRequest
from authgate.authz import fast_lane_pass, pages
from authgate.authz.context import RequestContext
from authgate.authz.cookie_session import current_session
from authgate.authz.decision import Respond
from authgate.authz.redirects import safe_redirect
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import SIGN_OUT_PATH, SIGNED_OUT_PATH
from authgate.session import same_text
from authgate.session.cookies import clear_cookie

CROSS_SITE = frozenset({"cross-site", "same-site"})
NOT_FROM_HERE = "The sign-out request did not come from this site."


def _landing(state: AuthzState) -> tuple[str, ...]:
    """signout_redirect_url's origin: the forms' CSP must allow the redirect that ends there."""
    url = state.cfg.settings.signout_redirect_url
    if not url:
        return ()
    parts = urlsplit(url)
    return (f"{parts.scheme}://{parts.netloc}",)


def _signed_out_page() -> Respond:
    return pages.html_page(200, "Signed out", "<p>You are signed out.</p>")


# ---------------------------------------------------------------------------- route host


def _csrf_ok(state: AuthzState, route: RouteRuntime, ctx: RequestContext, sid: str) -> bool:
    if ctx.headers.get("sec-fetch-site", "same-origin") in CROSS_SITE:
        return False
    origin = ctx.headers.get("origin")
    if origin is not None and origin.lower() != route.origin:
        return False
    try:
        token = state.csrf_box.open(ctx.param("csrf"), route.netloc).value
    except InvalidToken:
        return False
    return same_text(token.session_id, sid)


async def route_sign_out(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    """GET shows a confirmation form; only a same-origin POST with its token signs out."""
    session = await current_session(state, route, ctx)
    sid = session.sid if session else "-"
    # Pomerium: signout_redirect_url, when set, is where every sign-out lands.
    rd = (
        state.cfg.settings.signout_redirect_url
        or safe_redirect(ctx.param("pomerium_redirect_uri"), route.origin)
        or f"{route.origin}/"
    )
    if ctx.method != "POST":
        csrf = state.csrf_box.seal(CsrfToken(session_id=sid), route.netloc)
        action = f"{SIGN_OUT_PATH}?csrf={csrf}&pomerium_redirect_uri={quote(rd, safe='')}"
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
            form_targets=(
                state.cfg.authenticate_origin, *((idp,) if idp else ()), *_landing(state)
            ),
        )
    if not _csrf_ok(state, route, ctx, sid):
        raise SignOutRefused(NOT_FROM_HERE)
    if session is not None:
        # Ends the session everywhere: every host's cookie, every copy, every worker.
        await state.sessions.revoke(session.sid)
    # `sid` lets the authenticate host tell this browser's sign-out from another's link.
    request = state.signout_box.seal(
        SignOutRequest(redirect=rd, session_id=sid), bound_to=state.cfg.authenticate_netloc
    )
    return pages.redirect(
        f"{state.cfg.authenticate_origin}{SIGN_OUT_PATH}?req={request}",
        cookies=(
            clear_cookie(state.session_cookie, secure=state.secure, domain=route.cookie_domain),
            *fast_lane_pass.cleared_on_host(state, route),
        ),
    )


# ---------------------------------------------------------------------------- authenticate host


def _same_origin(ctx: RequestContext, origin: str) -> bool:
    """A request a page of `origin` made: Fetch metadata and Origin agree, and one is present."""
    site = ctx.headers.get("sec-fetch-site")
    sent_origin = ctx.headers.get("origin")
    if site is None and sent_origin is None:
        return False
    return (site is None or site == "same-origin") and (
        sent_origin is None or sent_origin.lower() == origin
    )


async def _confirm(state: AuthzState, sealed_request: str, rd: str) -> Respond:
    action = f"{SIGN_OUT_PATH}?req={sealed_request}"
    # The POST redirects to the IdP's logout, or straight back to the route without one.
    idp = await state.oidc.end_session_origin()
    route = state.cfg.route_for_origin(rd) if rd else None
    return pages.html_page(
        200,
        "Sign out",
        "<p>Sign out of every application behind this sign-in?</p>"
        f'<form method="post" action="{html.escape(action)}">'
        '<button type="submit">Sign out</button></form>',
        form_targets=tuple(
            origin for origin in (idp, route and route.origin, *_landing(state)) if origin
        ),
    )


async def _sign_out_here(state: AuthzState, ctx: RequestContext) -> Respond:
    """Sign-out opened on the authenticate host itself: ask, then sign this browser out."""
    session = await authn_session(state, ctx)
    if session is None:
        return _signed_out_page()
    request = SignOutRequest(
        redirect=state.cfg.settings.signout_redirect_url or "", session_id=session.sid
    )
    return await _confirm(
        state, state.signout_box.seal(request, bound_to=state.cfg.authenticate_netloc), ""
    )


async def sign_out(state: AuthzState, ctx: RequestContext) -> Respond:
    """End the sign-in here, then at the IdP.

    The request is sealed by a route host's sign-out (a same-origin form POST there) and names
    the session it signed out. Anyone can get such a request from their own browser, so it ends
    this browser's sign-in only if it names this browser's session; otherwise (another browser's
    link, or an old one) we ask first, and only the POST of our own page goes on.
    """
    sealed = ctx.param("req") or ""
    if not sealed and ctx.method != "POST":
        return await _sign_out_here(state, ctx)
    try:
        request = state.signout_box.open(sealed, bound_to=state.cfg.authenticate_netloc).value
    except InvalidToken:
        raise ExpiredSignOut("Sign out again from the application.") from None
    if ctx.method == "POST":
        if not _same_origin(ctx, state.cfg.authenticate_origin):
            raise SignOutRefused(NOT_FROM_HERE)
    else:
        session = await authn_session(state, ctx)
        if session is not None and not same_text(request.session_id, session.sid):
            return await _confirm(state, sealed, request.redirect)
    # The session the request names, and this browser's (the same one, unless confirmed).
    await state.sessions.revoke(request.session_id)
    here = await authn_session(state, ctx)
    if here is not None:
        await state.sessions.revoke(here.sid)
    clear = clear_cookie(state.session_cookie, secure=state.secure)
    back = state.signed_out_box.seal(
        SignedOutState(redirect=request.redirect), bound_to=_signed_out_binding(state)
    )
    idp_url = await state.oidc.end_session_url(
        f"{state.cfg.authenticate_origin}{SIGNED_OUT_PATH}", back
    )
    if idp_url or request.redirect:
        return pages.redirect(idp_url or request.redirect, cookies=(clear,))
    page = _signed_out_page()
    return Respond(page.status, page.headers, page.body, (clear,))


def _signed_out_binding(state: AuthzState) -> str:
    return f"{state.cfg.authenticate_netloc}/signed_out"


def signed_out(state: AuthzState, ctx: RequestContext) -> Respond:
    """Back from the IdP's logout: to the route the sign-out started on, if it is one."""
    try:
        rd = state.signed_out_box.open(ctx.param("state"), _signed_out_binding(state)).value
    except InvalidToken:
        return _signed_out_page()
    configured = state.cfg.settings.signout_redirect_url
    if configured and rd.redirect == configured:  # the operator's own target, not a visitor's
        return pages.redirect(configured)
    route = state.cfg.route_for_origin(rd.redirect) if rd.redirect else None
    target = safe_redirect(rd.redirect, route.origin) if route else None
    return pages.redirect(target) if target else _signed_out_page()


class ExpiredSignOut(ExpiredToken):
    title = "Sign-out link expired"
    code = "bad_request"
