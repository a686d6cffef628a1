"""Route matching and route options through real Envoy + real `authgate run` (plain HTTP).

Requests are written on a raw socket so that nothing on the client side normalises the path:
Envoy alone decides which route (and so which policy) a request gets, and what path the
upstream sees.
"""

from __future__ import annotations

import base64
import os
import posixpath
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import pytest

from authgate.config.runtime import generate_signing_key_b64
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import RecordedRequest, SampleUpstream


@dataclass
class Routes:
    port: int
    public: SampleUpstream  # app.test prefix /public, no sign-in
    protected: SampleUpstream  # app.test prefix /, any signed-in user; opts.test catch-all
    options: SampleUpstream  # opts.test routes exercising route options
    stack: AuthgateStack


@dataclass
class Answer:
    status: int
    headers: dict[str, str]


def raw_get(port: int, host: str, target: str, *extra: str) -> Answer:
    """One HTTP/1.1 request with the request-target sent byte for byte as given."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/json",
             *extra, "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        data = b""
        # Read the head and a content-length body; do not wait for Envoy's delayed close.
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        raw_head, _, body = data.partition(b"\r\n\r\n")
        head = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    return Answer(int(head[0].split(" ")[1]), headers)


def route_config(port: int, public: str, protected: str, options: str) -> dict[str, object]:
    app, opts = f"http://app.test:{port}", f"http://opts.test:{port}"
    return {
        "address": f"127.0.0.1:{port}",
        "insecure_server": True,
        "authenticate_service_url": f"http://authenticate.test:{port}",
        "idp_provider_url": "http://127.0.0.1:9",  # never reached: nobody signs in here
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
        "signing_key": generate_signing_key_b64(),
        "routes": [
            {"from": app, "prefix": "/public", "to": public,
             "allow_public_unauthenticated_access": True},
            {"from": app, "to": protected, "allow_any_authenticated_user": True},
            {"from": opts, "prefix": "/rw/", "prefix_rewrite": "/inner/", "to": options,
             "allow_public_unauthenticated_access": True},
            {"from": opts, "regex": "^/items/[0-9]+$", "to": options,
             "regex_rewrite_pattern": "^/items/([0-9]+)$",
             "regex_rewrite_substitution": "/item/\\1",
             "allow_public_unauthenticated_access": True},
            {"from": opts, "prefix": "/hdr", "to": options,
             "set_request_headers": {"X-Team": "blue", "X-Pct": "100% %REQ(x-client)%",
                                     "X-Empty": ""},
             "remove_request_headers": ["X-Remove-Me", "X-Pomerium-Claim-Email"],
             "allow_public_unauthenticated_access": True},
            {"from": opts, "prefix": "/hp/", "to": options,
             "host_path_regex_rewrite_pattern": "^/hp/([a-z]+)/.*$",
             "host_path_regex_rewrite_substitution": "\\1.internal",
             "allow_public_unauthenticated_access": True},
            {"from": opts, "to": protected, "allow_any_authenticated_user": True},
        ],
    }


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routes]:
    workdir = tmp_path_factory.mktemp("routes")
    port = free_port()
    with (
        SampleUpstream(tcp_port=0) as public,
        SampleUpstream(tcp_port=0) as protected,
        SampleUpstream(tcp_port=0) as options,
    ):
        config = route_config(port, public.url, protected.url, options.url)
        with AuthgateStack(workdir / "stack", config) as stack:
            yield Routes(port, public, protected, options, stack)


@pytest.fixture
def fresh(routes: Routes) -> Routes:
    for upstream in (routes.public, routes.protected, routes.options):
        upstream.clear()
    return routes


def resolved(path: str) -> str:
    """The path as the most lenient upstream could read it: %-decoded twice, `\\` as `/`,
    dot segments resolved, slashes merged."""
    decoded = unquote(unquote(path.split("?", 1)[0])).replace("\\", "/").replace(";", "")
    return posixpath.normpath("/" + decoded.lstrip("/"))


# ---------------------------------------------------------------------------- normalisation

TRAVERSALS = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public%2Fadmin",
    "/public%2fadmin",
    "//admin",
    "/public/..%2fadmin",
    "/public/%2e%2e%2fadmin",
    "/public/%5c../admin",
    "/public/%5C..%5Cadmin",
    "/public\\..\\admin",
    "/public;/../admin",
    "/public/..;/admin",
    "/PUBLIC/../admin",
    "/public/./../admin",
    "/public/x/../../admin",
]


def test_legitimate_public_path_reaches_the_public_upstream(fresh: Routes) -> None:
    answer = raw_get(fresh.port, "app.test", "/public/x?y=1")
    assert answer.status == 200
    (seen,) = fresh.public.requests
    assert seen.path == "/public/x?y=1"
    assert fresh.protected.requests.snapshot() == []


def test_protected_route_needs_a_session(fresh: Routes) -> None:
    assert raw_get(fresh.port, "app.test", "/admin").status == 401
    assert fresh.protected.requests.snapshot() == []


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_reaches_neither_upstream(fresh: Routes, target: str) -> None:
    answer = raw_get(fresh.port, "app.test", target)
    # 400: Envoy refused an escaped slash or backslash; 401: normalised to /admin, which is
    # the protected route, and there is no session.
    assert answer.status in (400, 401), (target, answer)
    assert fresh.public.requests.snapshot() == [], target
    assert fresh.protected.requests.snapshot() == [], target


def test_public_upstream_never_sees_a_path_outside_public(fresh: Routes) -> None:
    """Whatever the client sends, what the public upstream receives stays under /public even
    for an upstream that decodes and resolves the path once more."""
    for target in [*TRAVERSALS, "/public/x", "/public/a/../b", "/public/%2e/y", "/x/../public/z"]:
        raw_get(fresh.port, "app.test", target)
    received: list[RecordedRequest] = fresh.public.requests.snapshot()
    assert [r.path for r in received] == ["/public/x", "/public/b", "/public/y", "/public/z"]
    for request in received:
        assert resolved(request.path).startswith("/public/"), request.path
    assert fresh.protected.requests.snapshot() == []


# ---------------------------------------------------------------------------- route options


def test_prefix_rewrite(fresh: Routes) -> None:
    assert raw_get(fresh.port, "opts.test", "/rw/deep/path?q=1").status == 200
    (seen,) = fresh.options.requests
    assert seen.path == "/inner/deep/path?q=1"


def test_regex_route_and_regex_rewrite(fresh: Routes) -> None:
    assert raw_get(fresh.port, "opts.test", "/items/42?x=1").status == 200
    (seen,) = fresh.options.requests
    assert seen.path == "/item/42?x=1"
    # The regex must match the whole path: anything else falls to the protected catch-all.
    for target in ("/items/42/more", "/items/abc", "/x/items/42"):
        assert raw_get(fresh.port, "opts.test", target).status == 401, target
    assert len(fresh.options.requests) == 1
    assert fresh.protected.requests.snapshot() == []


def test_set_and_remove_request_headers(fresh: Routes) -> None:
    answer = raw_get(
        fresh.port, "opts.test", "/hdr",
        "X-Team: red", "X-Client: injected", "X-Remove-Me: 1",
        "X-Pomerium-Claim-Email: spoof@evil.test",
    )
    assert answer.status == 200
    (seen,) = fresh.options.requests
    assert seen.header_values("x-team") == ["blue"]  # overwritten, not appended
    assert seen.header_values("x-pct") == ["100% %REQ(x-client)%"]  # literal, not expanded
    assert seen.header_values("x-empty") == [""]
    assert seen.header("x-client") == "injected"
    assert seen.header("x-remove-me") is None
    assert not [name for name, _ in seen.headers if name.lower().startswith("x-pomerium")]


def test_host_path_regex_rewrite(fresh: Routes) -> None:
    assert raw_get(fresh.port, "opts.test", "/hp/alpha/page").status == 200
    (seen,) = fresh.options.requests
    assert seen.host == "alpha.internal"
    assert seen.path == "/hp/alpha/page"


def test_internal_paths_answer_on_every_route_host(fresh: Routes) -> None:
    answer = raw_get(fresh.port, "opts.test", "/.well-known/pomerium/jwks.json")
    assert answer.status == 200
    assert fresh.options.requests.snapshot() == []


def test_escaped_slash_is_refused_before_routing(fresh: Routes) -> None:
    # Refused by Envoy itself: no redirect (answered before ext_authz), nothing upstream.
    answer = raw_get(fresh.port, "opts.test", "/rw/a%2Fb")
    assert answer.status == 400
    assert "location" not in answer.headers
    assert fresh.options.requests.snapshot() == []
