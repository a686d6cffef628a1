"""Verifying the assertion authgate (or Pomerium) hands to the apps behind it.

Only PyJWT, cryptography and httpx: nothing from the server side of authgate, so an app
can use it with `pip install authgate[verify]` and nothing else running.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"
MAX_LEEWAY_S = 120.0
MAX_TOKEN_BYTES = 16 * 1024
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 100
DEFAULT_TIMEOUT_S = 5.0

__all__ = [
    "ALGORITHM",
    "MAX_LEEWAY_S",
    "AssertionVerifier",
    "Identity",
    "InvalidAssertion",
    "KeysUnavailable",
]


class InvalidAssertion(Exception):
    """The assertion is not acceptable. `reason` is short and safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(InvalidAssertion):
    """The keys (or the discovery document) could not be fetched: nothing could be checked."""


@dataclass(frozen=True)
class Identity:
    """Who the verified assertion says is asking."""

    user: str
    email: str
    name: str
    groups: tuple[str, ...]
    claims: Mapping[str, Any] = field(repr=False, compare=False)


def _as_tuple(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"{what}: give at least one non-empty string")
    return items


def _b64url(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _p256_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey | None:
    """The public key of an ES256 signing JWK; None for any other key (skipped, not trusted)."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        return None
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", ALGORITHM) != ALGORITHM:
        return None
    try:
        x, y = _b64url(jwk.get("x")), _b64url(jwk.get("y"))
        if len(x) != 32 or len(y) != 32:
            return None
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        )
        return numbers.public_key()  # refuses points off the curve
    except ValueError:
        return None


def _tls_setting(verify_tls: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify_tls, str):
        return ssl.create_default_context(cafile=verify_tls)
    return verify_tls


def _get_json(client: httpx.Client, url: str, what: str) -> Any:
    try:
        with client.stream("GET", url, headers={"accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise KeysUnavailable(f"{what} answered HTTP {resp.status_code}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise KeysUnavailable(f"{what} is too large")
    except httpx.HTTPError as exc:
        raise KeysUnavailable(f"{what} unreachable ({type(exc).__name__})") from exc
    try:
        return json.loads(bytes(body))
    except ValueError as exc:
        raise KeysUnavailable(f"{what} is not JSON") from exc


def _check_fetch_url(url: str, what: str, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL: {url!r}")
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        # Keys over plain HTTP could be swapped by anyone on the path; loopback is for tests.
        raise ValueError(f"{what} must use https (plain http only for loopback): {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AssertionVerifier:
    """Checks an ES256 assertion against the keys at `jwks_url`, an issuer and an audience.

    `jwks_url` must be https (plain http is accepted for loopback hosts, or anywhere with
    `allow_http=True`). Keys are kept for `cache_s`; a token with a key id not among them
    triggers a refetch, at most one per `min_refetch_s` however many such tokens arrive. If
    a refresh fails, the keys already held stay in use. Safe to share between threads.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        leeway_s: float = 30,
        cache_s: float = 300,
        min_refetch_s: float = 10,
        http: httpx.Client | None = None,
        verify_tls: bool | str = True,
        allow_http: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_fetch_url(jwks_url, "jwks_url", allow_http)
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway_s must be between 0 and {MAX_LEEWAY_S:g}")
        if cache_s < 0 or min_refetch_s < 0:
            raise ValueError("cache_s and min_refetch_s must not be negative")
        self.jwks_url = jwks_url
        self.issuers = _as_tuple(issuer, "issuer")
        self.audiences = _as_tuple(audience, "audience")
        self.leeway_s = float(leeway_s)
        self.cache_s = float(cache_s)
        self.min_refetch_s = float(min_refetch_s)
        self._clock = clock
        self._own_http = http is None
        self._http = http or httpx.Client(
            verify=_tls_setting(verify_tls), timeout=DEFAULT_TIMEOUT_S, follow_redirects=False
        )
        self._lock = threading.Lock()
        self._keys: dict[str | None, ec.EllipticCurvePublicKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self.fetches = 0

    @classmethod
    def from_issuer_discovery(
        cls,
        issuer_url: str,
        *,
        audience: str | Sequence[str],
        http: httpx.Client | None = None,
        verify_tls: bool | str = True,
        allow_http: bool = False,
        **kwargs: Any,
    ) -> AssertionVerifier:
        """Reads `<issuer_url>/.well-known/openid-configuration` for `jwks_uri`.

        The accepted issuer is `issuer_url` with and without a trailing slash; the document's
        own `issuer`, when present, must be one of those.
        """
        _check_fetch_url(issuer_url, "issuer_url", allow_http)
        base = issuer_url.rstrip("/")
        issuers = (base + "/", base) if issuer_url.endswith("/") else (base, base + "/")
        client = http or httpx.Client(
            verify=_tls_setting(verify_tls), timeout=DEFAULT_TIMEOUT_S, follow_redirects=False
        )
        try:
            doc = _get_json(client, f"{base}/.well-known/openid-configuration", "discovery")
        except BaseException:
            if http is None:
                client.close()
            raise
        if not isinstance(doc, dict) or not isinstance(doc.get("jwks_uri"), str):
            raise KeysUnavailable("discovery document has no jwks_uri")
        if "issuer" in doc and doc["issuer"] not in issuers:
            raise KeysUnavailable("discovery document names another issuer")
        jwks_uri: str = doc["jwks_uri"]
        if urlsplit(issuer_url).scheme == "https" and urlsplit(jwks_uri).scheme != "https":
            raise KeysUnavailable("discovery document's jwks_uri is not https")
        verifier = cls(
            jwks_uri,
            issuer=issuers,
            audience=audience,
            http=client,
            allow_http=allow_http,
            **kwargs,
        )
        verifier._own_http = http is None
        return verifier

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> AssertionVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keys ----------------------------------------------------------------------------

    def _fetch_locked(self, now: float) -> None:
        self._attempted_at = now
        self.fetches += 1
        doc = _get_json(self._http, self.jwks_url, "JWKS")
        raw = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(raw, list):
            raise KeysUnavailable("JWKS has no keys list")
        keys: dict[str | None, ec.EllipticCurvePublicKey] = {}
        for jwk in raw[:MAX_KEYS]:
            if not isinstance(jwk, dict):
                continue
            key = _p256_key(jwk)
            kid = jwk.get("kid")
            if key is None or not (kid is None or isinstance(kid, str)):
                continue
            keys.setdefault(kid, key)
        self._keys = keys
        self._fetched_at = now

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.cache_s

    def _may_refetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refetch_s

    def _lookup(
        self, keys: Mapping[str | None, ec.EllipticCurvePublicKey], kid: str | None
    ) -> ec.EllipticCurvePublicKey | None:
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def _key_for(self, kid: str | None, fetch: bool) -> ec.EllipticCurvePublicKey:
        now = self._clock()
        key = self._lookup(self._keys, kid)
        if key is not None and not self._stale(now):
            return key
        if not self._may_refetch(now) and not self._lock.locked():
            # No fetch may start and none is under way: decided without a thread or the lock.
            return self._without_fetch(self._lookup(self._keys, kid))
        if not fetch:
            raise _NeedsFetch
        with self._lock:
            now = self._clock()
            key = self._lookup(self._keys, kid)
            if key is not None and not self._stale(now):
                return key  # another thread fetched meanwhile
            if not self._may_refetch(now):
                return self._without_fetch(key)
            try:
                self._fetch_locked(now)
            except KeysUnavailable:
                if key is None:
                    raise
                return key  # stale keys beat none while the JWKS is away
            return self._without_fetch(self._lookup(self._keys, kid))

    def _without_fetch(self, key: ec.EllipticCurvePublicKey | None) -> ec.EllipticCurvePublicKey:
        if key is not None:
            return key
        if self._fetched_at is None:
            raise KeysUnavailable("JWKS unavailable")
        raise InvalidAssertion("unknown signing key")

    # --- tokens --------------------------------------------------------------------------

    def verify(self, token: str | bytes) -> Identity:
        """The identity in `token`, or InvalidAssertion (KeysUnavailable: no keys to check)."""
        return self._verify(token, fetch=True)

    def verify_cached(self, token: str | bytes) -> Identity | None:
        """Like verify, but None instead of fetching keys (then call verify off the loop)."""
        try:
            return self._verify(token, fetch=False)
        except _NeedsFetch:
            return None

    def _verify(self, token: str | bytes, fetch: bool) -> Identity:
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidAssertion("malformed token") from None
        if not isinstance(token, str):
            raise InvalidAssertion("malformed token")
        token = token.strip()
        if not token:
            raise InvalidAssertion("no token")
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise InvalidAssertion("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidAssertion("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidAssertion("algorithm not allowed")
        if "crit" in header:
            raise InvalidAssertion("unsupported critical header")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidAssertion("malformed token")
        key = self._key_for(kid, fetch)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=list(self.audiences),
                issuer=list(self.issuers),
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAssertion("expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidAssertion("not yet valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidAssertion("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidAssertion("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidAssertion(f"missing claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise InvalidAssertion("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidAssertion("algorithm not allowed") from None
        except jwt.DecodeError:
            raise InvalidAssertion("malformed token") from None
        except jwt.PyJWTError:
            raise InvalidAssertion("invalid claims") from None
        return _identity(claims)


class _NeedsFetch(Exception):
    pass


def _identity(claims: dict[str, Any]) -> Identity:
    groups = claims.get("groups", [])
    if groups is None:
        groups = []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidAssertion("malformed claim groups")
    strings = {}
    for name in ("user", "sub", "email", "name"):
        value = claims.get(name, "")
        if not isinstance(value, str):
            raise InvalidAssertion(f"malformed claim {name}")
        strings[name] = value
    return Identity(
        user=strings["user"] or strings["sub"],
        email=strings["email"],
        name=strings["name"],
        groups=tuple(groups),
        claims=claims,
    )
