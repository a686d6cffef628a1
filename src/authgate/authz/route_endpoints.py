"""Endpoints authgate serves on every route host: /.pomerium/* and /.well-known/pomerium/*."""

import html
import json
from datetime import UTC, datetime

from authgate.assertion.discovery import discovery_bytes, issuer_is_url
from authgate.authn.handoff import accept_hand_off
from authgate.authn.programmatic import programmatic_login
from authgate.authn.sign_in import start_login
from authgate.authn.sign_out import route_sign_out
from authgate.authz import pages
from authgate.authz.access import who_is
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime, RuntimeConfig
from authgate.contract import JWKS_PATH, SIGN_OUT_PATH, Endpoint, route_host_endpoint
from authgate.session import Session

# Verifiers may keep the JWKS this long: short, so that a key published for rotation (the new
# one second in signing_key) reaches every verifier within minutes, before it signs.
JWKS_MAX_AGE_S = 300
_PUBLIC_JSON = (
    ("content-type", "application/json"),
    ("cache-control", f"public, max-age={JWKS_MAX_AGE_S}"),
    ("access-control-allow-origin", "*"),
)


def jwks(state: AuthzState) -> Respond:
    """Every configured key (the signing one first), not only the one that signs."""
    return Respond(status=200, headers=_PUBLIC_JSON, body=state.cfg.jwks_json.decode())


def oidc_discovery_json(cfg: RuntimeConfig) -> bytes | None:
    """The issuer's OIDC discovery document, or None when the assertion's iss is not a URL
    (jwt_issuer_format host/hostOnly: no `<iss>.well-known/openid-configuration` exists)."""
    if not issuer_is_url(cfg.assertion_issuer):
        return None
    return discovery_bytes(cfg.assertion_issuer, f"{cfg.authenticate_origin}{JWKS_PATH}")


def oidc_discovery(state: AuthzState, ctx: RequestContext) -> Respond:
    body = oidc_discovery_json(state.cfg)
    if body is None:
        return pages.error(
            ctx,
            404,
            "No discovery",
            "OIDC discovery needs jwt_issuer_format: uri (the assertion's iss is not a URL).",
            "discovery_unavailable",
        )
    return Respond(status=200, headers=_PUBLIC_JSON, body=body.decode())


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


def explain_claims(session: Session) -> dict[str, object]:
    """The session's claims as `authgate explain --claims` reads them."""
    ident = session.identity
    return {
        **ident.claims,
        "sub": ident.user,
        "email": ident.email,
        "name": ident.name,
        "groups": list(ident.groups),
    }


async def user_info(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    """Who is signed in: a page for browsers, JSON for scripts (which may present a token, e.g.
    `authgate login` checking the one it keeps)."""
    found = await who_is(state, route, ctx)
    if isinstance(found, Respond):
        return found
    session = found[0]
    if session is None:
        if not ctx.wants_html:
            return pages.json_answer(401, {"error": "unauthenticated", "message": "sign in first"})
        return start_login(state, route, ctx)
    ident = session.identity
    if not ctx.wants_html:
        return pages.json_answer(
            200,
            {
                "email": ident.email,
                "user": ident.user,
                "name": ident.name,
                "groups": list(ident.groups),
                "expires_at": session.expires_at,
            },
        )
    expires = datetime.fromtimestamp(session.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    groups = html.escape(", ".join(ident.groups)) or (
        '<span class="muted">none: the identity provider sent no <code>groups</code> claim '
        "(ask it for the <code>groups</code> scope, or its equivalent)</span>"
    )
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in (
            ("email", ident.email),
            ("user", ident.user),
            ("name", ident.name),
        )
    )
    rows += f"<tr><th>groups</th><td>{groups}</td></tr>"
    rows += f"<tr><th>session ends</th><td>{expires}</td></tr>"
    claims = html.escape(json.dumps(explain_claims(session), indent=2, sort_keys=True))
    return pages.html_page(
        200,
        "Signed in",
        f"<table>{rows}</table>"
        f'<p><a href="/">Back to {html.escape(route.origin)}</a> · '
        f'<a href="{SIGN_OUT_PATH}">Sign out</a></p>'
        "<details><summary>Claims as JSON (for <code>authgate explain --claims</code>)"
        f"</summary><pre>{claims}</pre></details>",
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
            return await accept_hand_off(state, route, ctx)
        case Endpoint.ROUTE_SIGN_OUT:
            return await route_sign_out(state, route, ctx)
        case Endpoint.PROGRAMMATIC_LOGIN:
            return programmatic_login(state, route, ctx)
        case Endpoint.USER_INFO:
            return await user_info(state, route, ctx)
        case _:
            return pages.error(ctx, 404, "Not found", "No such authgate endpoint.", "not_found")
