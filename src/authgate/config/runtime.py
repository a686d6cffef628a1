"""Settings turned into what the servers use: decoded keys, compiled policies, routes by id."""

import base64
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.assertion.signer import jwks_bytes
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
        return f"__Host-{name}" if self.settings.tls else name

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
            )
        )
    hosts: dict[str, RouteRuntime] = {}
    for rt in routes:
        hosts.setdefault(rt.netloc, rt)
    authn_url = settings.authenticate_service_url
    if urlsplit(authn_url).scheme != scheme:
        raise ConfigError("authenticate_service_url", f"scheme must be {scheme}")
    authn_netloc = netloc_of(authn_url)
    if settings.jwt_issuer_format == "uri":
        issuer = f"{scheme}://{authn_netloc}/"
    else:
        issuer = urlsplit(authn_url).hostname or authn_netloc
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
