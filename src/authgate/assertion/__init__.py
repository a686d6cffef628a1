"""Signed identity assertions (ES256 JWT) and their JWKS."""

from authgate.assertion.signer import AssertionSigner, jwk_thumbprint, public_jwk

__all__ = ["AssertionSigner", "jwk_thumbprint", "public_jwk"]
