"""Tokens the IdP issued, presented by scripts as bearer tokens (Pomerium's
`bearer_token_format: idp_access_token | idp_identity_token`).

An ID token is checked locally against the IdP's JWKS. An access token is a JWT the IdP signed
(checked like an ID token, then userinfo fills in what it lacks) or opaque (only the IdP's
userinfo endpoint can tell). Results are cached under a SHA-256 digest of the token, never the
token itself, so a script making 100 requests costs one IdP call, and a flood of one bad token
one call per `negative_cache_s`.
"""

import asyncio
import copy
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from authgate.oidc.client import (
    GROUP_OVERAGE,
    IDP_BUDGET_S,
    GrantRevoked,
    IdpError,
    OidcClient,
    TokenRejected,
    groups_overage,
)

MAX_TOKEN_CHARS = 16 * 1024
# Visible ASCII only: whitespace, control or non-ASCII characters are never in a real token
# (and could not go into the userinfo request's Authorization header anyway).
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_MAX_REASON_CHARS = 200
# RFC 9068 access tokens; one must not pass for an ID token even when its aud is our client.
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


class InvalidBearer(Exception):
    """The token is not one this IdP issued for us, or no longer valid. str() says why (safe to
    show; never contains the token)."""


@dataclass(frozen=True, slots=True)
class _Result:
    until: float  # clock() time after which the result must be checked again
    claims: dict[str, Any] | None  # None: invalid, `reason` says why
    reason: str = ""


_Check = Callable[[str], Awaitable[tuple[dict[str, Any], float | None]]]


def _malformed(token: str) -> str | None:
    if not isinstance(token, str) or not token:
        return "the bearer token is empty"
    if len(token) > MAX_TOKEN_CHARS:
        return f"the bearer token is longer than {MAX_TOKEN_CHARS} characters"
    if not _TOKEN_CHARS.fullmatch(token):
        return "the bearer token has whitespace, control or non-ASCII characters"
    return None


def _reason(exc: Exception, token: str) -> str:
    """A message fit to show: short, printable, and never the token (or a long piece of it)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(exc))
    if len(text) > _MAX_REASON_CHARS:
        text = text[:_MAX_REASON_CHARS] + "..."
    if token in text or any(part in text for part in token.split(".") if len(part) >= 16):
        return "the bearer token was refused"
    return text or "the bearer token was refused"


class BearerVerifier:
    """Verifies IdP-issued bearer tokens, with a bounded cache and one IdP call per token.

    `clock` must tell epoch seconds (token `exp` bounds how long a valid result is kept).
    """

    def __init__(
        self,
        oidc: OidcClient,
        *,
        allowed_audiences: Sequence[str],
        cache_size: int = 10_000,
        max_cache_s: float = 300.0,
        negative_cache_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        audiences = tuple(dict.fromkeys(a for a in allowed_audiences if a))
        if not audiences:
            raise ValueError("allowed_audiences must name at least the IdP client id")
        self._oidc = oidc
        self._audiences = audiences
        self._cache_size = max(0, cache_size)
        self._max_cache_s = max_cache_s
        self._negative_cache_s = negative_cache_s
        self._clock = clock
        self._cache: OrderedDict[bytes, _Result] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[_Result]] = {}

    async def identity_token(self, token: str) -> dict[str, Any]:
        """An IdP ID token's verified claims. InvalidBearer, or IdpError if the IdP (its JWKS)
        cannot be reached."""
        return await self._verify(b"id", token, self._check_identity)

    async def access_token(self, token: str) -> dict[str, Any]:
        """An IdP access token's claims (userinfo's, merged under a JWT's own). InvalidBearer,
        or IdpError when the IdP cannot be reached (answer 503, not 401)."""
        return await self._verify(b"access", token, self._check_access)

    # -- caching and sharing one IdP call -------------------------------------------------

    async def _verify(self, kind: bytes, token: str, check: _Check) -> dict[str, Any]:
        reason = _malformed(token)
        if reason is not None:
            raise InvalidBearer(reason)
        key = hashlib.sha256(kind + b"\0" + token.encode("ascii")).digest()
        result = self._lookup(key)
        if result is None:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.create_task(self._fill(key, token, check))
                # Nobody may be left to read the error if every waiter was cancelled.
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._inflight[key] = task
            try:
                # Shielded: one waiter giving up must not cancel the call the others share.
                result = await asyncio.shield(task)
            except IdpError as exc:
                raise IdpError(str(exc)) from None  # a fresh one per waiter
        if result.claims is None:
            raise InvalidBearer(result.reason)
        return copy.deepcopy(result.claims)  # callers must not change what is cached

    async def _fill(self, key: bytes, token: str, check: _Check) -> _Result:
        try:
            try:
                async with asyncio.timeout(IDP_BUDGET_S):
                    claims, expires_at = await check(token)
            except TimeoutError:
                raise IdpError("the identity provider did not answer in time") from None
            except InvalidBearer as exc:
                result = _Result(self._clock() + self._negative_cache_s, None, str(exc))
            else:
                until = self._clock() + self._max_cache_s
                if expires_at is not None:
                    until = min(until, expires_at)
                result = _Result(until, claims)
            self._store(key, result)
            return result
        finally:
            self._inflight.pop(key, None)

    def _lookup(self, key: bytes) -> _Result | None:
        result = self._cache.get(key)
        if result is None:
            return None
        if result.until <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return result

    def _store(self, key: bytes, result: _Result) -> None:
        if self._cache_size == 0 or result.until <= self._clock():
            return
        self._cache[key] = result
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- the checks (InvalidBearer is cached briefly; IdpError is not cached) ---------------

    async def _check_identity(self, token: str) -> tuple[dict[str, Any], float | None]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidBearer("the ID token is not a JWT") from None
        if str(header.get("typ", "")).lower() in _ACCESS_TOKEN_TYPES:
            raise InvalidBearer("the token is an access token, not an ID token")
        claims = await self._verified(
            token, what="ID token", require=("iss", "aud", "exp", "iat", "sub")
        )
        return claims, _expiry(claims)

    async def _check_access(self, token: str) -> tuple[dict[str, Any], float | None]:
        if await self._oidc.jwt_issued_here(token):
            claims = await self._verified(
                token, what="access token", require=("iss", "aud", "exp", "sub")
            )
            info = await self._userinfo(token)
            if info is not None:
                if info.get("sub") != claims["sub"]:
                    raise InvalidBearer("userinfo answered for another subject than the token's")
                # The signed claims win; userinfo fills in what the token left out.
                claims = {**info, **{k: v for k, v in claims.items() if v is not None}}
            return claims, _expiry(claims)
        # Opaque (or signed by someone else): only the IdP can say what it is.
        info = await self._userinfo(token)
        if info is None:
            raise InvalidBearer(
                "the identity provider has no userinfo endpoint to check opaque access tokens"
            )
        sub = info.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidBearer("the identity provider's userinfo answer has no subject")
        return info, None  # its lifetime is unknown: kept for max_cache_s

    async def _verified(self, token: str, *, what: str, require: Sequence[str]) -> dict[str, Any]:
        try:
            claims = await self._oidc.verify_jwt(token, self._audiences, what=what, require=require)
        except TokenRejected as exc:
            raise InvalidBearer(_reason(exc, token)) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidBearer(f"the {what} has no subject")
        if groups_overage(claims):  # its groups are elsewhere: `groups` deny rules would miss
            raise InvalidBearer(f"the {what} has no groups list: {GROUP_OVERAGE}")
        return claims

    async def _userinfo(self, token: str) -> dict[str, Any] | None:
        """userinfo's claims for the token; None when the IdP has no userinfo endpoint."""
        if not (await self._oidc.metadata()).userinfo_endpoint:
            return None
        try:
            return await self._oidc.userinfo(token)
        except GrantRevoked:
            raise InvalidBearer("the identity provider does not accept this access token") from None


def _expiry(claims: dict[str, Any]) -> float | None:
    # Read as PyJWT did when it checked it (int() of whatever the token carries).
    try:
        return float(int(claims["exp"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
