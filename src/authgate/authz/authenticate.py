"""The authenticate service's host: the login flow (authgate.authn), the issuer's keys, and a
home page that shows strangers nothing."""

import html

from authgate.authn.sign_in import authn_session, oauth_callback, sign_in
from authgate.authn.sign_out import sign_out, signed_out
from authgate.authz import pages
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.route_endpoints import jwks, oidc_discovery, well_known
from authgate.authz.state import AuthzState
from authgate.contract import Endpoint, authenticate_host_endpoint
from authgate.policy import PolicyInput
from authgate.routing import select
from authgate.session import Session


async def home(state: AuthzState, ctx: RequestContext) -> Respond:
    """Strangers learn nothing here; a signed-in user sees the applications they may open."""
    session = await authn_session(state, ctx)
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
        case Endpoint.OIDC_DISCOVERY:
            return oidc_discovery(state, ctx)
        case Endpoint.HOME:
            return await home(state, ctx)
        case _:
            return pages.error(ctx, 404, "Not found", "No such authgate endpoint.", "not_found")
