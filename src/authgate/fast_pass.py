"""The fast lane's pass: which routes get one, the key that signs it, and what binds it to one
route and one version of its policy.

Both sides compute all of it from the same config: authz mints passes
(authz/fast_lane_pass.py), the generated Envoy verifies them natively (envoy/fast_lane.py).
A pass is an ES256 JWT in a host-only cookie. Its audience names the route and a digest of
everything that could change the route's answer (the route's options, the global settings, the
signing key), so a pass for another route, or from before a reload that changed the policy or
a key rotation, does not verify and the request takes the normal Check.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authgate.assertion.signer import jwk_thumbprint, jwks_bytes, public_jwk
from authgate.config.runtime import RouteRuntime, RuntimeConfig
from authgate.config.schema import Settings
from authgate.config.tls_schema import fast_lane_possible
from authgate.contract import ASSERTION_HEADER, IDENTITY_PREFIX, LEGACY_ASSERTION_HEADER
from authgate.policy.ppl import SCOPE_CONSTANT, SCOPE_IDENTITY

PASS_ISSUER = "authgate-fast-lane"
# Where Envoy's jwt_authn puts a verified pass's payload (its dynamic metadata).
METADATA_KEY = "authgate_pass"
# The pass claim holding {identity header: value}, every header authz's answer set.
HEADERS_CLAIM = "h"
# A cookie must stay under the browsers' 4096 bytes (name, value and attributes together).
MAX_PASS_BYTES = 3800
# Envoy reads `exp` with this much leeway (its default is 60 s, which would outlast the ttl).
CLOCK_SKEW_S = 1
# Policies that read only who the user is: the rule the kept answers use, minus everything the
# request itself chooses (method, path, address, CORS headers) and the clock.
_IDENTITY_ONLY = frozenset({SCOPE_IDENTITY, SCOPE_CONSTANT})
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def enabled(cfg: RuntimeConfig, rt: RouteRuntime) -> bool:
    """The route asks for the fast lane (its own key, else the global one)."""
    own = rt.route.fast_lane
    return cfg.settings.fast_lane if own is None else own


def eligible(cfg: RuntimeConfig, rt: RouteRuntime) -> bool:
    """The fast lane is on for this route and its answer depends on the identity alone."""
    return (
        enabled(cfg, rt)
        and not rt.public
        and rt.policy.scopes() <= _IDENTITY_ONLY
        and fast_lane_possible(cfg.settings, rt.route)
        and pomerium_headers_fit(rt)
    )


def pomerium_headers_fit(rt: RouteRuntime) -> bool:
    """A pass can stand for the route's headers: none holds a `${pomerium.*}` token (per user,
    secret: never in a cookie), and every claim header is in the x-pomerium- namespace (the
    only one Envoy clears of client values on the fast lane)."""
    return not rt.substituted_headers and all(
        name.startswith(IDENTITY_PREFIX) for name in rt.claim_header_names
    )


def pass_key(cfg: RuntimeConfig) -> ec.EllipticCurvePrivateKey:
    """The passes' own P-256 key, derived from the cookie secret and the signing key's id: every
    worker and replica derives the same one, and a new secret or signing key makes a new one.
    It never signs an assertion, and an assertion never verifies as a pass."""
    signing_kid = jwk_thumbprint(public_jwk(cfg.signing_key))
    secret = HKDF(
        algorithm=hashes.SHA256(),
        length=48,
        salt=None,
        info=f"authgate fast-lane pass key v1 {signing_kid}".encode(),
    ).derive(cfg.cookie_key)
    scalar = int.from_bytes(secret, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _settings_without_secrets(settings: Settings) -> dict[str, Any]:
    secret = {name for name, f in Settings.model_fields.items() if not f.repr}
    return settings.model_dump(mode="json", exclude={*secret, "routes"})


def identity_headers(rt: RouteRuntime) -> tuple[str, ...]:
    """The identity headers authz sets on this route's allowed requests, which the fast lane
    must set too (a header added here later: a pass carrying another is never minted)."""
    if not rt.route.pass_identity_headers:
        return ()
    assertion = LEGACY_ASSERTION_HEADER if rt.route.legacy_assertion else ASSERTION_HEADER
    return (assertion, *(name for name, _ in rt.claim_headers))  # jwt_claims_headers


def policy_version(cfg: RuntimeConfig, rt: RouteRuntime, pass_kid: str) -> str:
    """A digest of everything the route's answer and its headers come from in the config."""
    doc = {
        "route_id": rt.id,
        "route": rt.route.model_dump(mode="json", by_alias=True),
        "settings": _settings_without_secrets(cfg.settings),
        "signing_kid": jwk_thumbprint(public_jwk(cfg.signing_key)),
        "pass_kid": pass_kid,
    }
    return _digest(json.dumps(doc, sort_keys=True, default=str), 24)


@dataclass(frozen=True, slots=True)
class RoutePass:
    """What binds a pass to one route: its audience and cookie, and the headers it fills."""

    route_id: str
    audience: str
    cookie: str
    headers: tuple[str, ...]  # the identity headers the pass carries (identity_headers)

    @property
    def provider(self) -> str:
        """The route's jwt_authn provider and requirement name."""
        return f"fast-lane:{self.route_id}"


class FastLane:
    """Every fast-lane route of a config, and the key their passes are signed with."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.key = pass_key(cfg)
        self.kid = jwk_thumbprint(public_jwk(self.key))
        self.jwks_json = jwks_bytes([self.key]).decode()
        self.ttl_s = int(cfg.settings.fast_lane_ttl.total_seconds())
        self.session_cookie = cfg.cookie_name
        self.routes: dict[str, RoutePass] = {}
        for rt in cfg.routes:
            if not eligible(cfg, rt):
                continue
            self.routes[rt.id] = RoutePass(
                route_id=rt.id,
                audience=f"{PASS_ISSUER}:{rt.id}:{policy_version(cfg, rt, self.kid)}",
                cookie=pass_cookie_name(cfg, rt.id),
                headers=identity_headers(rt),
            )

    def cookies_of_host(self, cfg: RuntimeConfig, netloc: str) -> list[str]:
        """The pass cookies a browser may hold for this host (to clear them at sign-out)."""
        return [
            p.cookie for p in self.routes.values() if cfg.routes_by_id[p.route_id].netloc == netloc
        ]


def pass_cookie_name(cfg: RuntimeConfig, route_id: str) -> str:
    """One cookie per route (several routes may share a host): `<session cookie>_fl_<digest>`."""
    return f"{cfg.cookie_name}_fl_{_digest(route_id, 10)}"


def pass_cookie_names(cfg: RuntimeConfig) -> tuple[str, ...]:
    """Every pass cookie the config can set: none of them ever reaches an app."""
    return tuple(pass_cookie_name(cfg, rt.id) for rt in cfg.routes if eligible(cfg, rt))
