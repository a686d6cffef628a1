"""Faults: what users see when a part of the stack dies, hangs or is slow.

* authz workers killed: Envoy answers 503 at once and the upstream gets nothing; a worker
  started again on the same socket serves again, with the same Envoy process.
* a worker that hangs (SIGSTOP): Envoy's ext_authz timeout (3 s) answers 503, never an allow.
* the IdP down: existing sessions go on working; a login that needs the IdP gets authgate's
  error page (JSON for API clients) at once.
* an upstream down or slow: Envoy's 503/504, and authz is unaffected.

Real processes throughout: Envoy, `authgate authz` / `authgate run`, oidc-provider, upstreams,
and a TCP listener that never answers as the slow upstream.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from authgate.config.runtime import generate_signing_key_b64
from authgate.envoy.process import EnvoyProcess
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


# ---------------------------------------------------------------------------- authz killed


def _start_authz(config: Path, sock: Path, ready: Path) -> subprocess.Popen[bytes]:
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authgate",
            "authz",
            "-c",
            str(config),
            "--listen",
            f"unix:{sock}",
            "--ready-file",
            str(ready),
        ]
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, f"authz exited with {proc.returncode}"
        assert time.monotonic() < deadline, "authz did not start"
        time.sleep(0.05)
    return proc


def test_authz_killed_503_at_once_then_restarted_without_restarting_envoy(tmp_path: Path) -> None:
    port = free_port()
    sock, ready = tmp_path / "authz.sock", tmp_path / "authz.ready"
    with SampleUpstream(tcp_port=0) as upstream:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "address": f"127.0.0.1:{port}",
                    "insecure_server": True,
                    "authenticate_service_url": f"http://authenticate.test:{port}",
                    "idp_provider_url": "http://127.0.0.1:9",
                    "idp_client_id": "authgate",
                    "idp_client_secret": "secret",
                    "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
                    "signing_key": generate_signing_key_b64(),
                    "routes": [
                        {
                            "from": f"http://public.test:{port}",
                            "to": upstream.url,
                            "allow_public_unauthenticated_access": True,
                        },
                        {
                            "from": f"http://private.test:{port}",
                            "to": upstream.url,
                            "allow_any_authenticated_user": True,
                        },
                    ],
                }
            )
        )
        authz = _start_authz(config, sock, ready)
        bootstrap = subprocess.run(
            [
                sys.executable,
                "-m",
                "authgate",
                "envoy-config",
                "-c",
                str(config),
                "--authz",
                f"unix:{sock}",
                "--admin",
                f"unix:{tmp_path / 'admin.sock'}",
                "--format",
                "json",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        envoy = EnvoyProcess(json.loads(bootstrap), workdir=tmp_path / "envoy")
        try:
            envoy.start()
            envoy.wait_ready()
            envoy_pid = envoy.pid
            public, private = f"http://public.test:{port}/ping", f"http://private.test:{port}/x"
            with httpx.Client(timeout=10) as client:
                _wait_for(lambda: client.get(public).status_code == 200, "authz never answered")
                assert client.get(private).status_code == 401

                authz.kill()
                authz.wait()
                upstream.clear()
                took = []
                for url in (public, private) * 5:
                    started = time.monotonic()
                    answer = client.get(url)
                    took.append(time.monotonic() - started)
                    assert answer.status_code == 503
                # at once: no wait for Envoy's ext_authz timeout (a refused connection)
                assert min(took) < 0.5 and max(took) < 5, took
                assert upstream.requests.snapshot() == []

                authz = _start_authz(config, sock, ready)  # same socket path
                _wait_for(lambda: client.get(public).status_code == 200, "no service after restart")
                assert client.get(private).status_code == 401  # and deciding, not allowing
                assert upstream.requests.wait_for(lambda r: r.path == "/ping")
            assert envoy.poll() is None and envoy.pid == envoy_pid  # Envoy was never restarted
        finally:
            envoy.stop()
            if authz.poll() is None:
                authz.kill()
                authz.wait()


def _wait_for(check: object, message: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


# ---------------------------------------------------------------------------- a stack with faults


@contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens once the socket is closed


@dataclass
class FaultStack:
    port: int
    pki: TestPKI
    idp: TestIdP
    app: SampleUpstream
    stack: AuthgateStack

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def client(self, accept: str = BROWSER, follow: bool = True) -> httpx.Client:
        return httpx.Client(
            verify=self.pki.client_ssl_context(),
            timeout=20,
            follow_redirects=follow,
            headers={"accept": accept},
        )

    def login(self, client: httpx.Client, host: str = "app.test") -> httpx.Response:
        page = client.get(self.url(host, "/"))
        assert is_idp_login_page(page), page.status_code
        return submit_idp_login(client, page, "alice@example.com", "alice-password")


HOSTS = ["app.test", "other.test", "down.test", "slow.test", "slowauth.test", "authenticate.test"]


@contextmanager
def fault_stack(workdir: Path, workers: int) -> Iterator[FaultStack]:
    port = free_port()
    pki = make_pki(workdir / "tls", HOSTS)
    idp = TestIdP(
        clients=[authgate_client(port)]
    )
    with (
        map_hosts({"*.test": "127.0.0.1"}),
        idp,
        SampleUpstream(tcp_port=0) as app,
        black_hole() as hole,
    ):
        down = closed_port()
        config = {
            "address": f"127.0.0.1:{port}",
            "certificate_file": str(pki.cert_file),
            "certificate_key_file": str(pki.key_file),
            "authenticate_service_url": f"https://authenticate.test:{port}",
            "idp_provider_url": idp.issuer,
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "signing_key": generate_signing_key_b64(),
            "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
            "routes": [
                {
                    "from": f"https://app.test:{port}",
                    "to": app.url,
                    "allow_any_authenticated_user": True,
                },
                {
                    "from": f"https://other.test:{port}",
                    "to": app.url,
                    "allow_any_authenticated_user": True,
                },
                {
                    "from": f"https://down.test:{port}",
                    "to": f"http://127.0.0.1:{down}",
                    "allow_public_unauthenticated_access": True,
                },
                {
                    "from": f"https://slow.test:{port}",
                    "to": f"http://127.0.0.1:{hole}",
                    "allow_public_unauthenticated_access": True,
                    "timeout": "1s",
                },
                {
                    "from": f"https://slowauth.test:{port}",
                    "to": f"http://127.0.0.1:{hole}",
                    "allow_any_authenticated_user": True,
                    "timeout": "1s",
                },
            ],
        }
        with AuthgateStack(
            workdir / "stack", config, workers=workers, ca_file=pki.ca_file
        ) as stack:
            yield FaultStack(port, pki, idp, app, stack)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(tmp_path_factory.mktemp("faults"), workers=2) as stack:
        yield stack


def _timed(client: httpx.Client, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = client.get(url, **kwargs)  # type: ignore[arg-type]
    return answer, time.monotonic() - started


# ---------------------------------------------------------------------------- hung workers


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_hung_workers_mean_503_never_allow(faults: FaultStack) -> None:
    pids = faults.stack.worker_pids()
    assert len(pids) == 2
    with faults.client(accept="application/json") as api, faults.client() as browser:
        faults.login(browser)
        assert browser.get(faults.url("app.test", "/before")).status_code == 200
        faults.app.clear()
        with stopped(pids):
            for url, client in [
                (faults.url("app.test", "/hung-anon"), api),
                (faults.url("app.test", "/hung-alice"), browser),
                (faults.url("authenticate.test", "/"), api),
            ]:
                answer, took = _timed(client, url)
                assert answer.status_code == 503, (url, answer.status_code)
                assert took < 8  # Envoy's ext_authz timeout (3 s), not a hang
        assert faults.app.requests.snapshot() == []
        # resumed: the same workers serve again
        _wait_for(
            lambda: browser.get(faults.url("app.test", "/after")).status_code == 200, "no recovery"
        )
        assert api.get(faults.url("app.test", "/after-anon")).status_code == 401
    assert faults.stack.worker_pids() == pids and faults.stack.proc is not None
    assert faults.stack.proc.poll() is None


def test_one_hung_worker_of_two_never_turns_into_an_allow(faults: FaultStack) -> None:
    pids = faults.stack.worker_pids()
    faults.app.clear()
    seen: set[int] = set()
    with faults.client(accept="application/json") as api, stopped(pids[:1]):
        for i in range(6):
            answer, took = _timed(api, faults.url("app.test", f"/half-{i}"))
            seen.add(answer.status_code)
            assert answer.status_code in (401, 503) and took < 8, answer.status_code
    assert seen <= {401, 503}
    assert faults.app.requests.snapshot() == []


# ---------------------------------------------------------------------------- upstreams


def test_upstream_down_or_slow_is_envoys_503_or_504_and_authz_carries_on(
    faults: FaultStack,
) -> None:
    pids = faults.stack.worker_pids()
    with faults.client(accept="application/json") as api, faults.client() as browser:
        faults.login(browser)
        down, took = _timed(api, faults.url("down.test", "/x"))
        assert down.status_code == 503 and took < 5
        slow, took = _timed(api, faults.url("slow.test", "/x"))
        assert slow.status_code == 504 and 0.9 < took < 5
        # a protected slow route: authz decides first (no session: 401 at once) ...
        anon, took = _timed(api, faults.url("slowauth.test", "/x"))
        assert anon.status_code == 401 and took < 3
        # ... and a signed-in user waits for the upstream's timeout, not authz's
        slow_signed_in, took = _timed(browser, faults.url("slowauth.test", "/x"))
        assert slow_signed_in.status_code == 504 and took < 10
        # meanwhile authz answers everything else as usual
        assert browser.get(faults.url("app.test", "/fine")).status_code == 200
        assert api.get(faults.url("app.test", "/fine")).status_code == 401
    assert faults.stack.worker_pids() == pids


# ---------------------------------------------------------------------------- IdP down


def test_idp_down_existing_sessions_work_and_new_logins_get_a_clear_error(tmp_path: Path) -> None:
    with fault_stack(tmp_path, workers=1) as fs:
        port = fs.idp.port
        with fs.client() as alice:
            assert fs.login(alice).status_code == 200
            fs.idp.stop()

            # existing sessions: the signed-in route, and a new route host via the hand-off
            for i in range(3):
                assert alice.get(fs.url("app.test", f"/still-{i}")).status_code == 200
            other = alice.get(fs.url("other.test", "/"))
            assert other.status_code == 200 and str(other.url) == fs.url("other.test", "/")

        # a login that reaches the IdP's code exchange while the IdP is down (one login per
        # kind of client: an OAuth callback is single use, whatever its outcome)
        for accept, kind in ((BROWSER, "text/html"), ("application/json", "application/json")):
            fs.idp = TestIdP(port=port, clients=_clients(fs))
            fs.idp.start()
            with fs.client() as bob:
                page = bob.get(fs.url("app.test", "/"))
                callback = _stop_before_callback(bob, page)
                fs.idp.stop()
                bob.follow_redirects = False
                answer, took = _timed(bob, callback, headers={"accept": accept})
                assert answer.status_code == 502 and took < 5, (answer.status_code, took)
                assert answer.headers["content-type"].startswith(kind)
                assert "identity provider is unavailable" in answer.text
                # the same callback again: refused, it was spent
                again, _ = _timed(bob, callback, headers={"accept": accept})
                assert again.status_code == 400, again.status_code

    # a worker that never reached the IdP: the sign-in itself explains
    with fault_stack(tmp_path / "cold", workers=1) as fs:
        fs.idp.stop()
        with fs.client(follow=False) as carol:
            sign_in = carol.get(fs.url("app.test", "/")).headers["location"]
            for accept, kind in ((BROWSER, "text/html"), ("application/json", "application/json")):
                answer, took = _timed(carol, sign_in, headers={"accept": accept})
                assert answer.status_code == 502 and took < 5
                assert answer.headers["content-type"].startswith(kind)
                assert "identity provider is unavailable" in answer.text


def _clients(fs: FaultStack) -> list[dict[str, object]]:
    return [authgate_client(fs.port)]


def _stop_before_callback(client: httpx.Client, page: httpx.Response) -> str:
    seen: list[str] = []

    def stop(request: httpx.Request) -> None:
        if request.url.path == "/oauth2/callback":
            seen.append(str(request.url))
            raise httpx.ConnectError("stopped before the callback", request=request)

    client.event_hooks["request"] = [stop]
    with pytest.raises(httpx.ConnectError):
        submit_idp_login(client, page, "bob@evil.org", "bob-password")
    client.event_hooks["request"] = []
    return seen[0]


def test_hung_idp_gives_a_clear_error_not_a_bare_503(faults: FaultStack) -> None:
    idp_pid = faults.idp._proc.pid  # type: ignore[union-attr]
    with faults.client() as dave:
        page = dave.get(faults.url("app.test", "/"))
        callback = _stop_before_callback(dave, page)
        dave.follow_redirects = False
        os.kill(idp_pid, signal.SIGSTOP)
        try:
            answer, took = _timed(dave, callback)
        finally:
            os.kill(idp_pid, signal.SIGCONT)
    assert took < 10
    assert answer.status_code == 502 and "identity provider" in answer.text
