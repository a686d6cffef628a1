"""The Envoy bootstrap, built from the config with envoy-data-plane typed messages.

One listener (TLS or plain HTTP) whose HTTP connection manager runs ext_authz then the router.
Every route Envoy can match carries `context_extensions` naming the authgate route id, so the
authz server never re-matches URLs. ext_authz fails closed (`failure_mode_allow: false`,
503 on error). Clusters: `authgate_authz` (HTTP/2, one endpoint per authz worker) and one
`upstream-<route id>` per route.
"""

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import betterproto2
import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import (
    Admin,
    Bootstrap,
    BootstrapStaticResources,
    LayeredRuntime,
    RuntimeLayer,
)
from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
    ClusterLbPolicy,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    ApiVersion,
    DataSource,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    Http2ProtocolOptions,
    HttpProtocolOptions,
    HttpProtocolOptionsHeadersWithUnderscoresAction,
    Node,
    Pipe,
    SocketAddress,
    TypedExtensionConfig,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    Route,
    RouteAction,
    RouteActionUpgradeConfig,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.common.matching.v3 import ExtensionWithMatcher
from envoy_data_plane.envoy.extensions.filters.common.matcher.action.v3 import SkipFilter
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    CheckSettings,
    ExtAuthz,
    ExtAuthzPerRoute,
)
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpConnectionManagerPathWithEscapedSlashesAction,
    HttpConnectionManagerUpgradeConfig,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions as UpstreamHttpProtocolOptions,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import (
    HttpRequestHeaderMatchInput,
    ListStringMatcher,
    RegexMatchAndSubstitute,
    RegexMatcher,
    StringMatcher,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Any as AnyProto
from envoy_data_plane.google.protobuf import Struct, Value
from envoy_data_plane.xds.core.v3 import TypedExtensionConfig as XdsTypedExtensionConfig
from envoy_data_plane.xds.type.matcher.v3 import Matcher as XdsMatcher
from envoy_data_plane.xds.type.matcher.v3 import (
    MatcherMatcherList,
    MatcherMatcherListFieldMatcher,
    MatcherMatcherListPredicate,
    MatcherMatcherListPredicateSinglePredicate,
    MatcherOnMatch,
)
from envoy_data_plane.xds.type.matcher.v3 import StringMatcher as XdsStringMatcher

from authgate.config.runtime import RouteRuntime, RuntimeConfig
from authgate.config.schema import Route as ConfigRoute
from authgate.config.schema import Settings, Upstream
from authgate.contract import (
    AUTHENTICATE_ROUTE_ID,
    CLIENT_ADDRESS_HEADER,
    EXT_KIND,
    EXT_ROUTE_ID,
    IDENTITY_PREFIX,
    INTERNAL_PATHS,
    INTERNAL_PREFIXES,
    STRIP_COOKIES_HEADER,
    UNTRUSTED_FORWARDING_HEADERS,
    RouteKind,
)
from authgate.envoy import fast_lane
from authgate.envoy.access_log import access_log
from authgate.envoy.authz_resilience import (
    authz_health_checks,
    authz_lb_config,
    authz_outlier_detection,
    authz_retry_policy,
)
from authgate.envoy.downstream_tls import (
    apply_listener_options,
    downstream_tls,
    forwarded_proto_header,
    http_redirect_listener,
)
from authgate.envoy.response_rewrite import response_rewrite_filter, response_rewrites
from authgate.envoy.route_actions import route_target
from authgate.envoy.upstream_cluster import (
    apply_balancing,
    is_ip_literal,
    respell_digit_fields,
    upstream_tls,
)
from authgate.fast_pass import FastLane
from authgate.routing import domains_for

AUTHZ_CLUSTER = "authgate_authz"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
ROUTER_FILTER = "envoy.filters.http.router"
LUA_FILTER = "envoy.filters.http.lua"
COOKIE_FILTER = "authgate.cookie_filter"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTE_CONFIG_NAME = "authgate"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
# Request headers Envoy forwards to authz (it always adds :authority, :method, :path).
AUTHZ_EXACT_HEADERS = (
    "access-control-request-method",  # cors_preflight criterion
    "cookie",
    "accept",
    "authorization",
    "origin",
    "referer",
    "sec-fetch-site",
    "sec-fetch-mode",
    "user-agent",
    "x-request-id",  # Envoy's own (it replaces a client's): shown on error pages, logged
    CLIENT_ADDRESS_HEADER,  # behind balancers: the client address Envoy computed
)
AUTHZ_HEADER_PREFIX = IDENTITY_PREFIX
UPSTREAM_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_EXT_AUTHZ_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_UNLIMITED = 100_000
# Envoy refuses a route regex whose compiled RE2 program is larger than 100 instructions by
# default, which a plain `^/(api|job|view)/[^/]+/.*$` can exceed. Route regexes come from the
# operator's config and RE2 runs in linear time; allow what Istio allows.
RE2_MAX_PROGRAM_SIZE = 32768


# ---------------------------------------------------------------------------- addresses


def parse_address(value: str) -> Address:
    """`unix:/abs/path.sock` (or `unix:///abs/path.sock`) -> pipe; `host:port` -> socket."""
    if value.startswith("unix:"):
        path = "/" + value.removeprefix("unix:").lstrip("/")
        if path == "/":
            raise ValueError(f"{value!r}: a Unix socket address needs a path, unix:/abs/path.sock")
        return Address(pipe=Pipe(path=path))
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port or unix:/abs/path.sock")
    return _socket_address(host, int(port))


def _socket_address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _needs_dns(addresses: Iterable[Address]) -> bool:
    return any(
        a.socket_address is not None and not is_ip_literal(a.socket_address.address)
        for a in addresses
    )


def _load_assignment(name: str, endpoints: Iterable[Endpoint]) -> ClusterLoadAssignment:
    return ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=e) for e in endpoints])],
    )


def _discovery_type(addresses: Sequence[Address], what: str) -> ClusterDiscoveryType:
    """STATIC for pipes and IP literals, STRICT_DNS as soon as one address is a name."""
    if not _needs_dns(addresses):
        return ClusterDiscoveryType.STATIC
    if any(a.pipe is not None for a in addresses):
        raise ValueError(f"{what}: cannot mix Unix sockets and DNS names in one cluster")
    return ClusterDiscoveryType.STRICT_DNS


def _pack(message: betterproto2.Message) -> AnyProto:
    return AnyProto.pack(message)


# ---------------------------------------------------------------------------- listener


def _ext_authz_filter(authz_timeout_s: float) -> HttpFilter:
    allowed = [StringMatcher(exact=name) for name in AUTHZ_EXACT_HEADERS]
    allowed.append(StringMatcher(prefix=AUTHZ_HEADER_PREFIX, ignore_case=True))
    config = ExtAuthz(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
            timeout=timedelta(seconds=authz_timeout_s),
            retry_policy=authz_retry_policy(authz_timeout_s),
        ),
        transport_api_version=ApiVersion.V3,
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        allowed_headers=ListStringMatcher(patterns=allowed),
        # Header bytes as the client sent them, repeated headers apart (Cookie above all).
        encode_raw_headers=True,
        include_peer_certificate=True,  # the client_certificate criterion (downstream mTLS)
    )
    return HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=_pack(config))


def _cookie_filter_lua(own_cookies: Sequence[str]) -> str:
    """Cut authgate's cookies out of every Cookie header, byte for byte, with the same rule as
    authgate.session.cookies.without_cookies (pairs split on ";" and ","; names trimmed, any
    case)."""
    names = ", ".join(f'["{name.lower()}"] = true' for name in sorted(own_cookies))
    return f"""-- authgate: runs only when authz asks (Cookie headers that are not UTF-8).
local ours = {{ {names} }}
local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
local function without_ours(header)
  local parts = {{}}
  for part in (header .. ";"):gmatch("([^;]*);") do
    local pieces = {{}}
    for piece in (part .. ","):gmatch("([^,]*),") do
      local name = piece:match("^([^=]*)=")
      if name == nil or not ours[trim(name):lower()] then pieces[#pieces + 1] = piece end
    end
    if #pieces > 0 then parts[#parts + 1] = table.concat(pieces, ",") end
  end
  return (table.concat(parts, ";"):gsub("^[ \t;,]+", ""):gsub("[ \t;,]+$", ""))
end
function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("{STRIP_COOKIES_HEADER}")
  local kept = {{}}
  for i = 0, headers:getNumValues("cookie") - 1 do
    local value = without_ours(headers:getAtIndex("cookie", i))
    if value ~= "" then kept[#kept + 1] = value end
  end
  headers:remove("cookie")
  if #kept > 0 then headers:add("cookie", table.concat(kept, "; ")) end
end
"""


def _cookie_filter(own_cookies: Sequence[str]) -> HttpFilter:
    """The Lua cookie cutter, skipped unless authz's answer set STRIP_COOKIES_HEADER: a Check
    answer carries header values as UTF-8 only, and the app must get its own bytes unchanged."""
    header_absent = MatcherMatcherListPredicate(
        not_matcher=MatcherMatcherListPredicate(
            single_predicate=MatcherMatcherListPredicateSinglePredicate(
                input=XdsTypedExtensionConfig(
                    name="strip-cookies-header",
                    typed_config=_pack(HttpRequestHeaderMatchInput(header_name=STRIP_COOKIES_HEADER)),
                ),
                value_match=XdsStringMatcher(exact="1"),
            )
        )
    )
    skip = MatcherOnMatch(
        action=XdsTypedExtensionConfig(name="skip", typed_config=_pack(SkipFilter()))
    )
    wrapped = ExtensionWithMatcher(
        xds_matcher=XdsMatcher(
            matcher_list=MatcherMatcherList(
                matchers=[MatcherMatcherListFieldMatcher(predicate=header_absent, on_match=skip)]
            )
        ),
        extension_config=TypedExtensionConfig(
            name=LUA_FILTER,
            typed_config=_pack(
                Lua(default_source_code=DataSource(inline_string=_cookie_filter_lua(own_cookies)))
            ),
        ),
    )
    return HttpFilter(name=COOKIE_FILTER, typed_config=_pack(wrapped))


def _router_filter() -> HttpFilter:
    return HttpFilter(name=ROUTER_FILTER, typed_config=_pack(Router()))


def _http_connection_manager(
    route_config: RouteConfiguration,
    authz_timeout_s: float,
    own_cookies: Sequence[str],
    lane: FastLane,
    settings: Settings | None = None,
) -> Filter:
    hcm = HttpConnectionManager(
        stat_prefix="authgate",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        access_log=[access_log()],  # JSON lines on Envoy's stdout (envoy/access_log.py)
        route_config=route_config,
        http_filters=[
            *fast_lane.http_filters(lane),
            _ext_authz_filter(authz_timeout_s),
            _cookie_filter(own_cookies),
            *(
                [response_rewrite_filter()]
                if settings is not None and any(r.rewrite_response_headers for r in settings.routes)
                else []
            ),
            _router_filter(),
        ],
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action=(
            HttpConnectionManagerPathWithEscapedSlashesAction.REJECT_REQUEST
        ),
        use_remote_address=True,
        common_http_protocol_options=HttpProtocolOptions(
            headers_with_underscores_action=HttpProtocolOptionsHeadersWithUnderscoresAction.DROP_HEADER,
            **_connection_timeouts(settings),
        ),
        **_request_timeout(settings),
        upgrade_configs=[
            HttpConnectionManagerUpgradeConfig(upgrade_type="websocket", enabled=False)
        ],
    )
    if settings is not None:
        apply_listener_options(hcm, settings)
    return Filter(name=HCM_FILTER, typed_config=_pack(hcm))


def _connection_timeouts(settings: Settings | None) -> dict[str, Any]:
    """Pomerium's timeout_idle (an idle connection) and timeout_write (a stream's whole life;
    0: none), as Pomerium maps them onto Envoy."""
    if settings is None:
        return {}
    out: dict[str, Any] = {"idle_timeout": settings.timeout_idle}
    if settings.timeout_write:
        out["max_stream_duration"] = settings.timeout_write
    return out


def _request_timeout(settings: Settings | None) -> dict[str, Any]:
    """Pomerium's timeout_read: the whole request must arrive within it (0: no limit)."""
    return {} if settings is None else {"request_timeout": settings.timeout_read}


def build_listener(cfg: RuntimeConfig, authz_timeout_s: float) -> Listener:
    settings = cfg.settings
    lane = FastLane(cfg)
    hcm = _http_connection_manager(
        build_route_config(cfg, lane), authz_timeout_s, cfg.own_cookies, lane, settings
    )
    chain = FilterChain(filters=[hcm])
    if settings.terminates_tls:
        chain.transport_socket = downstream_tls(settings)
    return Listener(
        name="authgate_https" if settings.terminates_tls else "authgate_http",
        address=_socket_address(settings.listen_host, settings.listen_port),
        filter_chains=[chain],
    )


# ---------------------------------------------------------------------------- routes


def _authz_context(route_id: str, kind: RouteKind) -> dict[str, AnyProto]:
    per_route = ExtAuthzPerRoute(
        check_settings=CheckSettings(
            context_extensions={EXT_ROUTE_ID: route_id, EXT_KIND: kind.value}
        )
    )
    return {EXT_AUTHZ_FILTER: _pack(per_route)}


def _not_found(match: RouteMatch, route_id: str, kind: RouteKind) -> Route:
    """A route whose answer always comes from authz; 404 only if authz (wrongly) allows it."""
    return Route(
        match=match,
        direct_response=DirectResponseAction(status=404),
        typed_per_filter_config=_authz_context(route_id, kind),
    )


def _internal_routes(route_id: str) -> list[Route]:
    kind = RouteKind.INTERNAL
    return [
        *(_not_found(RouteMatch(prefix=p), route_id, kind) for p in INTERNAL_PREFIXES),
        *(_not_found(RouteMatch(path=p), route_id, kind) for p in INTERNAL_PATHS),
    ]


def _regex(pattern: str) -> RegexMatcher:
    """A safe_regex: Envoy's default engine, Google RE2 (`google_re2` is deprecated)."""
    return RegexMatcher(regex=pattern)


def _regex_substitute(pattern: str, substitution: str) -> RegexMatchAndSubstitute:
    return RegexMatchAndSubstitute(pattern=_regex(pattern), substitution=substitution)


def _route_match(route: ConfigRoute) -> RouteMatch:
    kind, value = route.match_key
    if kind == "path":
        return RouteMatch(path=value)
    if kind == "regex":
        return RouteMatch(safe_regex=_regex(value))
    return RouteMatch(prefix=value)


def _apply_host_handling(action: RouteAction, route: ConfigRoute) -> None:
    """Pomerium's precedence: preserve > literal rewrite > rewrite from header > rewrite from
    the path > auto (the `to` host)."""
    if route.preserve_host_header or route.host_rewrite_header is True:
        return
    if route.host_rewrite:
        action.host_rewrite_literal = route.host_rewrite
    elif isinstance(route.host_rewrite_header, str) and route.host_rewrite_header:
        action.host_rewrite_header = route.host_rewrite_header
    elif route.host_path_regex_rewrite_pattern is not None:
        assert route.host_path_regex_rewrite_substitution is not None  # schema: both or neither
        action.host_rewrite_path_regex = _regex_substitute(
            route.host_path_regex_rewrite_pattern, route.host_path_regex_rewrite_substitution
        )
    elif route.upstreams[0].scheme != "unix":
        action.auto_host_rewrite = True


def _apply_path_rewrite(action: RouteAction, route: ConfigRoute) -> None:
    if route.prefix_rewrite is not None:
        action.prefix_rewrite = route.prefix_rewrite
    elif route.regex_rewrite_pattern is not None:
        assert route.regex_rewrite_substitution is not None  # schema: both or neither
        action.regex_rewrite = _regex_substitute(
            route.regex_rewrite_pattern, route.regex_rewrite_substitution
        )


def _route_action(rt: RouteRuntime) -> RouteAction:
    route = rt.route
    action = RouteAction(
        cluster=upstream_cluster_name(rt.id),
        timeout=timedelta(0) if route.allow_websockets else rt.upstream_timeout,
        idle_timeout=route.idle_timeout,
    )
    if route.allow_websockets:
        action.upgrade_configs = [RouteActionUpgradeConfig(upgrade_type="websocket", enabled=True)]
    _apply_path_rewrite(action, route)
    _apply_host_handling(action, route)
    return action


def literal_header_value(value: str) -> str:
    """Envoy reads `%...%` in header values as substitution commands (`%REQ(x)%` would copy a
    client header); `%%` is a literal `%`, so a configured value is always sent as written."""
    return value.replace("%", "%%")


def _overwrite(headers: dict[str, str], skip: Iterable[str] = ()) -> list[HeaderValueOption]:
    skipped = set(skip)
    return [
        HeaderValueOption(
            header=HeaderValue(key=name.lower(), value=literal_header_value(value)),
            append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            keep_empty_value=value == "",
        )
        for name, value in headers.items()
        if name.lower() not in skipped
    ]


def _headers_to_set(rt: RouteRuntime) -> list[HeaderValueOption]:
    """`set_request_headers`, replacing any client value. The router applies these after
    ext_authz; the schema refuses the x-pomerium- namespace, so none can replace identity.
    Values with `${pomerium.*}` are per user: authz sets those in its answer."""
    return _overwrite(rt.route.set_request_headers, (n for n, _ in rt.substituted_headers))


def _proxy_route(rt: RouteRuntime) -> Route:
    route = rt.route
    return Route(
        name=rt.id,
        match=_route_match(route),
        **route_target(rt, _route_action),
        request_headers_to_add=_headers_to_set(rt),
        request_headers_to_remove=[name.lower() for name in route.remove_request_headers],
        response_headers_to_add=_overwrite(dict(rt.response_headers)),
        typed_per_filter_config=_authz_context(rt.id, RouteKind.ROUTE)
        | response_rewrites(route.rewrite_response_headers),
    )


def _routes_by_netloc(cfg: RuntimeConfig) -> dict[str, list[RouteRuntime]]:
    grouped: dict[str, list[RouteRuntime]] = {}
    for rt in cfg.routes:
        grouped.setdefault(rt.netloc, []).append(rt)
    return grouped


def _route_virtual_host(
    netloc: str, routes: Sequence[RouteRuntime], default_port: int, lane: FastLane
) -> VirtualHost:
    proxied = [r for rt in routes for r in fast_lane.with_fast_lane(lane, rt.id, _proxy_route(rt))]
    return VirtualHost(
        name=netloc,
        domains=domains_for(netloc, default_port),
        routes=[*_internal_routes(routes[0].id), *proxied],
    )


def _authenticate_virtual_host(netloc: str, default_port: int) -> VirtualHost:
    return VirtualHost(
        name=f"authenticate:{netloc}",
        domains=domains_for(netloc, default_port),
        routes=[
            _not_found(RouteMatch(prefix="/"), AUTHENTICATE_ROUTE_ID, RouteKind.AUTHENTICATE)
        ],
    )


def build_route_config(cfg: RuntimeConfig, lane: FastLane | None = None) -> RouteConfiguration:
    default_port = 443 if cfg.settings.tls else 80
    lane = lane or FastLane(cfg)
    hosts = [
        _route_virtual_host(netloc, rts, default_port, lane)
        for netloc, rts in _routes_by_netloc(cfg).items()
    ]
    hosts.append(_authenticate_virtual_host(cfg.authenticate_netloc, default_port))
    return RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=hosts,
        request_headers_to_remove=list(UNTRUSTED_FORWARDING_HEADERS),
        request_headers_to_add=forwarded_proto_header(cfg.settings),
    )


# ---------------------------------------------------------------------------- clusters


def build_authz_cluster(authz_endpoints: Sequence[str], health_checked: bool = False) -> Cluster:
    """`health_checked`: the endpoints serve grpc.health.v1 (`authgate authz` does)."""
    if not authz_endpoints:
        raise ValueError("at least one authz endpoint is required")
    addresses = [parse_address(e) for e in authz_endpoints]
    http2 = UpstreamHttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()
        )
    )
    limits = CircuitBreakersThresholds(
        max_connections=_UNLIMITED, max_pending_requests=_UNLIMITED, max_requests=_UNLIMITED,
        # Envoy allows 3 concurrent retries per cluster by default: when a worker dies under
        # load, every Check it had in flight is retried at once (at most twice each).
        max_retries=_UNLIMITED,
    )
    return Cluster(
        name=AUTHZ_CLUSTER,
        type=_discovery_type(addresses, AUTHZ_CLUSTER),
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=timedelta(seconds=1),
        lb_policy=ClusterLbPolicy.LEAST_REQUEST,
        typed_extension_protocol_options={UPSTREAM_HTTP_OPTIONS: _pack(http2)},
        circuit_breakers=CircuitBreakers(thresholds=[limits]),
        load_assignment=_load_assignment(AUTHZ_CLUSTER, (Endpoint(address=a) for a in addresses)),
        # A dead or restarting worker gets no Check (authgate run restarts it).
        health_checks=authz_health_checks() if health_checked else [],
        outlier_detection=authz_outlier_detection(),
        common_lb_config=authz_lb_config(),
    )


def upstream_cluster_name(route_id: str) -> str:
    return f"upstream-{route_id}"


def _upstream_endpoint(upstream: Upstream) -> Endpoint:
    if upstream.scheme == "unix":
        return Endpoint(address=Address(pipe=Pipe(path=upstream.path)))
    default_port = 443 if upstream.scheme == "https" else 80
    port_suffix = "" if upstream.port == default_port else f":{upstream.port}"
    host_header = f"{upstream.host}{port_suffix}"
    # `hostname` is what auto_host_rewrite puts in Host, for STATIC clusters too.
    return Endpoint(address=_socket_address(upstream.host, upstream.port), hostname=host_header)


def build_upstream_cluster(
    rt: RouteRuntime, ca_file: str = SYSTEM_CA_FILE, settings: Settings | None = None
) -> Cluster:
    name = upstream_cluster_name(rt.id)
    upstreams = rt.route.upstreams
    endpoints = [_upstream_endpoint(u) for u in upstreams]
    addresses = [e.address for e in endpoints if e.address is not None]
    cluster = Cluster(
        name=name,
        type=_discovery_type(addresses, name),
        connect_timeout=timedelta(seconds=10),
        lb_policy=ClusterLbPolicy.ROUND_ROBIN,
        load_assignment=_load_assignment(name, endpoints),
    )
    if cluster.type == ClusterDiscoveryType.STRICT_DNS:
        cluster.dns_lookup_family = ClusterDnsLookupFamily.V4_PREFERRED
    if upstreams[0].scheme == "https":
        cluster.transport_socket = upstream_tls(rt.route, settings, ca_file)
    apply_balancing(cluster, rt.route)
    return cluster


# ---------------------------------------------------------------------------- bootstrap


def extra_listeners(cfg: RuntimeConfig) -> list[Listener]:
    redirect = http_redirect_listener(cfg.settings)
    return [] if redirect is None else [redirect]


def build_admin(admin_address: str) -> Admin:
    return Admin(address=parse_address(admin_address))


def build_runtime_layers() -> LayeredRuntime:
    limit = Value(number_value=RE2_MAX_PROGRAM_SIZE)
    static = Struct(fields={"re2.max_program_size.error_level": limit})
    return LayeredRuntime(layers=[RuntimeLayer(name="authgate", static_layer=static)])


def _spell_out_fail_closed(node: Any) -> None:
    """proto3 JSON omits false booleans; write `failure_mode_allow: false` for readers."""
    if isinstance(node, dict):
        if node.get("@type") == _EXT_AUTHZ_TYPE_URL:
            node["failure_mode_allow"] = False
        for value in node.values():
            _spell_out_fail_closed(value)
    elif isinstance(node, list):
        for item in node:
            _spell_out_fail_closed(item)


def build_bootstrap(
    cfg: RuntimeConfig,
    authz_endpoints: Sequence[str],
    *,
    admin_address: str,
    authz_timeout_s: float = 3.0,
    upstream_ca_file: str = SYSTEM_CA_FILE,
    authz_health_checked: bool = False,
) -> dict[str, Any]:
    """The Envoy bootstrap as a proto-JSON dict (snake_case keys), ready for YAML or JSON."""
    bootstrap = Bootstrap(
        node=Node(id="authgate", cluster="authgate"),
        admin=build_admin(admin_address),
        layered_runtime=build_runtime_layers(),
        static_resources=BootstrapStaticResources(
            listeners=[build_listener(cfg, authz_timeout_s), *extra_listeners(cfg)],
            clusters=[
                build_authz_cluster(authz_endpoints, authz_health_checked),
                *(
                    build_upstream_cluster(rt, upstream_ca_file, cfg.settings)
                    for rt in cfg.routes if rt.route.to
                ),
            ],
        ),
    )
    doc: dict[str, Any] = bootstrap.to_dict(casing=betterproto2.Casing.SNAKE)
    _spell_out_fail_closed(doc)
    respell_digit_fields(doc)
    for layer in doc["layered_runtime"]["layers"]:  # Struct numbers are doubles; write 32768
        layer["static_layer"] = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v
            for k, v in layer["static_layer"].items()
        }
    return doc


def render_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)
