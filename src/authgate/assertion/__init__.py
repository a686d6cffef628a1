"""Signed identity assertions (ES256 JWT) and their JWKS."""

from authgate.assertion.signer import (
    ASSERTION_CLAIMS,
    AssertionSigner,
    jwk_thumbprint,
    jwks_bytes,
    jwks_document,
    public_jwk,
    published_jwk,
)

__all__ = [
    "ASSERTION_CLAIMS",
    "AssertionSigner",
    "jwk_thumbprint",
    "jwks_bytes",
    "jwks_document",
    "public_jwk",
    "published_jwk",
]
