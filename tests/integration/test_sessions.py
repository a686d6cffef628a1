"""Sessions that can be ended (issue 10): a store behind the cookie, refresh, revocation.

Real processes throughout: `authgate run` (Envoy + 2 workers), the test IdP with its directory
changeable at run time, Debian's redis-server for the replica tests.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gate import (
    GROUPS_500,
    MANY,
    Gate,
    cookie_of,
    eventually,
    gates,
    refused,
)
from tests.support.idp_login import (
    is_idp_logout_page,
    submit_idp_logout,
)
from tests.support.redis_server import RedisServer

# ---------------------------------------------------------------------------- big sessions


def test_a_user_in_500_groups_signs_in_and_no_cookie_grows(tmp_path: Path) -> None:
    with gates(tmp_path) as (gate,), gate.client() as browser:
        seen_cookies: list[str] = []
        seen_urls: list[str] = []

        def record(response: httpx.Response) -> None:
            seen_cookies.extend(response.headers.get_list("set-cookie"))
            seen_urls.append(response.headers.get("location", ""))

        browser.event_hooks["response"] = [record]
        landed = gate.login(browser, "jenkins.test", MANY, "/job/x")
        assert landed.status_code == 200, landed.text[:500]
        assert landed.json()["user"]["groups"] == GROUPS_500  # the assertion carries every one
        # ... and a second host, through the hand-off
        other = browser.get(gate.url("other.test", "/"))
        assert other.status_code == 200
        assert seen_cookies and max(len(c) for c in seen_cookies) < 4096
        assert max(len(u) for u in seen_urls) < 4096


# ---------------------------------------------------------------------------- revocation


def test_sign_out_on_one_host_ends_every_copy_on_every_worker(tmp_path: Path) -> None:
    with gates(tmp_path) as (gate,), gate.client() as browser:
        gate.login(browser, "jenkins.test", "alice@example.com")
        assert browser.get(gate.url("other.test", "/")).status_code == 200
        jenkins, other = cookie_of(browser, "jenkins.test"), cookie_of(browser, "other.test")
        # copies work on both hosts and both workers
        for _ in range(6):
            assert gate.get("jenkins.test", "/copy", jenkins).status_code == 200
            assert gate.get("other.test", "/copy", other).status_code == 200
        page = browser.get(gate.url("jenkins.test", "/.pomerium/sign_out"))
        action = page.text.split('action="')[1].split('"')[0].replace("&amp;", "&")
        origin = gate.url("jenkins.test", "").rstrip("/")
        signed_out_at = time.monotonic()
        done = browser.post(gate.url("jenkins.test", action), headers={"origin": origin})
        if is_idp_logout_page(done):
            submit_idp_logout(browser, done)

        def copies_refused() -> bool:
            answers = [gate.get(h, "/after", c) for h, c in
                       (("jenkins.test", jenkins), ("other.test", other)) * 4]
            return all(refused(a) for a in answers)

        eventually(copies_refused, within=5.0)
        assert time.monotonic() - signed_out_at < 5.0
        # and they stay refused on every worker
        for _ in range(10):
            assert refused(gate.get("other.test", "/later", other))


def test_revocation_reaches_every_worker_within_a_second(tmp_path: Path) -> None:
    with gates(tmp_path) as (gate,), gate.client() as browser:
        gate.login(browser, "other.test", "carol@example.com")
        cookie = cookie_of(browser, "other.test")
        for _ in range(6):  # both workers have the session cached (and its kept answer)
            assert gate.get("other.test", "/warm", cookie).status_code == 200
        listed = sessions_cli(gate, "list", "--user", "carol@example.com")
        assert "carol@example.com" in listed.stdout
        revoked = sessions_cli(gate, "revoke", "--user", "CAROL@example.com")
        assert revoked.returncode == 0 and "revoked 1 session" in revoked.stdout
        took = eventually(
            lambda: all(refused(gate.get("other.test", "/x", cookie)) for _ in range(4)),
            within=1.5,
        )
        assert took <= 1.5


def sessions_cli(gate: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    action, rest = args[0], args[1:]
    return subprocess.run(
        [sys.executable, "-m", "authgate", "sessions", action, "-c", str(gate.stack.config_path),
         "--runtime-dir", str(gate.stack.runtime_dir), *rest],
        capture_output=True, text=True, timeout=60, check=False,
    )


# ---------------------------------------------------------------------------- refresh


def test_directory_changes_take_effect_within_the_refresh_interval(tmp_path: Path) -> None:
    interval = 2.0
    with gates(tmp_path, extra={"session_refresh_interval": "2s"}) as (gate,):
        with gate.client() as browser:
            landed = gate.login(browser, "jenkins.test", "alice@example.com")
            assert landed.status_code == 200
            cookie = cookie_of(browser, "jenkins.test")
            other = browser.get(gate.url("other.test", "/")).status_code
            assert other == 200
            other_cookie = cookie_of(browser, "other.test")
        # alice leaves `admins`: the Jenkins route (groups has admins) refuses her
        gate.idp.set_user("alice@example.com", groups=["devs"])
        changed = time.monotonic()
        eventually(lambda: gate.get("jenkins.test", "/g", cookie).status_code == 403,
                   within=interval + 3.0)
        assert time.monotonic() - changed <= interval + 3.0
        assert gate.get("other.test", "/g", other_cookie).status_code == 200
        # her account is deleted: the session ends, on every host
        gate.idp.delete_user("alice@example.com")
        eventually(lambda: refused(gate.get("other.test", "/d", other_cookie)),
                   within=interval + 3.0)
        # the other worker hears of it from the store's feed within a second
        eventually(lambda: all(refused(gate.get("jenkins.test", "/d", cookie)) for _ in range(4)),
                   within=1.0)


def test_an_unused_session_ends_after_the_idle_timeout(tmp_path: Path) -> None:
    with gates(tmp_path, workers=1, extra={"session_idle_timeout": "2s"}) as (gate,):
        with gate.client() as browser:
            gate.login(browser, "other.test", "bob@evil.org")
            cookie = cookie_of(browser, "other.test")
        for _ in range(5):  # in use: stays
            assert gate.get("other.test", "/use", cookie).status_code == 200
            time.sleep(0.5)
        time.sleep(3.0)
        assert refused(gate.get("other.test", "/idle", cookie))


# ---------------------------------------------------------------------------- replicas


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(password="pw-" + secrets.token_hex(4), appendonly=True) as server:
        yield server


def test_two_runs_share_sessions_through_redis(tmp_path: Path, redis: RedisServer) -> None:
    store = {"databroker_storage_type": "redis", "databroker_storage_connection_string": redis.url}
    with gates(tmp_path, count=2, extra=store) as (a, b), a.client() as browser:
        a.login(browser, "jenkins.test", "alice@example.com")
        cookie = cookie_of(browser, "jenkins.test")
        assert b.get("jenkins.test", "/on-b", cookie).status_code == 200
        # a hand-off used at A is refused at B
        with a.client(follow=False) as hops:
            hops.cookies = browser.cookies
            first = hops.get(a.url("other.test", "/"))
            sign_in = hops.get(first.headers["location"])
            handoff = sign_in.headers["location"]
            nonce = hops.cookies.get("__Host-_pomerium_login", domain="other.test")
        assert "/.pomerium/callback?handoff=" in handoff
        path = handoff.split(f":{a.public_port}", 1)[1]
        login_cookie = f"__Host-_pomerium_login={nonce}"
        with a.client(follow=False) as c:
            used = c.get(a.url("other.test", path), headers={"cookie": login_cookie})
        assert used.status_code == 302
        with b.client(follow=False) as c:
            replay = c.get(b.url("other.test", path),
                           headers={"host": b.host("other.test"), "cookie": login_cookie})
        assert replay.status_code == 400
        # revoked at A: refused at B within a second
        assert sessions_cli(a, "revoke", "--user", "alice@example.com").returncode == 0
        eventually(lambda: all(refused(b.get("jenkins.test", "/r", cookie)) for _ in range(4)),
                   within=1.5)


def test_redis_down_fails_closed_and_service_resumes(tmp_path: Path, redis: RedisServer) -> None:
    store = {"databroker_storage_type": "redis", "databroker_storage_connection_string": redis.url}
    with gates(tmp_path, extra=store) as (gate,), gate.client() as browser:
        gate.login(browser, "other.test", "carol@example.com")
        cookie = cookie_of(browser, "other.test")
        assert gate.get("other.test", "/before", cookie).status_code == 200
        redis.kill()
        statuses = []
        started = time.monotonic()
        while time.monotonic() - started < 4.0:
            t0 = time.monotonic()
            answer = gate.get("other.test", "/down", cookie)
            assert time.monotonic() - t0 < 3.0  # never a hang past the ext_authz timeout
            statuses.append(answer.status_code)
        # at most the last second of cached answers, then 503s: never an allow without the store
        late = statuses[len(statuses) // 2:]
        assert late and all(s == 503 for s in late), statuses
        page = gate.get("other.test", "/down", cookie)
        assert page.json()["error"] == "session_store_unavailable"
        assert "session_store_unavailable" in gate.stack.log()
        redis.start()
        eventually(lambda: gate.get("other.test", "/back", cookie).status_code == 200, within=5.0)
