"""`authgate doctor` without upstreams: its assertions, how it reads Jenkins' whoAmI, its output.

(Not test_doctor.py: pytest collects tests/ without __init__.py files, so a test module's
basename must be unique, and tests/integration/test_doctor.py has that one.) Against answering
upstreams (the Jenkins stand-in, a non-loopback TCP listener):
tests/integration/test_doctor.py.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jwt
import pytest

from authgate.assertion.signer import ASSERTION_LIFETIME_S
from authgate.check import Finding
from authgate.config import RuntimeConfig, build_runtime, settings_from_mapping
from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64
from authgate.doctor import (
    DOCTOR_EMAIL,
    DOCTOR_USER,
    EXPIRED_AGO_S,
    WRONG_AUDIENCE,
    NotWhoAmI,
    assertion_claims,
    build_probes,
    exit_code,
    is_loopback,
    register,
    render,
    whoami_user,
)

SIGNING_KEY = generate_signing_key_b64()


def _runtime(**settings: Any) -> RuntimeConfig:
    raw: dict[str, Any] = {
        "insecure_server": True,
        "authenticate_service_url": "http://authenticate.example.com",
        "idp_provider_url": "http://127.0.0.1:9400",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "signing_key": SIGNING_KEY,
        "cookie_secret": generate_cookie_secret(),
        "routes": [
            {
                "from": "http://jenkins.example.com",
                "to": "unix:///run/jenkins.sock",
                "pass_identity_headers": True,
                "allowed_domains": ["example.com"],
            }
        ],
        **settings,
    }
    return build_runtime(settings_from_mapping(raw, environ={}), warn=False)


def _decode(cfg: RuntimeConfig, token: str, *, verify_exp: bool = False) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token,
        cfg.signing_key.public_key(),
        algorithms=["ES256"],
        options={"verify_aud": False, "verify_exp": verify_exp},
    )
    return claims


# ---- assertions ------------------------------------------------------------------------------


def test_claims_are_authgates_for_the_doctor_user() -> None:
    now = 1_700_000_000.7
    claims = assertion_claims("authenticate.example.com", "jenkins.example.com", now)
    assert claims["iss"] == "authenticate.example.com"
    assert claims["aud"] == "jenkins.example.com"
    assert claims["iat"] == claims["nbf"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_000 + ASSERTION_LIFETIME_S
    assert claims["email"] == DOCTOR_EMAIL
    assert claims["sub"] == claims["user"] == DOCTOR_USER
    assert claims["groups"] == []  # a list: a missing claim makes the plugin anonymous


def test_expired_claims_ended_long_ago() -> None:
    now = 1_700_000_000
    claims = assertion_claims("i", "a", now, expired=True)
    assert claims["exp"] == now - EXPIRED_AGO_S
    assert claims["nbf"] < claims["exp"]


def test_probes() -> None:
    cfg = _runtime()
    rt = cfg.routes[0]
    probes = {p.name: p for p in build_probes(cfg, rt)}
    assert list(probes) == ["none", "foreign-key", "wrong-audience", "expired", "valid"]
    assert probes["none"].token is None
    assert [p.anonymous for p in probes.values()] == [True, True, True, True, False]

    valid = probes["valid"].token
    assert valid is not None
    claims = _decode(cfg, valid, verify_exp=True)
    assert claims["iss"] == cfg.assertion_issuer == "authenticate.example.com"
    assert claims["aud"] == rt.hostname == "jenkins.example.com"
    assert claims["email"] == DOCTOR_EMAIL
    assert claims["exp"] > time.time()
    assert jwt.get_unverified_header(valid)["kid"]

    wrong = probes["wrong-audience"].token
    assert wrong is not None
    assert _decode(cfg, wrong)["aud"] == WRONG_AUDIENCE

    expired = probes["expired"].token
    assert expired is not None
    assert _decode(cfg, expired)["exp"] < time.time() - 3000
    with pytest.raises(jwt.ExpiredSignatureError):
        _decode(cfg, expired, verify_exp=True)

    foreign = probes["foreign-key"].token
    assert foreign is not None
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(cfg, foreign)
    # Otherwise the valid claims: only the key is wrong.
    assert jwt.decode(foreign, options={"verify_signature": False})["aud"] == rt.hostname


def test_issuer_follows_jwt_issuer_format() -> None:
    cfg = _runtime(jwt_issuer_format="uri")
    valid = build_probes(cfg, cfg.routes[0])[-1].token
    assert valid is not None
    assert _decode(cfg, valid)["iss"] == "http://authenticate.example.com/"


# ---- Jenkins' whoAmI -------------------------------------------------------------------------

ANONYMOUS = {
    "_class": "hudson.security.WhoAmI",
    "anonymous": True,
    "authenticated": True,  # Jenkins says so for the anonymous user too
    "authorities": ["anonymous"],
    "details": None,
    "name": "anonymous",
    "toString": "AnonymousAuthenticationToken [...]",
}
ALICE = {
    "_class": "hudson.security.WhoAmI",
    "anonymous": False,
    "authenticated": True,
    "authorities": ["authenticated", "devs"],
    "details": None,
    "name": "alice@example.com",
    "toString": "...",
}


@pytest.mark.parametrize(
    ("doc", "user"),
    [
        (ANONYMOUS, None),
        (ALICE, "alice@example.com"),
        ({"name": "anonymous"}, None),  # an older Jenkins without `anonymous`
        ({**ALICE, "anonymous": True}, None),
        ({"name": DOCTOR_EMAIL, "anonymous": False}, DOCTOR_EMAIL),
    ],
)
def test_whoami_user(doc: dict[str, Any], user: str | None) -> None:
    assert whoami_user(doc) == user


@pytest.mark.parametrize("doc", [None, [], {}, {"anonymous": True}, {"name": 3}, "anonymous"])
def test_not_whoami(doc: object) -> None:
    with pytest.raises(NotWhoAmI):
        whoami_user(doc)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("0.0.0.0", False),
        ("192.0.2.7", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


# ---- output --------------------------------------------------------------------------------

FINDINGS = [
    Finding("info", "routes[0] https://a.example.com", "fine", "nothing to do"),
    Finding("error", "routes[1] https://jenkins.example.com", "takes anything", "verify"),
]


def test_text_lines() -> None:
    assert render(FINDINGS) == (
        "info: routes[0] https://a.example.com: fine (fix: nothing to do)\n"
        "error: routes[1] https://jenkins.example.com: takes anything (fix: verify)\n"
    )
    assert render([]) == "authgate doctor: no routes\n"


def test_json() -> None:
    assert json.loads(render(FINDINGS, "json")) == [
        {"severity": f.severity, "key": f.key, "message": f.message, "fix": f.fix}
        for f in FINDINGS
    ]


def test_exit_code() -> None:
    assert exit_code([]) == 0
    assert exit_code(FINDINGS[:1]) == 0
    assert exit_code(FINDINGS) == 1
    assert exit_code([Finding("warning", "k", "m", "f")]) == 1


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="authgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", "-c", "x.yaml", "--format", "json", "--timeout", "2"])
    assert (args.config, args.format, args.timeout) == ("x.yaml", "json", 2.0)
    assert callable(args.func)
    defaults = parser.parse_args(["doctor", "--config", "x.yaml"])
    assert (defaults.format, defaults.timeout) == ("text", 5.0)
