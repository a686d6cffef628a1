"""Scripts through the gate with tokens from the IdP (issue 11): Pomerium's `bearer_token_format`.

The tokens come from the real IdP through a code flow the test drives as a CLI would
(tests/support/idp_flow.py); requests go through the real Envoy and `authgate run`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security_summary import hostile
from tests.support import idp_flow
from tests.support.gate import Gate, gates

BASIC = "Basic " + base64.b64encode(b"alice:11a2b3c4d5e6f7a8b9").decode()
# jenkins: access tokens (and `groups has admins`); other: ID tokens (anyone signed in).
FORMATS = {
    "jenkins": {"bearer_token_format": "idp_access_token"},
    "other": {"bearer_token_format": "idp_identity_token"},
}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    with gates(tmp_path_factory.mktemp("bearer"), workers=1, route_extra=FORMATS) as (one,):
        yield one


def tokens_for(gate: Gate, email: str, tamper: str | None = None) -> dict[str, Any]:
    """The token endpoint's answer for a login of `email` (with the IdP's ID token spoiled as
    `tamper` says, through its test switch)."""
    discovery = idp_flow.discover(gate.idp.issuer)
    if tamper:
        httpx.post(f"{gate.idp.issuer}/__test__/tamper", json={"mode": tamper}).raise_for_status()
    try:
        with httpx.Client(timeout=15) as client:
            password = email.split("@")[0] + "-password"
            return idp_flow.login(client, discovery, email, password).tokens
    finally:
        if tamper:
            httpx.post(f"{gate.idp.issuer}/__test__/tamper", json={"mode": "off"})


def call(gate: Gate, host: str, path: str, headers: dict[str, str]) -> httpx.Response:
    with gate.client(follow=False, accept="application/json") as c:
        return c.get(gate.url(host, path), headers={"host": gate.host(host), **headers})


def test_an_idp_access_token_is_an_identity(gate: Gate) -> None:
    token = tokens_for(gate, "alice@example.com")["access_token"]
    answer = call(gate, "jenkins.test", "/api/json", {"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["username"] == "alice@example.com"  # a verified assertion
    seen = next(r for r in gate.jenkins.requests.snapshot() if r.path == "/api/json")
    assert seen.header("authorization") is None  # the token authgate read is not the app's


def test_the_apps_own_authorization_passes_when_the_token_is_in_x_pomerium(gate: Gate) -> None:
    token = tokens_for(gate, "alice@example.com")["access_token"]
    answer = call(
        gate,
        "jenkins.test",
        "/api/basic",
        {"x-pomerium-authorization": f"Bearer {token}", "authorization": BASIC},
    )
    assert answer.status_code == 200, answer.text
    seen = next(r for r in gate.jenkins.requests.snapshot() if r.path == "/api/basic")
    assert seen.raw_header_values("authorization") == [BASIC.encode()]
    assert seen.header("x-pomerium-authorization") is None
    assert answer.json()["user"]["username"] == "alice@example.com"


def test_an_idp_identity_token_where_the_route_says_so(gate: Gate) -> None:
    token = tokens_for(gate, "carol@example.com")["id_token"]
    answer = call(gate, "other.test", "/id", {"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    # an access token is not an ID token there, and the other way round
    access = tokens_for(gate, "carol@example.com")["access_token"]
    as_id = call(gate, "other.test", "/id2", {"authorization": f"Bearer {access}"})
    assert as_id.status_code == 401
    as_access = call(gate, "jenkins.test", "/x", {"authorization": f"Bearer {token}"})
    assert as_access.status_code == 401


def test_a_token_of_a_user_the_policy_refuses_gets_403_json(gate: Gate) -> None:
    token = tokens_for(gate, "bob@evil.org")["access_token"]  # bob is not in `admins`
    answer = call(gate, "jenkins.test", "/job/x", {"authorization": f"Bearer {token}"})
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == "forbidden"


def _spoiled(gate: Gate) -> dict[str, str]:
    """Tokens that must all be refused: the IdP's own ID tokens with one defect each, and
    tokens spoiled here."""
    good = tokens_for(gate, "carol@example.com")["id_token"]
    head, body, sig = good.split(".")
    cases = {
        "empty": "",
        "garbage": "not-a-token",
        "truncated": good[: len(good) // 2],
        "signature cut": f"{head}.{body}.",
        "payload changed": f"{head}.{body[:-4]}AAAA.{sig}",
        "two parts": f"{head}.{body}",
    }
    for mode in ("alg-none", "other-key", "unknown-kid", "bad-signature", "no-signature",
                 "wrong-iss", "wrong-aud", "several-aud-no-azp", "not-yet-valid", "no-sub",
                 "expired"):
        cases[f"IdP's {mode}"] = tokens_for(gate, "carol@example.com", tamper=mode)["id_token"]
    return cases


def test_bad_tokens_get_401_with_www_authenticate_never_a_redirect(gate: Gate) -> None:
    accepted = []
    for name, token in _spoiled(gate).items():
        for host, header in (("other.test", "authorization"), ("jenkins.test", "authorization"),
                             ("other.test", "x-pomerium-authorization")):
            answer = call(gate, host, "/bad", {header: f"Bearer {token}".strip()})
            ok = (
                answer.status_code == 401
                and answer.headers.get("www-authenticate", "").startswith(
                    'Bearer error="invalid_token"'
                )
                and answer.headers["content-type"] == "application/json"
            )
            if not hostile("bearer tokens: spoiled IdP tokens", ok):
                accepted.append((name, host, header, answer.status_code))
    assert not accepted, accepted
    assert not any(r.path == "/bad" for r in gate.jenkins.requests.snapshot())


def test_one_opaque_token_costs_one_idp_call(tmp_path: Path) -> None:
    """50 requests with one token: the first asks the IdP, the other 49 do not — they still
    work with the IdP stopped (one worker: each worker keeps its own answers)."""
    with gates(tmp_path, workers=1, route_extra=FORMATS) as (own,):
        token = tokens_for(own, "alice@example.com")["access_token"]
        header = {"authorization": f"Bearer {token}"}
        assert call(own, "jenkins.test", "/n/0", header).status_code == 200
        own.idp.stop()
        statuses = [call(own, "jenkins.test", f"/n/{i}", header).status_code for i in range(1, 50)]
        assert statuses == [200] * 49
        # a token never seen needs the IdP, which is down: 503, not 401, never an allow
        fresh = call(own, "jenkins.test", "/n/new", {"authorization": "Bearer fresh-opaque-tok"})
        assert fresh.status_code == 503 and json.loads(fresh.text)["error"] == "idp_unavailable"


FOREIGN_TARGETS = [
    "http://evil.test/cb",
    "https://evil.test/cb",
    "http://127.0.0.1.evil.test/cb",
    "http://localhost.evil.test/cb",
    "http://127.0.0.1@evil.test/cb",
    "http://user:pw@127.0.0.1:9/cb",
    "http://evil.test\\@127.0.0.1/cb",
    "//127.0.0.1:9/cb",
    "/cb",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "ftp://127.0.0.1/cb",
    "http://0x7f.1/cb",
    "http://2130706433/cb",
    "http://10.0.0.1/cb",
    "http://127.0.0.1:9/cb#frag",
    "http://127.0.0.1:9/c b",
    "",
]


def test_the_programmatic_login_sends_tokens_to_loopback_listeners_only(gate: Gate) -> None:
    accepted = []
    for target in FOREIGN_TARGETS:
        with gate.client(follow=False, accept="application/json") as c:
            answer = c.get(
                gate.url("jenkins.test", "/.pomerium/api/v1/login"),
                params={"pomerium_redirect_uri": target},
                headers={"host": gate.host("jenkins.test")},
            )
        refused = answer.status_code == 400
        if not hostile("programmatic login: token sent off this machine", refused):
            accepted.append((target, answer.status_code, answer.text[:200]))
    assert not accepted, accepted
    # controls: loopback listeners get the sign-in URL
    for target in ("http://127.0.0.1:9/cb", "http://localhost:9/cb", "http://[::1]:9/cb"):
        with gate.client(follow=False) as c:
            ok = c.get(
                gate.url("jenkins.test", "/.pomerium/api/v1/login"),
                params={"pomerium_redirect_uri": target},
                headers={"host": gate.host("jenkins.test")},
            )
        assert ok.status_code == 200, (target, ok.text)
        assert ok.text.startswith(f"https://authenticate.test:{gate.public_port}/.pomerium/sign_in?")


def test_made_up_programmatic_tokens_are_refused(gate: Gate) -> None:
    accepted = []
    for name, value in {
        "garbage": "Pomerium not-a-token",
        "empty": "Pomerium",
        "a session cookie's value": f"Pomerium {'A' * 120}",
        "bearer spelling": "Bearer Pomerium-xyz",
    }.items():
        for header in ("authorization", "x-pomerium-authorization"):
            answer = call(gate, "jenkins.test", "/tok", {header: value})
            if not hostile("programmatic tokens: made up", answer.status_code == 401):
                accepted.append((name, header, answer.status_code))
    assert not accepted, accepted
