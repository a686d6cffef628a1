"""A real authorization-code + PKCE flow against the test IdP (tests/idp/server.js) with httpx.

Asks the way authgate does (``openid profile email groups offline_access``, no
``prompt=consent``) for authgate's registered client (``authgate_client(CALLBACK_PORT)``).
Nothing listens at the redirect URI: redirects are followed by hand up to it and the code is
read from the Location header. Gives the token endpoint's answer (ID, access and refresh tokens).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.idp import authgate_client
from tests.support.idp_login import is_idp_login_page, parse_forms

CALLBACK_PORT = 8443
CLIENT = authgate_client(CALLBACK_PORT)
CLIENT_ID = str(CLIENT["client_id"])
CLIENT_SECRET = str(CLIENT["client_secret"])
REDIRECT_URI = f"https://authenticate.test:{CALLBACK_PORT}/oauth2/callback"
AUTHGATE_SCOPE = "openid profile email groups offline_access"


@dataclass
class Login:
    nonce: str
    tokens: dict[str, Any]


def discover(issuer: str) -> dict[str, Any]:
    resp = httpx.get(f"{issuer}/.well-known/openid-configuration")
    resp.raise_for_status()
    doc: dict[str, Any] = resp.json()
    return doc


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def until_callback(client: httpx.Client, resp: httpx.Response) -> httpx.Response | str:
    """Follow redirects by hand; the callback URL reached (str), or the page it stops at."""
    for _ in range(10):
        if not resp.is_redirect:
            return resp
        location = str(resp.url.join(resp.headers["location"]))
        if location.startswith(REDIRECT_URI):
            return location
        resp = client.get(location)
    raise AssertionError(f"too many redirects, last {resp.url}")


def authorize(
    client: httpx.Client, discovery: dict[str, Any], *, scope: str, prompt: str | None = None
) -> tuple[httpx.Response | str, str, str, str]:
    """An authorization request: (login page or callback URL reached, state, nonce, verifier)."""
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if prompt is not None:
        params["prompt"] = prompt
    first = client.get(discovery["authorization_endpoint"], params=params)
    return until_callback(client, first), state, nonce, verifier


def submit_login(
    client: httpx.Client, page: httpx.Response, email: str, password: str
) -> httpx.Response | str:
    assert is_idp_login_page(page), page.text
    (form,) = [f for f in parse_forms(page.text) if f.method == "post"]
    data = {k: v for k, v in form.fields.items() if form.input_types[k] == "hidden"}
    data.update(email=email, password=password)
    return until_callback(client, client.post(str(page.url.join(form.action)), data=data))


def redeem(discovery: dict[str, Any], callback: str, state: str, verifier: str) -> dict[str, Any]:
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert query.get("state") == state, query
    assert "code" in query, query
    token = httpx.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return body


def login(
    client: httpx.Client,
    discovery: dict[str, Any],
    email: str,
    password: str,
    *,
    scope: str = AUTHGATE_SCOPE,
) -> Login:
    """A full login as authgate does it (no prompt=consent); the token endpoint's answer."""
    page, state, nonce, verifier = authorize(client, discovery, scope=scope)
    assert isinstance(page, httpx.Response), f"expected the login page, got {page}"
    callback = submit_login(client, page, email, password)
    assert isinstance(callback, str), f"login did not reach the callback: {callback}"
    return Login(nonce, redeem(discovery, callback, state, verifier))


def refresh(discovery: dict[str, Any], refresh_token: str) -> httpx.Response:
    return httpx.post(
        discovery["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )


def userinfo(discovery: dict[str, Any], access_token: str) -> httpx.Response:
    return httpx.get(
        discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"}
    )
