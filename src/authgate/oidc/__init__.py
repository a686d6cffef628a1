"""The identity provider client (OpenID Connect relying party)."""

from authgate.oidc.client import IdpError, LoginRequest, OidcClient, TokenRejected

__all__ = ["IdpError", "LoginRequest", "OidcClient", "TokenRejected"]
