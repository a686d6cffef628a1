"""The fast lane's rules, in-process: who gets a pass, what it says, what binds it, and the
Envoy config that verifies it (tests/integration/test_fast_lane.py runs it through Envoy)."""

import asyncio
import base64
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from authgate.authz import fast_lane_pass
from authgate.authz.access import forward
from authgate.authz.decision import Allow
from authgate.authz.response import to_check_response
from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState, session_store_for
from authgate.config import build_runtime, settings_from_mapping
from authgate.config.runtime import RuntimeConfig, generate_signing_key_b64
from authgate.envoy.bootstrap import build_bootstrap
from authgate.errors import ConfigError
from authgate.fast_pass import PASS_ISSUER, FastLane, eligible, pass_key
from tests.support.checks import check_request
from tests.support.sessions import mint

APP = "app.test:8443"
COOKIE_SECRET = base64.b64encode(os.urandom(32)).decode()
SIGNING_KEY = generate_signing_key_b64()
SESSION = "__Host-_pomerium"
DOMAIN = {"domain": {"is": "example.com"}}


def route(rid: str, host: str = APP, **options: Any) -> dict[str, Any]:
    return {"id": rid, "from": f"https://{host}", "to": "http://127.0.0.1:9", **options}


def raw_config(**extra: Any) -> dict[str, Any]:
    return {
        "address": "127.0.0.1:8443",
        "certificate_file": "/nonexistent/cert.pem",
        "certificate_key_file": "/nonexistent/key.pem",
        "authenticate_service_url": "https://authenticate.test:8443",
        "idp_provider_url": "http://127.0.0.1:9400",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": COOKIE_SECRET,
        "signing_key": SIGNING_KEY,
        "fast_lane": True,
        "jwt_claims_headers": ["email", "user", "name", "groups"],  # Pomerium: none unless listed
        "routes": [
            route("app", pass_identity_headers=True, policy={"allow": {"and": [DOMAIN]}}),
            route("strict", prefix="/admin", allowed_users=["root@example.com"]),
            route("paths", "paths.test:8443",
                  policy={"allow": {"and": [DOMAIN, {"http_path": {"starts_with": "/job/"}}]}}),
            route("timed", "timed.test:8443", policy={"allow": {"and": [
                DOMAIN, {"time_of_day": {"timezone": "UTC", "after": "00:00", "before": "23:59"}}
            ]}}),
            route("lan", "lan.test:8443",
                  policy={"allow": {"and": [DOMAIN, {"source_ip": "10.0.0.0/8"}]}}),
            route("cors", "cors.test:8443",
                  policy={"allow": {"or": [DOMAIN, {"cors_preflight": True}]}}),
            route("public", "public.test:8443", allow_public_unauthenticated_access=True),
            route("off", "off.test:8443", fast_lane=False, allow_any_authenticated_user=True),
        ],
        **extra,
    }


def build(raw: dict[str, Any]) -> RuntimeConfig:
    return build_runtime(settings_from_mapping(raw, environ={}), warn=False)


# ---------------------------------------------------------------------------- config


def test_fast_lane_is_off_by_default_and_a_route_can_turn_it_on_or_off() -> None:
    raw = raw_config()
    del raw["fast_lane"]
    assert FastLane(build(raw)).routes == {}
    raw["routes"][0]["fast_lane"] = True
    assert set(FastLane(build(raw)).routes) == {"app"}
    assert "off" not in FastLane(build(raw_config())).routes


@pytest.mark.parametrize("ttl", ["0s", "500ms", "11m"])
def test_ttl_out_of_bounds_is_refused(ttl: str) -> None:
    with pytest.raises(ConfigError, match="fast_lane_ttl"):
        build(raw_config(fast_lane_ttl=ttl))


def test_over_plain_http_the_pass_cookie_is_named_like_the_session_cookie() -> None:
    raw = raw_config(insecure_server=True, authenticate_service_url="http://authenticate.test")
    raw["routes"] = [{**r, "from": r["from"].replace("https", "http")} for r in raw["routes"]]
    cfg = build(raw)
    assert {r.cookie for r in FastLane(cfg).routes.values()} <= set(cfg.own_cookies)
    assert all(r.cookie.startswith("_pomerium_fl_") for r in FastLane(cfg).routes.values())


def test_only_identity_only_policies_are_eligible() -> None:
    cfg = build(raw_config())
    chosen = {rt.id for rt in cfg.routes if eligible(cfg, rt)}
    assert chosen == {"app", "strict"}  # no path, time, address, CORS; not public; not off


# ---------------------------------------------------------------------------- binding


def test_every_worker_and_replica_derives_the_same_key_and_audiences() -> None:
    one, two = FastLane(build(raw_config())), FastLane(build(raw_config()))
    assert one.kid == two.kid and one.routes == two.routes
    assert len({r.audience for r in one.routes.values()}) == len(one.routes)
    assert len({r.cookie for r in one.routes.values()}) == len(one.routes)
    assert all(r.cookie.startswith(f"{SESSION}_fl_") for r in one.routes.values())


def test_policy_or_key_change_changes_the_audience() -> None:
    base = FastLane(build(raw_config())).routes["app"].audience
    stricter = raw_config()
    stricter["routes"][0]["policy"] = {"allow": {"and": [{"domain": {"is": "corp.example"}}]}}
    assert FastLane(build(stricter)).routes["app"].audience != base
    rotated = FastLane(build(raw_config(signing_key=generate_signing_key_b64())))
    assert rotated.routes["app"].audience != base
    assert rotated.kid != FastLane(build(raw_config())).kid
    new_secret = base64.b64encode(os.urandom(32)).decode()
    assert pass_key(build(raw_config(cookie_secret=new_secret))).private_numbers() != pass_key(
        build(raw_config())
    ).private_numbers()


def test_pass_cookies_are_authgate_cookies() -> None:
    cfg = build(raw_config())
    for found in FastLane(cfg).routes.values():
        assert found.cookie in cfg.own_cookies  # cut before any app sees it


# ---------------------------------------------------------------------------- minting


def _state(**extra: Any) -> AuthzState:
    return _state_for(build(raw_config(**extra)))


def _state_for(cfg: RuntimeConfig) -> AuthzState:
    # Its own store, with a wait a loaded test machine can meet (a Check waits 0.5 s).
    store = session_store_for(cfg, Path(tempfile.mkdtemp(prefix="fast-lane-")), timeout_s=5.0)
    return AuthzState.build(cfg, store=store)


async def _allow(state: AuthzState, rid: str, host: str, lifetime: int = 3600,
                 headers: dict[str, str] | None = None, extensions: bool = True,
                 path: str = "/") -> Allow:
    _session, cookie = await mint(state, host, {"sub": "u-a", "email": "a@example.com",
                                                "groups": ["dev"]}, lifetime)
    await state.sessions.poll()
    request = check_request(rid, host, path, {"cookie": f"{SESSION}={cookie}", **(headers or {})},
                            scheme="https", extensions=extensions)
    decision = await decide(state, request_context(request))
    assert isinstance(decision, Allow), decision
    return decision


def _pass_of(state: AuthzState, allow: Allow, rid: str) -> dict[str, Any]:
    name = state.fast_lane.routes[rid].cookie
    (cookie,) = [c for c in allow.response_cookies if c.startswith(f"{name}=")]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Domain" not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    claims: dict[str, Any] = jwt.decode(
        token, state.fast_lane.key.public_key(), algorithms=["ES256"], issuer=PASS_ISSUER,
        audience=state.fast_lane.routes[rid].audience,
    )
    return claims


def test_an_allowed_browser_request_gets_a_pass_carrying_its_headers() -> None:
    async def run() -> None:
        state = _state()
        before = time.time()
        allow = await _allow(state, "app", APP)
        claims = _pass_of(state, allow, "app")
        headers = dict(allow.set_headers)
        carried = claims["h"]
        assert carried["x-pomerium-jwt-assertion"] == headers["x-pomerium-jwt-assertion"]
        assert carried["x-pomerium-claim-email"] == "a@example.com"
        assert carried["x-pomerium-claim-groups"] == "dev"
        assert set(carried) == set(state.fast_lane.routes["app"].headers)
        assert before + 59 <= claims["exp"] <= time.time() + 60
        # A kept answer never hands out a pass in its second half of life.
        assert allow.until <= claims["iat"] + 30 + 1
        response = to_check_response(allow)
        added = [h.header for h in response.ok_response.response_headers_to_add]
        assert [h.key for h in added] == ["set-cookie"] and added[0].value.startswith(SESSION)

    asyncio.run(run())


def test_a_route_without_identity_headers_gets_a_pass_that_carries_none() -> None:
    raw = raw_config()
    raw["routes"].append(route("public-id", "id.test:8443", allow_any_authenticated_user=True))
    state_cfg = build(raw)
    assert "public-id" in FastLane(state_cfg).routes

    async def run_with() -> None:
        state = _state_for(state_cfg)
        allow = await _allow(state, "public-id", "id.test:8443")
        claims = _pass_of(state, allow, "public-id")
        assert "h" not in claims

    asyncio.run(run_with())


def test_a_pass_never_outlives_the_session() -> None:
    async def run() -> None:
        state = _state()
        allow = await _allow(state, "app", APP, lifetime=20)
        assert _pass_of(state, allow, "app")["exp"] <= time.time() + 20
        short = await _allow(state, "app", APP, lifetime=1)
        assert short.response_cookies == ()  # under MIN_PASS_S: not worth a cookie

    asyncio.run(run())


@pytest.mark.parametrize(
    "headers, extensions",
    [
        ({"authorization": "Bearer x"}, True),  # a token: always the Check
        ({"x-pomerium-authorization": "Pomerium x"}, True),
        ({}, False),  # behind an Envoy the user wrote: nothing would verify a pass
    ],
)
def test_no_pass_for_tokens_or_without_the_generated_envoy(
    headers: dict[str, str], extensions: bool
) -> None:
    async def run() -> None:
        state = _state()
        session, cookie = await mint(state, APP, {"sub": "u", "email": "a@example.com"})
        request = check_request("app", APP, "/", {"cookie": f"{SESSION}={cookie}", **headers},
                                scheme="https", extensions=extensions)
        app = state.cfg.routes_by_id["app"]
        assert forward(state, app, request_context(request), session).response_cookies == ()
        plain = check_request("app", APP, "/", {"cookie": f"{SESSION}={cookie}"}, scheme="https")
        assert forward(state, app, request_context(plain), session).response_cookies != ()

    asyncio.run(run())


def test_routes_off_the_fast_lane_never_mint() -> None:
    async def run() -> None:
        state = _state()
        for rid, host in (("off", "off.test:8443"), ("paths", "paths.test:8443")):
            allow = await _allow(state, rid, host, path="/job/x")
            assert allow.response_cookies == ()

    asyncio.run(run())


# ---------------------------------------------------------------------------- Envoy config


def _hcm(doc: dict[str, Any]) -> dict[str, Any]:
    listener = doc["static_resources"]["listeners"][0]
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def test_bootstrap_without_the_fast_lane_has_no_trace_of_it() -> None:
    raw = raw_config()
    del raw["fast_lane"]
    doc = build_bootstrap(build(raw), ["unix:/tmp/a.sock"], admin_address="127.0.0.1:9901")
    hcm = _hcm(doc)
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.ext_authz", "authgate.cookie_filter", "envoy.filters.http.router"
    ]
    assert "fast-lane" not in str(doc)


def test_bootstrap_verifies_passes_before_ext_authz_and_twins_precede_their_route() -> None:
    cfg = build(raw_config())
    lane = FastLane(cfg)
    doc = build_bootstrap(cfg, ["unix:/tmp/a.sock"], admin_address="127.0.0.1:9901")
    hcm = _hcm(doc)
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.jwt_authn", "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_authz", "authgate.cookie_filter", "envoy.filters.http.router",
    ]
    providers = hcm["http_filters"][0]["typed_config"]["providers"]
    assert set(providers) == {r.provider for r in lane.routes.values()}
    app = providers["fast-lane:app"]
    assert app["audiences"] == [lane.routes["app"].audience]
    assert app["from_cookies"] == [lane.routes["app"].cookie]
    assert app["clock_skew_seconds"] == 1 and app["max_lifetime"] == "60s"
    assert '"d"' not in app["local_jwks"]["inline_string"]  # the public key only
    (host,) = [v for v in hcm["route_config"]["virtual_hosts"] if v["name"] == APP]
    names = [r.get("name") for r in host["routes"] if r.get("name")]
    assert names == ["app:fast-lane", "app", "strict:fast-lane", "strict"]
    twin = next(r for r in host["routes"] if r.get("name") == "app:fast-lane")
    per_filter = twin["typed_per_filter_config"]
    assert per_filter["envoy.filters.http.ext_authz"]["disabled"] is True
    matcher = twin["match"]["dynamic_metadata"][0]
    assert matcher["value"]["string_match"]["exact"] == lane.routes["app"].audience


def test_an_identity_header_envoy_would_not_set_means_no_pass() -> None:
    async def run() -> None:
        state = _state()
        session, cookie = await mint(state, APP, {"sub": "u", "email": "a@example.com"})
        request = check_request("app", APP, "/", {"cookie": f"{SESSION}={cookie}"}, scheme="https")
        ctx, app = request_context(request), state.cfg.routes_by_id["app"]
        known = [("x-pomerium-claim-email", "a@example.com")]
        until = time.time() + 3600
        assert fast_lane_pass.mint(state, app, ctx, session, known, until) is not None
        extra = [*known, ("x-pomerium-claim-department", "ops")]
        assert fast_lane_pass.mint(state, app, ctx, session, extra, until) is None

    asyncio.run(run())
