"""The ES256 assertion the upstream receives, and the JWKS that verifies it."""

import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.contract import ASSERTION_CLAIMS as ASSERTION_CLAIMS
from authgate.ops.metrics import CacheCounter

_LOOKUPS = CacheCounter("assertion")  # ops metrics

ASSERTION_LIFETIME_S = 300
REUSE_MARGIN_S = 60  # re-sign when less than this is left before `exp`


def _b64url_uint(value: int, length: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url_uint(numbers.x, 32),
        "y": _b64url_uint(numbers.y, 32),
    }


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace."""
    required = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(required, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def published_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The JWKS entry of one key: its public half, kid = RFC 7638 thumbprint, ES256 signatures."""
    jwk = public_jwk(key)
    return {**jwk, "kid": jwk_thumbprint(jwk), "use": "sig", "alg": "ES256"}


def jwks_document(keys: Iterable[ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    """The JWKS publishing every key, in the order given (a repeated key once)."""
    entries: list[dict[str, str]] = []
    for key in keys:
        entry = published_jwk(key)
        if all(e["kid"] != entry["kid"] for e in entries):
            entries.append(entry)
    return {"keys": entries}


def jwks_bytes(keys: Iterable[ec.EllipticCurvePrivateKey]) -> bytes:
    """The JWKS exactly as served (and as `authgate issuer export` writes it)."""
    return json.dumps(jwks_document(keys), separators=(",", ":")).encode()


class AssertionSigner:
    """Signs per-route assertions; a signed token is reused per session+route until near `exp`."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        cache_size: int = 10_000,
        *,
        published: Iterable[ec.EllipticCurvePrivateKey] = (),
    ) -> None:
        """`key` signs; `published` are further keys in the JWKS (rotation: the next key, or
        the one just replaced), after `key`."""
        self._key = key
        self.issuer = issuer
        self.kid = jwk_thumbprint(public_jwk(key))
        self.jwks: dict[str, Any] = jwks_document([key, *published])
        self.jwks_json = json.dumps(self.jwks, separators=(",", ":")).encode()
        self._cache: OrderedDict[tuple[object, ...], tuple[str, int]] = OrderedDict()
        self._cache_size = cache_size

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})

    def signed_for(
        self,
        *,
        sid: str,
        audience: str,
        user: str,
        email: str,
        name: str,
        groups: tuple[str, ...],
        extra: dict[str, Any] | None = None,
        now: float | None = None,
        issuer: str | None = None,
    ) -> tuple[str, int]:
        """The assertion and the time until which it is handed out again (then re-signed).

        `extra`: claims the route adds. Reuse is keyed by everything the token says, so a
        session whose claims were refreshed gets a new assertion at once. `issuer`: the route's
        own iss (per-route jwt_issuer_format), else the signer's."""
        now_i = int(time.time() if now is None else now)
        added = json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else ""
        iss = issuer or self.issuer
        key = (sid, audience, user, email, name, groups, added, iss)
        cached = self._cache.get(key)
        if cached is not None and cached[1] - REUSE_MARGIN_S > now_i:
            _LOOKUPS.hit()
            return cached[0], cached[1] - REUSE_MARGIN_S
        _LOOKUPS.miss()
        exp = now_i + ASSERTION_LIFETIME_S
        token = self.sign(
            {
                **(extra or {}),
                "iss": iss,
                "aud": audience,
                "iat": now_i,
                "nbf": now_i,
                "exp": exp,
                "jti": secrets.token_urlsafe(16),
                "sub": user,
                "user": user,
                "email": email,
                "name": name,
                "groups": list(groups),  # always a list: a missing claim makes Jenkins anonymous
                "sid": sid,
            }
        )
        self._cache[key] = (token, exp)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return token, exp - REUSE_MARGIN_S

    @property
    def cached(self) -> int:
        return len(self._cache)
