"""Path tricks against policies and authgate's internal endpoints, through real Envoy + authgate.

`..`, `%2e%2e`, `%2f`, `%5c`, `;params`, `#fragment`, `//`, odd case, NUL and friends, sent
byte for byte. Whatever Envoy makes of a path, the policy of the route it matched is applied:
a visitor without a session or a signed-in user the policy refuses never gets a byte to the
upstream, and `/.pomerium/` look-alikes are either authgate's own endpoints (answered by
authgate, never forwarded) or ordinary paths under the route's policy.

(Prefix-route matching itself is covered by test_routes.py; this file is about what a path can
do to a policy decision.)
"""

from __future__ import annotations

import posixpath
import secrets
from urllib.parse import unquote

import pytest

from tests.integration.attack_kit import (
    SESSION_COOKIE,
    HostileStack,
    build_request,
    raw_request,
)
from tests.integration.conftest import Env
from tests.security_summary import hostile
from tests.support.resolve import map_hosts
from tests.support.upstream import SampleUpstream

pytestmark = pytest.mark.usefixtures("env_stays_healthy")

# {token} is replaced by a unique marker so the upstream log can be searched for the request.
TRICKS = [
    "/{token}",
    "/{token}/../{token}",
    "/.pomerium/../{token}",
    "/.pomerium/%2e%2e/{token}",
    "/.well-known/pomerium/../../{token}",
    "/%2e%70omerium/../{token}",
    "/%2E%2E/{token}",
    "/%2e%2e%2f{token}",
    "/.%2e/{token}",
    "/x/..%2f{token}",
    "/x/..%5c{token}",
    "/x\\..\\{token}",
    "/x/..;/{token}",
    "/x;/../{token}",
    "/{token};jsessionid=1",
    "/{token};/..",
    "/{token}%3b/..",
    "//{token}",
    "///{token}//",
    "/./{token}",
    "/{token}/.",
    "/{token}/%2e",
    "/{token}%2f",
    "/{token}%00",
    "/{token}%20",
    "/{token}%09",
    "/{token}#fragment",
    "/{token}?x=/../.pomerium/",
    "/{token}?%2e%2e",
    "/%7b{token}",
    "/{TOKEN}",
    "/.POMERIUM/{token}",
    "/.Pomerium/../{token}",
    "/.pomerium;x/{token}",
    "/.pomerium%2f{token}",
    "/%252e%252e/{token}",
    "/%c0%ae%c0%ae/{token}",
    "/%u002e%u002e/{token}",
    "/.pomerium/callback/../../{token}",
    "/.pomerium/sign_out%2f..%2f..%2f{token}",
    "/.pomerium/jwks.json/../../{token}",
]

# Look-alikes of the internal endpoints: answered by authgate (never forwarded) or refused.
INTERNAL_TRICKS = [
    "/.pomerium/callback?handoff=x",
    "/%2e%70omerium/callback?handoff=x",
    "/%2E%50OMERIUM/callback?handoff=x",
    "//.pomerium/callback?handoff=x",
    "/./.pomerium/callback?handoff=x",
    "/x/../.pomerium/callback?handoff=x",
    "/.pomerium//callback?handoff=x",
    "/.pomerium/callback/?handoff=x",
    "/.pomerium/callback;x?handoff=x",
    "/.pomerium/callback%3b?handoff=x",
    "/.pomerium%2fcallback?handoff=x",
    "/.pomerium%5ccallback?handoff=x",
    "/.pomerium\\callback?handoff=x",
    "/.pomerium/./sign_out",
    "/.pomerium/%73ign_out",
    "/.pomerium/sign_out/..",
    "/.pomerium/",
    "/%2epomerium/",
    "/.well-known/pomerium/%6awks.json",
    "/.well-known/pomerium/../pomerium/jwks.json",
]

INTERNAL_BASES = ("/.pomerium", "/.well-known/pomerium")


def _target(template: str, token: str) -> bytes:
    return template.replace("{token}", token).replace("{TOKEN}", token.upper()).encode()


def _servlet_view(path: str) -> str:
    """Roughly what a servlet container makes of a path: decoded, `;params` and `\\` gone,
    dot segments resolved. Used to check what a public route's upstream may be asked for."""
    text = unquote(path.partition("?")[0]).replace("\\", "/")
    text = "/".join(seg.partition(";")[0] for seg in text.split("/"))
    view = posixpath.normpath("/" + text.lstrip("/"))
    return view + "/" if text.endswith(("/", "/.", "/..")) and view != "/" else view


def _ours(path: str) -> bool:
    """A path in authgate's namespace, as a servlet container would read it."""
    view = _servlet_view(path)
    return any(view == base or view.startswith(base + "/") for base in INTERNAL_BASES)


def _forwarded(upstream: SampleUpstream, token: str) -> list[str]:
    return [r.path for r in upstream.requests.snapshot() if token.lower() in r.path.lower()]


def _barrier(env: Env, cookie: str) -> None:
    """Wait until a later allowed request reached jenkins: earlier ones had their chance."""
    path = f"/barrier/{secrets.token_hex(4)}"
    request = build_request(
        "GET",
        path.encode(),
        f"jenkins.test:{env.port}",
        [("accept", "application/json"), ("cookie", f"{SESSION_COOKIE}={cookie}")],
    )
    assert (
        raw_request(env.port, env.pki.client_ssl_context(), "jenkins.test", request).status == 200
    )
    env.jenkins.requests.wait_for(lambda r: r.path == path)


def _session(env: Env, email: str) -> str:
    with map_hosts({"*.test": "127.0.0.1"}), env.browser() as browser:
        env.login(browser, env.url("jenkins.test", "/"), email=email)
        for cookie in browser.cookies.jar:
            if cookie.name == SESSION_COOKIE and cookie.domain.lstrip(".") == "jenkins.test":
                return cookie.value
    raise AssertionError("no session")


@pytest.fixture(scope="module")
def sessions(env: Env) -> dict[str, str]:
    return {"alice": _session(env, "alice@example.com"), "bob": _session(env, "bob@evil.org")}


@pytest.mark.parametrize("who", ["anonymous", "bob"])
def test_no_path_trick_gets_past_the_policy(env: Env, sessions: dict[str, str], who: str) -> None:
    """jenkins.test allows example.com only: bob (evil.org) and visitors without a session send
    every trick; the upstream receives none of them, and authgate never answers 5xx."""
    cookie = sessions.get(who)
    statuses: dict[str, int] = {}
    for template in TRICKS:
        token = f"p{secrets.token_hex(6)}"
        headers = [("accept", "application/json")]
        if cookie:
            headers.append(("cookie", f"{SESSION_COOKIE}={cookie}"))
        request = build_request(
            "GET", _target(template, token), f"jenkins.test:{env.port}", headers
        )
        answer = raw_request(env.port, env.pki.client_ssl_context(), "jenkins.test", request)
        _barrier(env, sessions["alice"])
        expected = {401} if cookie is None else {403}
        # Envoy may refuse a malformed or escaped path itself (400), or redirect it to its
        # normalised form (3xx, to the same host) before authgate is asked.
        refused = (
            answer.status in expected or answer.status in (400, 404) or 300 <= answer.status < 400
        ) and not _forwarded(env.jenkins, token)
        if 300 <= answer.status < 400:
            refused = refused and (answer.header("location") or "").startswith("/")
        statuses[template] = answer.status
        assert hostile(f"path tricks: {who} vs policy", refused), (template, answer.status)
    # Most tricks reached authgate and were decided by the policy, not refused earlier.
    decided = [t for t, s in statuses.items() if s in (401, 403)]
    assert len(decided) > len(TRICKS) // 2, statuses


def test_the_same_tricks_work_for_an_allowed_user(env: Env, sessions: dict[str, str]) -> None:
    """Control: for alice most tricks do reach the upstream, so the test above would see a
    leak if the policy were skipped for some spelling."""
    reached = 0
    for template in TRICKS:
        token = f"p{secrets.token_hex(6)}"
        request = build_request(
            "GET",
            _target(template, token),
            f"jenkins.test:{env.port}",
            [("accept", "application/json"), ("cookie", f"{SESSION_COOKIE}={sessions['alice']}")],
        )
        answer = raw_request(env.port, env.pki.client_ssl_context(), "jenkins.test", request)
        # (a few normalise to another path, e.g. "/x;/.." is "/", so look for the marker)
        reached += answer.status == 200 and bool(_forwarded(env.jenkins, token))
    assert reached > len(TRICKS) // 2


@pytest.mark.parametrize("host", ["jenkins.test", "status.test"])
def test_internal_endpoint_lookalikes_are_never_forwarded(
    env: Env, sessions: dict[str, str], host: str
) -> None:
    """On a protected and on a public route: `/.pomerium/` spellings are answered by authgate
    (its page or JSON, never a 5xx) or refused; the upstream never gets a path that a servlet
    container would read as one of authgate's endpoints."""
    upstream = env.jenkins if host == "jenkins.test" else env.status
    for who, cookie in (("anonymous", None), ("alice", sessions["alice"])):
        if host == "status.test" and cookie:
            continue
        upstream.clear()
        for target in INTERNAL_TRICKS:
            headers = [("accept", "application/json")]
            if cookie:
                headers.append(("cookie", f"{SESSION_COOKIE}={cookie}"))
            request = build_request("GET", target.encode(), f"{host}:{env.port}", headers)
            answer = raw_request(env.port, env.pki.client_ssl_context(), host, request)
            leaked = [p for p in (r.path for r in upstream.requests.snapshot()) if _ours(p)]
            # "/.POMERIUM/..." is an ordinary path (paths are case-sensitive): it may reach
            # the upstream under the route's policy; only authgate's own namespace may not.
            refused = not leaked and answer.status < 500
            assert hostile(f"path tricks: internal endpoints on {host}", refused), (
                who,
                target,
                answer.status,
                leaked,
            )


def test_forbidden_user_cannot_walk_out_of_a_public_prefix(hostile_stack: HostileStack) -> None:
    """app.test: /public/ is open to all, / only to kestrel.example. Signed in as an outsider,
    no spelling of /public/../admin reaches the upstream outside /public/."""
    stack = hostile_stack
    with stack.client() as browser:
        refused = stack.login(browser, stack.url("app.test", "/admin"), "eve@evil.test")
        assert refused.status_code == 403  # signed in, and the policy says no
        app_cookie = next(
            c.value
            for c in browser.cookies.jar
            if c.name == SESSION_COOKIE and c.domain.lstrip(".") == "app.test"
        )
    tricks = [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2e/admin",
        "/public%2f..%2fadmin",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public\\..\\admin",
        "/public/..;/admin",
        "/public;/../admin",
        "/public/;/../../admin",
        "/PUBLIC/../admin",
        "/Public/admin",
        "//public/../admin",
        "/public//../admin",
        "/public/%252e%252e/admin",
        "/public/..%00/admin",
        "/public/%c0%ae%c0%ae/admin",
        "/public/admin/..",
        "/public",
        "/publicadmin",
        "/public%2fadmin",
    ]
    stack.upstream.clear()
    for target in tricks:
        request = build_request(
            "GET",
            target.encode(),
            f"app.test:{stack.port}",
            [("accept", "application/json"), ("cookie", f"{SESSION_COOKIE}={app_cookie}")],
        )
        answer = raw_request(stack.port, stack.pki.client_ssl_context(), "app.test", request)
        outside = [
            r.path
            for r in stack.upstream.requests.snapshot()
            if not _servlet_view(r.path).startswith("/public/")
        ]
        refused = answer.status < 500 and not outside
        assert hostile("path tricks: signed-in outsider vs public prefix", refused), (
            target,
            answer.status,
            outside,
        )


@pytest.mark.parametrize("path", ["/.pomerium", "/.well-known/pomerium"])
def test_bare_internal_paths_are_answered_by_authgate(env: Env, path: str) -> None:
    env.status.clear()
    request = build_request("GET", path.encode(), f"status.test:{env.port}", [("accept", "*/*")])
    answer = raw_request(env.port, env.pki.client_ssl_context(), "status.test", request)
    forwarded = [r.path for r in env.status.requests.snapshot() if r.path == path]
    assert hostile("path tricks: bare internal paths", not forwarded), answer.status
