"""Pomerium keys that change traffic (issue #13), through the real Envoy that `authgate run`
starts: upstream timeouts (`default_upstream_timeout`, a route's `timeout`), a route's
`jwt_issuer_format`, `load_balancing_policy`, active `health_checks`, `outlier_detection`,
and the listener's `codec_type` and `timeout_idle`. One stack, one route (or prefix) per key,
real upstream servers on 127.0.0.1 and the test IdP for the one test that needs a session."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from authgate.config.runtime import generate_signing_key_b64
from authgate.contract import ASSERTION_HEADER
from tests.support.certs import TestPKI, make_pki
from tests.support.gate import eventually
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

HOSTS = ["traffic.test", "iss.test", "authenticate.test"]
HEALTH_PATH = "/healthz"
PUBLIC = {"allow_public_unauthenticated_access": True}


class Box:
    """A plain HTTP/1.1 upstream that says who it is: `status` for every path but
    HEALTH_PATH, which gets `health_status`. Counts the requests that were not health checks."""

    def __init__(self, name: str, *, status: int = 200, health_status: int = 200) -> None:
        self.name = name
        self.served = 0
        self.health_checks = 0
        box = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                health = urlsplit(self.path).path == HEALTH_PATH
                with box.lock:
                    if health:
                        box.health_checks += 1
                    else:
                        box.served += 1
                body = json.dumps({"upstream": box.name}).encode()
                self.send_response(health_status if health else status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Box:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    port: int
    pki: TestPKI
    slow: SampleUpstream
    lb: tuple[SampleUpstream, SampleUpstream]
    host_only: SampleUpstream
    uri: SampleUpstream
    hc_good: Box
    hc_bad: Box
    od_good: Box
    od_bad: Box

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.port}{path}"

    def client(self, accept: str = "application/json", **kwargs: Any) -> httpx.Client:
        return httpx.Client(verify=self.pki.client_ssl_context(), timeout=20,
                            headers={"accept": accept}, **kwargs)

    def ssl_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = self.pki.client_ssl_context()
        context.set_alpn_protocols(alpn)
        return context


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("traffic")
    pki = make_pki(workdir / "tls", HOSTS)
    port = free_port()
    jwks = f"https://authenticate.test:{port}/.well-known/pomerium/jwks.json"
    with (
        map_hosts({"*.test": "127.0.0.1"}),  # the sample upstreams fetch the JWKS through Envoy
        TestIdP(clients=[authgate_client(port)]) as idp,
        SampleUpstream(tcp_port=0) as slow,
        SampleUpstream(tcp_port=0) as lb_a,
        SampleUpstream(tcp_port=0) as lb_b,
        # Each verifies the assertion with the JWKS and accepts only its route's iss.
        SampleUpstream(tcp_port=0, jwks_url=jwks, ca_file=pki.ca_file,
                       issuers=["authenticate.test"]) as host_only,
        SampleUpstream(tcp_port=0, jwks_url=jwks, ca_file=pki.ca_file,
                       issuers=[f"https://authenticate.test:{port}/"]) as uri,
        Box("hc-good") as hc_good,
        Box("hc-bad", health_status=503) as hc_bad,
        Box("od-good") as od_good,
        Box("od-bad", status=503) as od_bad,
    ):
        traffic = f"https://traffic.test:{port}"
        iss = f"https://iss.test:{port}"
        config = {
            "address": f"127.0.0.1:{port}",
            "certificate_file": str(pki.cert_file),
            "certificate_key_file": str(pki.key_file),
            "authenticate_service_url": f"https://authenticate.test:{port}",
            "idp_provider_url": idp.issuer,
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
            "signing_key": generate_signing_key_b64(),
            "default_upstream_timeout": "1s",
            "codec_type": "http1",
            "timeout_idle": "2s",
            "routes": [
                {"from": traffic, "prefix": "/default-timeout/", "to": slow.url, **PUBLIC},
                {"from": traffic, "prefix": "/own-timeout/", "to": slow.url, "timeout": "3s",
                 **PUBLIC},
                {"from": traffic, "prefix": "/rr/", "to": [lb_a.url, lb_b.url],
                 "load_balancing_policy": "ROUND_ROBIN", **PUBLIC},
                {"from": traffic, "prefix": "/random/", "to": [lb_a.url, lb_b.url],
                 "load_balancing_policy": "RANDOM", **PUBLIC},
                {"from": traffic, "prefix": "/hc/", "to": [hc_good.url, hc_bad.url],
                 "health_checks": [{
                     # no_traffic_interval: else Envoy waits 60 s before its second check
                     "timeout": "1s", "interval": "0.5s", "no_traffic_interval": "0.5s",
                     "unhealthy_threshold": 1, "healthy_threshold": 1,
                     "http_health_check": {"path": HEALTH_PATH},
                 }], **PUBLIC},
                {"from": traffic, "prefix": "/od/", "to": [od_good.url, od_bad.url],
                 "outlier_detection": {"consecutive_5xx": 3, "base_ejection_time": "60s",
                                       "max_ejection_percent": 50, "interval": "1s"},
                 **PUBLIC},
                {"from": iss, "prefix": "/host-only/", "to": host_only.url,
                 "jwt_issuer_format": "hostOnly", "pass_identity_headers": True,
                 "allow_any_authenticated_user": True},
                {"from": iss, "prefix": "/uri/", "to": uri.url,
                 "jwt_issuer_format": "uri", "pass_identity_headers": True,
                 "allow_any_authenticated_user": True},
            ],
        }
        with AuthgateStack(workdir / "gate", config, workers=1, ca_file=pki.ca_file):
            yield Stack(port, pki, slow, (lb_a, lb_b), host_only, uri,
                        hc_good, hc_bad, od_good, od_bad)


# ------------------------------------------------------------------------------------ timeouts


def timed_get(stack: Stack, path: str) -> tuple[int, float]:
    with stack.client() as client:
        start = time.monotonic()
        answer = client.get(stack.url("traffic.test", path))
        return answer.status_code, time.monotonic() - start


def test_upstream_timeouts_global_and_per_route(stack: Stack) -> None:
    cases = {
        "/default-timeout/fast": "/default-timeout/fast",
        # default_upstream_timeout 1s: a 3 s answer is cut off
        "/default-timeout/slow": "/default-timeout/slow?sleep=3",
        # the route's own 3 s: a 1.5 s answer (too slow for the global 1 s) arrives
        "/own-timeout/medium": "/own-timeout/medium?sleep=1.5",
        "/own-timeout/slow": "/own-timeout/slow?sleep=6",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(zip(cases, pool.map(lambda p: timed_get(stack, p), cases.values()),
                           strict=True))
    assert results["/default-timeout/fast"][0] == 200
    status, took = results["/default-timeout/slow"]
    assert status == 504 and 0.9 < took < 2.9, results
    status, took = results["/own-timeout/medium"]
    assert status == 200 and took >= 1.4, results
    status, took = results["/own-timeout/slow"]
    assert status == 504 and 2.9 < took < 5.9, results


# ---------------------------------------------------------------------------- jwt_issuer_format


def test_each_route_signs_with_its_own_issuer_format(stack: Stack) -> None:
    with stack.client(accept="text/html", follow_redirects=True) as browser:
        page = browser.get(stack.url("iss.test", "/host-only/"))
        assert is_idp_login_page(page), page.url
        landed = submit_idp_login(browser, page, "alice@example.com", "alice-password")
        assert landed.status_code == 200, landed.text[:500]
        expected = {
            "/host-only/": (stack.host_only, "authenticate.test"),
            "/uri/": (stack.uri, f"https://authenticate.test:{stack.port}/"),
        }
        for prefix, (upstream, iss) in expected.items():
            answer = browser.get(stack.url("iss.test", f"{prefix}whoami"))
            assert answer.status_code == 200, answer.text[:500]
            # the app verified the signature with the JWKS and accepted only this iss
            seen = answer.json()
            assert seen["user"] is not None, seen["auth_error"]
            assert seen["user"]["username"] == "alice@example.com"
            recorded = upstream.requests[-1]
            assert recorded.path == f"{prefix}whoami"
            token = recorded.header(ASSERTION_HEADER)
            assert token
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["iss"] == iss
            assert claims["aud"] == "iss.test"


# ------------------------------------------------------------------------- load_balancing_policy


def spread(stack: Stack, prefix: str, count: int) -> list[int]:
    """Which of the two `lb` upstreams (0 or 1) got each of `count` requests, sent one after
    another on one connection (so one Envoy worker balances them)."""
    order: list[int] = []
    with stack.client() as client:
        for i in range(count):
            path = f"{prefix}{i}"
            answer = client.get(stack.url("traffic.test", path))
            assert answer.status_code == 200, answer.text[:300]
            got = [n for n, u in enumerate(stack.lb) if any(r.path == path for r in u.requests)]
            assert len(got) == 1, (path, got)
            order.append(got[0])
    return order


def test_round_robin_alternates_over_both_upstreams(stack: Stack) -> None:
    order = spread(stack, "/rr/", 20)
    assert order.count(0) == order.count(1) == 10, order
    assert all(a != b for a, b in pairwise(order)), order


def test_random_is_not_round_robin(stack: Stack) -> None:
    # The key changes the balancing: RANDOM neither strictly alternates (2^-39 by chance)
    # nor leaves an upstream out.
    order = spread(stack, "/random/", 40)
    assert 0 < order.count(0) < 40, order
    assert any(a == b for a, b in pairwise(order)), order


# ------------------------------------------------------------------ health_checks, outliers


def who(client: httpx.Client, stack: Stack, path: str) -> str:
    answer = client.get(stack.url("traffic.test", path))
    if answer.status_code != 200:
        return f"status {answer.status_code}"
    name: str = answer.json()["upstream"]
    return name


def test_health_checks_keep_traffic_off_a_failing_upstream(stack: Stack) -> None:
    with stack.client() as client:
        # Once health checking has settled (it starts with the cluster), only the healthy one.
        eventually(lambda: all(who(client, stack, "/hc/x") == "hc-good" for _ in range(10)),
                   within=20, step=0.3)
        before = stack.hc_bad.served
        answers = [who(client, stack, f"/hc/{i}") for i in range(20)]
    assert answers == ["hc-good"] * 20
    assert stack.hc_bad.served == before
    assert stack.hc_bad.health_checks > 0  # it is asked, and answers 503
    # Envoy keeps asking both on its interval.
    checks = stack.hc_good.health_checks
    eventually(lambda: stack.hc_good.health_checks > checks, within=10)


def test_outlier_detection_ejects_an_upstream_answering_5xx(stack: Stack) -> None:
    with stack.client() as client:
        statuses = []
        for i in range(30):  # round robin: od-bad answers 503 to every other one
            statuses.append(who(client, stack, f"/od/warm-{i}"))
            if stack.od_bad.served >= 3:
                break
        assert stack.od_bad.served >= 3 and "status 503" in statuses, statuses
        # Ejected after its 3rd consecutive 5xx (the ejection reaches Envoy's workers soon).
        eventually(lambda: all(who(client, stack, "/od/x") == "od-good" for _ in range(10)),
                   within=10, step=0.2)
        ejected = stack.od_bad.served
        answers = [who(client, stack, f"/od/{i}") for i in range(20)]
    assert answers == ["od-good"] * 20
    assert stack.od_bad.served == ejected


# ----------------------------------------------------------------- codec_type, timeout_idle


def negotiated(stack: Stack, alpn: list[str]) -> str | None:
    context = stack.ssl_context(alpn)
    with (
        socket.create_connection(("127.0.0.1", stack.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="traffic.test") as tls,
    ):
        return tls.selected_alpn_protocol()


def test_codec_http1_is_never_h2(stack: Stack) -> None:
    assert negotiated(stack, ["h2", "http/1.1"]) == "http/1.1"
    assert negotiated(stack, ["h2"]) is None  # offered only h2: not agreed
    with stack.client(http2=True) as client:
        answer = client.get(stack.url("traffic.test", "/rr/codec"))
    assert answer.status_code == 200
    assert answer.http_version == "HTTP/1.1"


def test_timeout_idle_closes_an_idle_connection(stack: Stack) -> None:
    context = stack.ssl_context(["http/1.1"])
    request = (b"GET /rr/idle HTTP/1.1\r\nhost: traffic.test:%d\r\n"
               b"accept: application/json\r\n\r\n" % stack.port)
    with (
        socket.create_connection(("127.0.0.1", stack.port), timeout=15) as raw,
        context.wrap_socket(raw, server_hostname="traffic.test") as tls,
    ):
        tls.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = tls.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        start = time.monotonic()
        try:
            rest = tls.recv(65536)  # waits: Envoy closes the idle connection (timeout_idle 2s)
        except (ConnectionResetError, ssl.SSLError):
            rest = b""
        idle = time.monotonic() - start
    assert rest == b""
    # Envoy closes an idle HTTP/1 connection after timeout_idle, its drain time (5 s) and
    # its delayed close (1 s): some 8 s here, against 5 minutes without the key.
    assert 1.5 < idle < 20, idle
