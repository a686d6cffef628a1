"""OIDC discovery metadata for the assertion issuer (with `jwt_issuer_format: uri`).

`iss` is then `https://<authenticate host>/`, so `<iss>.well-known/openid-configuration` is on
the authenticate host: a standard OIDC library given only the issuer URL finds the JWKS there.
"""

import json
from typing import Any

from authgate.assertion.signer import ASSERTION_CLAIMS


def issuer_is_url(issuer: str) -> bool:
    return issuer.startswith(("https://", "http://"))


def discovery_document(issuer: str, jwks_uri: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "claims_supported": list(ASSERTION_CLAIMS),
    }


def discovery_bytes(issuer: str, jwks_uri: str) -> bytes:
    """The document exactly as served (and as `authgate issuer export` writes it)."""
    return json.dumps(discovery_document(issuer, jwks_uri), separators=(",", ":")).encode()
