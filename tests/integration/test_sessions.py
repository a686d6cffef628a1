"""Sessions that can be ended (issue 10): a store behind the cookie, refresh, revocation.

Real processes throughout: `authgate run` (Envoy + 2 workers), the test IdP with its directory
changeable at run time, Debian's redis-server for the replica tests.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from authgate.config.runtime import generate_signing_key_b64
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import DEFAULT_USERS, TestIdP, authgate_client
from tests.support.idp_login import (
    is_idp_login_page,
    is_idp_logout_page,
    submit_idp_login,
    submit_idp_logout,
)
from tests.support.redis_server import RedisServer
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTS = ["jenkins.test", "other.test", "authenticate.test"]
SESSION_COOKIE = "__Host-_pomerium"
MANY = "many@example.com"
# `admins` opens the Jenkins route; the rest make the claims some 20 KB.
GROUPS_500 = ["admins", *(f"team-{i:03d}-with-a-longish-directory-name" for i in range(499))]


@dataclass
class Gate:
    """One `authgate run` and what a test needs to talk to it."""

    port: int  # where this run listens
    public_port: int  # the port in the routes' `from` (a load balancer's, for replicas)
    pki: TestPKI
    idp: TestIdP
    jenkins: SampleUpstream
    other: SampleUpstream
    stack: AuthgateStack

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def host(self, host: str) -> str:
        return f"{host}:{self.public_port}"

    def client(self, *, follow: bool = True, accept: str = BROWSER) -> httpx.Client:
        return httpx.Client(
            verify=self.pki.client_ssl_context(),
            follow_redirects=follow,
            timeout=15,
            headers={"accept": accept},
        )

    def get(
        self, host: str, path: str, cookie: str, accept: str = "application/json"
    ) -> httpx.Response:
        """One request to this run with the public Host (as a load balancer forwards it)."""
        with self.client(follow=False, accept=accept) as c:
            return c.get(
                self.url(host, path),
                headers={"host": self.host(host), "cookie": f"{SESSION_COOKIE}={cookie}"},
            )

    def login(self, client: httpx.Client, host: str, email: str, path: str = "/") -> httpx.Response:
        page = client.get(self.url(host, path))
        assert is_idp_login_page(page), f"expected the IdP login page, got {page.url}"
        user = next((u for u in users() if u["email"] == email), None)
        password = user["password"] if user else email.split("@")[0] + "-password"
        return submit_idp_login(client, page, email, password)


def users() -> list[dict[str, Any]]:
    return [*DEFAULT_USERS, {"email": MANY, "password": "many-password", "groups": GROUPS_500}]


def cookie_of(client: httpx.Client, host: str) -> str:
    for cookie in client.cookies.jar:
        if cookie.name == SESSION_COOKIE and cookie.domain.startswith(host):
            return str(cookie.value)
    raise AssertionError(f"no session cookie for {host}")


def gate_config(
    gate_port: int,
    public_port: int,
    pki: TestPKI,
    idp: TestIdP,
    jenkins: SampleUpstream,
    other: SampleUpstream,
    secrets_: dict[str, str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "address": f"127.0.0.1:{gate_port}",
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "authenticate_service_url": f"https://authenticate.test:{public_port}",
        "idp_provider_url": idp.issuer,
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "idp_scopes": ["openid", "profile", "email", "groups", "offline_access"],
        **secrets_,
        "routes": [
            {
                "from": f"https://jenkins.test:{public_port}",
                "to": f"unix://{jenkins.unix_path}",
                "pass_identity_headers": True,
                "policy": [{"allow": {"and": [{"groups": {"has": "admins"}}]}}],
            },
            {
                "from": f"https://other.test:{public_port}",
                "to": f"http://127.0.0.1:{other.port}",
                "pass_identity_headers": True,
                "allow_any_authenticated_user": True,
            },
        ],
        **extra,
    }


@contextlib.contextmanager
def gates(
    tmp: Path, *, count: int = 1, workers: int = 2, extra: dict[str, Any] | None = None
) -> Iterator[list[Gate]]:
    """`count` runs of the same config (replicas: the routes name the first run's port)."""
    ports = [free_port() for _ in range(count)]
    pki = make_pki(tmp / "tls", HOSTS)
    shared_secrets = {
        "signing_key": generate_signing_key_b64(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    with TestIdP(clients=[authgate_client(ports[0])], users=users(), test_control=True) as idp:
        sock = Path(f"/tmp/ag-s-{os.getpid()}-{secrets.token_hex(3)}.sock")
        jwks = f"https://jenkins.test:{ports[0]}/.well-known/pomerium/jwks.json"
        jenkins = SampleUpstream(
            unix_path=sock, ca_file=pki.ca_file, jwks_url=jwks,
            issuers=["authenticate.test"], audiences=["jenkins.test"],
        )
        other = SampleUpstream(tcp_port=0)
        with jenkins, other, contextlib.ExitStack() as stacks:
            found = []
            for index, port in enumerate(ports):
                config = gate_config(
                    port, ports[0], pki, idp, jenkins, other, shared_secrets, extra or {}
                )
                stack = AuthgateStack(
                    tmp / f"run-{index}", config, workers=workers, ca_file=pki.ca_file
                )
                stacks.enter_context(stack)
                gate = Gate(port, ports[0], pki, idp, jenkins, other, stack)
                # A replica's readiness check above asked the first run's port: ask its own.
                eventually(lambda g=gate: _answers(g), within=30.0, step=0.2)  # type: ignore[misc]
                found.append(gate)
            yield found


def _answers(gate: Gate) -> bool:
    try:
        with gate.client(follow=False) as c:
            jwks = c.get(
                gate.url("authenticate.test", "/.well-known/pomerium/jwks.json"),
                headers={"host": gate.host("authenticate.test")},
            )
        return jwks.status_code == 200
    except httpx.HTTPError:
        return False


def eventually(check: Callable[[], bool], within: float, step: float = 0.05) -> float:
    """Seconds until `check()` held; fails after `within`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        time.sleep(step)
    return time.monotonic() - start


def refused(answer: httpx.Response) -> bool:
    return answer.status_code == 401 or (
        answer.status_code == 302 and "/.pomerium/sign_in?" in answer.headers.get("location", "")
    )


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
