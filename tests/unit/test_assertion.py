"""The ES256 assertion the upstream (Jenkins' JWT Auth plugin) receives, and its JWKS."""

import base64
import hashlib
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.assertion import AssertionSigner, jwk_thumbprint, public_jwk
from authgate.assertion.signer import ASSERTION_LIFETIME_S, REUSE_MARGIN_S

ISSUER = "authenticate.test"
AUDIENCE = "jenkins.test"
CLAIM_NAMES = {
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "sub",
    "email",
    "groups",
    "name",
    "user",
    "sid",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def expected_thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 §3, computed here without the code under test."""
    numbers = key.public_key().public_numbers()
    x = b64url(numbers.x.to_bytes(32, "big"))
    y = b64url(numbers.y.to_bytes(32, "big"))
    canonical = '{"crv":"P-256","kty":"EC","x":"' + x + '","y":"' + y + '"}'
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def signer(key: ec.EllipticCurvePrivateKey) -> AssertionSigner:
    return AssertionSigner(key, ISSUER)


def issue(signer: AssertionSigner, now: float | None = None, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "sid": "sid-1",
        "audience": AUDIENCE,
        "user": "u-alice",
        "email": "alice@example.com",
        "name": "Alice",
        "groups": ("admins", "devs"),
    }
    args.update(overrides)
    return signer.signed_for(now=now, **args)[0]


def verify(signer: AssertionSigner, token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    """Verify as an upstream would: the key from the published JWKS, by `kid`."""
    jwks = jwt.PyJWKSet.from_dict(json.loads(signer.jwks_json))
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token,
        key=jwks[kid].key,
        algorithms=["ES256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
    )
    return claims


# ---- kid and JWKS --------------------------------------------------------------------------


def test_kid_is_the_rfc7638_thumbprint(signer: AssertionSigner, key: Any) -> None:
    token = issue(signer)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == expected_thumbprint(key)
    assert signer.kid == expected_thumbprint(key)
    assert signer.jwks["keys"][0]["kid"] == expected_thumbprint(key)


def test_thumbprint_ignores_other_members(key: Any) -> None:
    jwk = public_jwk(key)
    decorated = {**jwk, "kid": "x", "use": "sig", "alg": "ES256"}
    assert jwk_thumbprint(decorated) == jwk_thumbprint(jwk) == expected_thumbprint(key)


def test_coordinates_keep_leading_zero_bytes() -> None:
    """RFC 7518 §6.2.1.2: x and y are the full 32 bytes, even when they start with 0x00."""
    d = 1
    while True:
        candidate = ec.derive_private_key(d, ec.SECP256R1())
        if candidate.public_key().public_numbers().x < 1 << 248:
            break
        d += 1
    jwk = public_jwk(candidate)
    assert len(b64url_decode(jwk["x"])) == 32
    assert len(b64url_decode(jwk["y"])) == 32
    assert b64url_decode(jwk["x"])[0] == 0
    assert jwk_thumbprint(jwk) == expected_thumbprint(candidate)
    small = AssertionSigner(candidate, ISSUER)
    assert verify(small, issue(small))["sub"] == "u-alice"


def test_jwks_publishes_only_the_public_key(signer: AssertionSigner, key: Any) -> None:
    (published,) = signer.jwks["keys"]
    assert set(published) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert (published["kty"], published["crv"], published["use"], published["alg"]) == (
        "EC",
        "P-256",
        "sig",
        "ES256",
    )
    assert "d" not in published
    assert json.loads(signer.jwks_json) == signer.jwks
    numbers = key.public_key().public_numbers()
    assert int.from_bytes(b64url_decode(published["x"]), "big") == numbers.x
    assert int.from_bytes(b64url_decode(published["y"]), "big") == numbers.y


def test_signature_is_raw_r_s(signer: AssertionSigner) -> None:
    """JWS ES256 signatures are r||s, 64 bytes (not DER)."""
    signature = issue(signer).split(".")[2]
    assert len(b64url_decode(signature)) == 64


# ---- claims --------------------------------------------------------------------------------


def test_claims_verify_with_the_jwks(signer: AssertionSigner) -> None:
    before = int(time.time())
    claims = verify(signer, issue(signer))
    after = int(time.time())
    assert set(claims) == CLAIM_NAMES
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 300 == claims["iat"] + ASSERTION_LIFETIME_S
    assert claims["sub"] == claims["user"] == "u-alice"
    assert claims["email"] == "alice@example.com"
    assert claims["name"] == "Alice"
    assert claims["groups"] == ["admins", "devs"]
    assert claims["sid"] == "sid-1"
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_groups_is_an_empty_list_without_groups(signer: AssertionSigner) -> None:
    claims = verify(signer, issue(signer, groups=()))
    assert claims["groups"] == []
    payload = json.loads(b64url_decode(issue(signer, sid="sid-2", groups=()).split(".")[1]))
    assert payload["groups"] == []  # present and a list, never null


def test_wrong_audience_or_foreign_key_does_not_verify(signer: AssertionSigner) -> None:
    token = issue(signer)
    with pytest.raises(jwt.InvalidAudienceError):
        verify(signer, token, audience="status.test")
    other = AssertionSigner(ec.generate_private_key(ec.SECP256R1()), ISSUER)
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(
            token,
            key=jwt.PyJWKSet.from_dict(other.jwks).keys[0].key,
            algorithms=["ES256"],
            audience=AUDIENCE,
        )


def test_every_assertion_has_its_own_jti(signer: AssertionSigner) -> None:
    jtis = {verify(signer, issue(signer, sid=f"sid-{i}"))["jti"] for i in range(20)}
    assert len(jtis) == 20


# ---- the per-session, per-route cache ------------------------------------------------------

T0 = 1_800_000_000


def test_token_is_reused_for_the_same_session_and_audience(signer: AssertionSigner) -> None:
    first = issue(signer, now=T0)
    assert issue(signer, now=T0 + 1) == first
    assert issue(signer, now=T0 + 100) == first
    assert issue(signer, now=T0 + ASSERTION_LIFETIME_S - REUSE_MARGIN_S - 1) == first


def test_signed_for_says_until_when_the_token_is_handed_out(signer: AssertionSigner) -> None:
    args: dict[str, Any] = {
        "sid": "sid-9", "audience": AUDIENCE, "user": "u", "email": "", "name": "", "groups": ()
    }
    token, until = signer.signed_for(now=T0, **args)
    assert until == T0 + ASSERTION_LIFETIME_S - REUSE_MARGIN_S
    assert signer.signed_for(now=until - 1, **args) == (token, until)
    renewed, later = signer.signed_for(now=until, **args)
    assert renewed != token
    assert later == until + ASSERTION_LIFETIME_S - REUSE_MARGIN_S


def test_token_is_resigned_close_to_exp(signer: AssertionSigner) -> None:
    first = issue(signer, now=T0)
    renewed_at = T0 + ASSERTION_LIFETIME_S - REUSE_MARGIN_S
    second = issue(signer, now=renewed_at)
    assert second != first
    claims = jwt.decode(second, options={"verify_signature": False})
    assert claims["iat"] == renewed_at
    assert claims["exp"] == renewed_at + 300
    # ... and the new one is reused in turn
    assert issue(signer, now=renewed_at + 10) == second


def test_handed_out_tokens_always_have_time_left(signer: AssertionSigner) -> None:
    """Whatever the cache holds, the upstream never gets a token about to expire."""
    issued = set()
    for now in range(T0, T0 + 1200, 7):
        token = issue(signer, now=now)
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["iat"] <= now
        assert claims["exp"] - now >= 30
        issued.add(token)
    assert 3 <= len(issued) <= 10  # reused, not re-signed per request


def test_expired_cached_token_is_never_returned(signer: AssertionSigner) -> None:
    first = issue(signer, now=T0)
    later = issue(signer, now=T0 + 10_000)
    assert later != first
    assert jwt.decode(later, options={"verify_signature": False})["iat"] == T0 + 10_000


def test_other_audience_or_session_gets_its_own_token(signer: AssertionSigner) -> None:
    base = issue(signer, now=T0)
    other_route = issue(signer, now=T0, audience="status.test")
    other_session = issue(signer, now=T0, sid="sid-2")
    assert len({base, other_route, other_session}) == 3
    assert jwt.decode(other_route, options={"verify_signature": False})["aud"] == "status.test"
    assert jwt.decode(other_session, options={"verify_signature": False})["sid"] == "sid-2"


def test_cache_is_bounded(key: Any) -> None:
    signer = AssertionSigner(key, ISSUER, cache_size=50)
    for i in range(500):
        issue(signer, now=T0, sid=f"sid-{i}")
        assert signer.cached <= 50
    assert signer.cached == 50
