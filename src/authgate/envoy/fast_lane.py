"""The generated Envoy's half of the fast lane: verify a route's pass natively, skip the Check.

For every fast-lane route (authgate/fast_pass.py says which):
- `jwt_authn` (first in the filter chain) verifies the route's pass cookie with the passes' public
  key, the route's audience (route id + policy version), `exp` and a maximum lifetime. A missing
  or failed pass is allowed through with no metadata; a verified one leaves its payload in the
  dynamic metadata and clears the route cache.
- A twin of the route, placed just before it, matches the same requests only when that metadata
  names this route's audience exactly and no token is presented (`Authorization`,
  `X-Pomerium-Authorization`: those always take the Check). The twin disables ext_authz, removes
  every client-sent `x-pomerium*` header (`header_mutation`), has the cookie filter cut authgate's
  cookies, and sets the assertion and claim headers from the verified payload.
Anything else reaches the normal route and its Check.
"""

import copy
from datetime import timedelta

import betterproto2
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutation as HeaderRule,
)
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutationRemoveOnMatch,
)
from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.config.route.v3 import HeaderMatcher, Route
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthzPerRoute
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation,
    HeaderMutationPerRoute,
    Mutations,
)
from envoy_data_plane.envoy.extensions.filters.http.jwt_authn.v3 import (
    JwtAuthentication,
    JwtCacheConfig,
    JwtProvider,
    JwtRequirement,
    JwtRequirementOrList,
    PerRouteConfig,
)
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.envoy.type.matcher.v3 import (
    MetadataMatcher,
    MetadataMatcherPathSegment,
    StringMatcher,
    ValueMatcher,
)
from envoy_data_plane.google.protobuf import Any as AnyProto
from envoy_data_plane.google.protobuf import Empty

from authgate.contract import IDENTITY_PREFIX, POMERIUM_AUTHORIZATION_HEADER, STRIP_COOKIES_HEADER
from authgate.envoy.response_rewrite import RESPONSE_REWRITE_FILTER
from authgate.fast_pass import (
    CLOCK_SKEW_S,
    HEADERS_CLAIM,
    METADATA_KEY,
    PASS_ISSUER,
    FastLane,
    RoutePass,
)

JWT_FILTER = "envoy.filters.http.jwt_authn"
HEADER_MUTATION_FILTER = "envoy.filters.http.header_mutation"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
# Verified passes kept per provider and worker thread (Envoy checks `exp` on every hit); without
# the cache every request pays an ECDSA verification.
JWT_CACHE_SIZE = 256
_OVERWRITE = HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_PAYLOAD = f"{JWT_FILTER}:{METADATA_KEY}"


def _pack(message: betterproto2.Message) -> AnyProto:
    return AnyProto.pack(message)


def _provider(lane: FastLane, route: RoutePass) -> JwtProvider:
    return JwtProvider(
        issuer=PASS_ISSUER,
        audiences=[route.audience],
        from_cookies=[route.cookie],
        local_jwks=DataSource(inline_string=lane.jwks_json),
        require_expiration=True,
        max_lifetime=timedelta(seconds=lane.ttl_s),
        clock_skew_seconds=CLOCK_SKEW_S,
        payload_in_metadata=METADATA_KEY,
        jwt_cache_config=JwtCacheConfig(jwt_cache_size=JWT_CACHE_SIZE),
        clear_route_cache=True,
    )


def _requirement(route: RoutePass) -> JwtRequirement:
    """This route's pass if it verifies; nothing otherwise (the Check decides then)."""
    return JwtRequirement(
        requires_any=JwtRequirementOrList(
            requirements=[
                JwtRequirement(provider_name=route.provider),
                JwtRequirement(allow_missing_or_failed=Empty()),
            ]
        )
    )


def http_filters(lane: FastLane) -> list[HttpFilter]:
    """The filters that go before ext_authz; none when no route has the fast lane."""
    if not lane.routes:
        return []
    jwt = JwtAuthentication(
        providers={r.provider: _provider(lane, r) for r in lane.routes.values()},
        requirement_map={r.provider: _requirement(r) for r in lane.routes.values()},
    )
    return [
        HttpFilter(name=JWT_FILTER, typed_config=_pack(jwt)),
        # Does nothing but on a fast-lane twin route (its per-route config).
        HttpFilter(name=HEADER_MUTATION_FILTER, typed_config=_pack(HeaderMutation())),
    ]


def verify_on(route: RoutePass) -> dict[str, AnyProto]:
    """The normal route's per-filter config: jwt_authn verifies this route's pass."""
    return {JWT_FILTER: _pack(PerRouteConfig(requirement_name=route.provider))}


def _from_pass(header: str) -> HeaderValueOption:
    value = f"%DYNAMIC_METADATA({_PAYLOAD}:{HEADERS_CLAIM}:{header})%"
    return HeaderValueOption(
        header=HeaderValue(key=header, value=value),
        append_action=_OVERWRITE,
        keep_empty_value=True,
    )


def _absent(header: str) -> HeaderMatcher:
    return HeaderMatcher(name=header, present_match=True, invert_match=True)


def twin_route(route: RoutePass, normal: Route) -> Route:
    """The route that serves requests whose pass verified for exactly this route and version."""
    match = copy.deepcopy(normal.match)
    assert match is not None
    match.dynamic_metadata = [
        MetadataMatcher(
            filter=JWT_FILTER,
            path=[MetadataMatcherPathSegment(key=k) for k in (METADATA_KEY, "aud")],
            value=ValueMatcher(string_match=StringMatcher(exact=route.audience)),
        )
    ]
    match.headers = [
        *match.headers, _absent("authorization"), _absent(POMERIUM_AUTHORIZATION_HEADER)
    ]
    headers = [*normal.request_headers_to_add, *(_from_pass(h) for h in route.headers)]
    hygiene = Mutations(
        request_mutations=[
            HeaderRule(
                remove_on_match=HeaderMutationRemoveOnMatch(
                    key_matcher=StringMatcher(prefix=IDENTITY_PREFIX, ignore_case=True)
                )
            ),
            # The cookie filter (after ext_authz) cuts authgate's cookies when this says so.
            HeaderRule(
                append=HeaderValueOption(
                    header=HeaderValue(key=STRIP_COOKIES_HEADER, value="1"),
                    append_action=_OVERWRITE,
                )
            ),
        ]
    )
    return Route(
        name=f"{normal.name}:fast-lane",
        match=match,
        route=copy.deepcopy(normal.route),
        typed_per_filter_config={
            # the route's response header rewrites (rewrite_response_headers), if any
            **{
                k: v for k, v in normal.typed_per_filter_config.items()
                if k == RESPONSE_REWRITE_FILTER
            },
            EXT_AUTHZ_FILTER: _pack(ExtAuthzPerRoute(disabled=True)),
            HEADER_MUTATION_FILTER: _pack(HeaderMutationPerRoute(mutations=hygiene)),
        },
        request_headers_to_add=headers,
        request_headers_to_remove=list(normal.request_headers_to_remove),
        response_headers_to_add=list(normal.response_headers_to_add),
    )


def with_fast_lane(lane: FastLane, route_id: str, normal: Route) -> list[Route]:
    """The route as generated, preceded by its fast-lane twin when it has one."""
    found = lane.routes.get(route_id)
    if found is None:
        return [normal]
    normal.typed_per_filter_config = {**normal.typed_per_filter_config, **verify_on(found)}
    return [twin_route(found, normal), normal]
