"""Log in through the real IdP and reach upstreams through real Envoy with a verified assertion."""

from __future__ import annotations

import os
import signal
import ssl
import time
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from websockets.sync.client import connect as ws_connect

from tests.integration.conftest import Env
from tests.support.idp_login import is_idp_login_page, is_idp_logout_page, submit_idp_logout

SESSION_COOKIE = "__Host-_pomerium"


def _cookie_for(client: httpx.Client, host: str, name: str = SESSION_COOKIE) -> str | None:
    for cookie in client.cookies.jar:
        if cookie.name == name and cookie.domain.lstrip(".") == host:
            return cookie.value
    return None


def test_login_lands_on_first_url_and_jenkins_accepts_the_assertion(env: Env) -> None:
    with env.browser() as client:
        first = env.url("jenkins.test", "/job/build-42/console?start=10")
        final = env.login(client, first)
        assert final.status_code == 200
        assert str(final.url) == first
        seen = final.json()
        # The upstream verified the assertion as the Jenkins JWT Auth plugin would, with the
        # JWKS fetched through the proxy.
        assert seen["user"] is not None, seen.get("auth_error")
        assert seen["user"]["username"] == "alice@example.com"
        assert seen["user"]["groups"] == ["admins", "devs"]
        claims = seen["user"]["claims"]
        assert claims["iss"] == "authenticate.test"
        assert claims["aud"] == "jenkins.test"
        assert claims["exp"] - claims["iat"] == 300
        for name in ("nbf", "jti", "sub", "name", "user", "sid"):
            assert name in claims
        request = env.jenkins.requests.wait_for(lambda r: r.path.startswith("/job/build-42"))
        assert request.listener == "unix"
        assert request.header("x-pomerium-claim-email") == "alice@example.com"
        assert request.header("x-pomerium-claim-groups") == "admins,devs"
        # host_rewrite_header: true keeps the public Host for Jenkins' links.
        assert request.host == f"jenkins.test:{env.port}"
        header = jwt.get_unverified_header(request.header("x-pomerium-jwt-assertion") or "")
        assert header["alg"] == "ES256"
        jwks = client.get(env.url("jenkins.test", "/.well-known/pomerium/jwks.json")).json()
        assert header["kid"] == jwks["keys"][0]["kid"]


def test_session_cookie_attributes(env: Env) -> None:
    with env.browser() as client:
        client.follow_redirects = False
        first = client.get(env.url("jenkins.test", "/"))
        assert first.status_code == 302
        sign_in = env.url("authenticate.test", "/.pomerium/sign_in?")
        assert first.headers["location"].startswith(sign_in)
    with env.browser() as client:
        seen: list[str] = []

        def record(response: httpx.Response) -> None:
            seen.extend(response.headers.get_list("set-cookie"))

        client.event_hooks["response"] = [record]
        env.login(client, env.url("jenkins.test", "/"))
    session_cookies = [
        c for c in seen if c.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" not in c
    ]
    assert len(session_cookies) == 2  # the authenticate host's and the route host's
    for value in session_cookies:
        attrs = {part.strip().split("=")[0].lower() for part in value.split(";")}
        assert {"secure", "httponly", "path"} <= attrs
        assert "samesite=lax" in value.lower().replace(" ", "")
        assert "domain" not in attrs


def test_second_route_host_gets_its_own_cookie_through_the_hand_off(env: Env) -> None:
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        assert _cookie_for(client, "other.test") is None
        # Already signed in at the authenticate host: no IdP page, straight hand-off.
        response = client.get(env.url("other.test", "/dashboard"))
        assert response.status_code == 200
        assert str(response.url) == env.url("other.test", "/dashboard")
        assert response.json()["user"]["username"] == "alice@example.com"
        jenkins_cookie = _cookie_for(client, "jenkins.test")
        other_cookie = _cookie_for(client, "other.test")
        assert other_cookie and jenkins_cookie and other_cookie != jenkins_cookie
    # A cookie of one host is no session on another.
    with env.browser() as client:
        client.follow_redirects = False
        response = client.get(
            env.url("other.test", "/"), headers={"cookie": f"{SESSION_COOKIE}={jenkins_cookie}"}
        )
        assert response.status_code == 302
        assert "/.pomerium/sign_in" in response.headers["location"]


def test_hand_off_token_is_single_use(env: Env) -> None:
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        client.follow_redirects = False
        first = client.get(env.url("other.test", "/"))
        sign_in = client.get(first.headers["location"])
        callback_url = sign_in.headers["location"]
        assert "/.pomerium/callback?handoff=" in callback_url
        used = client.get(callback_url)
        assert used.status_code == 302
        replay = client.get(callback_url)
        assert replay.status_code == 400
    # Another browser (without the nonce cookie) cannot use a hand-off either.
    with env.browser() as thief:
        assert thief.get(callback_url).status_code == 400


def test_spoofed_identity_headers_never_reach_the_upstream(env: Env) -> None:
    spoofed = {
        "X-Pomerium-Jwt-Assertion": "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImV2aWxAZXZpbC5vcmcifQ.",
        "x-pomerium-claim-email": "evil@evil.org",
        "X_Pomerium_Claim_Email": "evil@evil.org",
        "X-POMERIUM-CLAIM-GROUPS": "admins",
    }
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        env.jenkins.clear()
        seen = client.get(env.url("jenkins.test", "/spoof"), headers=spoofed).json()
        assert seen["user"]["username"] == "alice@example.com"
        request = env.jenkins.requests.wait_for(lambda r: r.path == "/spoof")
        assert request.header_values("x-pomerium-claim-email") == ["alice@example.com"]
        assert request.header_values("x-pomerium-claim-groups") == ["admins,devs"]
        assert len(request.header_values("x-pomerium-jwt-assertion")) == 1
        assert request.header("x-pomerium-jwt-assertion") != spoofed["X-Pomerium-Jwt-Assertion"]
        names = [name.lower() for name, _ in request.headers]
        assert not any("_" in name and "pomerium" in name for name in names)
    # On the public route, with no identity to pass, every spoofed header is removed.
    env.status.clear()
    with env.browser() as client:
        assert client.get(env.url("status.test", "/health"), headers=spoofed).status_code == 200
    request = env.status.requests.wait_for(lambda r: r.path == "/health")
    assert not [n for n, _ in request.headers if "pomerium" in n.lower()]


def test_session_cookie_never_reaches_the_upstream(env: Env) -> None:
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        client.cookies.set("JSESSIONID", "app-cookie", domain="jenkins.test")
        env.jenkins.clear()
        client.get(env.url("jenkins.test", "/cookies"))
        request = env.jenkins.requests.wait_for(lambda r: r.path == "/cookies")
        cookie = request.header("cookie") or ""
        assert "JSESSIONID=app-cookie" in cookie
        assert "_pomerium" not in cookie


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # tampered
        lambda v: v[: len(v) // 2],  # truncated
        lambda v: v.replace("-", "+").replace("_", "/") + "==",  # re-encoded
        lambda v: "x" * 5000,  # garbage
        lambda v: "",  # empty
    ],
    ids=["tampered", "truncated", "re-encoded", "garbage", "empty"],
)
def test_bad_cookie_means_log_in_again(env: Env, mangle) -> None:  # type: ignore[no-untyped-def]
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        good = _cookie_for(client, "jenkins.test")
        assert good
    with env.browser() as client:
        client.follow_redirects = False
        response = client.get(
            env.url("jenkins.test", "/"), headers={"cookie": f"{SESSION_COOKIE}={mangle(good)}"}
        )
        assert response.status_code == 302
        assert "/.pomerium/sign_in" in response.headers["location"]
        api = client.get(
            env.url("jenkins.test", "/"),
            headers={"cookie": f"{SESSION_COOKIE}={mangle(good)}", "accept": "application/json"},
        )
        assert api.status_code == 401


def test_foreign_cookie_from_another_secret_is_no_session(env: Env) -> None:
    from tests.integration.attack_kit import Mint, mint_for, ref_of, store_path

    # A live session in the stack's own store, its reference sealed with another cookie_secret:
    # only the secret is wrong.
    mint = mint_for(env.stack.config, store_path(env.stack))
    ref = ref_of(mint.start({"sub": "x", "email": "alice@example.com"}))
    netloc = f"jenkins.test:{env.port}"
    foreign = Mint(os.urandom(32)).refs.encode(ref, netloc)
    with env.browser() as client:
        client.follow_redirects = False
        response = client.get(
            env.url("jenkins.test", "/"), headers={"cookie": f"{SESSION_COOKIE}={foreign}"}
        )
        assert response.status_code == 302
        # control: the same reference sealed with the stack's secret is that session
        genuine = mint.refs.encode(ref, netloc)
        response = client.get(
            env.url("jenkins.test", "/"), headers={"cookie": f"{SESSION_COOKIE}={genuine}"}
        )
        assert response.status_code == 200
        assert response.json()["user"]["username"] == "alice@example.com"


def test_user_outside_the_allowed_domain_gets_403(env: Env) -> None:
    env.jenkins.clear()
    with env.browser() as client:
        final = env.login(client, env.url("jenkins.test", "/secret"), email="bob@evil.org")
        assert final.status_code == 403
        assert "Access denied" in final.text
        api = client.get(env.url("jenkins.test", "/secret"), headers={"accept": "application/json"})
        assert api.status_code == 403
        assert api.json()["error"] == "forbidden"
        # Any authenticated user may use the other route.
        assert client.get(env.url("other.test", "/")).json()["user"]["username"] == "bob@evil.org"
    assert not [r for r in env.jenkins.requests.snapshot() if r.path == "/secret"]


def test_public_route_works_without_login(env: Env) -> None:
    with env.browser() as client:
        client.follow_redirects = False
        response = client.get(env.url("status.test", "/health"))
        assert response.status_code == 200
        assert response.json()["path"] == "/health"


def test_api_client_without_session_gets_401_json(env: Env) -> None:
    with httpx.Client(verify=env.pki.client_ssl_context()) as client:
        response = client.get(
            env.url("jenkins.test", "/api/json"), headers={"accept": "application/json"}
        )
        assert response.status_code == 401
        assert response.json()["error"] == "unauthenticated"
        plain = client.get(env.url("jenkins.test", "/api/json"))  # curl's Accept: */*
        assert plain.status_code == 401


def test_unknown_host_is_refused(env: Env) -> None:
    with httpx.Client(verify=env.pki.client_ssl_context()) as client:
        response = client.get(env.url("jenkins.test", "/"), headers={"host": "nowhere.test"})
        assert response.status_code == 404


def test_jwks_on_every_host_with_caching_headers(env: Env) -> None:
    with httpx.Client(verify=env.pki.client_ssl_context()) as client:
        bodies = []
        for host in ("jenkins.test", "other.test", "status.test", "authenticate.test"):
            response = client.get(env.url(host, "/.well-known/pomerium/jwks.json"))
            assert response.status_code == 200
            assert "max-age" in response.headers["cache-control"]
            bodies.append(response.json())
        assert all(body == bodies[0] for body in bodies)
        key = bodies[0]["keys"][0]
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"


def test_websocket_upgrade_passes_on_allow_websockets_route(env: Env) -> None:
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        cookie = _cookie_for(client, "jenkins.test")
    ctx = ssl.create_default_context(cafile=str(env.pki.ca_file))
    with ws_connect(
        f"wss://jenkins.test:{env.port}/ws",
        ssl=ctx,
        additional_headers={"cookie": f"{SESSION_COOKIE}={cookie}"},
        open_timeout=10,
    ) as ws:
        ws.send("hello")
        reply = ws.recv(timeout=10)
        assert "hello" in str(reply)
        assert "alice@example.com" in str(reply)


def test_sign_out_ends_the_session(env: Env) -> None:
    with env.browser() as client:
        env.login(client, env.url("jenkins.test", "/"))
        page = client.get(env.url("jenkins.test", "/.pomerium/sign_out"))
        assert page.status_code == 200 and "<form" in page.text
        action = page.text.split('action="')[1].split('"')[0].replace("&amp;", "&")
        # A cross-site POST is refused.
        cross = client.post(
            env.url("jenkins.test", action),
            headers={"origin": "https://evil.test", "sec-fetch-site": "cross-site"},
            follow_redirects=False,
        )
        assert cross.status_code == 403
        assert client.get(env.url("jenkins.test", "/")).status_code == 200
        # The same-origin POST signs out, through the IdP's end-session page.
        done = client.post(
            env.url("jenkins.test", action),
            headers={"origin": env.url("jenkins.test", "").rstrip("/")},
        )
        if is_idp_logout_page(done):
            done = submit_idp_logout(client, done)
        assert _cookie_for(client, "jenkins.test") is None
        # The next visit needs a new IdP login.
        again = client.get(env.url("jenkins.test", "/"))
        assert is_idp_login_page(again)
        assert urlsplit(str(again.url)).hostname == "127.0.0.1"


@pytest.mark.generated_only("SIGHUP to the `authgate run` supervisor")
def test_sighup_reloads_without_stopping_the_gate_or_orphaning_children(env: Env) -> None:
    proc = env.stack.proc
    assert proc is not None
    workers = env.stack.worker_pids()
    log_from = len(env.stack.log())
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "reloaded: generation" not in env.stack.log()[log_from:]:
        assert time.monotonic() < deadline, env.stack.log()[log_from:]
        time.sleep(0.1)
    assert proc.poll() is None
    assert not set(env.stack.worker_pids()) & set(workers)  # a new generation took over
    for pid in workers:  # ... and the old one is gone, not orphaned
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with env.browser() as client:
        assert client.get(env.url("status.test", "/after-hup")).status_code == 200


@pytest.mark.generated_only(
    "`authgate run` supervises its workers; behind a user's Envoy, whoever started "
    "`authgate authz` does (test_faults restarts a killed worker under the same Envoy)"
)
def test_run_restarts_dead_workers_and_names_them(fresh_env: Env) -> None:
    env = fresh_env
    with env.browser() as client:
        assert client.get(env.url("status.test", "/before")).status_code == 200
    killed = env.stack.worker_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    proc = env.stack.proc
    assert proc is not None
    deadline = time.monotonic() + 30
    while True:
        with env.browser() as client:
            try:
                if client.get(env.url("status.test", "/after")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        assert time.monotonic() < deadline, env.stack.log()
        time.sleep(0.2)
    assert proc.poll() is None
    assert not set(env.stack.worker_pids()) & set(killed)
    assert "authz worker 0 (generation 1) (pid" in env.stack.log()
    assert "was killed by SIGKILL; restarting" in env.stack.log()


# "authz stopped means 503 and the upstream sees nothing" (Envoy and `authgate authz` run apart,
# then authz restarted under the same Envoy): tests/integration/test_faults.py.
