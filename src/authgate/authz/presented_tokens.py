"""Credentials a script presents instead of a session cookie.

- `Pomerium <token>` (in `Authorization` or `X-Pomerium-Authorization`): the programmatic
  login's token, a reference to a session in the store.
- `Bearer <token>`: on a route whose `bearer_token_format` is `idp_access_token` or
  `idp_identity_token`, a token the IdP issued; with `default`, `Authorization: Bearer` is the
  app's and passes untouched, and `X-Pomerium-Authorization: Bearer` is the programmatic token.

`X-Pomerium-Authorization` wins: it exists so that the app's own `Authorization` (a Jenkins API
token in Basic auth) reaches it byte for byte. Whatever authgate reads is removed before the app.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from authgate.authn.bearer import InvalidBearer
from authgate.authn.programmatic import reference_in
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import POMERIUM_AUTH_SCHEME, POMERIUM_AUTHORIZATION_HEADER
from authgate.oidc import IdpError
from authgate.session import Session
from authgate.session.model import identity_from_claims

AUTHORIZATION = "authorization"
IDP_FORMATS = ("idp_access_token", "idp_identity_token")
BEARER_TOKEN_LIFETIME_S = 300  # an IdP token without `exp`: how long one check stands


@dataclass(frozen=True, slots=True)
class Presented:
    kind: str  # "pomerium" | "idp_access_token" | "idp_identity_token"
    token: str
    header: str  # where it came from (removed before the app)


def bearer_format(state: AuthzState, route: RouteRuntime) -> str:
    return route.route.bearer_token_format or state.cfg.settings.bearer_token_format


def presented_token(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> Presented | None:
    fmt = bearer_format(state, route)
    for header in (POMERIUM_AUTHORIZATION_HEADER, AUTHORIZATION):
        value = ctx.headers.get(header)
        if not value:
            continue
        scheme, _, token = value.strip().partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if scheme == POMERIUM_AUTH_SCHEME:
            return Presented("pomerium", token, header)
        if scheme != "bearer":
            continue
        if token.startswith("Pomerium-"):  # Pomerium's `Bearer Pomerium-<token>` spelling
            return Presented("pomerium", token.removeprefix("Pomerium-"), header)
        if fmt in IDP_FORMATS:
            return Presented(fmt, token, header)
        if header == POMERIUM_AUTHORIZATION_HEADER:
            return Presented("pomerium", token, header)
    return None


def invalid_token(message: str) -> Respond:
    """RFC 6750: 401 with WWW-Authenticate, JSON for the script; never a redirect."""
    detail = message.replace('"', "'")[:200]
    return Respond(
        status=401,
        headers=(
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            ("www-authenticate", f'Bearer error="invalid_token", error_description="{detail}"'),
        ),
        body=json.dumps({"error": "invalid_token", "message": message}),
    )


def _idp_unavailable() -> Respond:
    return Respond(
        status=503,
        headers=(("content-type", "application/json"), ("cache-control", "no-store")),
        body='{"error":"idp_unavailable","message":"the identity provider cannot check the token '
        'right now; try again"}',
    )


async def token_session(
    state: AuthzState, route: RouteRuntime, presented: Presented
) -> Session | Respond:
    """The session a presented token stands for, or the answer for a token that does not."""
    if presented.kind == "pomerium":
        ref = reference_in(state, presented.token, route.netloc) if presented.token else None
        session = await state.sessions.load(ref) if ref is not None else None
        if session is None:
            return invalid_token("the token is not valid here, expired, or signed out")
        return session
    try:
        if presented.kind == "idp_identity_token":
            claims = await state.bearer.identity_token(presented.token)
        else:
            claims = await state.bearer.access_token(presented.token)
    except InvalidBearer as exc:
        return invalid_token(str(exc))
    except IdpError:
        return _idp_unavailable()
    return _session_of(claims, presented.token)


def _session_of(claims: dict[str, Any], token: str) -> Session:
    """An identity from an IdP token, shaped as a session for the policy and the assertion
    (`sid` names the token by a digest, never the token itself)."""
    now = int(time.time())
    exp = claims.get("exp")
    iat = claims.get("iat")
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return Session(
        sid=f"token-{digest}",
        identity=identity_from_claims(claims),
        issued_at=iat if type(iat) is int else now,
        expires_at=exp if type(exp) is int else now + BEARER_TOKEN_LIFETIME_S,
    )
