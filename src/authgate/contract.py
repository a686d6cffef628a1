"""The Envoy <-> authz contract: one source for both ways of sitting beside Envoy.

Read by the bootstrap generator (`envoy/`), the Check path (`authz/`), the login flow and
`authgate explain`: route kinds, the context-extension keys, the header names, and the table of
endpoints authgate answers itself. A string that both sides must agree on lives here and nowhere
else.
"""

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class RouteKind(StrEnum):
    """What a request is to authz; in the generated bootstrap, Envoy says it per route."""

    ROUTE = "route"  # an application route: session -> policy -> forward
    INTERNAL = "internal"  # authgate's own paths on a route host
    AUTHENTICATE = "authenticate"  # anything on the authenticate service's host


# context_extensions keys the generated bootstrap sets on every route.
EXT_ROUTE_ID = "route_id"
EXT_KIND = "kind"
AUTHENTICATE_ROUTE_ID = "__authenticate__"

# Every claim an assertion carries (discovery's `claims_supported`); a route's added claims
# (`assertion_claims`) cannot replace them.
ASSERTION_CLAIMS = (
    "iss", "aud", "iat", "nbf", "exp", "jti", "sub", "user", "email", "name", "groups", "sid",
)

# Headers.
ASSERTION_HEADER = "x-pomerium-jwt-assertion"
# Pomerium's older convention (routes with `legacy_assertion: true`).
LEGACY_ASSERTION_HEADER = "x-pomerium-iap-jwt-assertion"
LEGACY_ISSUER = "pomerium-proxy"
IDENTITY_PREFIX = "x-pomerium"  # every client-sent header in this namespace is removed
CLAIM_HEADER_PREFIX = "x-pomerium-claim-"
# Set by authz only when authgate's cookies must be cut out of Cookie headers that are not
# valid UTF-8 (a Check answer can only carry UTF-8); the generated Envoy's cookie filter does
# it byte for byte and removes this header.
STRIP_COOKIES_HEADER = "x-pomerium-authgate-strip-cookies"

# Client-sent forwarding headers the upstream must not trust (Jenkins builds URLs from
# X-Forwarded-Host). Envoy itself sets X-Forwarded-For/-Proto (use_remote_address). The
# generated Envoy removes these; behind another Envoy, authz's OK answer does.
# The client address Envoy computed behind balancers (xff_num_trusted_hops): the generated
# Envoy writes it over any client value, authz reads it, the app never gets it.
CLIENT_ADDRESS_HEADER = "x-authgate-client-address"
UNTRUSTED_FORWARDING_HEADERS = (
    CLIENT_ADDRESS_HEADER,
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-forwarded-for",
    "forwarded",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
)


class Endpoint(StrEnum):
    """The endpoints authgate answers itself, before any policy."""

    JWKS = "jwks"
    WELL_KNOWN = "well-known"
    USER_INFO = "user-info"  # /.pomerium/ on a route host
    ROUTE_CALLBACK = "route-callback"  # the hand-off lands here
    ROUTE_SIGN_OUT = "route-sign-out"
    SIGN_IN = "sign-in"
    OAUTH_CALLBACK = "oauth-callback"
    SIGN_OUT = "sign-out"
    SIGNED_OUT = "signed-out"
    PROGRAMMATIC_LOGIN = "programmatic-login"  # Pomerium's, for CLIs: the sign-in URL as text
    OIDC_DISCOVERY = "oidc-discovery"  # the issuer's metadata (jwt_issuer_format: uri)
    HOME = "home"
    NOT_FOUND = "not-found"  # under an internal prefix, but nothing authgate serves


JWKS_PATH = "/.well-known/pomerium/jwks.json"
# `<iss>.well-known/openid-configuration` when iss is `https://<authenticate host>/`.
OIDC_DISCOVERY_PATH = "/.well-known/openid-configuration"
OAUTH_CALLBACK_PATH = "/oauth2/callback"
SIGN_IN_PATH = "/.pomerium/sign_in"
SIGN_OUT_PATH = "/.pomerium/sign_out"
SIGNED_OUT_PATH = "/.pomerium/signed_out"
ROUTE_CALLBACK_PATH = "/.pomerium/callback"
PROGRAMMATIC_LOGIN_PATH = "/.pomerium/api/v1/login"
# `Authorization: Pomerium <token>` (or in X-Pomerium-Authorization): the programmatic login's.
POMERIUM_AUTH_SCHEME = "pomerium"
POMERIUM_AUTHORIZATION_HEADER = "x-pomerium-authorization"

# On a route host, Envoy hands everything under these to authz as INTERNAL: the prefixes, and the
# same paths without their trailing slash.
INTERNAL_PREFIXES = ("/.pomerium/", "/.well-known/pomerium/")
INTERNAL_PATHS = ("/.pomerium", "/.well-known/pomerium")

ROUTE_HOST_ENDPOINTS: Mapping[str, Endpoint] = MappingProxyType(
    {
        JWKS_PATH: Endpoint.JWKS,
        "/.well-known/pomerium": Endpoint.WELL_KNOWN,
        "/.well-known/pomerium/": Endpoint.WELL_KNOWN,
        ROUTE_CALLBACK_PATH: Endpoint.ROUTE_CALLBACK,
        ROUTE_CALLBACK_PATH + "/": Endpoint.ROUTE_CALLBACK,
        SIGN_OUT_PATH: Endpoint.ROUTE_SIGN_OUT,
        PROGRAMMATIC_LOGIN_PATH: Endpoint.PROGRAMMATIC_LOGIN,
        "/.pomerium": Endpoint.USER_INFO,
        "/.pomerium/": Endpoint.USER_INFO,
    }
)

# The authenticate host: every path goes to authz.
AUTHENTICATE_HOST_ENDPOINTS: Mapping[str, Endpoint] = MappingProxyType(
    {
        OAUTH_CALLBACK_PATH: Endpoint.OAUTH_CALLBACK,
        SIGN_IN_PATH: Endpoint.SIGN_IN,
        SIGN_OUT_PATH: Endpoint.SIGN_OUT,
        SIGNED_OUT_PATH: Endpoint.SIGNED_OUT,
        JWKS_PATH: Endpoint.JWKS,
        "/.well-known/pomerium": Endpoint.WELL_KNOWN,
        "/.well-known/pomerium/": Endpoint.WELL_KNOWN,
        OIDC_DISCOVERY_PATH: Endpoint.OIDC_DISCOVERY,
        "/": Endpoint.HOME,
    }
)


def is_internal_path(path: str) -> bool:
    """True for a (normalized, query-less) route-host path that Envoy sends to authz as INTERNAL."""
    return path.startswith(INTERNAL_PREFIXES) or path in INTERNAL_PATHS


def route_host_endpoint(path: str) -> Endpoint:
    return ROUTE_HOST_ENDPOINTS.get(path, Endpoint.NOT_FOUND)


def authenticate_host_endpoint(path: str) -> Endpoint:
    return AUTHENTICATE_HOST_ENDPOINTS.get(path, Endpoint.NOT_FOUND)
