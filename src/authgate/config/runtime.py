"""Settings turned into what the servers use: decoded keys, compiled policies, routes by id."""

import base64
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.assertion.signer import jwks_bytes
from authgate.config.pomerium_options import SUBSTITUTION
from authgate.config.schema import Route, Settings, decode_base64, netloc_of, parse_signing_keys
from authgate.contract import AUTHENTICATE_ROUTE_ID as AUTHENTICATE_ROUTE_ID
from authgate.errors import ConfigError
from authgate.policy import CompiledPolicy, compile_route_policy


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    id: str
    index: int
    route: Route
    policy: CompiledPolicy
    netloc: str  # host[:port] as in the Host header
    origin: str  # scheme://host[:port]
    hostname: str
    public: bool  # a request without a session may pass
    # Pomerium keys (issue #13), resolved route over global once here, not per request.
    claim_headers: tuple[tuple[str, str], ...] = ()  # (lower-case header, claim)
    claim_header_names: frozenset[str] = frozenset()  # never taken from the client
    groups_filter: frozenset[str] | None = None  # None: every group
    issuer: str = ""  # the assertion's iss on this route
    substituted_headers: tuple[tuple[str, str], ...] = ()  # set_request_headers with ${...}
    upstream_timeout: timedelta = timedelta(seconds=30)
    cookie_domain: str | None = None  # the session cookie's Domain (cookie_domain), if any
    cookie_binding: str = ""  # what its session cookie is sealed to (the host, or the domain)
    response_headers: tuple[tuple[str, str], ...] = ()  # global set_response_headers + route's


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    settings: Settings
    cookie_key: bytes = field(repr=False)
    signing_key: ec.EllipticCurvePrivateKey = field(repr=False)  # signs: the first key
    # Every configured key, the signing one first: all are published in the JWKS (rotation).
    verification_keys: tuple[ec.EllipticCurvePrivateKey, ...] = field(repr=False)
    jwks_json: bytes = field(repr=False)  # the JWKS as served, every key in it
    client_secret: str = field(repr=False)
    routes: tuple[RouteRuntime, ...]
    routes_by_id: Mapping[str, RouteRuntime]
    hosts: Mapping[str, RouteRuntime]  # netloc -> first route of that host
    authenticate_origin: str
    authenticate_netloc: str
    assertion_issuer: str

    @property
    def cookie_name(self) -> str:
        name = self.settings.cookie_name
        if not self.settings.tls:
            return name
        # `__Host-` forbids a Domain attribute; `__Secure-` still forces Secure.
        return f"__Secure-{name}" if self.settings.cookie_domain else f"__Host-{name}"

    def cookie_domain_for(self, netloc: str) -> str | None:
        return cookie_domain_for(self.settings, netloc)

    def cookie_binding(self, netloc: str) -> str:
        return cookie_binding(self.settings, netloc)

    @property
    def login_cookie_name(self) -> str:
        """A route host's login nonce (binds the hand-off to the browser that started)."""
        return f"{self.cookie_name}_login"

    @property
    def authn_login_cookie_name(self) -> str:
        """The authenticate host's in-flight login (state, nonce, PKCE)."""
        return f"{self.cookie_name}_authn_login"

    @property
    def own_cookies(self) -> tuple[str, ...]:
        """Every cookie authgate sets: none of them ever reaches an app."""
        from authgate.fast_pass import pass_cookie_names  # it reads this module's types

        own = (self.cookie_name, self.login_cookie_name, self.authn_login_cookie_name)
        return (*own, *pass_cookie_names(self))

    def route_for_origin(self, origin: str) -> RouteRuntime | None:
        parts = urlsplit(origin)
        if parts.scheme != ("https" if self.settings.tls else "http"):
            return None
        return self.hosts.get(netloc_of(origin))


def generate_cookie_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def generate_signing_key_b64() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(pem).decode()


def _route_id(route: Route, index: int) -> str:
    return route.id or f"route-{index}"


_SECRET_LOSSES = {
    "cookie_secret": "every restart signs everyone out",
    "signing_key": "the assertion signing key and the JWKS change at every restart",
}


def missing_secrets_warning(settings: Settings) -> str | None:
    """The start-up warning naming exactly the secrets that are not set (None: both are)."""
    missing = [name for name in _SECRET_LOSSES if getattr(settings, name) is None]
    if not missing:
        return None
    values = "a random value" if len(missing) == 1 else "random values"
    return (
        f"authgate: warning: {' and '.join(missing)} not set; using {values} for this run "
        f"({'; '.join(_SECRET_LOSSES[name] for name in missing)})"
    )


def cookie_domain_for(settings: Settings, netloc: str) -> str | None:
    """cookie_domain, when this route host is inside it (else its cookie stays per host)."""
    domain = (settings.cookie_domain or "").lstrip(".").lower()
    host = netloc.rpartition(":")[0] if netloc.rpartition(":")[2].isdigit() else netloc
    if domain and (host == domain or host.endswith("." + domain)):
        return domain
    return None


def cookie_binding(settings: Settings, netloc: str) -> str:
    """What a route host's session cookie is sealed to: the host, or the shared domain."""
    domain = cookie_domain_for(settings, netloc)
    return f"domain:{domain}" if domain else netloc


def issuer_for(settings: Settings, issuer_format: str) -> str:
    """The assertion's iss: the authenticate host (host, hostOnly) or its URL (uri)."""
    scheme = "https" if settings.tls else "http"
    authn_netloc = netloc_of(settings.authenticate_service_url)
    if issuer_format == "uri":
        return f"{scheme}://{authn_netloc}/"
    return urlsplit(settings.authenticate_service_url).hostname or authn_netloc


def _pomerium_route_options(settings: Settings, route: Route) -> dict[str, object]:
    """RouteRuntime fields for the issue #13 keys: the route's value, else the global one."""
    headers = (
        route.jwt_claims_headers
        if route.jwt_claims_headers is not None
        else settings.jwt_claims_headers
    )
    allowed = {*settings.jwt_groups_filter, *(route.jwt_groups_filter or ())}
    return {
        "claim_headers": tuple((h.lower(), c) for h, c in headers.items()),
        "claim_header_names": frozenset(h.lower() for h in headers),
        # Global and route filters add up (Pomerium: both apply); none: every group.
        "groups_filter": frozenset(allowed) if allowed else None,
        "issuer": issuer_for(settings, route.jwt_issuer_format or settings.jwt_issuer_format),
        "substituted_headers": tuple(
            (name.lower(), value)
            for name, value in route.set_request_headers.items()
            if SUBSTITUTION.search(value)
        ),
        "upstream_timeout": (
            route.timeout if route.timeout is not None else settings.default_upstream_timeout
        ),
        "cookie_domain": cookie_domain_for(settings, route.from_netloc),
        "cookie_binding": cookie_binding(settings, route.from_netloc),
        "response_headers": tuple(
            {
                **{k.lower(): v for k, v in settings.set_response_headers.items()},
                **{k.lower(): v for k, v in route.set_response_headers.items()},
            }.items()
        ),
    }


def build_runtime(settings: Settings, warn: bool = True) -> RuntimeConfig:
    cookie_secret = settings.cookie_secret
    signing_key_b64 = settings.signing_key
    if cookie_secret is None or signing_key_b64 is None:
        warning = missing_secrets_warning(settings)
        if warn and warning is not None:
            print(warning, file=sys.stderr)
        cookie_secret = cookie_secret or generate_cookie_secret()
        signing_key_b64 = signing_key_b64 or generate_signing_key_b64()
    client_secret = settings.idp_client_secret or ""
    if not client_secret:
        raise ConfigError(
            "idp_client_secret", "is required", "set idp_client_secret or idp_client_secret_file"
        )
    scheme = "https" if settings.tls else "http"
    routes: list[RouteRuntime] = []
    seen_ids: set[str] = set()
    for index, route in enumerate(settings.routes):
        rid = _route_id(route, index)
        if rid in seen_ids or rid == AUTHENTICATE_ROUTE_ID:
            raise ConfigError(
                f"routes[{index}].id", f"duplicate route id {rid!r}", "make ids unique"
            )
        seen_ids.add(rid)
        if urlsplit(route.from_).scheme != scheme:
            fix = "use http:// routes"
            if settings.tls:
                fix = (
                    "use https:// routes (authenticate_service_url is https)"
                    if settings.insecure_server else "use https:// routes with TLS"
                )
            raise ConfigError(f"routes[{index}].from", f"scheme must be {scheme}", fix)
        policy = compile_route_policy(
            policy=route.policy,
            allow_public_unauthenticated_access=route.allow_public_unauthenticated_access,
            allow_any_authenticated_user=route.allow_any_authenticated_user,
            allowed_users=route.allowed_users,
            allowed_domains=route.allowed_domains,
            allowed_groups=route.allowed_groups,
            where=f"routes[{index}]",
        )
        routes.append(
            RouteRuntime(
                id=rid,
                index=index,
                route=route,
                policy=policy,
                netloc=route.from_netloc,
                origin=f"{scheme}://{route.from_netloc}",
                hostname=route.from_host,
                public=not policy.needs_identity(),
                **_pomerium_route_options(settings, route),  # type: ignore[arg-type]
            )
        )
    hosts: dict[str, RouteRuntime] = {}
    for rt in routes:
        hosts.setdefault(rt.netloc, rt)
    authn_url = settings.authenticate_service_url
    if urlsplit(authn_url).scheme != scheme:
        raise ConfigError("authenticate_service_url", f"scheme must be {scheme}")
    authn_netloc = netloc_of(authn_url)
    issuer = issuer_for(settings, settings.jwt_issuer_format)
    try:
        signing_keys = tuple(parse_signing_keys(decode_base64(signing_key_b64)))
    except ValueError as exc:  # validated by Settings; reached only by a model built unchecked
        raise ConfigError("signing_key", str(exc)) from None
    return RuntimeConfig(
        settings=settings,
        cookie_key=decode_base64(cookie_secret),
        signing_key=signing_keys[0],
        verification_keys=signing_keys,
        jwks_json=jwks_bytes(signing_keys),
        client_secret=client_secret,
        routes=tuple(routes),
        routes_by_id=MappingProxyType({r.id: r for r in routes}),
        hosts=MappingProxyType(hosts),
        authenticate_origin=f"{scheme}://{authn_netloc}",
        authenticate_netloc=authn_netloc,
        assertion_issuer=issuer,
    )
