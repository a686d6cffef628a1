"""The ext_authz path as Envoy and the browser see it: CheckRequest in, CheckResponse out."""

import base64
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from google.rpc import code_pb2

from authgate._pb.envoy.config.core.v3 import base_pb2
from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
from authgate.authz.decision import Allow, Decision, Respond
from authgate.authz.response import to_check_response
from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState
from authgate.config import build_runtime, settings_from_mapping
from authgate.contract import JWKS_PATH
from authgate.session import SealedBox, Session
from authgate.session.reference import ReferenceCodec, SessionRef
from tests.support.checks import check_request
from tests.support.sessions import mint, previous_format

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# ---- Decision -> CheckResponse -------------------------------------------------------------


def test_allow_sets_headers_with_overwrite_and_removes() -> None:
    response = to_check_response(
        Allow(
            set_headers=(("x-pomerium-jwt-assertion", "tok"), ("cookie", "a=1")),
            remove_headers=("x-pomerium-claim-email", "x_pomerium_foo"),
        )
    )
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    assert [(h.header.key, h.header.value, h.append_action) for h in ok.headers] == [
        ("x-pomerium-jwt-assertion", "tok", OVERWRITE),
        ("cookie", "a=1", OVERWRITE),
    ]
    assert list(ok.headers_to_remove) == ["x-pomerium-claim-email", "x_pomerium_foo"]
    assert external_auth_pb2.CheckResponse.FromString(response.SerializeToString()) == response


def test_empty_allow() -> None:
    response = to_check_response(Allow())
    assert response.status.code == code_pb2.OK
    assert response.HasField("ok_response")
    assert list(response.ok_response.headers) == []


def test_respond_with_cookies_is_a_denied_response() -> None:
    a = "_pomerium=1; Path=/; HttpOnly"
    b = "_pomerium_login=; Path=/; Max-Age=0"
    response = to_check_response(
        Respond(
            302,
            headers=(("location", "https://jenkins.test/"), ("cache-control", "no-store")),
            body="moved",
            cookies=(a, b),
        )
    )
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == 302
    assert denied.body == "moved"
    headers = [(h.header.key, h.header.value, h.append_action) for h in denied.headers]
    assert ("location", "https://jenkins.test/", OVERWRITE) in headers
    assert ("cache-control", "no-store", OVERWRITE) in headers
    assert [(k, v, act) for k, v, act in headers if k == "set-cookie"] == [
        ("set-cookie", a, APPEND),
        ("set-cookie", b, APPEND),
    ]
    assert external_auth_pb2.CheckResponse.FromString(response.SerializeToString()) == response


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, code_pb2.UNAUTHENTICATED),
        (403, code_pb2.PERMISSION_DENIED),
        (302, code_pb2.PERMISSION_DENIED),
        (200, code_pb2.PERMISSION_DENIED),
        (400, code_pb2.PERMISSION_DENIED),
        (503, code_pb2.PERMISSION_DENIED),
    ],
)
def test_grpc_status_of_a_denied_response(status: int, code: int) -> None:
    response = to_check_response(Respond(status, body="x"))
    assert response.status.code == code
    assert response.denied_response.status.code == status


# ---- CheckRequest -> RequestContext --------------------------------------------------------


def test_request_context_from_a_check_request() -> None:
    ctx = request_context(
        check_request(
            "route-0",
            "Jenkins.Test:8443",
            path="/job/x?y=1&z=2&z=3",
            headers={"accept": BROWSER_ACCEPT, "cookie": "a=1; b=2", "x-forwarded-for": "1.2.3.4"},
            method="POST",
            scheme="https",
            source="192.0.2.10",
        )
    )
    assert ctx.route_id == "route-0"
    assert ctx.kind == "route"
    assert ctx.method == "POST"
    assert ctx.scheme == "https"
    assert ctx.host == "jenkins.test:8443"
    assert ctx.path == "/job/x?y=1&z=2&z=3"
    assert ctx.path_only == "/job/x"
    assert ctx.param("y") == "1"
    assert ctx.param("z") is None  # repeated: ambiguous, so absent
    assert ctx.param("missing") is None
    assert ctx.headers["x-forwarded-for"] == "1.2.3.4"
    assert ctx.cookies == [("a", "1"), ("b", "2")]
    assert ctx.source_ip == "192.0.2.10"
    assert ctx.url == "https://jenkins.test:8443/job/x?y=1&z=2&z=3"
    assert ctx.wants_html is True


def test_request_context_of_an_empty_request() -> None:
    ctx = request_context(external_auth_pb2.CheckRequest())
    assert (ctx.route_id, ctx.kind, ctx.host, ctx.path, ctx.source_ip) == ("", "", "", "", "")
    assert ctx.headers == {}
    assert ctx.cookies == []
    assert ctx.wants_html is False


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/json", False),
        ("application/json, text/html", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_wants_html(accept: str, html: bool) -> None:
    assert request_context(check_request("r", "h", headers={"accept": accept})).wants_html is html


# ---- decide() with a real state ------------------------------------------------------------

COOKIE_SECRET = os.urandom(32)
JENKINS = "jenkins.test:8080"
STATUS = "status.test:8080"
PLAIN = "plain.test:8080"


def make_state(
    tls: bool = False, show_error_details: bool = False, legacy_assertion: bool = False
) -> AuthzState:
    scheme = "https" if tls else "http"
    raw: dict[str, Any] = {
        "address": "127.0.0.1:8080",
        "authenticate_service_url": f"{scheme}://authenticate.test:8080",
        "idp_provider_url": "http://127.0.0.1:9400",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": base64.b64encode(COOKIE_SECRET).decode(),
        "jwt_claims_headers": ["email"],
        "routes": [
            {
                "from": f"{scheme}://{JENKINS}",
                "to": "unix:///run/jenkins/jenkins.socket",
                "pass_identity_headers": True,
                "legacy_assertion": legacy_assertion,
                "show_error_details": show_error_details,
                "policy": [{"allow": {"and": [{"domain": {"is": "example.com"}}]}}],
            },
            {
                "from": f"{scheme}://{STATUS}",
                "to": "http://127.0.0.1:8081",
                "allow_public_unauthenticated_access": True,
            },
            {
                "from": f"{scheme}://{PLAIN}",
                "to": "http://127.0.0.1:8082",
                "allow_any_authenticated_user": True,
            },
        ],
    }
    if tls:
        raw["certificate_file"] = "tls/cert.pem"  # not read: Envoy reads certificates
        raw["certificate_key_file"] = "tls/key.pem"
    else:
        raw["insecure_server"] = True
    return AuthzState.build(build_runtime(settings_from_mapping(raw, environ={}), warn=False))


@pytest.fixture(scope="module")
def state() -> AuthzState:
    return make_state()


@pytest.fixture(scope="module")
def tls_state() -> AuthzState:
    return make_state(tls=True)


async def ask(state: AuthzState, request: external_auth_pb2.CheckRequest) -> Decision:
    decision = await decide(state, request_context(request))
    to_check_response(decision)  # every decision must convert
    return decision


async def session_cookie(
    state: AuthzState,
    email: str = "alice@example.com",
    host: str = JENKINS,
    groups: object = "admins",
    lifetime: int = 3600,
    now: int | None = None,
) -> tuple[Session, str]:
    """A session in the state's store, and its cookie for `host`."""
    claims = {"sub": "u-" + email.partition("@")[0], "email": email, "name": "Alice"}
    if groups is not None:
        claims["groups"] = groups
    return await mint(state, host, claims, lifetime, now=now)


def with_cookie(state: AuthzState, value: str, accept: str = BROWSER_ACCEPT) -> dict[str, str]:
    return {"accept": accept, "cookie": f"{state.session_cookie}={value}"}


def verify_assertion(state: AuthzState, token: str, audience: str) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict(state.signer.jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token,
        key=jwks[kid].key,
        algorithms=["ES256"],
        audience=audience,
        issuer="authenticate.test",
    )
    return claims


def assert_login_redirect(state: AuthzState, decision: Decision, target: str) -> str:
    """A 302 to the authenticate service, with the login nonce cookie; returns the nonce."""
    assert isinstance(decision, Respond)
    assert decision.status == 302
    headers = dict(decision.headers)
    assert headers["cache-control"] == "no-store"
    location = urlsplit(headers["location"])
    origin = state.cfg.authenticate_origin
    assert f"{location.scheme}://{location.netloc}" == origin
    assert location.path == "/.pomerium/sign_in"
    (req,) = parse_qs(location.query)["req"]
    opened = state.sign_in_box.open(req, bound_to=state.cfg.authenticate_netloc)
    request = opened.value
    assert request.target == target
    assert opened.expires_at > time.time()
    (cookie,) = decision.cookies
    first, *attrs = cookie.split("; ")
    name, _, nonce = first.partition("=")
    assert name == state.login_cookie
    assert len(nonce) == 32
    assert request.nonce == nonce
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attrs)
    assert ("Secure" in attrs) is state.secure
    return nonce


async def test_unknown_route_answers_503(state: AuthzState) -> None:
    decision = await ask(state, check_request("route-99", JENKINS))
    assert isinstance(decision, Respond)
    assert decision.status == 503
    assert json.loads(decision.body)["error"] == "unknown_route"
    response = to_check_response(decision)
    assert response.denied_response.status.code == 503


async def test_unknown_route_answers_503_page_to_browsers(state: AuthzState) -> None:
    decision = await ask(state, check_request("", JENKINS, headers={"accept": BROWSER_ACCEPT}))
    assert isinstance(decision, Respond)
    assert decision.status == 503
    assert dict(decision.headers)["content-type"].startswith("text/html")


async def test_unknown_request_kind_answers_503(state: AuthzState) -> None:
    decision = await ask(state, check_request("route-1", STATUS, kind="mystery"))
    assert isinstance(decision, Respond)
    assert decision.status == 503


async def test_public_route_strips_client_identity_headers(state: AuthzState) -> None:
    headers = {
        "x-pomerium-jwt-assertion": "forged",
        "x-pomerium-claim-email": "admin@example.com",
        "x_pomerium_claim_groups": "admins",
        "x-pomerium-anything": "1",
        "x-forwarded-for": "1.2.3.4",
        "accept": "*/*",
    }
    decision = await ask(state, check_request("route-1", STATUS, headers=headers))
    assert isinstance(decision, Allow)
    assert set(decision.remove_headers) == {
        "x-pomerium-jwt-assertion",
        "x-pomerium-claim-email",
        "x_pomerium_claim_groups",
        "x-pomerium-anything",
    }
    assert decision.set_headers == ()


async def test_public_route_hides_authgate_cookies_from_the_upstream(state: AuthzState) -> None:
    headers = {"cookie": f"a=1; {state.session_cookie}=junk; {state.login_cookie}=n; b=2"}
    decision = await ask(state, check_request("route-1", STATUS, headers=headers))
    assert isinstance(decision, Allow)
    assert dict(decision.set_headers)["cookie"] == "a=1; b=2"


async def test_browser_without_session_is_sent_to_sign_in(state: AuthzState) -> None:
    decision = await ask(
        state, check_request("route-0", JENKINS, "/job/x?y=1", {"accept": BROWSER_ACCEPT})
    )
    assert_login_redirect(state, decision, f"http://{JENKINS}/job/x?y=1")
    response = to_check_response(decision)
    assert response.denied_response.status.code == 302
    assert [
        h.append_action for h in response.denied_response.headers if h.header.key == "set-cookie"
    ] == [APPEND]


async def test_login_nonce_cookie_is_reused(state: AuthzState) -> None:
    nonce = "0123456789abcdef0123456789abcdef"
    headers = {"accept": BROWSER_ACCEPT, "cookie": f"{state.login_cookie}={nonce}"}
    decision = await ask(state, check_request("route-0", JENKINS, "/", headers))
    assert assert_login_redirect(state, decision, f"http://{JENKINS}/") == nonce


@pytest.mark.parametrize("bad_nonce", ["short", "x" * 31 + "!", "é" * 32, ""])
async def test_bad_login_nonce_cookie_is_replaced(state: AuthzState, bad_nonce: str) -> None:
    headers = {"accept": BROWSER_ACCEPT, "cookie": f"{state.login_cookie}={bad_nonce}"}
    decision = await ask(state, check_request("route-0", JENKINS, "/", headers))
    assert assert_login_redirect(state, decision, f"http://{JENKINS}/") != bad_nonce


async def test_login_target_comes_from_the_route_not_the_host_header(state: AuthzState) -> None:
    headers = {"accept": BROWSER_ACCEPT}
    decision = await ask(state, check_request("route-0", "evil.test", "/job/x", headers))
    assert_login_redirect(state, decision, f"http://{JENKINS}/job/x")


async def test_tls_login_cookie_is_secure_and_host_prefixed(tls_state: AuthzState) -> None:
    assert tls_state.session_cookie == "__Host-_pomerium"
    headers = {"accept": BROWSER_ACCEPT}
    decision = await ask(tls_state, check_request("route-0", JENKINS, "/", headers, scheme="https"))
    assert_login_redirect(tls_state, decision, f"https://{JENKINS}/")
    assert isinstance(decision, Respond)
    assert decision.cookies[0].startswith("__Host-_pomerium_login=")


@pytest.mark.parametrize("accept", ["application/json", "*/*", None])
async def test_api_client_without_session_gets_401_json(
    state: AuthzState, accept: str | None
) -> None:
    headers = {} if accept is None else {"accept": accept}
    decision = await ask(state, check_request("route-0", JENKINS, "/api/json", headers))
    assert isinstance(decision, Respond)
    assert decision.status == 401
    assert dict(decision.headers)["content-type"] == "application/json"
    assert json.loads(decision.body)["error"] == "unauthenticated"
    assert decision.cookies == ()
    assert to_check_response(decision).status.code == code_pb2.UNAUTHENTICATED


async def test_signed_in_user_gets_the_assertion(state: AuthzState) -> None:
    session, cookie = await session_cookie(state)
    headers = {
        "accept": BROWSER_ACCEPT,
        "cookie": f"JSESSIONID=abc; {state.session_cookie}={cookie}; other=1",
        "x-pomerium-jwt-assertion": "forged",
        "x_pomerium_jwt_assertion": "forged",
        "x-pomerium-claim-email": "admin@example.com",
    }
    decision = await ask(state, check_request("route-0", JENKINS, "/job/x", headers))
    assert isinstance(decision, Allow)
    set_headers = dict(decision.set_headers)
    claims = verify_assertion(state, set_headers["x-pomerium-jwt-assertion"], "jenkins.test")
    assert claims["iss"] == "authenticate.test"
    assert claims["aud"] == "jenkins.test"
    assert claims["email"] == "alice@example.com"
    assert claims["sub"] == claims["user"] == "u-alice"
    assert claims["groups"] == ["admins"]
    assert claims["sid"] == session.sid
    assert claims["exp"] == claims["iat"] + 300
    assert set_headers["x-pomerium-claim-email"] == "alice@example.com"
    # the session cookie never reaches the upstream; its other cookies do
    assert set_headers["cookie"] == "JSESSIONID=abc; other=1"
    # client-sent identity headers: ours overwrite them, the rest is removed
    assert "x_pomerium_jwt_assertion" in decision.remove_headers
    assert "x-pomerium-jwt-assertion" not in decision.remove_headers
    response = to_check_response(decision)
    sent = {h.header.key: (h.header.value, h.append_action) for h in response.ok_response.headers}
    assert sent["x-pomerium-jwt-assertion"][1] == OVERWRITE
    assert sent["x-pomerium-jwt-assertion"][0] != "forged"
    assert sent["x-pomerium-claim-email"] == ("alice@example.com", OVERWRITE)


async def test_groups_claim_is_a_list_even_without_groups(state: AuthzState) -> None:
    _, cookie = await session_cookie(state, groups=None)
    decision = await ask(state, check_request("route-0", JENKINS, "/", with_cookie(state, cookie)))
    assert isinstance(decision, Allow)
    token = dict(decision.set_headers)["x-pomerium-jwt-assertion"]
    assert verify_assertion(state, token, "jenkins.test")["groups"] == []


async def test_only_the_session_cookie_means_no_cookie_header(state: AuthzState) -> None:
    _, cookie = await session_cookie(state)
    decision = await ask(state, check_request("route-0", JENKINS, "/", with_cookie(state, cookie)))
    assert isinstance(decision, Allow)
    assert "cookie" in decision.remove_headers
    assert "cookie" not in dict(decision.set_headers)


async def test_route_without_identity_headers(state: AuthzState) -> None:
    _, cookie = await session_cookie(state, email="bob@corp.test", host=PLAIN)
    headers = {**with_cookie(state, cookie), "x-pomerium-jwt-assertion": "forged"}
    decision = await ask(state, check_request("route-2", PLAIN, "/", headers))
    assert isinstance(decision, Allow)
    assert "x-pomerium-jwt-assertion" not in dict(decision.set_headers)
    assert "x-pomerium-jwt-assertion" in decision.remove_headers
    assert "cookie" in decision.remove_headers


@pytest.mark.parametrize(
    "email", ["mallory@evil.org", "a@example.com.evil.org", "a@sub.example.com"]
)
async def test_disallowed_user_gets_403(state: AuthzState, email: str) -> None:
    _, cookie = await session_cookie(state, email=email)
    decision = await ask(state, check_request("route-0", JENKINS, "/", with_cookie(state, cookie)))
    assert isinstance(decision, Respond)
    assert decision.status == 403
    assert "Access denied" in decision.body
    assert to_check_response(decision).status.code == code_pb2.PERMISSION_DENIED


async def test_disallowed_api_client_gets_403_json(state: AuthzState) -> None:
    _, cookie = await session_cookie(state, email="mallory@evil.org")
    headers = with_cookie(state, cookie, accept="application/json")
    decision = await ask(state, check_request("route-0", JENKINS, "/api/json", headers))
    assert isinstance(decision, Respond)
    assert decision.status == 403
    assert json.loads(decision.body)["error"] == "forbidden"


async def _bad_cookies(state: AuthzState) -> list[tuple[str, str]]:
    live, good = await session_cookie(state)
    middle = len(good) // 2
    flipped = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
    _, other_host = await session_cookie(state, host=STATUS)
    _, expired = await session_cookie(state, lifetime=60, now=int(time.time()) - 3600)
    # The same reference to a live session, sealed with another secret or for another purpose.
    ref = SessionRef(live.sid, live.issued_at, live.expires_at)
    foreign = ReferenceCodec(os.urandom(32)).encode(ref, JENKINS)
    other_purpose = SealedBox(COOKIE_SECRET, "authgate hand-off v1").seal(ref.to_wire(), JENKINS)
    # The previous release's cookie (the whole session sealed, "authgate session v1") of a live
    # session: no longer read, its user signs in again.
    old_cookie = SealedBox(COOKIE_SECRET, "authgate session v1").seal(
        previous_format(live), JENKINS
    )
    revoked_session, revoked = await session_cookie(state)
    await state.sessions.revoke(revoked_session.sid)
    # Sealed right, naming a session the store does not have.
    unknown = state.sessions.refs.encode(
        SessionRef("no-such-session", live.issued_at, live.expires_at), JENKINS
    )
    # Sealed right, naming a live session but not its start (another session's reference).
    other_start = state.sessions.refs.encode(
        SessionRef(live.sid, live.issued_at - 1, live.expires_at), JENKINS
    )
    return [
        ("tampered", flipped),
        ("truncated", good[:-7]),
        ("half", good[: len(good) // 2]),
        ("other host", other_host),
        ("expired", expired),
        ("other secret", foreign),
        ("other purpose", other_purpose),
        ("previous format", old_cookie),
        ("revoked", revoked),
        ("unknown session", unknown),
        ("other start", other_start),
        ("empty", ""),
        ("garbage", "x"),
        ("non-ascii", "é" * 50),
        ("huge", "A" * 65536),
        ("quoted junk", '"a;b"'),
    ]


BAD_COOKIES = [
    "tampered",
    "truncated",
    "half",
    "other host",
    "expired",
    "other secret",
    "other purpose",
    "previous format",
    "revoked",
    "unknown session",
    "other start",
    "empty",
    "garbage",
    "non-ascii",
    "huge",
    "quoted junk",
]


@pytest.mark.parametrize("which", BAD_COOKIES)
async def test_bad_session_cookie_is_no_session(state: AuthzState, which: str) -> None:
    cookies = dict(await _bad_cookies(state))
    assert sorted(cookies) == sorted(BAD_COOKIES)
    value = cookies[which]
    decision = await ask(
        state, check_request("route-0", JENKINS, "/job/x", with_cookie(state, value))
    )
    assert_login_redirect(state, decision, f"http://{JENKINS}/job/x")


async def test_jwks_is_served_on_route_hosts(state: AuthzState) -> None:
    request = check_request("route-1", STATUS, "/.well-known/pomerium/jwks.json", kind="internal")
    decision = await ask(state, request)
    assert isinstance(decision, Respond)
    assert decision.status == 200
    assert json.loads(decision.body) == state.signer.jwks
    assert dict(decision.headers)["content-type"] == "application/json"


async def test_403_reason_only_when_the_route_shows_error_details(state: AuthzState) -> None:
    _, cookie = await session_cookie(state, email="mallory@evil.org")
    headers = with_cookie(state, cookie, accept="application/json")
    hidden = await ask(state, check_request("route-0", JENKINS, "/", headers))
    assert isinstance(hidden, Respond)
    assert "reason" not in json.loads(hidden.body)

    detailed = make_state(show_error_details=True)
    _, cookie = await session_cookie(detailed, email="mallory@evil.org")
    shown = await ask(
        detailed,
        check_request("route-0", JENKINS, "/", with_cookie(detailed, cookie, "application/json")),
    )
    assert isinstance(shown, Respond) and shown.status == 403
    reason = json.loads(shown.body)["reason"]
    assert "no allow matched" in reason and "example.com" in reason and "evil.org" in reason
    page = await ask(
        detailed, check_request("route-0", JENKINS, "/", with_cookie(detailed, cookie))
    )
    assert isinstance(page, Respond) and "evil.org" in page.body


async def test_legacy_assertion_route_uses_the_older_header_and_issuer() -> None:
    legacy = make_state(legacy_assertion=True)
    _, cookie = await session_cookie(legacy)
    request = check_request("route-0", JENKINS, "/", with_cookie(legacy, cookie))
    decision = await ask(legacy, request)
    assert isinstance(decision, Allow)
    set_headers = dict(decision.set_headers)
    assert "x-pomerium-jwt-assertion" not in set_headers
    token = set_headers["x-pomerium-iap-jwt-assertion"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_json(legacy.signer.jwks_json.decode())[kid].key
    claims = jwt.decode(token, key=key, algorithms=["ES256"], audience="jenkins.test")
    assert claims["iss"] == "pomerium-proxy"
    assert claims["email"] == "alice@example.com"
    # a client's own copy of the legacy header never reaches the app
    spoofed = {**with_cookie(legacy, cookie), "x-pomerium-iap-jwt-assertion": "forged"}
    again = await ask(legacy, check_request("route-0", JENKINS, "/", spoofed))
    assert isinstance(again, Allow)
    assert dict(again.set_headers)["x-pomerium-iap-jwt-assertion"] != "forged"


async def test_403_page_names_the_request_and_offers_ways_on(state: AuthzState) -> None:
    _, cookie = await session_cookie(state, email="mallory@evil.org")
    headers = {**with_cookie(state, cookie), "x-request-id": "rid-1234-5678-9abc"}
    decision = await ask(state, check_request("route-0", JENKINS, "/job/x?y=1", headers))
    assert isinstance(decision, Respond) and decision.status == 403
    assert "rid-1234-5678-9abc" in decision.body
    assert 'href="/.pomerium/sign_out?pomerium_redirect_uri=%2Fjob%2Fx%3Fy%3D1"' in decision.body
    assert 'href="/.pomerium/"' in decision.body
    api = {**headers, "accept": "application/json"}
    answer = await ask(state, check_request("route-0", JENKINS, "/job/x", api))
    assert isinstance(answer, Respond)
    assert json.loads(answer.body)["request_id"] == "rid-1234-5678-9abc"


async def test_without_extensions_the_route_comes_from_host_and_path(state: AuthzState) -> None:
    """Behind an Envoy the user wrote: the shared matcher picks the route."""
    _, cookie = await session_cookie(state)
    byo = check_request("", JENKINS, "/job/x", with_cookie(state, cookie), extensions=False)
    decision = await ask(state, byo)
    assert isinstance(decision, Allow)
    assert "x-pomerium-jwt-assertion" in dict(decision.set_headers)
    # the public route, and the authenticate host's endpoints, by host alone
    public = await ask(state, check_request("", STATUS, "/", {}, extensions=False))
    assert isinstance(public, Allow)
    jwks = await ask(
        state,
        check_request("", "authenticate.test:8080", JWKS_PATH, {}, extensions=False),
    )
    assert isinstance(jwks, Respond) and jwks.status == 200 and '"keys"' in jwks.body
    # an unknown host is refused, not forwarded
    unknown = await ask(state, check_request("", "elsewhere.test", "/", {}, extensions=False))
    assert isinstance(unknown, Respond) and unknown.status == 404


@pytest.mark.parametrize(
    "path", ["/job/../admin", "/a//b", "/a/%2e%2e/b", "/a%2fb", "/a\\b", "/%61dmin"]
)
async def test_without_extensions_an_unnormalised_path_is_refused(
    state: AuthzState, path: str
) -> None:
    _, cookie = await session_cookie(state)
    byo = check_request("", JENKINS, path, with_cookie(state, cookie), extensions=False)
    decision = await ask(state, byo)
    assert isinstance(decision, Respond) and decision.status == 400


async def test_without_extensions_forwarding_headers_are_removed(state: AuthzState) -> None:
    headers = {"x-forwarded-host": "evil.test", "forwarded": "host=evil.test", "x-other": "1"}
    decision = await ask(state, check_request("", STATUS, "/", headers, extensions=False))
    assert isinstance(decision, Allow)
    assert {"x-forwarded-host", "forwarded"} <= set(decision.remove_headers)
    assert "x-other" not in decision.remove_headers
    # the generated Envoy removes them itself: the answer does not repeat it
    generated = await ask(state, check_request("route-1", STATUS, "/", headers))
    assert isinstance(generated, Allow)
    assert "x-forwarded-host" not in generated.remove_headers
