"""authgate's own cookies, through real Envoy + authgate + the IdP, in every spelling a client
can send them.

* Session-cookie hygiene: whatever way the client spells its Cookie header(s) (two headers, a
  comma join, whitespace before `=`, the session twice, HTTP/2 cookie crumbs), the application
  never receives authgate's cookies, does receive its own, and a protected route recognises the
  session wherever it was put.
* Cookie bytes that are not UTF-8 reach the application unchanged (an ext_authz Check can only
  carry UTF-8: Envoy hands authz a `!` for each such byte).
* The authenticate host's home page does not list the routes to an anonymous visitor, nor to a
  user the routes he may not reach.
* A hand-off (`/.pomerium/callback?handoff=...`) is spent on its first presentation, whatever
  the outcome: refused for a wrong nonce, it cannot then be redeemed with the right one (the
  attacker's own sign-in link opened by a signed-in victim must not hand the attacker the
  victim's session).

What the application received is read from the sample upstream's request log, byte for byte.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import httpx
import pytest

from tests.integration.attack_kit import (
    AUTHN_LOGIN_COOKIE,
    BROWSER_ACCEPT,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    RawResponse,
    attack_client,
    build_request,
    raw_request,
)
from tests.integration.conftest import Env
from tests.security_summary import hostile
from tests.support.resolve import map_hosts
from tests.support.upstream import RecordedRequest, SampleUpstream

pytestmark = pytest.mark.usefixtures("env_stays_healthy")

OUR_NAMES = (SESSION_COOKIE, LOGIN_COOKIE, AUTHN_LOGIN_COOKIE)
APP_COOKIES = (b"a=1", b"b=2")
ROUTE_HOSTS = ("jenkins.test", "other.test", "status.test")
ALICE = "alice@example.com"


# ---------------------------------------------------------------------------- helpers


def _cookie_in_jar(client: httpx.Client, host: str, name: str = SESSION_COOKIE) -> str | None:
    for cookie in client.cookies.jar:
        if cookie.name == name and cookie.domain.lstrip(".") == host:
            return cookie.value
    return None


@pytest.fixture(scope="module")
def alice_cookie(env: Env) -> str:
    """A real session cookie for jenkins.test, from a login through the IdP's pages."""
    with map_hosts({"*.test": "127.0.0.1"}), env.browser() as browser:
        env.login(browser, env.url("jenkins.test", "/"))
        value = _cookie_in_jar(browser, "jenkins.test")
    assert value, "no route session after login"
    return value


def _received(upstream: SampleUpstream, path: str) -> RecordedRequest | None:
    try:
        return upstream.requests.wait_for(lambda r: r.path == path, timeout=5)
    except TimeoutError:
        return None


def _crumbs(lines: Sequence[bytes]) -> list[bytes]:
    """Every `name=value` the application could read from its Cookie header(s), splitting on
    `;` and on `,` (old parsers split on both)."""
    return [
        part.strip(b" \t")
        for line in lines
        for piece in line.split(b";")
        for part in piece.split(b",")
        if part.strip(b" \t")
    ]


def _leaked(lines: Sequence[bytes], secret: str) -> bool:
    """Any trace of authgate's cookies: one of their names in any spelling, or the value."""
    return any(b"_pomerium" in line.lower() or secret.encode() in line for line in lines)


def _hygienic(
    request: RecordedRequest | None, secret: str, want: Sequence[bytes], identity: bool
) -> bool:
    if request is None:
        return False
    lines = request.raw_header_values("cookie")
    crumbs = _crumbs(lines)
    ok = not _leaked(lines, secret) and all(c in crumbs for c in want)
    if identity:
        ok = ok and request.user is not None and request.user["username"] == ALICE
    return ok


def _detail(answer_status: int, request: RecordedRequest | None, secret: str) -> object:
    """The status, and the Cookie header lines the app got (the session value shown as <S>)."""
    if request is None:
        return (answer_status, None)
    lines = request.raw_header_values("cookie")
    return (answer_status, [line.replace(secret.encode(), b"<S>") for line in lines])


def _send_raw(
    env: Env, host: str, cookie_lines: Sequence[str], tag: str
) -> tuple[RawResponse, str]:
    """One HTTP/1.1 request with exactly these Cookie header lines (Latin-1 code points are
    written as the bytes they stand for)."""
    path = f"/{tag}/{secrets.token_hex(4)}"
    headers = [("accept", "application/json"), *(("Cookie", line) for line in cookie_lines)]
    request = build_request("GET", path.encode(), f"{host}:{env.port}", headers)
    return raw_request(env.port, env.pki.client_ssl_context(), host, request), path


def _targets(env: Env) -> list[tuple[str, SampleUpstream, bool]]:
    """(host, its upstream, whether the app must see alice): a protected and a public route."""
    return [("jenkins.test", env.jenkins, True), ("status.test", env.status, False)]


# ---------------------------------------------------------------------------- 1. hygiene


def _spellings(s: str) -> dict[str, list[str]]:
    """name -> the Cookie header lines, in order; each carries a=1 and b=2 besides ours."""
    sc = SESSION_COOKIE
    return {
        "one header, session first": [f"{sc}={s}; a=1; b=2"],
        "one header, session last": [f"a=1; b=2; {sc}={s}"],
        "two headers, session alone in the second": ["a=1; b=2", f"{sc}={s}"],
        "two headers, session alone in the first": [f"{sc}={s}", "a=1; b=2"],
        "two headers, session first in the second": ["a=1", f"{sc}={s}; b=2"],
        "session in both headers": [f"{sc}={s}; a=1", f"b=2; {sc}={s}"],
        "comma join, session last": [f"a=1,{sc}={s}; b=2"],
        "comma join, session first": [f"{sc}={s},a=1; b=2"],
        "comma join with a space": [f"a=1, {sc}={s}, b=2"],
        "space before =": [f"a=1; {sc} ={s}; b=2"],
        "tab before =": [f"a=1; {sc}\t={s}; b=2"],
        "space before = in the second header": ["a=1", f"b=2; {sc} ={s}"],
        "quoted value": [f'a=1; {sc}="{s}"; b=2'],
        "login nonce beside, two headers": [f"a=1; {LOGIN_COOKIE}={'0' * 32}", f"{sc}={s}; b=2"],
        "login nonce beside, one header": [f"a=1; {LOGIN_COOKIE}={'0' * 32}; {sc}={s}; b=2"],
        # the authenticate host's login state cookie, sent to a route host by hand
        "authenticate login cookie beside": [f"a=1; {AUTHN_LOGIN_COOKIE}=x; {sc}={s}; b=2"],
    }


@pytest.mark.parametrize("spelling", list(_spellings("S")))
def test_session_cookie_never_reaches_the_app_in_any_spelling(
    env: Env, alice_cookie: str, spelling: str
) -> None:
    lines = _spellings(alice_cookie)[spelling]
    accepted = []
    for host, upstream, identity in _targets(env):
        answer, path = _send_raw(env, host, lines, "spell")
        request = _received(upstream, path) if answer.status == 200 else None
        refused = answer.status == 200 and _hygienic(request, alice_cookie, APP_COOKIES, identity)
        if not hostile(f"cookie hygiene: {host.split('.')[0]}", refused):
            accepted.append((host, _detail(answer.status, request, alice_cookie)))
    assert not accepted, (spelling, accepted)


def _crumb_spellings(s: str) -> dict[str, list[str]]:
    """name -> the `cookie` header fields of one HTTP/2 request (RFC 9113 8.2.3 crumbs)."""
    sc = SESSION_COOKIE
    return {
        "crumbs, session between": ["a=1", f"{sc}={s}", "b=2"],
        "crumbs, session first": [f"{sc}={s}", "a=1", "b=2"],
        "crumbs, session last": ["a=1", "b=2", f"{sc}={s}"],
        "crumbs, session twice": [f"{sc}={s}", "a=1", f"{sc}={s}", "b=2"],
        "crumbs, space before =": ["a=1", f"{sc} ={s}", "b=2"],
        "crumbs, tab before =": ["a=1", f"{sc}\t={s}", "b=2"],
        "crumbs, comma join": [f"a=1,{sc}={s}", "b=2"],
        "crumbs, login nonce too": ["a=1", f"{LOGIN_COOKIE}={'0' * 32}", f"{sc}={s}", "b=2"],
    }


def test_http2_cookie_crumbs_are_cleaned_and_recognised(env: Env, alice_cookie: str) -> None:
    accepted = []
    with attack_client(env.pki.client_ssl_context(), http2=True, timeout=10) as client:
        for spelling, crumbs in _crumb_spellings(alice_cookie).items():
            for host, upstream, identity in _targets(env):
                path = f"/h2c/{secrets.token_hex(4)}"
                headers = [("accept", "application/json"), *(("cookie", c) for c in crumbs)]
                answer = client.get(env.url(host, path), headers=headers)
                assert answer.http_version == "HTTP/2"
                request = _received(upstream, path) if answer.status_code == 200 else None
                refused = answer.status_code == 200 and _hygienic(
                    request, alice_cookie, APP_COOKIES, identity
                )
                if not hostile(f"cookie hygiene: {host.split('.')[0]} over HTTP/2", refused):
                    accepted.append(
                        (spelling, host, _detail(answer.status_code, request, alice_cookie))
                    )
    assert not accepted, accepted


# ---------------------------------------------------------------------------- 2. raw bytes


NON_UTF8 = (b"x=\xff\xfe", b"y=\x80z")
# Behind an Envoy the user wrote there is no cookie filter: when authgate's cookie must be cut
# out, authz rewrites the header, and a Check answer carries UTF-8 only (README, "Bring your own
# Envoy"). The session still never reaches the app.
NON_UTF8_REPLACED = tuple(c.decode("utf-8", "replace").encode() for c in NON_UTF8)


def _byte_spellings(s: str) -> dict[str, tuple[list[str], bool]]:
    """name -> (Cookie header lines, whether they carry the session)."""
    x, y = (c.decode("latin-1") for c in NON_UTF8)
    sc = SESSION_COOKIE
    return {
        "session between": ([f"{x}; {sc}={s}; {y}"], True),
        "no session": ([f"{x}; {y}"], False),
        "split over two headers": ([f"{x}; {sc}={s}", y], True),
        "split, session alone in the second": ([f"{x}; {y}", f"{sc}={s}"], True),
    }


@pytest.mark.parametrize("spelling", list(_byte_spellings("S")))
def test_non_utf8_cookie_bytes_reach_the_app_unchanged(
    env: Env, alice_cookie: str, spelling: str
) -> None:
    lines, with_session = _byte_spellings(alice_cookie)[spelling]
    accepted = []
    for host, upstream, identity in _targets(env):
        if identity and not with_session:
            continue  # without a session the protected route never reaches the app
        answer, path = _send_raw(env, host, lines, "bytes")
        request = _received(upstream, path) if answer.status == 200 else None
        byo = env.stack.__class__.__name__ == "ByoStack"
        expected = NON_UTF8_REPLACED if byo and with_session else NON_UTF8
        refused = answer.status == 200 and _hygienic(request, alice_cookie, expected, identity)
        if not hostile("cookie bytes: non-UTF-8 reach the app unchanged", refused):
            accepted.append((host, _detail(answer.status, request, alice_cookie)))
    assert not accepted, (spelling, accepted)


# ---------------------------------------------------------------------------- 3. home page


def _authenticate_home(client: httpx.Client, env: Env) -> httpx.Response:
    return client.get(env.url("authenticate.test", "/"), headers={"accept": BROWSER_ACCEPT})


def _shown(answer: httpx.Response) -> list[str]:
    text = answer.text + answer.headers.get("location", "")
    return [host for host in ROUTE_HOSTS if host in text]


def test_authenticate_home_shows_no_route_to_an_anonymous_visitor(env: Env) -> None:
    with attack_client(env.pki.client_ssl_context(), timeout=10) as client:
        answer = _authenticate_home(client, env)
    shown = _shown(answer)
    refused = answer.status_code < 500 and not shown
    assert hostile("authenticate host: routes listed", refused), (answer.status_code, shown)


def test_authenticate_home_lists_only_routes_the_user_may_reach(env: Env) -> None:
    with env.browser() as bob:
        env.login(bob, env.url("other.test", "/"), "bob@evil.org")
        assert _cookie_in_jar(bob, "authenticate.test"), "bob is not signed in"
        answer = _authenticate_home(bob, env)
    shown = _shown(answer)
    refused = answer.status_code == 200 and "jenkins.test" not in shown
    assert hostile("authenticate host: routes listed", refused), (answer.status_code, shown)
    # control: alice may reach every route; her page answers
    with env.browser() as alice:
        env.login(alice, env.url("jenkins.test", "/"))
        assert _authenticate_home(alice, env).status_code == 200


# ---------------------------------------------------------------------------- 4. hand-offs


def _client(env: Env) -> httpx.Client:
    return attack_client(
        env.pki.client_ssl_context(),
        follow_redirects=False,
        timeout=15,
        headers={"accept": BROWSER_ACCEPT},
    )


def _sign_in_url(env: Env, client: httpx.Client) -> str:
    """Open jenkins.test without a session: the sign-in URL (the client keeps its nonce)."""
    first = client.get(env.url("jenkins.test", f"/want/{secrets.token_hex(4)}"))
    assert first.status_code == 302, first.status_code
    location = first.headers["location"]
    assert location.startswith(env.url("authenticate.test", "/.pomerium/sign_in?req="))
    assert _cookie_in_jar(client, "jenkins.test", LOGIN_COOKIE)
    return location


def _hand_off_url(env: Env, signed_in: httpx.Client, sign_in_url: str) -> str:
    """A signed-in browser opens a sign-in URL: the authenticate host hands off at once."""
    answer = signed_in.get(sign_in_url)
    assert answer.status_code == 302, answer.status_code
    location = answer.headers["location"]
    assert location.startswith(env.url("jenkins.test", "/.pomerium/callback?handoff="))
    return location


def _sets_session(answer: httpx.Response) -> bool:
    return any(
        v.startswith(f"{SESSION_COOKIE}=") and not v.startswith(f"{SESSION_COOKIE}=;")
        for v in answer.headers.get_list("set-cookie")
    )


def _reaches_app_as_alice(env: Env, client: httpx.Client) -> bool:
    path = f"/as-victim/{secrets.token_hex(4)}"
    answer = client.get(env.url("jenkins.test", path), headers={"accept": "application/json"})
    return answer.status_code == 200 or any(
        r.path == path and r.user is not None and r.user["username"] == ALICE
        for r in env.jenkins.requests.snapshot()
    )


@pytest.mark.parametrize("victim_nonce", ["victim's own nonce", "no nonce"])
def test_hand_off_refused_to_the_victim_is_spent_for_the_attacker(
    env: Env, victim_nonce: str
) -> None:
    """Eve keeps her sign-in URL and nonce; signed-in alice opens that URL, and her browser
    presents the hand-off (400: not her nonce). Eve then presents it with her nonce."""
    with _client(env) as attacker, env.browser() as victim:
        sign_in = _sign_in_url(env, attacker)
        if victim_nonce == "no nonce":
            env.login(victim, env.url("jenkins.test", "/"))  # the callback clears her nonce
            victim.follow_redirects = False
            assert not _cookie_in_jar(victim, "jenkins.test", LOGIN_COOKIE)
        else:
            env.login(victim, env.url("other.test", "/"))
            victim.follow_redirects = False
            _sign_in_url(env, victim)  # her own sign-in to jenkins.test is under way
        hand_off = _hand_off_url(env, victim, sign_in)
        at_victim = victim.get(hand_off)
        assert at_victim.status_code == 400, at_victim.status_code
        assert not _sets_session(at_victim)

        stolen = attacker.get(hand_off)
        got_session = _sets_session(stolen) or bool(_cookie_in_jar(attacker, "jenkins.test"))
        refused = (
            stolen.status_code == 400
            and not got_session
            and not _reaches_app_as_alice(env, attacker)
        )
    assert hostile("hand-off: redeemed after a refused presentation", refused), (
        victim_nonce,
        stolen.status_code,
        stolen.headers.get_list("set-cookie"),
    )


def test_hand_off_refused_for_a_wrong_nonce_stays_spent_on_every_worker(env: Env) -> None:
    """The same browser's hand-off, presented first with a wrong nonce, then with the right one;
    several times, so the two presentations land on different workers (the stack has two)."""
    with env.browser() as browser:
        env.login(browser, env.url("other.test", "/"))  # signed in at the authenticate host
        browser.follow_redirects = False
        with _client(env) as stranger:
            for attempt in range(5):
                browser.cookies.delete(SESSION_COOKIE, domain="jenkins.test")
                hand_off = _hand_off_url(env, browser, _sign_in_url(env, browser))
                stranger.cookies.set(
                    LOGIN_COOKIE, secrets.token_hex(16), domain="jenkins.test", path="/"
                )
                wrong = stranger.get(hand_off)
                assert wrong.status_code == 400 and not _sets_session(wrong), attempt
                right = browser.get(hand_off)
                refused = right.status_code == 400 and not _sets_session(right)
                assert hostile("hand-off: redeemed after a refused presentation", refused), (
                    attempt,
                    right.status_code,
                )
        # control: presented first with the right nonce, a hand-off signs in, once
        browser.cookies.delete(SESSION_COOKIE, domain="jenkins.test")
        hand_off = _hand_off_url(env, browser, _sign_in_url(env, browser))
        first = browser.get(hand_off)
        assert first.status_code == 302 and _sets_session(first)
        again = browser.get(hand_off)
        assert again.status_code == 400 and not _sets_session(again)
