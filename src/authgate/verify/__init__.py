"""Verify the assertion (X-Pomerium-Jwt-Assertion) in an app behind authgate or Pomerium.

Needs only PyJWT, cryptography and httpx (`pip install 'authgate[verify]'`)::

    from authgate.verify import AssertionVerifier, AssertionMiddleware

    verifier = AssertionVerifier(
        "https://app.example.com/.well-known/pomerium/jwks.json",
        issuer="authenticate.example.com",
        audience="app.example.com",
    )
    app = AssertionMiddleware(app, verifier)  # scope["authgate.identity"]
"""

from authgate.verify.middleware import (
    IDENTITY_KEY,
    AssertionMiddleware,
    WSGIAssertionMiddleware,
)
from authgate.verify.verifier import (
    ALGORITHM,
    MAX_LEEWAY_S,
    AssertionVerifier,
    Identity,
    InvalidAssertion,
    KeysUnavailable,
)

__all__ = [
    "ALGORITHM",
    "IDENTITY_KEY",
    "MAX_LEEWAY_S",
    "AssertionMiddleware",
    "AssertionVerifier",
    "Identity",
    "InvalidAssertion",
    "KeysUnavailable",
    "WSGIAssertionMiddleware",
]
