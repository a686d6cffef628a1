"""Pomerium's `idp_provider` names and what each one changes (defaults and quirks).

Read from Pomerium's pkg/identity: every name but `github` is OpenID Connect against
`idp_provider_url`; some bring a default URL, default scopes or extra authorize parameters.
This module is plain data so the config schema can read it without the HTTP client.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

OIDC_DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access")
# Authorize-request parameters the client sets itself; `idp_request_params` may not replace them.
RESERVED_PARAMS = frozenset(
    {
        "client_id",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
    }
)
# Azure's multi-tenant discovery names this issuer; the ID token carries the real tenant.
AZURE_TENANT_PLACEHOLDER = "{tenantid}"
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}")  # a GUID (or a domain name)
GITHUB_DEFAULT_URL = "https://github.com"
GITHUB_API_URL = "https://api.github.com"


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    protocol: Literal["oidc", "github"] = "oidc"
    default_url: str | None = None  # None: `idp_provider_url` is required
    url_example: str = "https://idp.example.com"
    default_scopes: tuple[str, ...] = OIDC_DEFAULT_SCOPES
    auth_params: Mapping[str, str] = field(default_factory=dict)

    def scopes_for(self, url: str) -> tuple[str, ...]:
        if self.name == "onelogin" and "/oidc/2" in url:
            return ("openid", "profile", "email", "groups")  # OneLogin v2 has no offline_access
        return self.default_scopes


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("oidc"),
        Provider("keycloak", url_example="https://keycloak.example.com/realms/<realm>"),
        Provider("okta", url_example="https://<org>.okta.com"),
        Provider("auth0", url_example="https://<tenant>.auth0.com/"),
        Provider("ping", url_example="https://auth.pingone.com/<environment-id>/as"),
        Provider(
            "cognito",
            url_example="https://cognito-idp.<region>.amazonaws.com/<user-pool-id>",
            default_scopes=("openid", "email", "profile"),
        ),
        Provider(
            "onelogin",
            default_url="https://openid-connect.onelogin.com/oidc",
            default_scopes=("openid", "profile", "email", "groups", "offline_access"),
        ),
        # Google has no `offline_access` scope: a refresh token needs access_type=offline,
        # and prompt=consent makes Google send one on every login.
        Provider(
            "google",
            default_url="https://accounts.google.com",
            default_scopes=("openid", "profile", "email"),
            auth_params={"prompt": "select_account consent", "access_type": "offline"},
        ),
        # `common` accepts every tenant; a tenant's own URL is
        # https://login.microsoftonline.com/<tenant-id>/v2.0.
        Provider(
            "azure",
            default_url="https://login.microsoftonline.com/common/v2.0",
            auth_params={"prompt": "select_account"},
        ),
        Provider(
            "gitlab",
            default_url="https://gitlab.com",
            default_scopes=("openid", "profile", "email"),
        ),
        Provider(
            "github",
            protocol="github",
            default_url=GITHUB_DEFAULT_URL,
            default_scopes=("user:email", "read:org"),
        ),
    )
}
PROVIDER_NAMES = tuple(PROVIDERS)


def provider(name: str) -> Provider:
    return PROVIDERS[name]


def github_api_url(provider_url: str) -> str:
    """github.com's API lives on api.github.com; any other URL (GitHub Enterprise, a stand-in)
    serves its API under the URL given, as in Pomerium."""
    url = provider_url.rstrip("/")
    return GITHUB_API_URL if url == GITHUB_DEFAULT_URL else url


def issuer_matches(expected: str, issuer: str, tenant: object) -> bool:
    """`issuer` is `expected`, or Azure's multi-tenant template filled with the token's `tid`."""
    if AZURE_TENANT_PLACEHOLDER not in expected:
        return issuer == expected
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        return False
    return issuer == expected.replace(AZURE_TENANT_PLACEHOLDER, tenant)
