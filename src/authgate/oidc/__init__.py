"""The identity provider client (OpenID Connect relying party)."""

from authgate.oidc.client import (
    GrantRevoked,
    IdpError,
    LoginRequest,
    LoginResult,
    OidcClient,
    TokenRejected,
)

__all__ = ["GrantRevoked", "IdpError", "LoginRequest", "LoginResult", "OidcClient", "TokenRejected"]
