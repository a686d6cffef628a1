"""Pomerium keys that change traffic (issue #13), through the real stack (`authgate run`:
Envoy + workers, the test IdP, sample upstreams that echo what they received):
claim headers in list and map form, the groups filter, CORS preflight, response headers and
`${pomerium.*}` values in set_request_headers; and (a second run) the session cookie's
flags and signout_redirect_url; (a third) one sign-in for every host inside cookie_domain."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from authgate.contract import ASSERTION_HEADER
from tests.support.certs import TestPKI, make_pki
from tests.support.gate import Gate, gates, refused
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import (
    is_idp_login_page,
    is_idp_logout_page,
    submit_idp_login,
    submit_idp_logout,
)
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

EXTRA: dict[str, Any] = {
    # map form, global: the `other` route uses it
    "jwt_claims_headers": {"X-Email": "email", "X-Groups": "groups", "X-Missing": "no_such"},
    "jwt_groups_filter": ["devs"],
    "set_response_headers": {"X-Content-Type-Options": "nosniff"},  # every route
}
ROUTE_EXTRA: dict[str, dict[str, Any]] = {
    # list form, per route: replaces the global map on the Jenkins route
    "jenkins": {"jwt_claims_headers": ["email", "groups", "name"]},
    "other": {
        "cors_allow_preflight": True,
        "set_request_headers": {
            "Authorization": "Bearer ${pomerium.id_token}",
            "X-Access-Token": "${pomerium.access_token}",
            "X-Jwt": "${pomerium.jwt}",
            "X-Static": "plain",
        },
        "set_response_headers": {"X-Frame-Options": "DENY"},
        "rewrite_response_headers": [
            {"header": "Content-Type", "prefix": "application/json",
             "value": "application/vnd.authgate+json"}
        ],
    },
}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    with gates(tmp_path_factory.mktemp("pomerium-keys"), extra=EXTRA,
               route_extra=ROUTE_EXTRA) as (only,):
        yield only


@contextlib.contextmanager
def signed_in(gate: Gate, email: str, host: str) -> Iterator[httpx.Client]:
    with gate.client() as browser:
        landed = gate.login(browser, host, email)
        assert landed.status_code == 200, landed.text[:500]
        yield browser


def seen(answer: httpx.Response) -> dict[str, str]:
    """The headers the upstream received (it echoes them as JSON)."""
    assert answer.status_code == 200, answer.text[:500]
    headers: dict[str, str] = answer.json()["headers"]
    return headers


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_claim_headers_list_form_on_a_route(gate: Gate) -> None:
    with signed_in(gate, "alice@example.com", "jenkins.test") as browser:
        headers = seen(browser.get(gate.url("jenkins.test", "/whoami")))
    assert headers["x-pomerium-claim-email"] == "alice@example.com"
    assert headers["x-pomerium-claim-name"] == "Alice Example"
    # the global groups filter: alice is in admins and devs (the policy needs admins)
    assert headers["x-pomerium-claim-groups"] == "devs"
    assert claims_of(headers[ASSERTION_HEADER])["groups"] == ["devs"]
    assert "x-pomerium-claim-user" not in headers  # not listed
    assert "x-email" not in headers  # the route's list replaces the global map


def test_claim_headers_map_form_and_nothing_else(gate: Gate) -> None:
    with signed_in(gate, "alice@example.com", "other.test") as browser:
        headers = seen(browser.get(gate.url("other.test", "/"),
                                   headers={"x-missing": "forged", "x-email": "forged"}))
    assert headers["x-email"] == "alice@example.com"
    assert headers["x-groups"] == "devs"
    assert "x-missing" not in headers  # no such claim: and never the client's value
    assert not [name for name in headers if name.startswith("x-pomerium-claim-")]


def test_pomerium_tokens_are_each_users_own(gate: Gate) -> None:
    for email in ("alice@example.com", "bob@evil.org", "alice@example.com"):
        with signed_in(gate, email, "other.test") as browser:
            for _ in range(3):  # and again, from the kept answers
                headers = seen(browser.get(gate.url("other.test", "/tokens")))
                id_token = headers["authorization"].removeprefix("Bearer ")
                assert claims_of(id_token)["email"] == email
                assert claims_of(id_token)["iss"] == gate.idp.issuer
                assert headers["x-access-token"]
                assert headers["x-jwt"] == headers[ASSERTION_HEADER]
                assert claims_of(headers["x-jwt"])["email"] == email
                assert headers["x-static"] == "plain"


def test_a_client_cannot_set_a_substituted_header(gate: Gate) -> None:
    with signed_in(gate, "bob@evil.org", "other.test") as browser:
        headers = seen(browser.get(gate.url("other.test", "/"),
                                   headers={"x-jwt": "forged", "authorization": "Bearer forged"}))
    assert headers["x-jwt"] != "forged" and claims_of(headers["x-jwt"])["email"] == "bob@evil.org"
    assert "forged" not in headers["authorization"]


def test_cors_preflight_passes_without_a_session_and_nothing_else_does(gate: Gate) -> None:
    origin = gate.url("jenkins.test", "").rstrip("/")
    preflight = {"origin": origin, "access-control-request-method": "POST"}
    with gate.client(follow=False, accept="application/json") as anonymous:
        for _ in range(3):
            answer = anonymous.options(gate.url("other.test", "/api"), headers=preflight)
            headers = seen(answer)
            assert ASSERTION_HEADER not in headers and "x-email" not in headers
            assert headers["authorization"].strip() == "Bearer"  # no session: no token
        # the kept preflight answer is never an ordinary request's
        assert refused(anonymous.get(gate.url("other.test", "/api"), headers=preflight))
        assert refused(anonymous.options(gate.url("other.test", "/api"),
                                         headers={"origin": origin}))
        # a route without cors_allow_preflight asks for a session
        assert refused(anonymous.options(gate.url("jenkins.test", "/api"), headers=preflight))


def test_response_headers_set_and_rewritten(gate: Gate) -> None:
    with signed_in(gate, "alice@example.com", "other.test") as browser:
        answer = browser.get(gate.url("other.test", "/"))
    assert answer.status_code == 200
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-type"].startswith("application/vnd.authgate+json")
    with signed_in(gate, "alice@example.com", "jenkins.test") as browser:
        plain = browser.get(gate.url("jenkins.test", "/"))
    assert "x-frame-options" not in plain.headers
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert plain.headers["content-type"].startswith("application/json")


# ---------------------------------------------------------------------------- sign-out, cookies

LANDING = "https://signed-out.example/goodbye"


class Landed(Exception):
    """The browser was sent to signout_redirect_url (a host nobody serves here)."""


@pytest.fixture(scope="module")
def cookie_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    extra = {"signout_redirect_url": LANDING, "cookie_same_site": "strict",
             "cookie_http_only": False}
    with gates(tmp_path_factory.mktemp("pomerium-cookies"), extra=extra) as (only,):
        yield only


def test_session_cookie_flags_and_the_sign_out_landing(cookie_gate: Gate) -> None:
    gate = cookie_gate
    set_cookies: list[str] = []

    def record(answer: httpx.Response) -> None:
        set_cookies.extend(answer.headers.get_list("set-cookie"))
        if answer.headers.get("location") == LANDING:
            raise Landed

    with gate.client() as browser:
        browser.event_hooks["response"] = [record]
        landed = gate.login(browser, "jenkins.test", "alice@example.com")
        assert landed.status_code == 200, landed.text[:500]
        session = [
            c for c in set_cookies if c.startswith("__Host-_pomerium=") and "Max-Age=0" not in c
        ]
        flow = [c for c in set_cookies if c.startswith("__Host-_pomerium_")]
        assert session and flow
        for cookie in session:  # the session cookie: as configured
            assert "SameSite=Strict" in cookie and "HttpOnly" not in cookie and "Secure" in cookie
        for cookie in flow:  # the sign-in flow's own: Lax and HttpOnly whatever the settings
            assert "SameSite=Lax" in cookie and "HttpOnly" in cookie
        page = browser.get(gate.url("jenkins.test", "/.pomerium/sign_out?pomerium_redirect_uri=/x"))
        assert "signed-out.example" in page.headers.get("content-security-policy", "")
        action = page.text.split('action="')[1].split('"')[0].replace("&amp;", "&")
        origin = gate.url("jenkins.test", "").rstrip("/")
        with pytest.raises(Landed):  # past the IdP's logout, to signout_redirect_url
            done = browser.post(gate.url("jenkins.test", action), headers={"origin": origin})
            assert is_idp_logout_page(done), done.text[:500]
            submit_idp_logout(browser, done)


# ---------------------------------------------------------------------------- cookie_domain

SHARED = ["app.corp.test", "api.corp.test", "authenticate.test"]


@pytest.fixture(scope="module")
def corp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthgateStack, TestPKI]]:
    """Two route hosts inside `cookie_domain: corp.test`; the authenticate host outside it."""
    tmp = tmp_path_factory.mktemp("pomerium-cookie-domain")
    port = free_port()
    pki = make_pki(tmp / "tls", SHARED)
    with TestIdP(clients=[authgate_client(port)]) as idp, SampleUpstream(tcp_port=0) as app:
        config = {
            "address": f"127.0.0.1:{port}",
            "certificate_file": str(pki.cert_file),
            "certificate_key_file": str(pki.key_file),
            "authenticate_service_url": f"https://authenticate.test:{port}",
            "idp_provider_url": idp.issuer,
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "cookie_domain": "corp.test",
            "routes": [
                {"from": f"https://{host}:{port}", "to": f"http://127.0.0.1:{app.port}",
                 "allow_any_authenticated_user": True}
                for host in SHARED[:2]
            ],
        }
        with AuthgateStack(tmp / "run", config, ca_file=pki.ca_file) as stack:
            yield stack, pki


def test_cookie_domain_one_sign_in_for_every_host_inside_it(
    corp: tuple[AuthgateStack, TestPKI],
) -> None:
    stack, pki = corp
    port = stack.config["address"].rpartition(":")[2]

    def url(host: str, path: str = "/") -> str:
        return f"https://{host}:{port}{path}"

    with httpx.Client(verify=pki.client_ssl_context(), follow_redirects=True, timeout=15,
                      headers={"accept": "text/html"}) as browser:
        page = browser.get(url("app.corp.test"))
        assert is_idp_login_page(page)
        landed = submit_idp_login(browser, page, "alice@example.com", "alice-password")
        assert landed.status_code == 200, landed.text[:500]
        shared = [c for c in browser.cookies.jar if c.name == "__Secure-_pomerium"]
        assert [c.domain for c in shared if c.domain.endswith("corp.test")] == [".corp.test"]
        # the other host inside the domain: no sign-in, no redirect
        other = browser.get(url("api.corp.test", "/data"), follow_redirects=False)
        assert other.status_code == 200, other.headers
        assert "_pomerium" not in other.json()["headers"].get("cookie", "")
        # signing out on one host ends it on the other
        form = browser.get(url("api.corp.test", "/.pomerium/sign_out"))
        action = form.text.split('action="')[1].split('"')[0].replace("&amp;", "&")
        done = browser.post(url("api.corp.test", action),
                            headers={"origin": url("api.corp.test").rstrip("/")})
        if is_idp_logout_page(done):
            submit_idp_logout(browser, done)
        after = browser.get(url("app.corp.test"), follow_redirects=False)
        assert after.status_code == 302 and "/.pomerium/sign_in" in after.headers["location"]
