"""Header smuggling through real Envoy + authgate: the upstream sees only the identity headers
authgate set, and forwarding headers from the client are not trusted.

Every variant is written byte for byte on a raw TLS connection, to a route that passes identity
(jenkins.test, signed in as alice) and to a public one (status.test, no identity at all). What
the upstream received is read from its request log.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence

import jwt
import pytest

from tests.integration.attack_kit import (
    FOREIGN_NETWORK,
    SESSION_COOKIE,
    HostileStack,
    RawResponse,
    attack_client,
    build_request,
    raw_request,
)
from tests.integration.conftest import Env
from tests.security_summary import hostile
from tests.support.upstream import RecordedRequest, SampleUpstream

pytestmark = pytest.mark.usefixtures("env_stays_healthy")

MARK = "evil.test"  # in every spoofed value; never in a genuine one
SPOOF = f"evil@{MARK}"
FORGED_JWT = (
    base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    + "."
    + base64.urlsafe_b64encode(json.dumps({"email": SPOOF, "groups": ["admins"]}).encode())
    .rstrip(b"=")
    .decode()
    + "."
)
OUR_HEADERS = {
    "x-pomerium-jwt-assertion",
    "x-pomerium-claim-email",
    "x-pomerium-claim-user",
    "x-pomerium-claim-name",
    "x-pomerium-claim-groups",
}

# name -> (header lines as (name, value) pairs, raw extra lines)
Variant = tuple[Sequence[tuple[str, str]], bytes]
VARIANTS: dict[str, Variant] = {
    "lower-case": ([("x-pomerium-claim-email", SPOOF)], b""),
    "upper-case": ([("X-POMERIUM-CLAIM-EMAIL", SPOOF)], b""),
    "mixed-case assertion": ([("x-PoMeRiUm-JwT-aSsErTiOn", FORGED_JWT)], b""),
    "assertion": ([("X-Pomerium-Jwt-Assertion", FORGED_JWT)], b""),
    "assertion with Bearer": ([("X-Pomerium-Jwt-Assertion", f"Bearer {FORGED_JWT}")], b""),
    "groups": ([("X-Pomerium-Claim-Groups", "admins")], b""),
    "unknown claim header": ([("X-Pomerium-Claim-Admin", "true")], b""),
    "bare prefix": ([("X-Pomerium", SPOOF)], b""),
    "prefix without dash": ([("X-PomeriumClaimEmail", SPOOF)], b""),
    "underscores": ([("x_pomerium_claim_email", SPOOF)], b""),
    "underscores, odd case": ([("X_Pomerium_Jwt_Assertion", FORGED_JWT)], b""),
    "one underscore": ([("x-pomerium_claim-email", SPOOF)], b""),
    "leading underscore": ([("_x-pomerium-claim-email", SPOOF)], b""),
    "duplicated": (
        [
            ("x-pomerium-claim-email", SPOOF),
            ("X-Pomerium-Claim-Email", "second@evil.test"),
            ("X-POMERIUM-CLAIM-EMAIL", "third@evil.test"),
        ],
        b"",
    ),
    "duplicated assertion": (
        [("x-pomerium-jwt-assertion", FORGED_JWT), ("X-Pomerium-Jwt-Assertion", FORGED_JWT)],
        b"",
    ),
    "split over lines (obs-fold)": (
        [],
        b"x-pomerium-claim-email: a\r\n " + SPOOF.encode() + b"\r\n",
    ),
    "split over lines (tab fold)": ([], b"X-Pomerium-Claim-Groups: devs,\r\n\tadmins\r\n"),
    "fold after our name": ([], b"x-pomerium-jwt-assertion:\r\n " + FORGED_JWT.encode() + b"\r\n"),
    "named in Connection": (
        [("Connection", "X-Pomerium-Jwt-Assertion"), ("x-pomerium-claim-email", SPOOF)],
        b"",
    ),
    "several named in Connection": (
        [
            (
                "Connection",
                "keep-alive, x-pomerium-jwt-assertion, X-Pomerium-Claim-Email, "
                "x-pomerium-claim-groups, x-pomerium-claim-user",
            ),
            ("X-Pomerium-Claim-Groups", "admins"),
        ],
        b"",
    ),
    "Connection names cookie": ([("Connection", "cookie")], b""),
    "space before colon": ([], b"x-pomerium-claim-email : " + SPOOF.encode() + b"\r\n"),
    "tab before colon": ([], b"x-pomerium-claim-email\t: " + SPOOF.encode() + b"\r\n"),
    "NUL in value": ([], b"x-pomerium-claim-email: a\x00" + SPOOF.encode() + b"\r\n"),
    "bare CR in value": ([], b"x-pomerium-claim-email: a\rx-pomerium-claim-user: b\r\n"),
    "bare LF line": ([], b"x-pomerium-claim-email: " + SPOOF.encode() + b"\n"),
    "non-ASCII name": ([], "x-pomeríum-claim-email: evil\r\n".encode()),
    "huge value": ([("x-pomerium-claim-email", "a" * 8000)], b""),
    "fifty names": ([(f"x-pomerium-claim-x{i}", SPOOF) for i in range(50)], b""),
    "request smuggling CL.TE": (
        [("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
        b"",
    ),
}
SMUGGLED_BODY = (
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\nx-pomerium-claim-email: "
    + SPOOF.encode()
    + b"\r\n\r\n"
)


def _send(
    env: Env, host: str, case: str, variant: Variant, cookie: str | None
) -> tuple[RawResponse, str]:
    headers, extra = variant
    base: list[tuple[str, str]] = [("accept", "application/json")]
    if cookie:
        base.append(("cookie", f"{SESSION_COOKIE}={cookie}"))
    path = f"/hdr/{secrets.token_hex(4)}"
    if case == "request smuggling CL.TE":
        request = build_request(
            "POST", path.encode(), f"{host}:{env.port}", [*base, *headers], extra
        )
        request += SMUGGLED_BODY
    else:
        request = build_request(
            "GET", path.encode(), f"{host}:{env.port}", [*base, *headers], extra
        )
    return raw_request(env.port, env.pki.client_ssl_context(), host, request), path


def _received(upstream: SampleUpstream, path: str) -> RecordedRequest | None:
    try:
        return upstream.requests.wait_for(lambda r: r.path == path, timeout=5)
    except TimeoutError:
        return None


def _never_received(
    env: Env, host: str, upstream: SampleUpstream, path: str, cookie: str | None
) -> bool:
    """After a normal request sent later has arrived, `path` still has not."""
    barrier = f"/barrier/{secrets.token_hex(4)}"
    headers = {"accept": "application/json"}
    if cookie:
        headers["cookie"] = f"{SESSION_COOKIE}={cookie}"
    with attack_client(env.pki.client_ssl_context(), timeout=10) as client:
        assert client.get(env.url(host, barrier), headers=headers).status_code == 200
    upstream.requests.wait_for(lambda r: r.path == barrier)
    return not [r for r in upstream.requests.snapshot() if r.path == path]


def _pomerium_headers(request: RecordedRequest) -> list[tuple[str, str]]:
    return [
        (name.lower(), value)
        for name, value in request.headers
        if "pomerium" in name.lower().replace("_", "-")
    ]


def _clean(request: RecordedRequest, identity: bool) -> bool:
    """Only authgate's identity headers, one value each, and nothing the client made up."""
    if any(MARK in value or FORGED_JWT in value for _, value in request.headers):
        return False
    seen: dict[str, list[str]] = {}
    for name, value in _pomerium_headers(request):
        seen.setdefault(name, []).append(value)
    if not identity:
        return not seen
    return (
        set(seen) == OUR_HEADERS
        and all(len(values) == 1 for values in seen.values())
        and seen["x-pomerium-claim-email"] == ["alice@example.com"]
        and seen["x-pomerium-claim-groups"] == ["admins,devs"]
        and request.user is not None
        and request.user["username"] == "alice@example.com"
        and request.user["groups"] == ["admins", "devs"]
    )


@pytest.fixture(scope="module")
def alice_cookie(env: Env) -> str:
    from tests.support.resolve import map_hosts

    with map_hosts({"*.test": "127.0.0.1"}), env.browser() as browser:
        env.login(browser, env.url("jenkins.test", "/"))
        for cookie in browser.cookies.jar:
            if cookie.name == SESSION_COOKIE and cookie.domain.lstrip(".") == "jenkins.test":
                return cookie.value
    raise AssertionError("no route session after login")


@pytest.mark.parametrize("case", list(VARIANTS))
def test_spoofed_identity_headers_never_reach_the_upstream(
    env: Env, alice_cookie: str, case: str
) -> None:
    for host, upstream, cookie in (
        ("jenkins.test", env.jenkins, alice_cookie),
        ("status.test", env.status, None),
    ):
        answer, path = _send(env, host, case, VARIANTS[case], cookie)
        request = _received(upstream, path) if answer.status == 200 else None
        if answer.status == 200:
            refused = request is not None and _clean(request, identity=cookie is not None)
        else:
            # Envoy refused the malformed request itself: nothing may have reached the upstream.
            refused = 400 <= answer.status < 500 and _never_received(
                env, host, upstream, path, cookie
            )
        smuggled = [r for r in upstream.requests.snapshot() if r.path == "/smuggled"]
        refused = refused and not smuggled
        detail = (answer.status, request and _pomerium_headers(request))
        assert hostile(f"header smuggling: {host.split('.')[0]}", refused), (case, host, detail)
    assert env_answers(env)


def test_identity_headers_survive_connection_tricks_with_one_value_each(
    env: Env, alice_cookie: str
) -> None:
    """Naming our headers in `Connection` must not make Envoy drop what authgate set."""
    variant = VARIANTS["several named in Connection"]
    answer, path = _send(env, "jenkins.test", "Connection", variant, alice_cookie)
    assert answer.status == 200
    request = _received(env.jenkins, path)
    assert request is not None
    for name in OUR_HEADERS:
        assert len(request.header_values(name)) == 1, name
    assert request.header("x-pomerium-claim-groups") == "admins,devs"
    assert request.user is not None and request.user["groups"] == ["admins", "devs"]
    assert (
        jwt.get_unverified_header(request.header("x-pomerium-jwt-assertion") or "")["alg"]
        == "ES256"
    )


def test_http2_identity_headers_are_stripped_too(env: Env, alice_cookie: str) -> None:
    with attack_client(env.pki.client_ssl_context(), http2=True, timeout=10) as client:
        for host, upstream, cookie in (
            ("jenkins.test", env.jenkins, alice_cookie),
            ("status.test", env.status, None),
        ):
            path = f"/h2/{secrets.token_hex(4)}"
            headers = [
                ("x-pomerium-claim-email", SPOOF),
                ("x-pomerium-jwt-assertion", FORGED_JWT),
                ("x-pomerium-claim-email", "second@evil.test"),
            ]
            if cookie:
                headers.append(("cookie", f"{SESSION_COOKIE}={cookie}"))
            answer = client.get(env.url(host, path), headers=headers)
            assert answer.http_version == "HTTP/2"
            request = _received(upstream, path)
            refused = (
                answer.status_code == 200
                and request is not None
                and _clean(request, identity=cookie is not None)
            )
            assert hostile(f"header smuggling: {host.split('.')[0]} over HTTP/2", refused)


ENVOY_HEADERS = {
    "x-envoy-original-path": "/admin",
    "x-envoy-internal": "true",
    "x-envoy-external-address": "203.0.113.9",
    "x-envoy-upstream-rq-timeout-ms": "1",
    "x-envoy-upstream-rq-per-try-timeout-ms": "1",
    "x-envoy-retry-on": "5xx",
    "x-envoy-max-retries": "100",
    "x-envoy-expected-rq-timeout-ms": "1",
    "x-envoy-force-trace": "1",
    "x-envoy-downstream-service-cluster": "admin",
    "x-envoy-downstream-service-node": "admin",
    "x-envoy-decorator-operation": "evil",
    "x-envoy-original-host": "evil.test",
    "x-envoy-ip-tags": "internal",
    "x-envoy-hedge-on-per-try-timeout": "true",
    "x-request-id": "attacker-chosen-request-id",
}


def test_client_x_envoy_headers_are_not_trusted(env: Env) -> None:
    """Envoy sanitises its own namespace at the edge: none of the client's values arrive, and a
    client-requested 1 ms upstream timeout is not honoured."""
    with attack_client(env.pki.client_ssl_context(), timeout=10) as client:
        for name, value in ENVOY_HEADERS.items():
            path = f"/envoy/{secrets.token_hex(4)}"
            answer = client.get(env.url("status.test", path), headers={name: value})
            request = _received(env.status, path)
            refused = (
                answer.status_code == 200
                and request is not None
                and value not in request.header_values(name)
            )
            assert hostile("forwarding headers: x-envoy-*", refused), (name, answer.status_code)


def test_forwarded_proto_and_for_come_from_envoy(env: Env) -> None:
    with attack_client(env.pki.client_ssl_context(), timeout=10) as client:
        path = f"/xf/{secrets.token_hex(4)}"
        answer = client.get(
            env.url("status.test", path),
            headers={"x-forwarded-proto": "http", "x-forwarded-for": "203.0.113.7"},
        )
    assert answer.status_code == 200
    request = _received(env.status, path)
    assert request is not None
    proto_ok = request.header_values("x-forwarded-proto") == ["https"]
    xff = (request.header("x-forwarded-for") or "").split(",")
    xff_ok = xff[-1].strip() != "203.0.113.7"  # the client's claim is never the last hop
    assert hostile("forwarding headers: x-forwarded-proto", proto_ok)
    assert hostile("forwarding headers: x-forwarded-for", xff_ok), xff


CLIENT_FORWARDING = {
    "x-forwarded-host": "evil.test",
    "x-forwarded-port": "1",
    "x-forwarded-prefix": "/evil",
    "x-forwarded-server": "evil.test",
    "x-forwarded-scheme": "http",
    "x-forwarded-ssl": "off",
    "x-real-ip": "203.0.113.7",
    "x-original-url": "/admin",
    "x-rewrite-url": "/admin",
    "forwarded": "for=203.0.113.7;host=evil.test;proto=http",
    "true-client-ip": "203.0.113.7",
}


def test_client_forwarding_headers_do_not_reach_the_upstream(env: Env, alice_cookie: str) -> None:
    path = f"/fwd/{secrets.token_hex(4)}"
    with attack_client(env.pki.client_ssl_context(), timeout=10) as client:
        answer = client.get(
            env.url("jenkins.test", path),
            headers={**CLIENT_FORWARDING, "cookie": f"{SESSION_COOKIE}={alice_cookie}"},
        )
    assert answer.status_code == 200
    request = _received(env.jenkins, path)
    assert request is not None
    leaked = {
        name: request.header_values(name)
        for name, value in CLIENT_FORWARDING.items()
        if value in request.header_values(name)
    }
    for name in CLIENT_FORWARDING:
        hostile("forwarding headers: x-forwarded-host and friends", name not in leaked)
    assert not leaked


def test_source_ip_policy_ignores_forwarding_headers(hostile_stack: HostileStack) -> None:
    """A route open only to 203.0.113.0/24: claiming that address in any header does not help."""
    stack = hostile_stack
    claims = [
        ("x-forwarded-for", "203.0.113.5"),
        ("x-forwarded-for", "203.0.113.5, 203.0.113.6"),
        ("x-real-ip", "203.0.113.5"),
        ("x-envoy-external-address", "203.0.113.5"),
        ("forwarded", "for=203.0.113.5"),
        ("true-client-ip", "203.0.113.5"),
        ("x-client-ip", "203.0.113.5"),
        ("cf-connecting-ip", "203.0.113.5"),
        ("x-original-forwarded-for", "203.0.113.5"),
    ]
    assert FOREIGN_NETWORK.startswith("203.0.113.")
    stack.upstream.clear()
    with stack.client(accept="application/json") as client:
        # The criterion works through the stack: 127.0.0.0/8 is let in ...
        assert client.get(stack.url("ipok.test", "/")).status_code == 200
        for name, value in claims:
            answer = client.get(stack.url("ip.test", "/ip"), headers={name: value})
            assert hostile("forwarding headers: source_ip policy", answer.status_code == 401), (
                name,
                answer.status_code,
            )
        answer = client.get(stack.url("ip.test", "/ip"), headers=claims)
        assert hostile("forwarding headers: source_ip policy", answer.status_code == 401)
    assert not [r for r in stack.upstream.requests.snapshot() if r.path == "/ip"]


def env_answers(env: Env) -> bool:
    with env.browser() as client:
        return client.get(env.url("status.test", "/__health__")).status_code == 200
