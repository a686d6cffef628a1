"""Oversized requests through real Envoy + authgate: a clean 4xx, and the workers stay up.

The classic three (a 64 KB cookie, 200 headers, a 100 KB query string) stop at Envoy's header
limits; the ones just under those limits reach authgate, which must answer them as it answers
any bad input (a login redirect, 400, 401) without a 5xx, without hanging, and without a worker
dying.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.attack_kit import (
    BROWSER_ACCEPT,
    SESSION_COOKIE,
    RawResponse,
    build_request,
    raw_request,
)
from tests.integration.conftest import Env
from tests.security_summary import hostile

pytestmark = pytest.mark.usefixtures("env_stays_healthy")

KB = 1024


def _send(
    env: Env, host: str, target: bytes, headers: list[tuple[str, str]]
) -> tuple[RawResponse, float]:
    request = build_request("GET", target, f"{host}:{env.port}", headers)
    started = time.monotonic()
    answer = raw_request(env.port, env.pki.client_ssl_context(), host, request, timeout=20)
    return answer, time.monotonic() - started


def _b64ish(n: int) -> str:
    return (os.urandom(n).hex() * 2)[:n]


OVERSIZED: dict[str, tuple[str, bytes, list[tuple[str, str]]]] = {
    "64 KB session cookie": (
        "jenkins.test",
        b"/",
        [("cookie", f"{SESSION_COOKIE}={_b64ish(64 * KB)}")],
    ),
    "64 KB cookie on the authenticate host": (
        "authenticate.test",
        b"/.pomerium/sign_in",
        [("cookie", f"{SESSION_COOKIE}={_b64ish(64 * KB)}")],
    ),
    "200 headers": ("jenkins.test", b"/", [(f"x-h{i}", "v") for i in range(200)]),
    "200 x-pomerium headers": (
        "status.test",
        b"/",
        [(f"x-pomerium-h{i}", "v") for i in range(200)],
    ),
    "100 KB query string": ("jenkins.test", b"/?q=" + b"a" * (100 * KB), []),
    "100 KB query on sign-in": (
        "authenticate.test",
        b"/.pomerium/sign_in?req=" + b"A" * (100 * KB),
        [],
    ),
    "100 KB path": ("jenkins.test", b"/" + b"a" * (100 * KB), []),
    "100 KB header value": ("status.test", b"/", [("x-big", "a" * (100 * KB))]),
}

# Just under Envoy's limits (60 KB of headers, 100 headers): these reach authgate.
UNDER_THE_LIMIT: dict[str, tuple[str, bytes, list[tuple[str, str]]]] = {
    "50 KB session cookie": (
        "jenkins.test",
        b"/",
        [("cookie", f"{SESSION_COOKIE}={_b64ish(50 * KB)}")],
    ),
    "8 KB + 1 session cookie": (
        "jenkins.test",
        b"/",
        [("cookie", f"{SESSION_COOKIE}={'A' * (8 * KB + 1)}")],
    ),
    "5000 cookies": ("jenkins.test", b"/", [("cookie", "; ".join(f"c{i}=v" for i in range(5000)))]),
    "3000 session cookies": (
        "jenkins.test",
        b"/",
        [("cookie", "; ".join(f"{SESSION_COOKIE}=x{i}" for i in range(3000)))],
    ),
    "90 headers": ("jenkins.test", b"/", [(f"x-h{i}", "v") for i in range(90)]),
    "90 x-pomerium headers": (
        "status.test",
        b"/",
        [(f"x-pomerium-h{i}", "v" * 100) for i in range(90)],
    ),
    "40 KB path (login target)": ("jenkins.test", b"/" + b"a" * (40 * KB), []),
    "40 KB query (login target)": ("jenkins.test", b"/?q=" + b"a" * (40 * KB), []),
    "40 KB sign-in request": (
        "authenticate.test",
        b"/.pomerium/sign_in?req=" + b"A" * (40 * KB),
        [],
    ),
    "10000 query parameters on sign-in": (
        "authenticate.test",
        b"/.pomerium/sign_in?" + b"a=1&" * 10000,
        [],
    ),
    "10000 query parameters on sign-out": (
        "jenkins.test",
        b"/.pomerium/sign_out?" + b"a=1&" * 10000,
        [],
    ),
    "40 KB hand-off": ("jenkins.test", b"/.pomerium/callback?handoff=" + b"A" * (40 * KB), []),
    "40 KB OAuth state": (
        "authenticate.test",
        b"/oauth2/callback?code=x&state=" + b"s" * (40 * KB),
        [],
    ),
    "40 KB Accept": ("jenkins.test", b"/", [("accept", "text/html," * 4000)]),
    "40 KB Origin on sign-out": (
        "jenkins.test",
        b"/.pomerium/sign_out",
        [("origin", "https://" + "a" * (40 * KB))],
    ),
}


def _workers_alive(env: Env) -> bool:
    pids = env.stack.worker_pids()
    return bool(pids) and all(os.path.exists(f"/proc/{pid}") for pid in pids)


@pytest.mark.parametrize("case", list(OVERSIZED))
def test_oversized_request_is_a_clean_4xx(env: Env, case: str) -> None:
    host, target, headers = OVERSIZED[case]
    pids = env.stack.worker_pids()
    answer, took = _send(env, host, target, [("accept", "application/json"), *headers])
    refused = 400 <= answer.status < 500 and took < 5
    assert hostile("size: over Envoy's limits", refused), (case, answer.status, took)
    assert env.stack.worker_pids() == pids and _workers_alive(env)
    assert _normal_request_works(env)


@pytest.mark.parametrize("case", list(UNDER_THE_LIMIT))
@pytest.mark.parametrize("accept", ["application/json", BROWSER_ACCEPT], ids=["api", "browser"])
def test_large_request_under_the_limits_is_answered_by_authgate(
    env: Env, case: str, accept: str
) -> None:
    host, target, headers = UNDER_THE_LIMIT[case]
    pids = env.stack.worker_pids()
    env.jenkins.clear()
    answer, took = _send(env, host, target, [("accept", accept), *headers])
    # a refusal (4xx), a login redirect, or (public route, sign-out form) a normal page
    upstream_got_it = bool(env.jenkins.requests.snapshot())
    refused = answer.status < 500 and took < 5 and not upstream_got_it
    assert hostile("size: just under Envoy's limits", refused), (case, answer.status, took)
    assert env.stack.worker_pids() == pids and _workers_alive(env)
    assert _normal_request_works(env)


def _normal_request_works(env: Env) -> bool:
    answer, _ = _send(env, "status.test", b"/__health__", [("accept", "application/json")])
    return answer.status == 200
