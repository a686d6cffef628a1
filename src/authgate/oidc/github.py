"""GitHub as an identity provider: OAuth 2.0 (no OpenID Connect), the user read from its API.

As in Pomerium: authorize and token endpoints under `idp_provider_url` (https://github.com by
default), the API on api.github.com for github.com and under `idp_provider_url` otherwise
(GitHub Enterprise). The user is `/user` (login as `sub` and `user`), the email the primary
*verified* address of `/user/emails`; authgate also lists `/user/teams` as groups named
`<org>/<team-slug>` (the `read:org` scope). GitHub tokens do not expire: a refresh reads the API
again with the same token, and a revoked token ends the session.
"""

import asyncio
import time
from typing import Any

import httpx

from authgate.oidc.client import (
    IDP_BUDGET_S,
    GrantRevoked,
    IdpError,
    LoginResult,
    Metadata,
    OidcClient,
    TokenRejected,
)
from authgate.oidc.providers import github_api_url
from authgate.session.record import IdpTokens

TEAMS_PAGE = 100  # one page of teams; more would need pagination


class GitHubClient(OidcClient):
    """OidcClient's interface over GitHub's OAuth 2.0 endpoints and REST API."""

    token_auth_method = "client_secret_post"  # what GitHub documents

    @property
    def api_url(self) -> str:
        return github_api_url(self.provider_url)

    async def metadata(self) -> Metadata:
        # No discovery: fixed paths. The "issuer" is only what sessions and RFC 9207 compare.
        return Metadata(
            issuer=self.provider_url,
            authorization_endpoint=f"{self.provider_url}/login/oauth/authorize",
            token_endpoint=f"{self.provider_url}/login/oauth/access_token",
            jwks_uri="",
            userinfo_endpoint=f"{self.api_url}/user",
            end_session_endpoint=None,
        )

    async def _api(self, path: str, access_token: str) -> Any:
        try:
            response = await self._http.get(
                f"{self.api_url}{path}",
                headers={
                    "Authorization": f"token {access_token}",
                    "Accept": "application/vnd.github+json",
                },
            )
        except httpx.HTTPError as exc:
            raise IdpError(f"cannot reach GitHub's API at {self.api_url}: {exc!s}") from None
        if response.status_code == 401:
            raise GrantRevoked("GitHub no longer accepts the access token")
        if response.status_code != 200:
            raise IdpError(f"GitHub answered {response.status_code} for {path}")
        try:
            return response.json()
        except ValueError:
            raise IdpError(f"GitHub sent invalid JSON from {path}") from None

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        user, emails, teams = await asyncio.gather(
            self._api("/user", access_token),
            self._api("/user/emails", access_token),
            self._api(f"/user/teams?per_page={TEAMS_PAGE}", access_token),
        )
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            raise IdpError("GitHub's /user has no login")
        login = user["login"]
        primary = next(
            (
                e["email"]
                for e in (emails if isinstance(emails, list) else [])
                if isinstance(e, dict)
                and e.get("primary") is True
                and e.get("verified") is True
                and isinstance(e.get("email"), str)
            ),
            "",
        )
        groups = sorted(
            f"{t['organization']['login']}/{t['slug']}"
            for t in (teams if isinstance(teams, list) else [])
            if isinstance(t, dict)
            and isinstance(t.get("slug"), str)
            and isinstance(t.get("organization"), dict)
            and isinstance(t["organization"].get("login"), str)
        )
        claims: dict[str, Any] = {"sub": login, "user": login, "groups": groups}
        if isinstance(user.get("name"), str) and user["name"]:
            claims["name"] = user["name"]
        if primary:  # only a verified address, as Pomerium
            claims["email"], claims["email_verified"] = primary, True
        return claims

    async def _complete_login(self, code: str, code_verifier: str, nonce: str) -> LoginResult:
        token = await self._token_request(
            grant_type="authorization_code", code=code, code_verifier=code_verifier
        )
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise TokenRejected("GitHub's token response has no access_token")
        try:
            claims = await self.userinfo(access_token)
        except GrantRevoked as exc:
            raise TokenRejected(str(exc)) from None
        return LoginResult(claims, self._tokens(token))

    async def refresh(self, tokens: IdpTokens) -> tuple[dict[str, Any], IdpTokens] | None:
        if not tokens.access_token:
            return None
        async with asyncio.timeout(IDP_BUDGET_S * 2):
            return await self.userinfo(tokens.access_token), tokens

    async def verify_jwt(self, token: str, audiences: Any, **_: Any) -> dict[str, Any]:
        raise TokenRejected("GitHub issues no JWTs; use bearer_token_format: idp_access_token")

    async def jwt_issued_here(self, token: str) -> bool:
        return False

    @staticmethod
    def _tokens(token: dict[str, Any], previous: IdpTokens | None = None) -> IdpTokens:
        # GitHub OAuth app tokens never expire; Pomerium treats them the same way.
        return IdpTokens(
            access_token=str(token.get("access_token") or ""),
            refresh_token="",
            access_expires_at=time.time() + 10 * 365 * 86400,
        )
