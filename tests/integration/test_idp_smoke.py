"""Smoke test of the test OpenID Provider (tests/idp/server.js) on its own.

Runs a real authorization-code + PKCE flow through the IdP's login page with httpx,
against a throw-away plain-http redirect_uri served by this test.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests.support.idp import TestIdP
from tests.support.idp_login import (
    idp_login_error,
    is_idp_login_page,
    is_idp_logout_page,
    submit_idp_login,
    submit_idp_logout,
)

CLIENT_ID = "authgate"
CLIENT_SECRET = "secret"


@dataclass
class CallbackServer:
    """A plain-http server on 127.0.0.1 recording the query of every request."""

    base_url: str
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base_url}/logged-out"


@pytest.fixture(scope="module")
def callback() -> Iterator[CallbackServer]:
    hits: list[tuple[str, dict[str, str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            hits.append((url.path, {k: v[0] for k, v in parse_qs(url.query).items()}))
            body = b"callback reached"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CallbackServer(f"http://127.0.0.1:{server.server_address[1]}", hits)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def idp(callback: CallbackServer) -> Iterator[TestIdP]:
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [callback.redirect_uri],
        "post_logout_redirect_uris": [callback.post_logout_redirect_uri],
    }
    with TestIdP(clients=[client]) as server:
        yield server


@pytest.fixture(scope="module")
def discovery(idp: TestIdP) -> dict[str, Any]:
    resp = httpx.get(idp.discovery_url)
    resp.raise_for_status()
    doc: dict[str, Any] = resp.json()
    return doc


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class AuthRequest:
    url: str
    state: str
    nonce: str
    verifier: str


def _auth_request(
    discovery: dict[str, Any], callback: CallbackServer, *, offline: bool = False
) -> AuthRequest:
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = _pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": callback.redirect_uri,
        "scope": "openid profile email groups",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if offline:
        # oidc-provider drops offline_access unless prompt=consent is requested too
        # (OIDC Core 11); consent is granted automatically by the test IdP.
        params.update(scope=params["scope"] + " offline_access", prompt="consent")
    url = str(httpx.URL(discovery["authorization_endpoint"], params=params))
    return AuthRequest(url, state, nonce, verifier)


def _login(
    client: httpx.Client,
    discovery: dict[str, Any],
    callback: CallbackServer,
    email: str,
    password: str,
    *,
    offline: bool = False,
) -> tuple[AuthRequest, dict[str, Any]]:
    """Full login; returns the request and the token endpoint's response."""
    req = _auth_request(discovery, callback, offline=offline)
    page = client.get(req.url)
    assert is_idp_login_page(page), page.text
    assert urlsplit(str(page.url)).path.startswith("/interaction/")

    final = submit_idp_login(client, page, email, password)
    assert final.status_code == 200, final.text
    assert str(final.url).startswith(callback.redirect_uri)
    query = {k: v[0] for k, v in parse_qs(final.url.query.decode()).items()}
    assert query["state"] == req.state
    assert "code" in query, query

    token = httpx.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": callback.redirect_uri,
            "code_verifier": req.verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return req, body


def _verify_id_token(discovery: dict[str, Any], id_token: str, nonce: str) -> dict[str, Any]:
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(id_token)
    claims: dict[str, Any] = jwt.decode(
        id_token,
        key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=discovery["issuer"],
    )
    assert claims["nonce"] == nonce
    return claims


def test_discovery(idp: TestIdP, discovery: dict[str, Any]) -> None:
    assert discovery["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert discovery["end_session_endpoint"] == f"{idp.issuer}/session/end"
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "profile", "email", "groups", "offline_access"} <= set(
        discovery["scopes_supported"]
    )
    jwks = httpx.get(discovery["jwks_uri"]).json()
    assert {k["alg"] for k in jwks["keys"]} == {"RS256", "ES256"}
    assert all("d" not in k for k in jwks["keys"])


def test_authorization_code_flow(
    idp: TestIdP, discovery: dict[str, Any], callback: CallbackServer
) -> None:
    with httpx.Client(follow_redirects=True) as client:
        req = _auth_request(discovery, callback)
        page = client.get(req.url)
        assert is_idp_login_page(page)

        # Wrong password: the same form again, with an error, status 200.
        again = submit_idp_login(client, page, "alice@example.com", "wrong")
        assert again.status_code == 200
        assert is_idp_login_page(again)
        assert idp_login_error(again) == "Invalid email or password."

        req, tokens = _login(
            client, discovery, callback, "alice@example.com", "alice-password", offline=True
        )

    assert tokens["token_type"].lower() == "bearer"
    assert "offline_access" in tokens["scope"].split()
    refreshed = httpx.post(
        discovery["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert refreshed.status_code == 200, refreshed.text
    claims = _verify_id_token(discovery, tokens["id_token"], req.nonce)
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["name"] == "Alice Example"
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["admins", "devs"]

    userinfo = httpx.get(
        discovery["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["groups"] == ["admins", "devs"]
    assert userinfo.json()["sub"] == claims["sub"]


def test_user_without_groups(discovery: dict[str, Any], callback: CallbackServer) -> None:
    with httpx.Client(follow_redirects=True) as client:
        req, tokens = _login(client, discovery, callback, "carol@example.com", "carol-password")
    claims = _verify_id_token(discovery, tokens["id_token"], req.nonce)
    assert claims["email"] == "carol@example.com"
    assert "groups" not in claims


def test_rp_initiated_logout(discovery: dict[str, Any], callback: CallbackServer) -> None:
    with httpx.Client(follow_redirects=True) as client:
        _login(client, discovery, callback, "bob@evil.org", "bob-password")

        # Logged in: a second authorization request goes straight to the callback.
        req = _auth_request(discovery, callback)
        silent = client.get(req.url)
        assert str(silent.url).startswith(callback.redirect_uri), silent.text

        logout_url = httpx.URL(
            discovery["end_session_endpoint"],
            params={
                "client_id": CLIENT_ID,
                "post_logout_redirect_uri": callback.post_logout_redirect_uri,
                "state": "bye",
            },
        )
        page = client.get(logout_url)
        assert is_idp_logout_page(page), page.text
        assert "<script>" in page.text and "<button" in page.text
        final = submit_idp_logout(client, page)
        assert final.status_code == 200
        assert final.url.copy_with(query=None) == httpx.URL(callback.post_logout_redirect_uri)
        assert final.url.params["state"] == "bye"

        # The IdP session is gone: the login page is shown again.
        again = client.get(_auth_request(discovery, callback).url)
        assert is_idp_login_page(again)
