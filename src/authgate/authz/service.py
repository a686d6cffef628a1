"""CheckRequest -> RequestContext -> route (by id, or the shared matcher) -> handler -> Decision."""

from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import unquote

import structlog

from authgate._pb.envoy.config.core.v3 import base_pb2
from authgate._pb.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from authgate.authn import LoginError
from authgate.authn.sign_in import error_page
from authgate.authz import pages
from authgate.authz.access import check_route
from authgate.authz.authenticate import handle_authenticate
from authgate.authz.client_address import with_client_address
from authgate.authz.client_cert_gate import client_certificate_required
from authgate.authz.context import RequestContext
from authgate.authz.decision import Decision, Respond
from authgate.authz.route_endpoints import handle_internal
from authgate.authz.state import AuthzState
from authgate.contract import AUTHENTICATE_ROUTE_ID, EXT_KIND, EXT_ROUTE_ID, RouteKind
from authgate.ops.decision_log import record
from authgate.routing import not_normalized, select
from authgate.session.store import StoreUnavailable

log = structlog.get_logger("authgate.authz")


def _raw_headers(
    header_map: Iterable[base_pb2.HeaderValue],
) -> tuple[dict[str, str], tuple[bytes, ...]]:
    """Envoy's raw header list (encode_raw_headers): repeated headers joined with "," as in the
    `headers` map, and the Cookie headers kept apart, byte for byte."""
    headers: dict[str, str] = {}
    cookies: list[bytes] = []
    for entry in header_map:
        name, raw = entry.key, entry.raw_value
        if name == "cookie":
            cookies.append(raw)
        text = raw.decode("utf-8", "replace")
        headers[name] = f"{headers[name]},{text}" if name in headers else text
    return headers, tuple(cookies)


def headers_of(
    http: attribute_context_pb2.AttributeContext.HttpRequest,
) -> tuple[dict[str, str], tuple[bytes, ...]]:
    """The request's headers by name, and its raw Cookie headers when Envoy sent raw ones."""
    if http.HasField("header_map"):
        return _raw_headers(http.header_map.headers)
    return dict(http.headers), ()


def request_context(request: external_auth_pb2.CheckRequest) -> RequestContext:
    attrs = request.attributes
    http = attrs.request.http
    ext = attrs.context_extensions
    headers, cookie_headers = headers_of(http)
    return RequestContext(
        route_id=ext.get(EXT_ROUTE_ID, ""),
        kind=ext.get(EXT_KIND, ""),
        method=http.method,
        scheme=http.scheme,
        host=http.host.lower(),
        path=http.path,
        headers=headers,
        source_ip=attrs.source.address.socket_address.address,
        cookie_headers=cookie_headers,
        generated_envoy=EXT_ROUTE_ID in ext,
        client_certificate=unquote(attrs.source.certificate),
    )


def _select_route(state: AuthzState, ctx: RequestContext) -> RequestContext | Respond:
    """Behind an Envoy the user wrote: pick the route with the matcher `explain` uses, and
    refuse a path Envoy did not normalise (the policy must see the path the app sees)."""
    problem = not_normalized(ctx.path)
    if problem is not None:
        return pages.error(
            ctx, 400, "Bad request", f"This URL has {problem}; it is refused.", "bad_path"
        )
    chosen = select(state.cfg, ctx.host, ctx.path)
    if chosen.refused or chosen.kind is None:
        return pages.error(ctx, 404, "Not found", "No application is served here.", "not_found")
    route_id = chosen.route.id if chosen.route is not None else AUTHENTICATE_ROUTE_ID
    return replace(ctx, route_id=route_id, kind=chosen.kind.value)


async def decide(state: AuthzState, ctx: RequestContext, started: float | None = None) -> Decision:
    """Route by the id the generated Envoy matched; without one, by the shared matcher.
    `started` (perf_counter at the Check's arrival): log the decision and count it."""
    # Behind a balancer: the client's address as Envoy computed it (the log and source_ip).
    ctx = with_client_address(state.cfg.settings, ctx)
    if ctx.generated_envoy:
        decision = await _decided(state, ctx)
    else:
        selected = _select_route(state, ctx)
        if isinstance(selected, Respond):
            decision = selected
        else:
            ctx = selected
            decision = await _decided(state, ctx)
    if started is not None:
        record(ctx, decision, started)
    return decision


async def _decided(state: AuthzState, ctx: RequestContext) -> Decision:
    try:
        return await _decide(state, ctx)
    except LoginError as error:
        return error_page(ctx, error)
    except StoreUnavailable as exc:
        log.error("session_store_unavailable", error=str(exc), host=ctx.host)
        return pages.error(
            ctx,
            503,
            "Sessions unavailable",
            "authgate cannot reach its session store right now; try again in a moment.",
            "session_store_unavailable",
        )


async def _decide(state: AuthzState, ctx: RequestContext) -> Decision:
    if ctx.kind == RouteKind.AUTHENTICATE and ctx.route_id == AUTHENTICATE_ROUTE_ID:
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
    if ctx.kind == RouteKind.ROUTE:
        refused = client_certificate_required(state.cfg.settings, ctx)
        return refused if refused is not None else await check_route(state, route, ctx)
    if ctx.kind == RouteKind.INTERNAL:
        return await handle_internal(state, route, ctx)
    return pages.error(
        ctx, 503, "Configuration mismatch", "Unknown request kind from the proxy.", "unknown_route"
    )
