"""RFC 9207 and a named OIDC provider, through the real stack (Envoy + `authgate run`) and the
real test IdP (oidc-provider, which advertises `authorization_response_iss_parameter_supported`
and puts `iss` in every authorization response).

The config says `idp_provider: keycloak`: a provider name other than `oidc` takes the generic
OpenID Connect path. Each case stops the browser at the IdP's redirect to the callback and
sends that callback as is, with another `iss`, or without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from authgate.contract import ASSERTION_HEADER
from tests.support.gate import Gate, eventually, gates
from tests.support.idp_login import is_idp_login_page, parse_forms, submit_idp_login
from tests.support.resolve import map_hosts

USER, PASSWORD = "alice@example.com", "alice-password"
CALLBACK = "/oauth2/callback?"


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    route_extra = {"other": {"allow_any_authenticated_user": False,
                             "policy": [{"allow": {"and": [{"domain": {"is": "example.com"}}]}}]}}
    with map_hosts({"*.test": "127.0.0.1"}), gates(
        tmp_path_factory.mktemp("rfc9207"),
        workers=1,
        extra={"idp_provider": "keycloak"},
        route_extra=route_extra,
    ) as (one,):
        yield one


def _callback(gate: Gate, client: httpx.Client) -> str:
    """Start a sign-in at the Jenkins route and return the IdP's callback URL, not visited."""
    answer = client.get(gate.url("jenkins.test", "/"))
    for _ in range(12):
        if is_idp_login_page(answer):
            answer = _submit(client, answer)
            continue
        assert answer.is_redirect, (answer.status_code, answer.text[:300])
        location = str(answer.url.join(answer.headers["location"]))
        if CALLBACK in location:
            return location
        answer = client.get(location)
    raise AssertionError("the IdP never sent the browser back")


def _submit(client: httpx.Client, page: httpx.Response) -> httpx.Response:
    """The IdP's login form, posted without following redirects (to stop before the callback)."""
    form = next(f for f in parse_forms(page.text) if f.method == "post")
    data = {k: v for k, v in form.fields.items() if form.input_types[k] == "hidden"}
    data.update(email=USER, password=PASSWORD)
    return client.post(str(page.url.join(form.action)), data=data)


def _with_iss(url: str, iss: str | None) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "iss"]
    if iss is not None:
        query.append(("iss", iss))
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_a_callback_with_the_idps_iss_signs_in(gate: Gate) -> None:
    with gate.client(follow=False) as client:
        callback = _callback(gate, client)
        assert dict(parse_qsl(urlsplit(callback).query))["iss"] == gate.idp.issuer
        answer = client.get(callback)
        assert answer.status_code == 302
        client.follow_redirects = True
        page = client.get(str(answer.url.join(answer.headers["location"])))
    assert page.status_code == 200
    seen = gate.jenkins.requests.wait_for(lambda r: r.header(ASSERTION_HEADER) is not None)
    assert seen.user is not None and seen.user["email"] == USER


@pytest.mark.parametrize(
    ("iss", "why"),
    [
        ("https://evil.test", "comes from issuer 'https://evil.test'"),
        (None, "has no `iss`"),
        ("", "comes from issuer ''"),
    ],
    ids=["foreign", "missing", "empty"],
)
def test_a_callback_with_a_foreign_or_no_iss_is_refused_and_logged(
    gate: Gate, iss: str | None, why: str
) -> None:
    with gate.client(follow=False) as client:
        callback = _callback(gate, client)
        answer = client.get(_with_iss(callback, iss))
        assert answer.status_code == 400, answer.text[:300]
        assert "RFC 9207" in answer.text
        assert not any(c.name.endswith("_pomerium") for c in client.cookies.jar)
        # The attempt is used up: the genuine callback cannot be replayed after the refusal.
        assert client.get(callback).status_code == 400
    eventually(
        lambda: any(
            "idp_response_issuer_rejected" in line and why in line
            for line in gate.stack.log().splitlines()
        ),
        within=10.0,
    )


def test_an_unverified_email_satisfies_no_domain_rule(gate: Gate) -> None:
    """`other` allows `domain: example.com`; carol is at example.com but her IdP says the
    address is not verified, so the rule does not hold for her (and holds again once it is)."""
    carol = "carol@example.com"
    gate.idp.set_user(carol, email_verified=False)
    try:
        with gate.client() as client:
            first = client.get(gate.url("other.test", "/"))
            assert is_idp_login_page(first)
            page = submit_idp_login(client, first, carol, "carol-password")
            assert page.status_code == 403, page.text[:300]
        gate.idp.set_user(carol, email_verified=True)
        with gate.client() as client:
            first = client.get(gate.url("other.test", "/"))
            page = submit_idp_login(client, first, carol, "carol-password")
            assert page.status_code == 200, page.text[:300]
    finally:
        gate.idp.set_user(carol, email_verified=True)


def test_a_group_overage_is_refused_with_a_clear_page(gate: Gate) -> None:
    """An ID token pointing to Graph for `groups` (Azure's group overage) instead of listing
    them: authgate does not query Graph, so it refuses the sign-in and says why."""
    dave = {"email": "dave@example.com", "password": "dave-password", "groups_overage": True}
    gate.idp.add_user(dave)
    with gate.client() as client:
        first = client.get(gate.url("other.test", "/"))
        page = submit_idp_login(client, first, "dave@example.com", "dave-password")
    assert page.status_code == 401, page.text[:300]
    assert "group overage" in page.text and "Microsoft Graph" in page.text
    assert not any(c.name.endswith("_pomerium") for c in client.cookies.jar)
