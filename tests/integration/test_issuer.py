"""An issuer apps can rely on, through the real stack (`authgate run`: Envoy + workers):

* key rotation, publish-then-switch, with a verifier that caches the JWKS and fetches it again
  only for an unknown `kid`: no assertion fails verification at any step;
* OIDC discovery (`jwt_issuer_format: uri`): a standard library given only the issuer URL
  verifies the assertion the app received.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.assertion import jwk_thumbprint, public_jwk
from authgate.assertion.keys import private_pem
from authgate.contract import ASSERTION_HEADER, JWKS_PATH, OIDC_DISCOVERY_PATH
from tests.support.gate import Gate, gates
from tests.support.idp_login import is_idp_login_page, submit_idp_login

USER = "alice@example.com"


def b64(*keys: ec.EllipticCurvePrivateKey) -> str:
    return base64.b64encode(b"".join(private_pem(k) for k in keys)).decode()


def kid(key: ec.EllipticCurvePrivateKey) -> str:
    return jwk_thumbprint(public_jwk(key))


class CachingVerifier:
    """An app's verifier: the JWKS is fetched once and kept; a token naming an unknown `kid`
    makes it fetch the JWKS again, once (as the Jenkins JWT Auth plugin and most libraries)."""

    def __init__(self, gate: Gate, issuer: str, audience: str) -> None:
        self.gate, self.issuer, self.audience = gate, issuer, audience
        self.keys: dict[str, Any] = {}
        self.fetches = 0

    def _fetch(self) -> None:
        with self.gate.client(accept="application/json") as client:
            answer = client.get(self.gate.url("authenticate.test", JWKS_PATH))
        assert answer.status_code == 200
        self.keys = {
            str(k.key_id): k.key for k in jwt.PyJWKSet.from_json(answer.text).keys
        }
        self.fetches += 1

    def verify(self, token: str) -> dict[str, Any]:
        token_kid = jwt.get_unverified_header(token)["kid"]
        if token_kid not in self.keys:
            self._fetch()
        claims: dict[str, Any] = jwt.decode(
            token,
            self.keys[token_kid],
            algorithms=["ES256"],
            audience=self.audience,
            issuer=self.issuer,
        )
        return claims


def assertion_for_jenkins(gate: Gate, browser: httpx.Client) -> str:
    """Open Jenkins (signing in when the IdP asks) and return the assertion it received."""
    gate.jenkins.clear()
    page = browser.get(gate.url("jenkins.test", "/whoami"))
    if is_idp_login_page(page):
        page = submit_idp_login(browser, page, USER, "alice-password")
    assert page.status_code == 200, page.text[:500]
    seen = gate.jenkins.requests.wait_for(lambda r: r.header(ASSERTION_HEADER) is not None)
    # The Jenkins stand-in (its own JWKS cache, refetch on an unknown kid) accepted it too.
    assert seen.user is not None, seen.auth_error
    token = seen.header(ASSERTION_HEADER)
    assert token is not None
    return token


def restart_with(gate: Gate, signing_key: str) -> None:
    gate.stack.stop()
    gate.stack.config["signing_key"] = signing_key
    gate.stack.start()


def test_rotation_publish_switch_retire_never_fails_a_verification(tmp_path: Path) -> None:
    a, b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    extra = {"signing_key": b64(a), "jwt_issuer_format": "uri"}
    with gates(tmp_path, workers=1, extra=extra) as (gate,), gate.client() as browser:
        issuer = f"https://authenticate.test:{gate.port}/"
        gate.jenkins.configure(issuers=[issuer])
        verifier = CachingVerifier(gate, issuer, "jenkins.test")

        # Key A alone: the verifier fetches the JWKS once and keeps it.
        token = assertion_for_jenkins(gate, browser)
        assert jwt.get_unverified_header(token)["kid"] == kid(a)
        assert verifier.verify(token)["email"] == USER and verifier.fetches == 1

        # Step 1, publish: [A, B]. A still signs; B is in the JWKS for the next fetch.
        restart_with(gate, b64(a, b))
        token = assertion_for_jenkins(gate, browser)
        assert jwt.get_unverified_header(token)["kid"] == kid(a)
        assert verifier.verify(token)["email"] == USER and verifier.fetches == 1
        with gate.client(accept="application/json") as client:
            published = client.get(gate.url("authenticate.test", JWKS_PATH))
        assert [k["kid"] for k in published.json()["keys"]] == [kid(a), kid(b)]
        assert published.headers["cache-control"] == "public, max-age=300"

        # Step 2, switch: [B, A]. B signs; the verifier meets B's kid, fetches once, verifies.
        restart_with(gate, b64(b, a))
        token = assertion_for_jenkins(gate, browser)
        assert jwt.get_unverified_header(token)["kid"] == kid(b)
        assert verifier.verify(token)["email"] == USER and verifier.fetches == 2

        # Step 3, retire: [B]. Nothing changes for the verifier.
        restart_with(gate, b64(b))
        token = assertion_for_jenkins(gate, browser)
        assert jwt.get_unverified_header(token)["kid"] == kid(b)
        assert verifier.verify(token)["email"] == USER and verifier.fetches == 2


def test_a_standard_oidc_library_verifies_from_the_issuer_url_alone(tmp_path: Path) -> None:
    with gates(tmp_path, workers=1, extra={"jwt_issuer_format": "uri"}) as (gate,), \
            gate.client() as browser:
        issuer = f"https://authenticate.test:{gate.port}/"
        gate.jenkins.configure(issuers=[issuer])
        token = assertion_for_jenkins(gate, browser)

        # Only the issuer URL (the assertion's iss) is known: discovery, then jwks_uri.
        with gate.client(accept="application/json") as client:
            found = client.get(issuer.rstrip("/") + OIDC_DISCOVERY_PATH)
        assert found.status_code == 200
        meta = found.json()
        assert meta["issuer"] == issuer == jwt.decode(token, options={"verify_signature": False})[
            "iss"
        ]
        assert meta["jwks_uri"] == f"https://authenticate.test:{gate.port}{JWKS_PATH}"
        assert meta["id_token_signing_alg_values_supported"] == ["ES256"]

        jwks_client = jwt.PyJWKClient(meta["jwks_uri"], ssl_context=gate.pki.client_ssl_context())
        claims = jwt.decode(
            token,
            jwks_client.get_signing_key_from_jwt(token).key,
            algorithms=meta["id_token_signing_alg_values_supported"],
            audience="jenkins.test",
            issuer=meta["issuer"],
        )
        assert claims["email"] == USER
        assert set(claims) <= set(meta["claims_supported"])

        # joserfc (authlib's JOSE), the same way: discovery document -> key set -> claims.
        from joserfc import jwt as jose_jwt
        from joserfc.jwk import KeySet

        with gate.client(accept="application/json") as client:
            key_set = KeySet.import_key_set(client.get(meta["jwks_uri"]).json())
        decoded = jose_jwt.decode(token, key_set, algorithms=["ES256"])
        jose_jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": meta["issuer"]},
            aud={"essential": True, "value": "jenkins.test"},
        ).validate(decoded.claims)
        assert decoded.claims["email"] == USER


def test_no_discovery_when_iss_is_a_host_name(tmp_path: Path) -> None:
    with gates(tmp_path, workers=1) as (gate,), gate.client(accept="application/json") as client:
        answer = client.get(gate.url("authenticate.test", OIDC_DISCOVERY_PATH))
        assert answer.status_code == 404
        assert answer.json()["error"] == "discovery_unavailable"
