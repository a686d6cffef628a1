"""BearerVerifier against the real test IdP (tests/idp/server.js, oidc-provider v9).

Tokens come from real authorization-code + PKCE logins (tests/support/idp_flow.py); defective
ID tokens from the IdP's own token endpoint with its test-control `tamper` modes (a refresh grant
per mode). IdP calls are counted with an httpx event hook on the OidcClient's own client: every
request still goes over the wire to the IdP.

Token formats of this IdP: ID tokens are RS256 JWTs with a kid from its JWKS; access (and
refresh) tokens are opaque 43-character strings. JWT access tokens would need a resource server
configured (features.resourceIndicators.getResourceServerInfo); without one, asking for a
`resource` is refused with invalid_target (checked below), so the JWT access-token path is only
exercised with JWTs this IdP signed that userinfo then refuses (its ID tokens) or that fail
verification (tampered ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from authgate.authn.bearer import MAX_TOKEN_CHARS, BearerVerifier, InvalidBearer
from authgate.oidc.client import IDP_BUDGET_S, IdpError, OidcClient
from authgate.session.model import identity_from_claims
from tests.support.idp import TestIdP
from tests.support.idp_flow import (
    AUTHGATE_SCOPE,
    CLIENT,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    discover,
    login,
    refresh,
)

# Each gives an ID token with one defect, signed with the IdP's real key unless the defect is
# the key or the algorithm (tests/idp/server.js TAMPER_MODES).
SPOILED = {
    "other-key": "signature verification failed",
    "unknown-kid": "unknown key",
    "embedded-jwk": "signature verification failed",
    "jku": "unknown key",
    "alg-none": "'none' is not allowed",
    "alg-none-kid": "'none' is not allowed",
    "hs256-client-secret": "'HS256' is not allowed",
    "bad-signature": "signature verification failed",
    "no-signature": "signature verification failed",
    "wrong-iss": "issuer",
    "wrong-aud": "audience",
    "several-aud-no-azp": "azp",
    "expired": "expired",
    "not-yet-valid": "not yet valid (nbf)",
    "issued-in-future": "not yet valid (iat)",
    "no-sub": '"sub"',
}


class Clock:
    """A clock the test moves (epoch seconds, starting now)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class IdpCalls:
    """The paths of every request an OidcClient sends (an httpx request hook)."""

    def __init__(self, oidc: OidcClient) -> None:
        self.paths: list[str] = []
        oidc._http.event_hooks = {"request": [self._record], "response": []}

    async def _record(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def to(self, url: str) -> int:
        return self.paths.count(urlsplit(url).path)


def _client(issuer: str) -> OidcClient:
    return OidcClient(
        provider_url=issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        scopes=AUTHGATE_SCOPE.split(),
    )


def _tamper(idp: TestIdP, mode: str) -> None:
    answer = httpx.post(f"{idp.issuer}/__test__/tamper", json={"mode": mode})
    assert answer.status_code == 200, answer.text


def _new_user(idp: TestIdP, groups: list[str]) -> dict[str, Any]:
    email = f"script-{secrets.token_hex(4)}@example.com"
    return idp.add_user({"email": email, "password": "pw", "name": "Script", "groups": groups})


def _login_tokens(discovery: dict[str, Any], email: str, password: str) -> dict[str, Any]:
    with httpx.Client() as browser:
        return login(browser, discovery, email, password).tokens


def _refreshed(discovery: dict[str, Any], refresh_token: str) -> dict[str, Any]:
    answer = refresh(discovery, refresh_token)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _invalid(call: Awaitable[dict[str, Any]], token: str) -> str:
    with pytest.raises(InvalidBearer) as excinfo:
        await call
    reason = str(excinfo.value)
    assert reason
    if len(token) >= 8:
        assert token not in reason
    return reason


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdP]:
    with TestIdP(clients=[CLIENT], test_control=True) as server:
        yield server


@pytest.fixture(scope="module")
def discovery(idp: TestIdP) -> dict[str, Any]:
    return discover(idp.issuer)


@pytest.fixture(scope="module")
def dana(idp: TestIdP, discovery: dict[str, Any]) -> dict[str, Any]:
    """One login of a user no test changes: ID, access and refresh tokens."""
    user = _new_user(idp, ["devs", "scripts"])
    return {"user": user, **_login_tokens(discovery, user["email"], "pw")}


@pytest.fixture(scope="module")
def spoiled(idp: TestIdP, discovery: dict[str, Any], dana: dict[str, Any]) -> dict[str, str]:
    """Dana's ID token with each defect, as the IdP's token endpoint hands it out."""
    tokens = {}
    try:
        for mode in SPOILED:
            _tamper(idp, mode)
            tokens[mode] = _refreshed(discovery, dana["refresh_token"])["id_token"]
    finally:
        _tamper(idp, "off")
    return tokens


@pytest.fixture
async def oidc(idp: TestIdP) -> AsyncIterator[OidcClient]:
    client = _client(idp.issuer)
    yield client
    await client.aclose()


@pytest.fixture
def calls(oidc: OidcClient) -> IdpCalls:
    return IdpCalls(oidc)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- ID tokens ---------------------------------------------------------------------------


async def test_id_token_gives_its_claims(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    claims = await verifier.identity_token(dana["id_token"])
    assert claims["sub"] == dana["user"]["sub"]
    assert claims["aud"] == CLIENT_ID and claims["iss"] == discovery["issuer"]
    identity = identity_from_claims(claims)
    assert (identity.user, identity.email) == (dana["user"]["sub"], dana["user"]["email"])
    assert identity.groups == ("devs", "scripts")

    # Checked locally: discovery and the JWKS once, and nothing more for 49 more requests.
    for _ in range(49):
        assert (await verifier.identity_token(dana["id_token"]))["sub"] == claims["sub"]
    assert calls.to(discovery["jwks_uri"]) == 1
    assert len(calls.paths) == 2
    assert calls.to(discovery["userinfo_endpoint"]) == 0

    # A caller changing its copy does not change what later callers get.
    claims["groups"].append("admins")
    assert (await verifier.identity_token(dana["id_token"]))["groups"] == ["devs", "scripts"]


@pytest.mark.parametrize("defect", list(SPOILED))
async def test_spoiled_id_token_is_invalid_as_either_kind(
    oidc: OidcClient,
    calls: IdpCalls,
    discovery: dict[str, Any],
    spoiled: dict[str, str],
    defect: str,
) -> None:
    token = spoiled[defect]
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    reason = await _invalid(verifier.identity_token(token), token)
    assert SPOILED[defect].lower() in reason.lower(), reason
    assert calls.to(discovery["userinfo_endpoint"]) == 0

    # As an access token: a JWT naming a key of the IdP is verified (and fails) before any
    # userinfo call; any other token is opaque to us and userinfo refuses it.
    jwks = httpx.get(discovery["jwks_uri"]).json()
    kid = jwt.get_unverified_header(token).get("kid")
    names_idp_key = any(k["kid"] == kid for k in jwks["keys"])
    await _invalid(verifier.access_token(token), token)
    assert calls.to(discovery["userinfo_endpoint"]) == (0 if names_idp_key else 1)


async def test_other_invalid_id_tokens(
    oidc: OidcClient, calls: IdpCalls, dana: dict[str, Any], spoiled: dict[str, str]
) -> None:
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    good = dana["id_token"]
    header, payload, signature = good.split(".")
    for token in (
        good[:-12],  # truncated signature
        f"{header}.{payload}",  # no signature part
        f"{header}.{payload}.",  # empty signature
        f"{header}.{payload[:-8]}.{signature}",  # truncated payload
        dana["access_token"],  # opaque: not a JWT at all
        dana["refresh_token"],
        "a.b.c",
    ):
        await _invalid(verifier.identity_token(token), token)

    # Another relying party's verifier does not take our ID tokens.
    foreign = BearerVerifier(oidc, allowed_audiences=["someone-else"])
    assert "audience" in (await _invalid(foreign.identity_token(good), good)).lower()

    # Several audiences need an azp among the allowed ones, even when all are allowed.
    both = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID, "another-client"])
    token = spoiled["several-aud-no-azp"]
    assert "azp" in await _invalid(both.identity_token(token), token)
    assert (await both.identity_token(good))["sub"] == dana["user"]["sub"]


async def test_malformed_tokens_cost_no_idp_call(oidc: OidcClient, calls: IdpCalls) -> None:
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    for token in (
        "",
        "x" * (MAX_TOKEN_CHARS + 1),
        "abc def",
        "abc\tdef",
        "abc\n",
        "\r\nabc",
        "abc\x00def",
        "abc\x7fdef",
        "t\u00f6ken",
        "\u00a0token",
        "token\u2028",
    ):
        for check in (verifier.identity_token, verifier.access_token):
            await _invalid(check(token), token)
    assert calls.paths == []


# -- access tokens -----------------------------------------------------------------------


async def test_this_idp_issues_opaque_access_tokens(
    discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    assert "." not in dana["access_token"] and len(dana["access_token"]) == 43
    assert jwt.get_unverified_header(dana["id_token"])["alg"] == "RS256"
    # JWT access tokens need a resource indicator, which this IdP has no resource server for.
    answer = httpx.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": dana["refresh_token"],
            "resource": "https://api.example.com/",
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_target", answer.text


async def test_opaque_access_token_gives_userinfo_claims(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    claims = await verifier.access_token(dana["access_token"])
    assert claims["sub"] == dana["user"]["sub"]
    assert claims["email"] == dana["user"]["email"]
    assert claims["groups"] == ["devs", "scripts"]
    assert identity_from_claims(claims).email == dana["user"]["email"]
    # Opaque: the JWKS is not even looked at.
    assert calls.to(discovery["userinfo_endpoint"]) == 1
    assert calls.to(discovery["jwks_uri"]) == 0


async def test_fifty_verifications_of_one_access_token_cost_one_userinfo_call(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    token = _refreshed(discovery, dana["refresh_token"])["access_token"]
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    # 25 at once (they share the one call in flight), then 25 one after another (the cache).
    answers = await asyncio.gather(*(verifier.access_token(token) for _ in range(25)))
    for _ in range(25):
        answers.append(await verifier.access_token(token))
    assert len(answers) == 50 and all(a["sub"] == dana["user"]["sub"] for a in answers)
    assert calls.to(discovery["userinfo_endpoint"]) == 1
    assert len(calls.paths) == 2  # discovery + userinfo


async def test_a_cancelled_caller_does_not_cancel_the_shared_call(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    token = _refreshed(discovery, dana["refresh_token"])["access_token"]
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    first = asyncio.create_task(verifier.access_token(token))
    second = asyncio.create_task(verifier.access_token(token))
    await asyncio.sleep(0)  # both are waiting for the one call now
    first.cancel()
    assert (await second)["sub"] == dana["user"]["sub"]
    assert first.cancelled()
    assert (await verifier.access_token(token))["sub"] == dana["user"]["sub"]
    assert calls.to(discovery["userinfo_endpoint"]) == 1


async def test_a_flood_of_one_bad_token_costs_one_call_per_negative_window(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], clock: Clock
) -> None:
    verifier = BearerVerifier(
        oidc, allowed_audiences=[CLIENT_ID], negative_cache_s=10.0, clock=clock
    )
    token = secrets.token_urlsafe(32)  # looks like one of this IdP's, but is none
    userinfo = discovery["userinfo_endpoint"]
    for _ in range(3):
        results = await asyncio.gather(
            *(verifier.access_token(token) for _ in range(30)), return_exceptions=True
        )
        assert all(isinstance(r, InvalidBearer) for r in results), results
    assert calls.to(userinfo) == 1
    assert "does not accept" in str(results[0])
    clock.now += 9.5
    await _invalid(verifier.access_token(token), token)
    assert calls.to(userinfo) == 1
    clock.now += 1.0
    await _invalid(verifier.access_token(token), token)
    assert calls.to(userinfo) == 2


async def test_deleted_user_is_refused_once_the_cache_expires(
    idp: TestIdP,
    oidc: OidcClient,
    calls: IdpCalls,
    discovery: dict[str, Any],
    clock: Clock,
) -> None:
    user = _new_user(idp, ["devs"])
    tokens = _login_tokens(discovery, user["email"], "pw")
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID], max_cache_s=5.0, clock=clock)
    assert (await verifier.access_token(tokens["access_token"]))["groups"] == ["devs"]

    # A directory change shows once the cached answer is older than max_cache_s.
    idp.set_user(user["email"], groups=["ops"])
    clock.now += 4.0
    assert (await verifier.access_token(tokens["access_token"]))["groups"] == ["devs"]
    clock.now += 1.5
    assert (await verifier.access_token(tokens["access_token"]))["groups"] == ["ops"]

    idp.delete_user(user["email"])
    clock.now += 4.0
    assert (await verifier.access_token(tokens["access_token"]))["sub"] == user["sub"]
    clock.now += 1.5
    reason = await _invalid(verifier.access_token(tokens["access_token"]), tokens["access_token"])
    assert "does not accept" in reason
    assert calls.to(discovery["userinfo_endpoint"]) == 3
    # An ID token is self-contained: it stays valid until its exp (an hour at this IdP).
    assert (await verifier.identity_token(tokens["id_token"]))["sub"] == user["sub"]


async def test_valid_result_is_kept_no_longer_than_the_token_lives(
    oidc: OidcClient, clock: Clock, dana: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = jwt.decode(dana["id_token"], options={"verify_signature": False})["exp"]
    verified: list[str] = []
    real_verify = oidc.verify_jwt

    async def counting_verify(token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        verified.append(token)
        return await real_verify(token, *args, **kwargs)

    monkeypatch.setattr(oidc, "verify_jwt", counting_verify)
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID], clock=clock)
    clock.now = exp - 2.0  # max_cache_s (300 s) would outlive the token
    await verifier.identity_token(dana["id_token"])
    await verifier.identity_token(dana["id_token"])
    assert len(verified) == 1
    clock.now = exp + 0.5
    await verifier.identity_token(dana["id_token"])  # checked again (and still in leeway)
    assert len(verified) == 2


async def test_the_cache_is_a_bounded_lru(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    t1, t2, t3 = (_refreshed(discovery, dana["refresh_token"])["access_token"] for _ in range(3))
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID], cache_size=2)
    userinfo = discovery["userinfo_endpoint"]
    for token in (t1, t2, t3):
        await verifier.access_token(token)
    assert calls.to(userinfo) == 3
    await verifier.access_token(t3)
    await verifier.access_token(t2)
    assert calls.to(userinfo) == 3
    await verifier.access_token(t1)  # evicted by t3, asked again (evicting t3, least used)
    await verifier.access_token(t2)
    assert calls.to(userinfo) == 4
    await verifier.access_token(t3)
    assert calls.to(userinfo) == 5


async def test_jwt_signed_here_as_access_token_needs_userinfo_to_accept_it(
    oidc: OidcClient, calls: IdpCalls, discovery: dict[str, Any], dana: dict[str, Any]
) -> None:
    assert await oidc.jwt_issued_here(dana["id_token"])
    assert not await oidc.jwt_issued_here(dana["access_token"])
    verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
    # The ID token verifies as a JWT for our audience, but the IdP's userinfo refuses it
    # as an access token (oidc-provider: 401 invalid_token), so it is no access token.
    reason = await _invalid(verifier.access_token(dana["id_token"]), dana["id_token"])
    assert "does not accept" in reason
    assert calls.to(discovery["userinfo_endpoint"]) == 1
    # Cached as invalid (the same answer for a while, no second call) ...
    await _invalid(verifier.access_token(dana["id_token"]), dana["id_token"])
    assert calls.to(discovery["userinfo_endpoint"]) == 1
    # ... and apart from the same token checked as an ID token.
    assert (await verifier.identity_token(dana["id_token"]))["sub"] == dana["user"]["sub"]


# -- the IdP unreachable -------------------------------------------------------------------


async def test_idp_down_is_idp_error_not_invalid_bearer() -> None:
    server = TestIdP(clients=[CLIENT]).start()
    try:
        discovery = discover(server.issuer)
        tokens = _login_tokens(discovery, "carol@example.com", "carol-password")
        later = _refreshed(discovery, tokens["refresh_token"])
        oidc = _client(server.issuer)
        calls = IdpCalls(oidc)
        verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
        await verifier.access_token(tokens["access_token"])
        await verifier.identity_token(tokens["id_token"])
    finally:
        server.stop()
    try:
        # What is cached still answers; a new opaque token cannot be checked: IdpError (503).
        assert (await verifier.access_token(tokens["access_token"]))["sub"] == "carol@example.com"
        for _ in range(2):
            with pytest.raises(IdpError):
                await verifier.access_token(later["access_token"])
        # IdpError is not cached: each try asks again.
        assert calls.to(discovery["userinfo_endpoint"]) == 3
        # A new ID token needs no IdP once its JWKS is known.
        assert (await verifier.identity_token(later["id_token"]))["sub"] == "carol@example.com"
    finally:
        await oidc.aclose()

    # Nothing known yet, and nobody answers: IdpError for either kind.
    cold = _client(discovery["issuer"])
    try:
        fresh = BearerVerifier(cold, allowed_audiences=[CLIENT_ID])
        with pytest.raises(IdpError):
            await fresh.identity_token(tokens["id_token"])
        with pytest.raises(IdpError):
            await fresh.access_token(tokens["access_token"])
    finally:
        await cold.aclose()


@contextlib.asynccontextmanager
async def _dripping_server() -> AsyncIterator[str]:
    """An HTTP server that answers one byte every 0.2 s: no single read times out."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                if writer.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_slow_idp_is_cut_off_at_the_budget() -> None:
    async with _dripping_server() as url:
        oidc = _client(url)
        try:
            verifier = BearerVerifier(oidc, allowed_audiences=[CLIENT_ID])
            started = time.monotonic()
            with pytest.raises(IdpError, match="did not answer in time"):
                await verifier.access_token(secrets.token_urlsafe(32))
            assert time.monotonic() - started < IDP_BUDGET_S + 0.5
        finally:
            await oidc.aclose()


async def test_verifier_needs_an_audience() -> None:
    oidc = _client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="allowed_audiences"):
        BearerVerifier(oidc, allowed_audiences=["", ""])
    await oidc.aclose()
