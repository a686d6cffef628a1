"""OpenID Connect relying party: discovery, authorization URL, code exchange, ID-token checks.

authlib builds the authorization request (PKCE S256) and performs the token request; PyJWT
verifies the ID token against the IdP's JWKS with an algorithm allow-list.
"""

import asyncio
import re
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import authlib.deprecate  # noqa: F401  (installs authlib's "always" filter first)
import httpx
import jwt

from authgate.oidc.providers import (
    AZURE_TENANT_PLACEHOLDER,
    PROVIDERS,
    TENANT_ID,
    Provider,
    issuer_matches,
)
from authgate.ops.idp_calls import measured
from authgate.session.record import IdpTokens
from authgate.session.sealed import same_text

# authlib 1.9 nags about a future "httpx2" package at import; httpx is what it supports today.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")
from authlib.integrations.httpx_client import AsyncOAuth2Client  # noqa: E402

ALLOWED_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
HTTP_TIMEOUT_S = 2.0
# All IdP calls of one Check must finish well inside Envoy's ext_authz timeout (3 s), so a
# hung IdP gets our clear error page rather than Envoy's bare 503.
IDP_BUDGET_S = 2.4
METADATA_TTL_S = 3600.0


GROUP_OVERAGE = (
    "the identity provider left the user's groups out of the token (too many groups: "
    "Azure's group overage, `_claim_names.groups`); authgate does not query Microsoft Graph. "
    "Limit the groups claim in the app registration (\"Groups assigned to the application\") "
    "so it fits in the token"
)


def groups_overage(claims: Mapping[str, Any]) -> bool:
    """The IdP points to another source for `groups` (OIDC distributed claims) instead of
    listing them: policy would see no groups, so `groups` deny rules would not hold."""
    names = claims.get("_claim_names")
    return isinstance(names, dict) and "groups" in names


class IdpError(Exception):
    """The identity provider could not be reached or answered something unusable."""


class TokenRejected(Exception):
    """The IdP's response did not pass verification (signature, iss, aud, exp, nonce, ...)."""


class GrantRevoked(Exception):
    """The IdP says the grant behind a session is gone (invalid_grant, a refused token)."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    claims: dict[str, Any]
    tokens: IdpTokens


@dataclass(frozen=True, slots=True)
class LoginRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    # RFC 9207: the IdP puts `iss` in every authorization response.
    iss_parameter_supported: bool = False


class OidcClient:
    token_auth_method = "client_secret_basic"

    def __init__(
        self,
        *,
        provider_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        scopes: list[str],
        provider: Provider = PROVIDERS["oidc"],
        auth_params: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        # Extra authorize-request parameters: idp_request_params replaces the provider's own,
        # as in Pomerium.
        self.auth_params = dict(provider.auth_params if auth_params is None else auth_params)
        self.provider_url = provider_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        # ops: IdP calls counted and timed
        self._http = measured(httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False))
        self._metadata: Metadata | None = None
        self._metadata_at = 0.0
        self._jwks: jwt.PyJWKSet | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.get(url, **kwargs)
        except httpx.HTTPError as exc:
            raise IdpError(f"cannot reach the identity provider at {url}: {exc!s}") from None
        if response.status_code != 200:
            raise IdpError(f"identity provider answered {response.status_code} for {url}")
        try:
            data = response.json()
        except ValueError:
            raise IdpError(f"identity provider sent invalid JSON from {url}") from None
        if not isinstance(data, dict):
            raise IdpError(f"identity provider sent unexpected JSON from {url}")
        return data

    async def metadata(self) -> Metadata:
        if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_TTL_S:
            return self._metadata
        async with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at >= METADATA_TTL_S:
                doc = await self._get_json(f"{self.provider_url}/.well-known/openid-configuration")
                try:
                    meta = Metadata(
                        issuer=str(doc["issuer"]),
                        authorization_endpoint=str(doc["authorization_endpoint"]),
                        token_endpoint=str(doc["token_endpoint"]),
                        jwks_uri=str(doc["jwks_uri"]),
                        userinfo_endpoint=doc.get("userinfo_endpoint"),
                        end_session_endpoint=doc.get("end_session_endpoint"),
                        iss_parameter_supported=(
                            doc.get("authorization_response_iss_parameter_supported") is True
                        ),
                    )
                except KeyError as exc:
                    raise IdpError(f"discovery document lacks {exc.args[0]}") from None
                if meta.issuer.rstrip("/") != self.provider_url and not self._tenant_template(
                    meta.issuer
                ):
                    raise IdpError(
                        f"discovery issuer {meta.issuer!r} does not match idp_provider_url"
                    )
                self._metadata, self._metadata_at = meta, time.monotonic()
        assert self._metadata is not None
        return self._metadata

    def _tenant_template(self, issuer: str) -> bool:
        """Azure's `common`/`organizations` discovery names `{tenantid}` as its issuer."""
        return self.provider.name == "azure" and AZURE_TENANT_PLACEHOLDER in issuer

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: an authorization response's `iss` must be this IdP's issuer; one without it
        is refused when the IdP says it always sends it. TokenRejected otherwise (a mix-up)."""
        meta = await self.metadata()
        if iss is None:
            if meta.iss_parameter_supported:
                raise TokenRejected(
                    "the authorization response has no `iss`, which this identity provider "
                    "always sends (RFC 9207)"
                )
            return
        if self._tenant_template(meta.issuer):
            pattern = re.escape(meta.issuer).replace(
                re.escape(AZURE_TENANT_PLACEHOLDER), TENANT_ID.pattern
            )
            matches = re.fullmatch(pattern, iss) is not None
        else:
            matches = same_text(iss, meta.issuer)
        if not matches:
            raise TokenRejected(
                f"the authorization response comes from issuer {iss[:200]!r}, "
                f"not {meta.issuer!r} (RFC 9207)"
            )

    async def begin_login(self) -> LoginRequest:
        try:
            async with asyncio.timeout(IDP_BUDGET_S):
                return await self._begin_login()
        except TimeoutError:
            raise IdpError("the identity provider did not answer in time") from None

    async def _begin_login(self) -> LoginRequest:
        meta = await self.metadata()
        state = secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        oauth = AsyncOAuth2Client(
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
            scope=" ".join(self.scopes),
            code_challenge_method="S256",
        )
        url, _ = oauth.create_authorization_url(
            meta.authorization_endpoint,
            state=state,
            code_verifier=verifier,
            nonce=nonce,
            **self.auth_params,
        )
        await oauth.aclose()
        return LoginRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

    async def _signing_keys(self, kid: str | None, refresh: bool) -> jwt.PyJWKSet:
        if self._jwks is None or refresh:
            meta = await self.metadata()
            data = await self._get_json(meta.jwks_uri)
            try:
                self._jwks = jwt.PyJWKSet.from_dict(data)
            except jwt.PyJWTError:
                raise IdpError("identity provider JWKS has no usable keys") from None
        return self._jwks

    async def _key_for(self, token: str, what: str = "ID token") -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected(f"{what} is not a JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise TokenRejected(f"{what} algorithm {alg!r:.40} is not allowed")
        kid = header.get("kid")
        for refresh in (False, True):
            keys = await self._signing_keys(kid, refresh)
            candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
            if len(candidates) == 1 or (kid is None and candidates):
                return candidates[0]
        raise TokenRejected(f"{what} signed with an unknown key")

    async def jwt_issued_here(self, token: str) -> bool:
        """Whether `token` is a JWT whose header names a key of the IdP's JWKS (refetched
        once for an unknown kid). Says nothing about its signature or claims."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return False
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            return False
        for refresh in (False, True):
            keys = await self._signing_keys(kid, refresh)
            if any(k.key_id == kid for k in keys.keys):
                return True
        return False

    async def verify_jwt(
        self,
        token: str,
        audiences: Sequence[str],
        *,
        what: str = "token",
        require: Sequence[str] = ("iss", "aud", "exp", "sub"),
    ) -> dict[str, Any]:
        """A JWT this IdP signed for one of `audiences`: signature with its JWKS (allow-listed
        algorithms), iss, aud (and azp among `audiences` when there are several), exp/iat/nbf
        with 30 s leeway, the `require`d claims present. TokenRejected otherwise."""
        meta = await self.metadata()
        key = await self._key_for(token, what)
        templated = self._tenant_template(meta.issuer)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=list(audiences),
                issuer=None if templated else meta.issuer,
                leeway=30,
                options={"require": list(require)},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"{what} rejected: {exc}") from None
        if templated and not issuer_matches(meta.issuer, claims.get("iss", ""), claims.get("tid")):
            raise TokenRejected(f"{what} rejected: its issuer is not its tenant's")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") not in audiences:
            raise TokenRejected(f"{what} has several audiences and azp is not this client")
        return claims

    async def verify_id_token(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        """Verify an ID token; `nonce` None for a refresh grant's (which carries none)."""
        claims = await self.verify_jwt(
            id_token,
            [self.client_id],
            what="ID token",
            require=("iss", "aud", "exp", "iat", "sub"),
        )
        if nonce is not None and not same_text(str(claims.get("nonce", "")), nonce):
            raise TokenRejected("ID token nonce does not match this login")
        return claims

    async def complete_login(self, code: str, code_verifier: str, nonce: str) -> LoginResult:
        try:
            async with asyncio.timeout(IDP_BUDGET_S):
                return await self._complete_login(code, code_verifier, nonce)
        except TimeoutError:
            raise IdpError("the identity provider did not answer in time") from None

    async def _token_request(self, **params: str) -> dict[str, Any]:
        meta = await self.metadata()
        oauth = measured(  # ops: IdP calls counted and timed
            AsyncOAuth2Client(
                client_id=self.client_id,
                client_secret=self._client_secret,
                redirect_uri=self.redirect_uri,
                code_challenge_method="S256",
                timeout=HTTP_TIMEOUT_S,
                token_endpoint_auth_method=self.token_auth_method,
            )
        )
        try:
            token: dict[str, Any] = await oauth.fetch_token(meta.token_endpoint, **params)
        except httpx.HTTPError as exc:
            raise IdpError(f"token request failed: {exc!s}") from None
        except Exception as exc:  # authlib raises OAuthError and friends for IdP error bodies
            if getattr(exc, "error", None) == "invalid_grant":
                raise GrantRevoked(f"the identity provider refused the grant: {exc!s}") from None
            raise TokenRejected(f"token request refused: {exc!s}") from None
        finally:
            await oauth.aclose()
        return token

    @staticmethod
    def _tokens(token: dict[str, Any], previous: IdpTokens | None = None) -> IdpTokens:
        expires_in = token.get("expires_in")
        kept = previous.refresh_token if previous else ""  # IdPs that do not rotate it
        return IdpTokens(
            access_token=str(token.get("access_token") or ""),
            refresh_token=str(token.get("refresh_token") or kept),
            access_expires_at=(
                time.time() + float(expires_in) if isinstance(expires_in, int | float) else 0.0
            ),
            id_token=str(token.get("id_token") or (previous.id_token if previous else "")),
        )

    async def _with_userinfo(self, claims: dict[str, Any], access_token: str) -> dict[str, Any]:
        meta = await self.metadata()
        if not meta.userinfo_endpoint or not access_token:
            return claims
        info = await self.userinfo(access_token)
        if info.get("sub") == claims["sub"]:
            # ID-token claims win; userinfo fills in what the ID token left out.
            claims = {**info, **{k: v for k, v in claims.items() if v is not None}}
        return claims

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo endpoint's claims; GrantRevoked when it refuses the token."""
        meta = await self.metadata()
        if not meta.userinfo_endpoint:
            raise IdpError("the identity provider has no userinfo endpoint")
        try:
            response = await self._http.get(
                meta.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}
            )
        except httpx.HTTPError as exc:
            raise IdpError(f"cannot reach the identity provider's userinfo: {exc!s}") from None
        if response.status_code == 401:
            raise GrantRevoked("the identity provider no longer accepts the access token")
        if response.status_code != 200:
            raise IdpError(f"identity provider answered {response.status_code} for userinfo")
        try:
            data = response.json()
        except ValueError:
            raise IdpError("identity provider sent invalid JSON from userinfo") from None
        if not isinstance(data, dict):
            raise IdpError("identity provider sent unexpected JSON from userinfo")
        return data

    async def _complete_login(self, code: str, code_verifier: str, nonce: str) -> LoginResult:
        """Exchange the code, verify the ID token, and merge userinfo claims."""
        token = await self._token_request(
            grant_type="authorization_code", code=code, code_verifier=code_verifier
        )
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise TokenRejected("token response has no id_token (is `openid` in idp_scopes?)")
        claims = await self.verify_id_token(id_token, nonce)
        tokens = self._tokens(token)
        claims = await self._with_userinfo(claims, tokens.access_token)
        if groups_overage(claims):
            raise TokenRejected(GROUP_OVERAGE)
        return LoginResult(claims, tokens)

    async def refresh(self, tokens: IdpTokens) -> tuple[dict[str, Any], IdpTokens] | None:
        """A signed-in user's current claims: the refresh-token grant (its ID token verified,
        no nonce), then userinfo; userinfo alone with a live access token; None when there is
        nothing to refresh with. GrantRevoked when the IdP says the grant or account is gone."""
        async with asyncio.timeout(IDP_BUDGET_S * 2):
            if tokens.refresh_token:
                token = await self._token_request(
                    grant_type="refresh_token", refresh_token=tokens.refresh_token
                )
                fresh = self._tokens(token, tokens)
                id_token = token.get("id_token")
                claims: dict[str, Any] = (
                    await self.verify_id_token(id_token, nonce=None)
                    if isinstance(id_token, str)
                    else {}
                )
                if not claims:
                    info = await self.userinfo(fresh.access_token)
                    return info, fresh
                claims = await self._with_userinfo(claims, fresh.access_token)
                if groups_overage(claims):  # groups grew past what the token carries
                    raise GrantRevoked(GROUP_OVERAGE)
                return claims, fresh
            if tokens.access_token and tokens.access_expires_at > time.time() + 5:
                return await self.userinfo(tokens.access_token), tokens
        return None

    async def end_session_origin(self) -> str | None:
        """Where the IdP's logout lives (scheme://host[:port]), if it has one and answers."""
        try:
            async with asyncio.timeout(IDP_BUDGET_S):
                meta = await self.metadata()
        except (IdpError, TimeoutError):
            return None
        if not meta.end_session_endpoint:
            return None
        parts = urlsplit(meta.end_session_endpoint)
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None

    async def end_session_url(self, post_logout_redirect_uri: str, state: str) -> str | None:
        try:
            async with asyncio.timeout(IDP_BUDGET_S):
                meta = await self.metadata()
        except (IdpError, TimeoutError):
            return None
        if not meta.end_session_endpoint:
            return None
        query = urlencode(
            {
                "client_id": self.client_id,
                "post_logout_redirect_uri": post_logout_redirect_uri,
                "state": state,
            }
        )
        sep = "&" if "?" in meta.end_session_endpoint else "?"
        return f"{meta.end_session_endpoint}{sep}{query}"
