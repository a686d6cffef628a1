"""Several signing keys (Pomerium's rotation): all published, the first signs; the CLI's three
steps; the issuer's discovery document and its export."""

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.assertion import AssertionSigner, jwk_thumbprint, public_jwk
from authgate.assertion.keys import private_pem
from authgate.authz.decision import Respond
from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState
from authgate.config import build_runtime, load_settings, settings_from_mapping
from authgate.contract import AUTHENTICATE_ROUTE_ID, JWKS_PATH, OIDC_DISCOVERY_PATH, RouteKind
from authgate.errors import ConfigError
from authgate.issuer_cli import export_files, register, signing_key_value
from tests.support.checks import check_request

CONFIG: dict[str, Any] = {
    "address": "127.0.0.1:8443",
    "insecure_server": True,
    "authenticate_service_url": "http://authenticate.test:8443",
    "idp_provider_url": "http://127.0.0.1:9",
    "idp_client_id": "c",
    "idp_client_secret": "s",
    "cookie_secret": base64.b64encode(b"k" * 32).decode(),
    "routes": [
        {"from": "http://app.test:8443", "to": "http://127.0.0.1:1",
         "allow_any_authenticated_user": True},
    ],
}


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def kid(key: ec.EllipticCurvePrivateKey) -> str:
    return jwk_thumbprint(public_jwk(key))


def b64(*keys: ec.EllipticCurvePrivateKey) -> str:
    return base64.b64encode(b"".join(private_pem(k) for k in keys)).decode()


async def ask(
    state: AuthzState, path: str, host: str = "authenticate.test:8443",
    route_id: str = AUTHENTICATE_ROUTE_ID, kind: RouteKind = RouteKind.AUTHENTICATE,
) -> Respond:
    request = check_request(route_id, host, path, {"accept": "application/json"}, kind=kind)
    answer = await decide(state, request_context(request))
    assert isinstance(answer, Respond)
    return answer


def runtime(**extra: Any) -> Any:
    return build_runtime(settings_from_mapping({**CONFIG, **extra}, environ={}), warn=False)


def kids_of(value: str) -> list[str]:
    return [kid(k) for k in runtime(signing_key=value).verification_keys]


@pytest.fixture(scope="module")
def a() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def b() -> ec.EllipticCurvePrivateKey:
    return new_key()


# ---------------------------------------------------------------------------- several keys


async def test_two_keys_both_published_the_first_signs(
    a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey
) -> None:
    cfg = runtime(signing_key=b64(a, b))
    assert [kid(k) for k in cfg.verification_keys] == [kid(a), kid(b)]
    assert kid(cfg.signing_key) == kid(a)
    served = json.loads(cfg.jwks_json)
    assert [k["kid"] for k in served["keys"]] == [kid(a), kid(b)]
    assert all(k["use"] == "sig" and k["alg"] == "ES256" for k in served["keys"])
    # The server answers with every key, on the authenticate host and on a route host.
    state = AuthzState.build(cfg)
    for host, route_id, kind in (
        ("authenticate.test:8443", AUTHENTICATE_ROUTE_ID, RouteKind.AUTHENTICATE),
        ("app.test:8443", "route-0", RouteKind.INTERNAL),
    ):
        answer = await ask(state, JWKS_PATH, host, route_id, kind)
        assert answer.status == 200 and json.loads(answer.body) == served
        assert ("cache-control", "public, max-age=300") in answer.headers
    # The assertion names A's kid and verifies with A's published key.
    token, _ = state.signer.signed_for(
        sid="s", audience="app.test", user="u", email="e@x", name="n", groups=()
    )
    header = jwt.get_unverified_header(token)
    assert header["kid"] == kid(a)
    key = jwt.PyJWKSet.from_dict(served)[kid(a)].key
    jwt.decode(token, key, algorithms=["ES256"], audience="app.test")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, jwt.PyJWKSet.from_dict(served)[kid(b)].key, algorithms=["ES256"],
                   audience="app.test")


def test_signer_publishes_further_keys_after_its_own(
    a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey
) -> None:
    signer = AssertionSigner(b, "iss", published=[a, b])
    assert signer.kid == kid(b)
    assert [k["kid"] for k in signer.jwks["keys"]] == [kid(b), kid(a)]


def test_one_key_is_served_as_before(a: ec.EllipticCurvePrivateKey) -> None:
    cfg = runtime(signing_key=b64(a))
    assert cfg.jwks_json == AssertionSigner(a, "x").jwks_json


def test_several_pems_from_a_file(
    tmp_path: Path, a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey
) -> None:
    # as `openssl ecparam -genkey` writes them (EC PARAMETERS first, SEC1), then a PKCS8 one
    sec1 = a.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    (tmp_path / "keys.pem").write_bytes(params + sec1 + b"\n" + private_pem(b))
    doc = {k: v for k, v in CONFIG.items()}
    doc["signing_key_file"] = "keys.pem"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    cfg = build_runtime(load_settings(tmp_path / "config.yaml", environ={}), warn=False)
    assert [kid(k) for k in cfg.verification_keys] == [kid(a), kid(b)]


def test_a_bad_second_key_is_a_config_error_naming_signing_key(
    a: ec.EllipticCurvePrivateKey,
) -> None:
    junk = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    broken = private_pem(a) + junk
    with pytest.raises(ConfigError) as caught:
        runtime(signing_key=base64.b64encode(broken).decode())
    assert caught.value.key == "signing_key"
    assert "key 2 of 2 is not a PEM private key" in str(caught.value)


def test_a_second_key_on_another_curve_is_refused(a: ec.EllipticCurvePrivateKey) -> None:
    other = private_pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError) as caught:
        runtime(signing_key=base64.b64encode(private_pem(a) + other).decode())
    assert caught.value.key == "signing_key" and "key 2 of 2 must be an EC P-256" in str(
        caught.value
    )


def test_a_repeated_key_is_refused(a: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError) as caught:
        runtime(signing_key=b64(a, a))
    assert caught.value.key == "signing_key" and "repeats key 1" in str(caught.value)


# ---------------------------------------------------------------------------- the CLI steps


def test_rotate_promote_retire_round_trip(
    tmp_path: Path, a: ec.EllipticCurvePrivateKey
) -> None:
    current = b64(a)
    published = signing_key_value("rotate", current)
    kids = kids_of(published)
    assert len(kids) == 2 and kids[0] == kid(a)  # A still signs, the new key is published
    new = kids[1]
    switched = signing_key_value("promote", published)
    assert kids_of(switched) == [new, kid(a)]
    retired = signing_key_value("retire", switched)
    assert kids_of(retired) == [new]
    # CURRENT may be a PEM file (signing_key_file); --pem prints PEM for such a file
    pem_file = tmp_path / "signing.pem"
    pem_file.write_text(private_pem(a).decode())
    rotated_pem = signing_key_value("rotate", str(pem_file), pem=True)
    assert rotated_pem.count("BEGIN PRIVATE KEY") == 2 and rotated_pem.startswith(
        private_pem(a).decode()
    )
    pem_file.write_text(rotated_pem)
    assert kids_of(signing_key_value("promote", str(pem_file)))[1] == kid(a)


def test_promote_with_one_key_says_rotate_first(a: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError, match="rotate first"):
        signing_key_value("promote", b64(a))


def test_a_bad_current_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        signing_key_value("rotate", "not base64 !!")
    assert caught.value.key == "signing_key"


def test_register_adds_the_subcommands(
    capsys: pytest.CaptureFixture[str], a: ec.EllipticCurvePrivateKey
) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(["signing-key", "rotate", b64(a)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.strip()
    assert kids_of(printed)[0] == kid(a)
    args = parser.parse_args(["issuer", "export", "/tmp/x", "-c", "c.yaml", "--jwks-only"])
    assert args.dir == "/tmp/x" and args.jwks_only


# ---------------------------------------------------------------------------- discovery


async def test_discovery_with_uri_issuer(a: ec.EllipticCurvePrivateKey) -> None:
    cfg = runtime(signing_key=b64(a), jwt_issuer_format="uri")
    state = AuthzState.build(cfg)
    answer = await ask(state, OIDC_DISCOVERY_PATH)
    assert answer.status == 200
    doc = json.loads(answer.body)
    assert doc["issuer"] == cfg.assertion_issuer == "http://authenticate.test:8443/"
    assert doc["jwks_uri"] == f"http://authenticate.test:8443{JWKS_PATH}"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["subject_types_supported"] == ["public"]
    assert {"iss", "aud", "sub", "email", "groups", "user", "name"} <= set(doc["claims_supported"])


@pytest.mark.parametrize("form", ["host", "hostOnly"])
async def test_no_discovery_when_iss_is_not_a_url(form: str) -> None:
    state = AuthzState.build(runtime(jwt_issuer_format=form))
    answer = await ask(state, OIDC_DISCOVERY_PATH)
    assert answer.status == 404
    assert json.loads(answer.body)["error"] == "discovery_unavailable"


async def test_export_writes_the_served_bytes(
    tmp_path: Path, a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "signing_key": b64(a, b),
                                      "jwt_issuer_format": "uri"}))
    out = tmp_path / "site"
    written = export_files(str(config), out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        ".well-known/openid-configuration", ".well-known/pomerium/jwks.json"
    ]
    state = AuthzState.build(build_runtime(load_settings(config), warn=False))
    for path in (JWKS_PATH, OIDC_DISCOVERY_PATH):
        answer = await ask(state, path)
        assert (out / path.lstrip("/")).read_bytes() == answer.body.encode()


def test_export_refuses_without_a_url_issuer_or_a_signing_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "signing_key": b64(new_key())}))
    with pytest.raises(ConfigError, match="jwt_issuer_format"):
        export_files(str(config), tmp_path / "out")
    assert len(export_files(str(config), tmp_path / "out", jwks_only=True)) == 1
    config.write_text(yaml.safe_dump({**CONFIG, "jwt_issuer_format": "uri"}))
    with pytest.raises(ConfigError, match="signing_key"):
        export_files(str(config), tmp_path / "out")
