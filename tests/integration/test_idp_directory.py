"""The test IdP's run-time directory (IDP_TEST_CONTROL=1) and its refresh tokens.

Drives real authorization-code + PKCE flows against tests/idp/server.js with httpx, the way
authgate asks (``openid profile email groups offline_access``, no ``prompt=consent``), and
checks what authgate's session refresh relies on: a refresh token is issued, later refresh
grants and userinfo answers reflect directory changes made with ``TestIdP.set_user``, a deleted
account's refresh grant answers ``invalid_grant`` and its userinfo 401, and a user in 500
groups gets all of them everywhere.

The redirect URI is authgate's registered callback (``authgate_client``); nothing listens
there: redirects are followed by hand up to it and the code is read from the Location header.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.idp import IdPControlError, TestIdP
from tests.support.idp_flow import (
    AUTHGATE_SCOPE,
    CLIENT,
    CLIENT_ID,
)
from tests.support.idp_flow import authorize as _authorize
from tests.support.idp_flow import login as _login
from tests.support.idp_flow import redeem as _redeem
from tests.support.idp_flow import refresh as _refresh
from tests.support.idp_flow import submit_login as _submit_login
from tests.support.idp_flow import userinfo as _userinfo
from tests.support.idp_login import idp_login_error, is_idp_login_page


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(clients=[CLIENT], test_control=True) as server:
        yield server


@pytest.fixture(scope="module")
def discovery(idp: TestIdP) -> dict[str, Any]:
    resp = httpx.get(idp.discovery_url)
    resp.raise_for_status()
    doc: dict[str, Any] = resp.json()
    return doc


@pytest.fixture(scope="module")
def jwks_client(discovery: dict[str, Any]) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(discovery["jwks_uri"])


@pytest.fixture
def user(idp: TestIdP) -> dict[str, Any]:
    """A fresh user of this test only (tests change and delete users)."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    return idp.add_user(
        {"email": email, "password": "pw-" + email, "name": "Dana Test", "groups": ["devs"]}
    )


def _id_claims(
    discovery: dict[str, Any], jwks_client: jwt.PyJWKClient, id_token: str, nonce: str
) -> dict[str, Any]:
    key = jwks_client.get_signing_key_from_jwt(id_token)
    claims: dict[str, Any] = jwt.decode(
        id_token, key, algorithms=["RS256"], audience=CLIENT_ID, issuer=discovery["issuer"]
    )
    assert claims["nonce"] == nonce
    return claims


# -- refresh tokens ----------------------------------------------------------------------


def test_offline_access_gives_a_refresh_token_without_prompt_consent(
    discovery: dict[str, Any], jwks_client: jwt.PyJWKClient, user: dict[str, Any]
) -> None:
    with httpx.Client() as client:
        login = _login(client, discovery, user["email"], user["password"])
        # Signed in at the IdP now: a second authorization request is silent (the automatic
        # consent step included) and is also given a refresh token.
        again, state, _nonce, verifier = _authorize(client, discovery, scope=AUTHGATE_SCOPE)
        assert isinstance(again, str), again
        silent = _redeem(discovery, again, state, verifier)

    for tokens in (login.tokens, silent):
        assert "offline_access" in tokens["scope"].split()
        assert tokens["refresh_token"]

    refreshed = _refresh(discovery, login.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    claims = _id_claims(discovery, jwks_client, body["id_token"], login.nonce)
    assert claims["sub"] == user["sub"]
    assert claims["groups"] == ["devs"]
    # Confidential client: the refresh token is not rotated, it can be used again.
    assert body.get("refresh_token", login.tokens["refresh_token"]) == login.tokens["refresh_token"]
    assert _refresh(discovery, login.tokens["refresh_token"]).status_code == 200


def test_no_refresh_token_without_offline_access(
    discovery: dict[str, Any], user: dict[str, Any]
) -> None:
    with httpx.Client() as client:
        login = _login(
            client, discovery, user["email"], user["password"], scope="openid profile email"
        )
    assert "offline_access" not in login.tokens["scope"].split()
    assert "refresh_token" not in login.tokens


def test_prompt_none_drops_offline_access(discovery: dict[str, Any], user: dict[str, Any]) -> None:
    with httpx.Client() as client:
        _login(client, discovery, user["email"], user["password"])
        callback, state, _nonce, verifier = _authorize(
            client, discovery, scope=AUTHGATE_SCOPE, prompt="none"
        )
        assert isinstance(callback, str), callback
        tokens = _redeem(discovery, callback, state, verifier)
    assert "offline_access" not in tokens["scope"].split()
    assert "refresh_token" not in tokens


# -- directory changes ---------------------------------------------------------------------


def test_set_user_changes_later_refreshes_and_userinfo(
    idp: TestIdP,
    discovery: dict[str, Any],
    jwks_client: jwt.PyJWKClient,
    user: dict[str, Any],
) -> None:
    with httpx.Client() as client:
        login = _login(client, discovery, user["email"], user["password"])
    first = _id_claims(discovery, jwks_client, login.tokens["id_token"], login.nonce)
    assert (first["groups"], first["name"], first["email_verified"]) == (
        ["devs"],
        "Dana Test",
        True,
    )

    record = idp.set_user(
        user["email"], groups=["ops", "sre"], name="Dana Renamed", email_verified=False
    )
    assert record["groups"] == ["ops", "sre"]
    assert idp.get_user(user["email"]) == record
    assert idp.get_user(user["email"].upper())["sub"] == user["sub"]

    refreshed = _refresh(discovery, login.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    claims = _id_claims(discovery, jwks_client, refreshed.json()["id_token"], login.nonce)
    assert claims["sub"] == user["sub"]
    assert claims["groups"] == ["ops", "sre"]
    assert claims["name"] == "Dana Renamed"
    assert claims["email_verified"] is False

    # userinfo answers from the current directory, with the new and the original access token.
    for access_token in (refreshed.json()["access_token"], login.tokens["access_token"]):
        info = _userinfo(discovery, access_token)
        assert info.status_code == 200, info.text
        assert info.json()["groups"] == ["ops", "sre"]
        assert info.json()["name"] == "Dana Renamed"
        assert info.json()["email_verified"] is False

    # None removes the claim altogether.
    idp.set_user(user["email"], groups=None)
    assert "groups" not in idp.get_user(user["email"])
    refreshed = _refresh(discovery, login.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    claims = _id_claims(discovery, jwks_client, refreshed.json()["id_token"], login.nonce)
    assert "groups" not in claims
    assert "groups" not in _userinfo(discovery, login.tokens["access_token"]).json()


def test_set_user_refuses_unknown_fields_and_users(idp: TestIdP, user: dict[str, Any]) -> None:
    with pytest.raises(IdPControlError) as excinfo:
        idp.set_user(user["email"], sub="someone-else")
    assert excinfo.value.status_code == 400
    with pytest.raises(IdPControlError) as excinfo:
        idp.set_user(user["email"], groups="admins")  # not a list
    assert excinfo.value.status_code == 400
    with pytest.raises(IdPControlError) as excinfo:
        idp.set_user("nobody@example.com", groups=[])
    assert excinfo.value.status_code == 404
    with pytest.raises(IdPControlError) as excinfo:
        idp.add_user({"email": user["email"], "password": "x"})
    assert excinfo.value.status_code == 409
    assert idp.get_user(user["email"])["groups"] == ["devs"]


def test_changed_password_is_needed_to_log_in(
    idp: TestIdP, discovery: dict[str, Any], user: dict[str, Any]
) -> None:
    idp.set_user(user["email"], password="new-password")
    with httpx.Client() as client:
        page, *_ = _authorize(client, discovery, scope=AUTHGATE_SCOPE)
        assert isinstance(page, httpx.Response)
        refused = _submit_login(client, page, user["email"], user["password"])
        assert isinstance(refused, httpx.Response)
        assert idp_login_error(refused) == "Invalid email or password."
        _login(client, discovery, user["email"], "new-password")


def test_deleted_account_cannot_refresh_use_userinfo_or_log_in(
    idp: TestIdP, discovery: dict[str, Any], user: dict[str, Any]
) -> None:
    with httpx.Client() as client:
        login = _login(client, discovery, user["email"], user["password"])
        refreshed = _refresh(discovery, login.tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text

        idp.delete_user(user["email"])

        answer = _refresh(discovery, login.tokens["refresh_token"])
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_grant"

        for access_token in (login.tokens["access_token"], refreshed.json()["access_token"]):
            info = _userinfo(discovery, access_token)
            assert info.status_code == 401, info.text
            assert info.json()["error"] == "invalid_token"
            assert 'error="invalid_token"' in info.headers["www-authenticate"]

        # The IdP session of the deleted account no longer signs anyone in silently ...
        page, *_ = _authorize(client, discovery, scope=AUTHGATE_SCOPE)
        assert isinstance(page, httpx.Response) and is_idp_login_page(page), page
        # ... and the account cannot log in again.
        refused = _submit_login(client, page, user["email"], user["password"])
        assert isinstance(refused, httpx.Response)
        assert idp_login_error(refused) == "Invalid email or password."

    with pytest.raises(IdPControlError) as excinfo:
        idp.get_user(user["email"])
    assert excinfo.value.status_code == 404
    with pytest.raises(IdPControlError) as excinfo:
        idp.delete_user(user["email"])
    assert excinfo.value.status_code == 404


def test_user_in_500_groups(
    idp: TestIdP, discovery: dict[str, Any], jwks_client: jwt.PyJWKClient
) -> None:
    groups = [f"group-{i:03d}-{secrets.token_hex(8)}" for i in range(500)]
    email = f"many-{secrets.token_hex(4)}@example.com"
    added = idp.add_user({"email": email, "password": "many-pw", "groups": groups})
    assert added["sub"] == email and added["email_verified"] is True
    assert idp.get_user(email)["groups"] == groups

    with httpx.Client() as client:
        login = _login(client, discovery, email, "many-pw")
    claims = _id_claims(discovery, jwks_client, login.tokens["id_token"], login.nonce)
    assert claims["groups"] == groups

    info = _userinfo(discovery, login.tokens["access_token"])
    assert info.status_code == 200, info.text
    assert info.json()["groups"] == groups

    refreshed = _refresh(discovery, login.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    claims = _id_claims(discovery, jwks_client, refreshed.json()["id_token"], login.nonce)
    assert claims["groups"] == groups


# -- off by default ----------------------------------------------------------------------


def test_control_endpoints_are_off_without_idp_test_control() -> None:
    with TestIdP(clients=[CLIENT]) as plain:
        for method, path, body in [
            ("GET", "/__test__/users", None),
            ("POST", "/__test__/users", {"email": "eve@example.com", "password": "x"}),
            ("GET", "/__test__/users/alice%40example.com", None),
            ("POST", "/__test__/users/alice%40example.com", {"groups": ["admins"]}),
            ("DELETE", "/__test__/users/alice%40example.com", None),
            ("GET", "/__test__/tamper", None),
            ("POST", "/__test__/tamper", {"mode": "alg-none"}),
        ]:
            resp = httpx.request(method, f"{plain.issuer}{path}", json=body)
            assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        with pytest.raises(IdPControlError, match="test_control=True") as excinfo:
            plain.get_user("alice@example.com")
        assert excinfo.value.status_code == 404
