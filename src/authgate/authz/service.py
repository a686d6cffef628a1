"""CheckRequest -> RequestContext -> route by id -> handler -> Decision."""

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
from authgate.authz import pages
from authgate.authz.access import check_route
from authgate.authz.authenticate import handle_authenticate
from authgate.authz.context import RequestContext
from authgate.authz.decision import Decision
from authgate.authz.route_endpoints import handle_internal
from authgate.authz.state import AuthzState
from authgate.config import AUTHENTICATE_ROUTE_ID


def request_context(request: external_auth_pb2.CheckRequest) -> RequestContext:
    attrs = request.attributes
    http = attrs.request.http
    ext = attrs.context_extensions
    return RequestContext(
        route_id=ext.get("route_id", ""),
        kind=ext.get("kind", ""),
        method=http.method,
        scheme=http.scheme,
        host=http.host.lower(),
        path=http.path,
        headers=dict(http.headers),
        source_ip=attrs.source.address.socket_address.address,
    )


async def decide(state: AuthzState, ctx: RequestContext) -> Decision:
    """Route by the id Envoy matched; never re-match the URL here."""
    if ctx.kind == "authenticate" and ctx.route_id == AUTHENTICATE_ROUTE_ID:
        return await handle_authenticate(state, ctx)
    route = state.cfg.routes_by_id.get(ctx.route_id)
    if route is None:
        # Envoy and authz disagree about the config: refuse rather than guess.
        return pages.error(
            ctx,
            503,
            "Configuration mismatch",
            "This route is unknown to the authorization service.",
            "unknown_route",
        )
    if ctx.kind == "route":
        return check_route(state, route, ctx)
    if ctx.kind == "internal":
        return await handle_internal(state, route, ctx)
    return pages.error(
        ctx, 503, "Configuration mismatch", "Unknown request kind from the proxy.", "unknown_route"
    )
