"""The IdP client for a configured `idp_provider`."""

from collections.abc import Mapping

from authgate.oidc.client import OidcClient
from authgate.oidc.github import GitHubClient
from authgate.oidc.providers import PROVIDERS


def idp_client(
    *,
    provider_name: str,
    provider_url: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    scopes: list[str],
    request_params: Mapping[str, str] | None = None,
) -> OidcClient:
    """`request_params` (idp_request_params), when given, replaces the provider's own
    authorize parameters, as in Pomerium."""
    provider = PROVIDERS[provider_name]
    cls = GitHubClient if provider.protocol == "github" else OidcClient
    return cls(
        provider_url=provider_url,
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        scopes=scopes,
        provider=provider,
        auth_params=request_params or None,
    )
