"""Tokens and cookies through the real stack: tampered, truncated, re-encoded, expired, foreign,
misplaced and replayed values; OAuth callbacks with a wrong or missing `state`; ID tokens the
IdP was made to spoil (alg none, another key, wrong iss/aud/nonce, expired, ...).

Each is refused with a 4xx (or a fresh login), never a 5xx, and never yields a session. Values
that only the server could make (an expired session, a hand-off for another host, ...) are
sealed with the stack's real `cookie_secret` (attack_kit.Mint), as a stolen or aged token would
be.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pytest

from tests.integration.attack_kit import (
    AUTHN_LOGIN_COOKIE,
    BROWSER_ACCEPT,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    HostileStack,
    Mint,
    build_request,
    query_param,
    raw_request,
)
from tests.security_summary import hostile
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts

pytestmark = pytest.mark.usefixtures("hostile_stays_healthy")

SIGN_IN = "authgate sign-in request v1"
LOGIN_STATE = "authgate login state v1"
HANDOFF = "authgate hand-off v1"
SIGN_OUT = "authgate sign-out v1"
CSRF = "authgate csrf v1"
SESSION = "authgate session reference v2"  # the session cookie: a reference to a stored session
PREVIOUS_SESSION = "authgate session v1"  # the releases before the store: the whole session


def _cookie(jar: httpx.Cookies, host: str, name: str = SESSION_COOKIE) -> str | None:
    for cookie in jar.jar:
        if cookie.name == name and cookie.domain.lstrip(".") == host:
            return cookie.value
    return None


def _sets_session(response: httpx.Response) -> bool:
    return any(
        v.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" not in v
        for r in [*response.history, response]
        for v in r.headers.get_list("set-cookie")
    )


@pytest.fixture(scope="module")
def eve(hostile_stack: HostileStack) -> dict[str, str]:
    """A signed-in user's real cookies: any.test's session and the authenticate host's."""
    stack = hostile_stack
    with map_hosts({"*.test": "127.0.0.1"}), stack.client() as browser:
        final = stack.login(browser, stack.url("any.test", "/"), "eve@evil.test")
        assert final.status_code == 200
        route, authn = (
            _cookie(browser.cookies, "any.test"),
            _cookie(browser.cookies, "authenticate.test"),
        )
    assert route and authn
    return {"route": route, "authn": authn}


# ---------------------------------------------------------------------------- session cookies


def _flip(value: str, index: int) -> str:
    c = value[index]
    return value[:index] + ("A" if c != "A" else "B") + value[index + 1 :]


COOKIE_MANGLES: dict[str, Callable[[str], str]] = {
    "flip first": lambda v: _flip(v, 0),
    "flip nonce": lambda v: _flip(v, 5),
    "flip middle": lambda v: _flip(v, len(v) // 2),
    "flip last": lambda v: _flip(v, len(v) - 1),
    "truncated by one": lambda v: v[:-1],
    "truncated to half": lambda v: v[: len(v) // 2],
    "truncated to 20": lambda v: v[:20],
    "one char appended": lambda v: v + "A",
    "doubled": lambda v: v + v,
    "standard base64": lambda v: v.replace("-", "+").replace("_", "/"),
    "padded": lambda v: v + "=" * (-len(v) % 4 or 4),
    "one char percent-encoded": lambda v: v[:8] + f"%{ord(v[8]):02X}" + v[9:],
    "every char percent-encoded": lambda v: "".join(f"%{ord(c):02X}" for c in v),
    "upper-cased": lambda v: v.upper(),
    "reversed": lambda v: v[::-1],
    "with spaces": lambda v: v[:10] + " " + v[10:],
    "with NUL": lambda v: v[:10] + "\x00" + v[10:],
    "non-ASCII": lambda v: v[:10] + "é" + v[10:],
    "version byte 2": lambda v: (
        base64.urlsafe_b64encode(b"\x02" + base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))[1:])
        .rstrip(b"=")
        .decode()
    ),
    "empty": lambda v: "",
    "garbage": lambda v: "x" * 200,
    "4 KB of base64": lambda v: base64.urlsafe_b64encode(os.urandom(3000)).rstrip(b"=").decode(),
    "8 KB + 1 of base64": lambda v: "A" * 8193,
    "JSON": lambda v: '{"email":"kim@kestrel.example","sid":"x"}',
    "JWT alg none": lambda v: "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImtpbUBrZXN0cmVsLmV4YW1wbGUifQ.",
}


def _minted_cookies(stack: HostileStack) -> dict[str, str]:
    """Session cookies only the server could make, each wrong in one way."""
    mint, host = stack.mint, stack.netloc("any.test")
    now = int(time.time())
    good = mint.session_ref("kim@kestrel.example")  # a live session in the stack's store
    box = mint.box(SESSION)
    revoked = mint.session_ref("kim@kestrel.example")
    mint.revoke(revoked["sid"])
    # The previous release's cookie: the whole session sealed, naming a live session.
    previous = {
        **good,
        "user": "kim@kestrel.example",
        "email": "kim@kestrel.example",
        "name": "",
        "groups": [],
        "claims": {},
    }
    out = {
        # its session has ended in the store (and the reference says so)
        "expired session": box.seal(mint.session_ref("kim@kestrel.example", now=now - 7200), host),
        "reference past its exp": box.seal({**good, "exp": now - 1}, host),
        "issued in the future": box.seal({**good, "iat": now + 3600, "exp": now + 7200}, host),
        "for another host": box.seal(good, stack.netloc("app.test")),
        "for the authenticate host": box.seal(good, stack.netloc("authenticate.test")),
        "host without port": box.seal(good, "any.test"),
        "from another cookie_secret": Mint(os.urandom(32)).box(SESSION).seal(good, host),
        "empty sid": box.seal({**good, "sid": ""}, host),
        "no sid": box.seal({k: v for k, v in good.items() if k != "sid"}, host),
        "iat as text": box.seal({**good, "iat": str(now)}, host),
        "exp as float": box.seal({**good, "exp": now + 3600.5}, host),
        "revoked session": box.seal(revoked, host),
        "session not in the store": box.seal({**good, "sid": "not-in-the-store"}, host),
        "another start of the session": box.seal({**good, "iat": good["iat"] - 1}, host),
        "previous format (whole session)": mint.box(PREVIOUS_SESSION).seal(previous, host),
        "payload is a list": _seal_any(mint, SESSION, [good], host),
        "payload is a string": _seal_any(mint, SESSION, "kim@kestrel.example", host),
        "payload is not JSON": _seal_raw(mint, SESSION, b"\xff\xfe not json", host),
    }
    for purpose in (SIGN_IN, LOGIN_STATE, HANDOFF, SIGN_OUT, CSRF):
        out[f"sealed as {purpose.split(' v1')[0].removeprefix('authgate ')}"] = mint.box(
            purpose
        ).seal(good, host)
    return out


def _seal_raw(mint: Mint, purpose: str, plain: bytes, bound_to: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from authgate.session.sealed import VERSION, derive_key

    nonce = os.urandom(12)
    sealed = AESGCM(derive_key(mint.secret, purpose)).encrypt(nonce, plain, bound_to.encode())
    return base64.urlsafe_b64encode(VERSION + nonce + sealed).rstrip(b"=").decode()


def _seal_any(mint: Mint, purpose: str, value: object, bound_to: str) -> str:
    import json

    return _seal_raw(mint, purpose, json.dumps(value).encode(), bound_to)


def _refused_without_session(stack: HostileStack, cookie_header: str) -> tuple[bool, str]:
    """As an API client and as a browser, a request with this Cookie header is not signed in.

    Sent byte for byte (UTF-8), so values no client library would send still get there."""
    path = f"/c/{os.urandom(4).hex()}"
    statuses = []
    for accept in ("application/json", BROWSER_ACCEPT):
        request = build_request(
            "GET",
            path.encode(),
            stack.netloc("any.test"),
            [("accept", accept)],
            b"cookie: " + cookie_header.encode() + b"\r\n",
        )
        statuses.append(
            raw_request(stack.port, stack.pki.client_ssl_context(), "any.test", request)
        )
    api, browser = statuses
    reached = any(r.path == path for r in stack.upstream.requests.snapshot())
    location = browser.header("location") or ""
    ok = (
        api.status in (400, 401, 431)
        and (browser.status in (400, 431) or "/.pomerium/sign_in?" in location)
        and not reached
    )
    return ok, f"{api.status}/{browser.status}"


def test_mangled_session_cookies_are_no_session(
    hostile_stack: HostileStack, eve: dict[str, str]
) -> None:
    stack = hostile_stack
    # control: the genuine cookie works
    with stack.client(accept="application/json") as api:
        assert (
            api.get(
                stack.url("any.test", "/"), headers={"cookie": f"{SESSION_COOKIE}={eve['route']}"}
            ).status_code
            == 200
        )
    failures = []
    for name, mangle in COOKIE_MANGLES.items():
        refused, detail = _refused_without_session(
            stack, f"{SESSION_COOKIE}={mangle(eve['route'])}"
        )
        if not hostile("tokens: session cookie mangled", refused):
            failures.append((name, detail))
    assert not failures
    assert stack.healthy()


def test_misplaced_and_aged_session_cookies_are_no_session(hostile_stack: HostileStack) -> None:
    stack = hostile_stack
    failures = []
    for name, value in _minted_cookies(stack).items():
        refused, detail = _refused_without_session(stack, f"{SESSION_COOKIE}={value}")
        if not hostile("tokens: session cookie sealed wrongly", refused):
            failures.append((name, detail))
    assert not failures
    # control: a correctly minted one is a session (so the minting above is faithful)
    good = stack.mint.box(SESSION).seal(
        stack.mint.session_ref("kim@kestrel.example"), stack.netloc("any.test")
    )
    with stack.client(accept="application/json") as api:
        seen = api.get(stack.url("any.test", "/"), headers={"cookie": f"{SESSION_COOKIE}={good}"})
    assert seen.status_code == 200 and seen.json()["user"]["username"] == "kim@kestrel.example"


def test_cookie_name_and_placement_tricks(hostile_stack: HostileStack, eve: dict[str, str]) -> None:
    """The session counts only under its exact name (a value that does not open is skipped:
    a client's own session after a stale one is still its session, issue 16)."""
    stack, good = hostile_stack, eve["route"]
    headers = {
        "without __Host- prefix": f"_pomerium={good}",
        "lower-case prefix": f"__host-_pomerium={good}",
        "name with trailing dot": f"{SESSION_COOKIE}.={good}",
        "login nonce cookie": f"{LOGIN_COOKIE}={good}",
        "authn login cookie": f"{AUTHN_LOGIN_COOKIE}={good}",
        "authenticate host's cookie": f"{SESSION_COOKIE}={eve['authn']}",
    }
    for name, header in headers.items():
        refused, detail = _refused_without_session(stack, header)
        assert hostile("tokens: cookie name tricks", refused), (name, detail)


# ---------------------------------------------------------------------------- hand-off tokens


def _handoff_url(stack: HostileStack, authn: str, host: str = "any.test") -> tuple[str, str]:
    """A genuine hand-off URL for `host` and the nonce cookie it is bound to."""
    with stack.client(follow=False) as browser:
        first = browser.get(stack.url(host, "/after"))
        nonce = _cookie(browser.cookies, host, LOGIN_COOKIE)
        browser.cookies.clear()
        sign_in = browser.get(
            first.headers["location"], headers={"cookie": f"{SESSION_COOKIE}={authn}"}
        )
    assert nonce and "/.pomerium/callback?handoff=" in sign_in.headers["location"]
    return sign_in.headers["location"], nonce


def _callback(
    stack: HostileStack, url: str, nonce: str | None, host: str = "any.test"
) -> httpx.Response:
    with stack.client(follow=False) as browser:
        # bytes: a cookie value may hold any octet, and UTF-8 is what a browser would send
        cookie = {"cookie": f"{LOGIN_COOKIE}={nonce}".encode()} if nonce is not None else {}
        return browser.get(
            url.replace("any.test", host, 1) if host != "any.test" else url, headers=cookie
        )


def _handoff_refused(answer: httpx.Response) -> bool:
    return answer.status_code in (400, 404) and not _sets_session(answer)


def test_hand_off_moved_or_mangled_is_refused(
    hostile_stack: HostileStack, eve: dict[str, str]
) -> None:
    stack = hostile_stack
    url, nonce = _handoff_url(stack, eve["authn"])
    token = query_param(url, "handoff") or ""
    cases = {
        "without the nonce cookie": _callback(stack, url, None),
        "with another nonce": _callback(stack, url, "0" * 32),
        "with a non-ASCII nonce": _callback(stack, url, "\u00e9" * 32),
        "on another route host": _callback(stack, url.replace("any.test", "app.test"), nonce),
        "token twice": _callback(stack, f"{url}&handoff={token}", nonce),
        "tampered": _callback(stack, url[:-1] + ("A" if url[-1] != "A" else "B"), nonce),
        "truncated": _callback(stack, url[:-10], nonce),
        "re-encoded": _callback(stack, url.replace("-", "+").replace("_", "/"), nonce),
        "on the authenticate host": _callback(
            stack, url.replace("any.test", "authenticate.test"), nonce
        ),
    }
    for name, answer in cases.items():
        assert hostile("tokens: hand-off", _handoff_refused(answer)), (name, answer.status_code)
    # The presentations above without the right nonce spent it: even the right browser is
    # now refused (a hand-off dies on its first presentation, whatever the outcome).
    assert _handoff_refused(_callback(stack, url, nonce))


def test_hand_off_is_single_use_across_workers(
    hostile_stack: HostileStack, eve: dict[str, str]
) -> None:
    """The stack has 2 workers; a dozen replays reach both (Envoy balances by least request)."""
    stack = hostile_stack
    url, nonce = _handoff_url(stack, eve["authn"])
    first = _callback(stack, url, nonce)
    assert first.status_code == 302 and _sets_session(first)  # control: genuine use works
    replays = [_callback(stack, url, nonce) for _ in range(12)]
    accepted = [r.status_code for r in replays if not _handoff_refused(r)]
    for replay in replays:
        hostile("tokens: hand-off replayed", _handoff_refused(replay))
    assert not accepted, accepted


def test_hand_off_sealed_wrongly_is_refused(hostile_stack: HostileStack) -> None:
    stack = hostile_stack
    mint, host = stack.mint, stack.netloc("any.test")
    now, nonce = int(time.time()), "n" * 32
    session = mint.session_ref("kim@kestrel.example")  # a live session in the stack's store
    revoked = mint.session_ref("kim@kestrel.example")
    mint.revoke(revoked["sid"])
    good = {"s": session, "t": stack.url("any.test", "/x"), "n": nonce, "exp": now + 60}
    box = mint.box(HANDOFF)

    def handoff(drop: str = "", bound_to: str = host, **changes: object) -> str:
        """`good` with `changes`, without `drop`, and its own jti (each token is single-use)."""
        payload = {**good, "jti": os.urandom(8).hex(), **changes}
        payload.pop(drop, None)
        return box.seal(payload, bound_to)

    tokens = {
        "expired": handoff(exp=now - 1),
        "exp as text": handoff(exp=str(now + 60)),
        "target on another host": handoff(t="https://evil.test/"),
        "target javascript:": handoff(t="javascript:alert(1)"),
        "target scheme-relative": handoff(t="//evil.test/"),
        # its session has ended in the store (and the reference says so)
        "session expired": handoff(s=mint.session_ref("kim@kestrel.example", now=now - 7200)),
        "session revoked": handoff(s=revoked),
        "session not in the store": handoff(s={**session, "sid": "not-in-the-store"}),
        "another start of the session": handoff(s={**session, "iat": session["iat"] - 1}),
        "session malformed": handoff(s={"sid": 1}),
        "session missing": handoff(drop="s"),
        "nonce missing": handoff(drop="n"),
        "for another host": handoff(
            t=stack.url("app.test", "/x"), bound_to=stack.netloc("app.test")
        ),
        "sealed as a session": mint.box(SESSION).seal({**good, "jti": "a"}, host),
        "sealed as a sign-in request": mint.box(SIGN_IN).seal({**good, "jti": "b"}, host),
        "another cookie_secret": Mint(os.urandom(32)).box(HANDOFF).seal({**good, "jti": "c"}, host),
    }
    for name, token in tokens.items():
        answer = _callback(
            stack, stack.url("any.test", f"/.pomerium/callback?handoff={token}"), nonce
        )
        assert hostile("tokens: hand-off sealed wrongly", _handoff_refused(answer)), (
            name,
            answer.status_code,
        )
    # control: the same minting with nothing wrong is accepted
    ok = _callback(stack, stack.url("any.test", f"/.pomerium/callback?handoff={handoff()}"), nonce)
    assert ok.status_code == 302 and ok.headers["location"] == stack.url("any.test", "/x")


# ---------------------------------------------------------------------------- sign-in request


def test_sign_in_requests_sealed_wrongly_are_refused(
    hostile_stack: HostileStack, eve: dict[str, str]
) -> None:
    """/.pomerium/sign_in on the authenticate host, with its session: no hand-off for these."""
    stack = hostile_stack
    mint, authn = stack.mint, stack.netloc("authenticate.test")
    now = int(time.time())
    good = {
        "t": stack.url("any.test", "/x"),
        "n": "n" * 32,
        "h": stack.netloc("any.test"),
        "exp": now + 600,
    }
    box = mint.box(SIGN_IN)
    requests = {
        "expired": box.seal({**good, "exp": now - 1}, authn),
        "unknown host": box.seal({**good, "h": "evil.test", "t": "https://evil.test/"}, authn),
        "target on another host": box.seal({**good, "t": "https://evil.test/"}, authn),
        "target on another route": box.seal({**good, "t": stack.url("app.test", "/x")}, authn),
        "nonce not a string": box.seal({**good, "n": 7}, authn),
        "bound to a route host": box.seal(good, stack.netloc("any.test")),
        "another cookie_secret": Mint(os.urandom(32)).box(SIGN_IN).seal(good, authn),
        "sealed as a hand-off": mint.box(HANDOFF).seal(good, authn),
        "garbage": "x" * 64,
        "empty": "",
    }
    with stack.client(follow=False) as browser:
        for name, token in requests.items():
            browser.cookies.clear()
            answer = browser.get(
                stack.url("authenticate.test", f"/.pomerium/sign_in?req={token}"),
                headers={"cookie": f"{SESSION_COOKIE}={eve['authn']}"},
            )
            refused = answer.status_code == 400 and "handoff" not in answer.headers.get(
                "location", ""
            )
            assert hostile("tokens: sign-in request", refused), (name, answer.status_code)
        browser.cookies.clear()
        control = browser.get(
            stack.url("authenticate.test", f"/.pomerium/sign_in?req={box.seal(good, authn)}"),
            headers={"cookie": f"{SESSION_COOKIE}={eve['authn']}"},
        )
    assert (
        control.status_code == 302 and "/.pomerium/callback?handoff=" in control.headers["location"]
    )


# ---------------------------------------------------------------------------- OAuth callback


def _start_login(stack: HostileStack, browser: httpx.Client) -> tuple[str, httpx.Response]:
    """Route -> sign-in -> the IdP's login page; returns (state sent to the IdP, IdP page)."""
    browser.follow_redirects = True
    page = browser.get(stack.url("any.test", "/"))
    assert is_idp_login_page(page)
    authorize = next(r for r in page.history if "state=" in str(r.url))
    return query_param(str(authorize.url), "state") or "", page


def _callback_params(
    stack: HostileStack, browser: httpx.Client, page: httpx.Response
) -> dict[str, str]:
    """Sign in at the IdP and stop before authgate's callback; return the code (and the IdP's
    RFC 9207 `iss`, so the cases below are refused for their state, not for a missing iss)."""
    browser.follow_redirects = True
    browser.event_hooks["request"] = []
    codes: list[dict[str, str]] = []

    def stop_at_callback(request: httpx.Request) -> None:
        if request.url.path == "/oauth2/callback":
            codes.append({k: v for k, v in request.url.params.items() if k in ("code", "iss")})
            raise httpx.ConnectError("stopped before the callback", request=request)

    browser.event_hooks["request"] = [stop_at_callback]
    with pytest.raises(httpx.ConnectError):
        submit_idp_login(browser, page, "eve@evil.test", "pw")
    browser.event_hooks["request"] = []
    return codes[0]


def test_oauth_callback_without_the_right_state_is_refused(hostile_stack: HostileStack) -> None:
    stack = hostile_stack
    callback = stack.url("authenticate.test", "/oauth2/callback")
    with stack.client() as victim, stack.client() as attacker:
        victim_state, _ = _start_login(stack, victim)
        attacker_state, attacker_page = _start_login(stack, attacker)
        attacker_code = _callback_params(stack, attacker, attacker_page)
        victim.follow_redirects = attacker.follow_redirects = False
        login_cookie = _cookie(victim.cookies, "authenticate.test", AUTHN_LOGIN_COOKIE)
        assert login_cookie
        cases = {
            "no state": (victim, {**attacker_code}),
            "empty state": (victim, {**attacker_code, "state": ""}),
            "wrong state": (victim, {**attacker_code, "state": "x" * 32}),
            "non-ASCII state": (victim, {**attacker_code, "state": "\u00e9" * 32}),
            "attacker's state in the victim's browser": (
                victim,
                {**attacker_code, "state": attacker_state},
            ),
            "state twice": (
                victim,
                [*attacker_code.items(), ("state", victim_state), ("state", victim_state)],
            ),
            "victim's state with the attacker's code (PKCE mismatch)": (
                victim,
                {**attacker_code, "state": victim_state},
            ),
            "a made-up code": (victim, {"code": "made-up", "state": victim_state}),
        }
        for name, (browser, params) in cases.items():
            answer = browser.get(callback + "?" + urlencode(params))
            refused = 400 <= answer.status_code < 500 and not _sets_session(answer)
            assert hostile("tokens: OAuth callback state/code", refused), (name, answer.status_code)
        # without any login cookie at all
        with stack.client(follow=False) as stranger:
            answer = stranger.get(
                callback + "?" + urlencode({**attacker_code, "state": attacker_state})
            )
        assert hostile(
            "tokens: OAuth callback state/code",
            answer.status_code == 400 and not _sets_session(answer),
        )
        # an aged login cookie with the right state
        aged = stack.mint.box(LOGIN_STATE).seal(
            {
                "state": "s" * 32,
                "nonce": "n",
                "pkce": "p" * 43,
                "req": {},
                "exp": int(time.time()) - 1,
            },
            stack.netloc("authenticate.test"),
        )
        with stack.client(follow=False) as stranger:
            answer = stranger.get(
                callback + "?" + urlencode({**attacker_code, "state": "s" * 32}),
                headers={"cookie": f"{AUTHN_LOGIN_COOKIE}={aged}"},
            )
        assert hostile(
            "tokens: OAuth callback state/code",
            answer.status_code == 400 and not _sets_session(answer),
        )
        # the attacker's own callback still works: the refusals came from state and PKCE checks
        attacker.follow_redirects = True
        done = attacker.get(
            callback + "?" + urlencode({**attacker_code, "state": attacker_state})
        )
        assert done.status_code == 200 and done.json()["user"]["username"] == "eve@evil.test"


def test_authorization_code_is_single_use(hostile_stack: HostileStack) -> None:
    stack = hostile_stack
    with stack.client() as browser:
        state, page = _start_login(stack, browser)
        params = _callback_params(stack, browser, page)
        url = stack.url(
            "authenticate.test", "/oauth2/callback?" + urlencode({**params, "state": state})
        )
        login_cookie = _cookie(browser.cookies, "authenticate.test", AUTHN_LOGIN_COOKIE)
        assert browser.get(url).status_code == 200
        browser.follow_redirects = False
        browser.cookies.clear()
        again = browser.get(url, headers={"cookie": f"{AUTHN_LOGIN_COOKIE}={login_cookie}"})
    refused = 400 <= again.status_code < 500 and not _sets_session(again)
    assert hostile("tokens: OAuth callback state/code", refused), again.status_code


# ---------------------------------------------------------------------------- ID tokens

ID_TOKEN_DEFECTS = [
    "alg-none",
    "alg-none-kid",
    "other-key",
    "unknown-kid",
    "embedded-jwk",
    "jku",
    "hs256-client-secret",
    "bad-signature",
    "no-signature",
    "wrong-iss",
    "wrong-aud",
    "several-aud-no-azp",
    "wrong-nonce",
    "non-ascii-nonce",
    "no-nonce",
    "expired",
    "not-yet-valid",
    "issued-in-future",
    "no-sub",
    "not-a-jwt",
    "missing",
]


@pytest.fixture
def tamper(hostile_stack: HostileStack) -> Callable[[str], None]:
    yield hostile_stack.tamper
    hostile_stack.tamper("off")


def test_idp_control_knows_every_defect(hostile_stack: HostileStack) -> None:
    modes = httpx.get(f"{hostile_stack.idp.issuer}/__test__/tamper").json()["modes"]
    assert set(ID_TOKEN_DEFECTS) | {"off"} == set(modes)


@pytest.mark.parametrize("defect", ID_TOKEN_DEFECTS)
def test_spoiled_id_token_is_refused(
    hostile_stack: HostileStack, tamper: Callable[[str], None], defect: str
) -> None:
    stack = hostile_stack
    tamper(defect)
    path = f"/idt/{defect}"
    with stack.client() as browser:
        final = stack.login(browser, stack.url("any.test", path), "eve@evil.test")
        no_session = (
            _cookie(browser.cookies, "authenticate.test") is None
            and _cookie(browser.cookies, "any.test") is None
        )
        again = browser.get(stack.url("any.test", path), follow_redirects=False)
    refused = (
        final.status_code == 401
        and "Sign-in failed" in final.text
        and no_session
        and not _sets_session(final)
        and again.status_code == 302
        and "/.pomerium/sign_in?" in again.headers["location"]
        and not any(r.path == path for r in stack.upstream.requests.snapshot())
    )
    assert hostile("tokens: ID token", refused), (defect, final.status_code, final.text[-300:])


def test_unspoiled_id_token_signs_in(
    hostile_stack: HostileStack, tamper: Callable[[str], None]
) -> None:
    """Control: with the switch off the same login works (the refusals above are the defects)."""
    tamper("off")
    with hostile_stack.client() as browser:
        final = hostile_stack.login(
            browser, hostile_stack.url("any.test", "/idt/ok"), "eve@evil.test"
        )
    assert final.status_code == 200 and final.json()["user"]["username"] == "eve@evil.test"
