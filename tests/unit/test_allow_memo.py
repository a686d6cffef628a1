"""The fast path (kept OK answers) never answers differently from the full path."""

import base64
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from google.rpc import code_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
from authgate.authz.response import to_check_response
from authgate.authz.server import AuthorizationServicer
from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState
from authgate.config import build_runtime, settings_from_mapping
from authgate.session import Session
from tests.support.checks import check_request
from tests.support.sessions import fresh, mint, mint_sync

APP = "app.test:8080"
PATHS = "paths.test:8080"
OFFICE = "office.test:8080"
LAN = "lan.test:8080"
CORS = "cors.test:8080"
PUBLIC = "public.test:8080"
HOSTS = {"app": APP, "paths": PATHS, "office": OFFICE, "lan": LAN, "cors": CORS, "public": PUBLIC}
CLOCK = {"now": datetime(2026, 11, 23, 10, 0, tzinfo=UTC)}  # a Monday, 10:00 UTC


def make_state(limit: int = 10_000) -> AuthzState:
    def route(rid: str, **options: Any) -> dict[str, Any]:
        return {"id": rid, "from": f"http://{HOSTS[rid]}", "to": "http://127.0.0.1:9", **options}

    domain = {"domain": {"is": "example.com"}}
    raw: dict[str, Any] = {
        "address": "127.0.0.1:8080",
        "insecure_server": True,
        "authenticate_service_url": "http://authenticate.test:8080",
        "idp_provider_url": "http://127.0.0.1:9400",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
        "jwt_claims_headers": ["email", "groups"],
        "routes": [
            route("app", pass_identity_headers=True, policy={"allow": {"and": [domain]}}),
            route(
                "paths",
                pass_identity_headers=True,
                policy={
                    "allow": {"and": [domain, {"http_path": {"starts_with": "/job/"}}]},
                    "deny": {"and": [{"http_method": {"is": "DELETE"}}]},
                },
            ),
            route(
                "office",
                policy={
                    "allow": {
                        "and": [
                            domain,
                            {
                                "time_of_day": {
                                    "timezone": "UTC",
                                    "after": "09:00",
                                    "before": "17:00",
                                }
                            },
                        ]
                    }
                },
            ),
            route("lan", policy={"allow": {"and": [domain, {"source_ip": "10.0.0.0/8"}]}}),
            route("cors", policy={"allow": {"or": [domain, {"cors_preflight": True}]}}),
            route("public", allow_public_unauthenticated_access=True),
        ],
    }
    cfg = build_runtime(settings_from_mapping(raw, environ={}), warn=False)
    state = AuthzState.build(cfg, clock=lambda: CLOCK["now"])
    # The state's own memo (the session manager tells it of every session change), smaller.
    state.allow_memo.limit = limit
    return state


def claims_of(email: str) -> dict[str, Any]:
    return {"sub": "u-" + email.partition("@")[0], "email": email, "groups": ["dev"]}


async def session_for(
    state: AuthzState,
    rid: str,
    email: str = "alice@example.com",
    lifetime: int = 3600,
    now: float | None = None,
) -> tuple[Session, str]:
    """A session in the state's store, and its cookie for the route `rid`."""
    return await mint(state, HOSTS[rid], claims_of(email), lifetime, now=now)


async def cookie_for(
    state: AuthzState,
    rid: str,
    email: str = "alice@example.com",
    lifetime: int = 3600,
    now: float | None = None,
) -> str:
    return (await session_for(state, rid, email, lifetime, now))[1]


async def via_check(
    state: AuthzState, servicer: AuthorizationServicer, request: Any, *, feed: bool = True
) -> Any:
    """One Check through the servicer (memo first). `feed`: poll the session store's event feed
    first, as a worker's feed task does every 0.2 s, so the worker may use its kept answers."""
    if feed:
        await fresh(state)
    raw = await servicer.Check(request, None)  # type: ignore[arg-type]
    return external_auth_pb2.CheckResponse.FromString(raw)


async def via_full_path(state: AuthzState, request: Any) -> Any:
    return to_check_response(await decide(state, request_context(request)))


def assertion_of(response: Any) -> str:
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    return headers["x-pomerium-jwt-assertion"]


def app_request(state: AuthzState, cookie: str, extra: dict[str, str] | None = None) -> Any:
    headers = {"cookie": f"theme=dark; {state.session_cookie}={cookie}", **(extra or {})}
    return check_request("app", APP, "/job/x", headers)


async def test_a_repeated_request_is_answered_from_the_memo_like_the_full_path() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    request = app_request(state, await cookie_for(state, "app"), {"x-pomerium-claim-email": "m@x"})
    first = await via_check(state, servicer, request)
    assert first.status.code == code_pb2.OK
    assert len(state.allow_memo) == 1
    second = await via_check(state, servicer, request)
    assert second == first == await via_full_path(state, request)
    ok = second.ok_response
    assert "x-pomerium-claim-email" in {h.header.key for h in ok.headers}  # ours, overwriting
    assert {h.header.key: h.header.value for h in ok.headers}["cookie"] == "theme=dark"


async def test_a_spoofed_header_added_later_is_still_removed() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    cookie = await cookie_for(state, "app")
    await via_check(state, servicer, app_request(state, cookie))
    spoofed = app_request(state, cookie, {"x-pomerium-jwt-assertion-for": "forged"})
    answer = await via_check(state, servicer, spoofed)
    assert "x-pomerium-jwt-assertion-for" in answer.ok_response.headers_to_remove
    assert len(state.allow_memo) == 2


async def test_a_path_policy_is_keyed_on_method_and_path() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    headers = {"cookie": f"{state.session_cookie}={await cookie_for(state, 'paths')}"}
    allowed = check_request("paths", PATHS, "/job/x?a=1", headers)
    assert (await via_check(state, servicer, allowed)).status.code == code_pb2.OK
    assert (await via_check(state, servicer, allowed)).status.code == code_pb2.OK
    for path, method in (("/manage", "GET"), ("/job/x", "DELETE")):
        refused = await via_check(
            state, servicer, check_request("paths", PATHS, path, headers, method=method)
        )
        assert refused.denied_response.status.code == 403, (path, method)


async def test_a_source_ip_policy_is_keyed_on_the_client_address() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    headers = {"cookie": f"{state.session_cookie}={await cookie_for(state, 'lan')}"}
    inside = check_request("lan", LAN, "/", headers, source="10.1.2.3")
    assert (await via_check(state, servicer, inside)).status.code == code_pb2.OK
    outside = check_request("lan", LAN, "/", headers, source="192.0.2.1")
    assert (await via_check(state, servicer, outside)).denied_response.status.code == 403


async def test_a_policy_with_time_criteria_is_never_kept() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    headers = {"cookie": f"{state.session_cookie}={await cookie_for(state, 'office')}"}
    request = check_request("office", OFFICE, "/", headers)
    try:
        assert (await via_check(state, servicer, request)).status.code == code_pb2.OK
        CLOCK["now"] = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
        assert (await via_check(state, servicer, request)).denied_response.status.code == 403
    finally:
        CLOCK["now"] = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert len(state.allow_memo) == 0


async def test_an_answer_ends_with_its_session(monkeypatch: pytest.MonkeyPatch) -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    request = app_request(state, await cookie_for(state, "app", lifetime=120))
    assert (await via_check(state, servicer, request)).status.code == code_pb2.OK
    later = time.time() + 121
    monkeypatch.setattr(time, "time", lambda: later)
    answer = await via_check(state, servicer, request)
    assert answer.denied_response.status.code == 401
    assert len(state.allow_memo) == 0
    assert state.allow_memo.bytes == 0


async def test_an_answer_ends_when_its_assertion_is_due_for_re_signing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    request = app_request(state, await cookie_for(state, "app"))
    first = assertion_of(await via_check(state, servicer, request))
    start = time.time()
    monkeypatch.setattr(time, "time", lambda: start + 200)
    assert assertion_of(await via_check(state, servicer, request)) == first
    monkeypatch.setattr(time, "time", lambda: start + 241)
    renewed = assertion_of(await via_check(state, servicer, request))
    assert renewed != first
    assert assertion_of(await via_check(state, servicer, request)) == renewed


async def test_a_stale_session_cookie_on_a_public_route_is_not_kept() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    stale = await cookie_for(state, "public", now=int(time.time()) - 7200)
    request = check_request("public", PUBLIC, "/", {"cookie": f"{state.session_cookie}={stale}"})
    answer = await via_check(state, servicer, request)
    assert answer.status.code == code_pb2.OK
    assert "cookie" in answer.ok_response.headers_to_remove  # ours: never sent upstream
    assert len(state.allow_memo) == 0
    anonymous = check_request("public", PUBLIC, "/", {"x-pomerium-claim-email": "m@x"})
    await via_check(state, servicer, anonymous)
    assert len(state.allow_memo) == 1


async def test_the_memo_is_bounded() -> None:
    state = make_state(limit=50)
    servicer = AuthorizationServicer(state)
    cookies = [await cookie_for(state, "app") for _ in range(300)]
    for cookie in cookies:
        assert (await via_check(state, servicer, app_request(state, cookie))).status.code == 0
    assert len(state.allow_memo) == 50
    # The oldest were dropped, the newest are still served.
    assert (await via_check(state, servicer, app_request(state, cookies[0]))).status.code == 0
    assert len(state.allow_memo) == 50


async def test_the_memo_is_bounded_in_bytes_when_clients_send_large_headers() -> None:
    state = make_state()
    state.allow_memo.max_bytes = 64 * 1024
    servicer = AuthorizationServicer(state)
    cookie = await cookie_for(state, "app")

    def padded(i: int, size: int) -> Any:
        # A different, large Cookie header each time: the client chooses its size.
        jar = f"pad{i}={'x' * size}; {state.session_cookie}={cookie}"
        return check_request("app", APP, "/", {"cookie": jar})

    for i in range(200):
        assert (await via_check(state, servicer, padded(i, 2000))).status.code == code_pb2.OK
        assert state.allow_memo.bytes <= 64 * 1024
    assert 0 < len(state.allow_memo) < 200
    kept = len(state.allow_memo)
    answer = await via_check(state, servicer, padded(999, 20_000))  # larger than an entry may be
    assert answer.status.code == code_pb2.OK
    assert len(state.allow_memo) == kept


# ---- sessions that change take their kept answers with them ---------------------------------


async def test_forget_session_drops_exactly_that_sessions_answers() -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    memo = state.allow_memo
    alice, alice_cookie = await session_for(state, "app")
    bob, bob_cookie = await session_for(state, "app", email="bob@example.com")
    alice_requests = [
        app_request(state, alice_cookie),
        app_request(state, alice_cookie, {"x-other": "1"}),
    ]
    bob_request = app_request(state, bob_cookie)
    anonymous = check_request("public", PUBLIC, "/", {"x-pomerium-claim-email": "m@x"})
    for request in [*alice_requests, bob_request, anonymous]:
        assert (await via_check(state, servicer, request)).status.code == code_pb2.OK
    assert len(memo) == 4
    bytes_before = memo.bytes

    def kept(request: Any) -> bytes | None:
        probe = memo.probe(request.attributes)
        assert probe is not None
        return memo.get(probe[0])

    memo.forget_session(alice.sid)
    assert len(memo) == 2
    assert all(kept(request) is None for request in alice_requests)
    assert kept(bob_request) is not None and kept(anonymous) is not None
    assert 0 < memo.bytes < bytes_before
    memo.forget_session("no-such-session")
    assert len(memo) == 2
    memo.forget_session(bob.sid)
    assert len(memo) == 1 and kept(anonymous) is not None
    # Alice's requests are answered again (by the full path), and kept again.
    assert (await via_check(state, servicer, alice_requests[0])).status.code == code_pb2.OK
    assert len(memo) == 2
    memo.forget_session("")  # everything
    assert len(memo) == 0 and memo.bytes == 0


@pytest.mark.parametrize("where", ["this worker", "another worker"])
async def test_a_revoked_sessions_kept_answer_is_not_served_after_the_feed_polls(
    where: str,
) -> None:
    state = make_state()
    servicer = AuthorizationServicer(state)
    session, cookie = await session_for(state, "app")
    request = app_request(state, cookie)
    assert (await via_check(state, servicer, request)).status.code == code_pb2.OK
    assert len(state.allow_memo) == 1
    if where == "this worker":
        await state.sessions.revoke(session.sid)
    else:
        # Another worker of the same run (the same store): only the event feed tells this one.
        other = AuthzState.build(state.cfg)
        try:
            await other.sessions.revoke(session.sid)
        finally:
            await other.sessions.aclose()
    await fresh(state)
    answer = await via_check(state, servicer, request)
    assert answer.denied_response.status.code == 401  # an API client: not signed in
    assert answer == await via_full_path(state, request)
    assert len(state.allow_memo) == 0
    # A browser gets the full path's login redirect, not a kept answer either.
    browser = app_request(state, cookie, {"accept": "text/html"})
    answer = await via_check(state, servicer, browser)
    assert answer.denied_response.status.code == 302
    assert answer.status.code == (await via_full_path(state, browser)).status.code


async def test_no_answer_is_kept_or_served_while_the_feed_is_not_fresh() -> None:
    state = make_state()  # never polled: this worker cannot know of revocations in time
    servicer = AuthorizationServicer(state)
    request = app_request(state, await cookie_for(state, "app"))
    for _ in range(2):
        answer = await via_check(state, servicer, request, feed=False)
        assert answer.status.code == code_pb2.OK
        assert answer == await via_full_path(state, request)
    assert len(state.allow_memo) == 0


# ---- differential: any sequence of requests, memo or not, gets the same answers ------------

STATE = make_state(limit=20)
SERVICER = AuthorizationServicer(STATE)


def _minted(rid: str, email: str = "alice@example.com", now: float | None = None) -> str:
    """A cookie for the route `rid` naming a session in STATE's store (minted at import, before
    any event loop runs)."""
    return mint_sync(STATE, HOSTS[rid], claims_of(email), now=now)[1]


COOKIES = {
    rid: [
        _minted(rid),
        _minted(rid, email="bob@example.com"),
        _minted(rid, email="mallory@evil.org"),
        _minted(rid, now=int(time.time()) - 7200),  # expired
        _minted("app" if rid != "app" else "paths"),  # sealed for another host
        "garbage",
    ]
    for rid in HOSTS
}

requests = st.builds(
    lambda rid, ci, spoof, other, method, path, ip, origin: (
        rid,
        {
            **({"cookie": f"{other}{STATE.session_cookie}={COOKIES[rid][ci]}"} if ci >= 0 else {}),
            **({"cookie": other.rstrip("; ")} if ci < 0 and other else {}),
            **{name: "forged" for name in spoof},
            **({"origin": origin, "access-control-request-method": "GET"} if origin else {}),
        },
        method,
        path,
        ip,
    ),
    st.sampled_from(sorted(HOSTS)),
    st.integers(-1, 5),
    st.sets(st.sampled_from(["x-pomerium-claim-email", "x-pomerium-jwt-assertion", "x-other"])),
    st.sampled_from(["", "theme=dark; ", f"{STATE.login_cookie}=abc; "]),
    st.sampled_from(["GET", "POST", "DELETE", "OPTIONS"]),
    st.sampled_from(["/", "/job/x", "/job/x?y=1", "/manage"]),
    st.sampled_from(["10.0.0.7", "192.0.2.1"]),
    st.sampled_from(["", "https://evil.example"]),
)


def as_raw(headers: dict[str, str], split: bool) -> list[tuple[str, bytes]]:
    """The same headers as Envoy's raw header list; `split`: each cookie in its own header."""
    raw = []
    for name, value in headers.items():
        values = value.split("; ") if name == "cookie" and split else [value]
        raw += [(name, v.encode()) for v in values]
    return raw


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(requests, st.sampled_from(["map", "raw", "raw-split"])), min_size=1, max_size=12
    )
)
async def test_memo_answers_match_the_full_path(sequence: list[Any]) -> None:
    for (rid, headers, method, path, ip), mode in sequence:
        raw = None if mode == "map" else as_raw(headers, mode == "raw-split")
        request = check_request(
            rid, HOSTS[rid], path, headers, method=method, source=ip, raw_headers=raw
        )
        fast = await via_check(STATE, SERVICER, request)
        full = await via_full_path(STATE, request)
        assert fast.status.code == full.status.code
        if full.HasField("ok_response"):
            assert fast == full
        else:
            assert fast.denied_response.status.code == full.denied_response.status.code
