"""Session fixation and cross-site request forgery, through the real stack and IdP.

* Values planted in the browser before login (a session cookie with a chosen session id, a login
  nonce, login state) never survive the login.
* Login CSRF: an attacker's own hand-off URL or OAuth callback, opened in a victim's browser,
  signs the victim in as nobody.
* Sign-out CSRF: no forged request, cross-site or with a stolen, aged or misplaced token, ends a
  session, on a route host or on the authenticate host.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import httpx
import pytest

from authgate.session.reference import SessionRef
from tests.integration.attack_kit import (
    AUTHN_LOGIN_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    HostileStack,
    Mint,
    query_param,
)
from tests.security_summary import hostile
from tests.support.idp_login import submit_idp_login

pytestmark = pytest.mark.usefixtures("hostile_stays_healthy")

SESSION = "authgate session reference v2"  # the session cookie: a reference to a stored session
CSRF = "authgate csrf v1"
SIGN_OUT = "authgate sign-out v1"


def _cookie(client: httpx.Client, host: str, name: str = SESSION_COOKIE) -> str | None:
    for cookie in client.cookies.jar:
        if cookie.name == name and cookie.domain.lstrip(".") == host:
            return cookie.value
    return None


def _clears_session(response: httpx.Response) -> bool:
    return any(
        v.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" in v
        for r in [*response.history, response]
        for v in r.headers.get_list("set-cookie")
    )


def _sid(mint: Mint, cookie: str | None, netloc: str) -> str | None:
    """The session id a session cookie names (its reference), or None."""
    ref = mint.refs.decode(cookie or "", netloc)
    return ref.sid if ref else None


# ---------------------------------------------------------------------------- fixation


def test_values_planted_before_login_never_survive_it(hostile_stack: HostileStack) -> None:
    stack, mint = hostile_stack, hostile_stack.mint
    route, authn = stack.netloc("any.test"), stack.netloc("authenticate.test")
    now = int(time.time())
    chosen = "attacker-chosen-sid"
    # A reference (sealed as the stack seals one) naming the attacker's chosen session id, aged.
    aged = SessionRef(chosen, now - 7200, now - 1).to_wire()
    planted = {
        ("any.test", SESSION_COOKIE): mint.box(SESSION).seal(aged, route),
        ("authenticate.test", SESSION_COOKIE): mint.box(SESSION).seal(aged, authn),
        ("any.test", LOGIN_COOKIE): "a" * 32,
        ("authenticate.test", AUTHN_LOGIN_COOKIE): "planted-login-state",
    }
    with stack.client() as browser:
        for (host, name), value in planted.items():
            browser.cookies.set(name, value, domain=host, path="/")
        final = stack.login(browser, stack.url("any.test", "/fixation"), "eve@evil.test")
        assert final.status_code == 200
        assert final.json()["user"]["username"] == "eve@evil.test"
        after = {(h, n): _cookie(browser, h, n) for (h, n) in planted}
    route_sid = _sid(mint, after[("any.test", SESSION_COOKIE)], route)
    authn_sid = _sid(mint, after[("authenticate.test", SESSION_COOKIE)], authn)
    assert route_sid and authn_sid  # the login made real sessions ...
    outcomes = {
        "route session id": route_sid != chosen,
        "authenticate session id": authn_sid != chosen,
        "route session cookie": after[("any.test", SESSION_COOKIE)]
        != planted[("any.test", SESSION_COOKIE)],
        "login nonce": after[("any.test", LOGIN_COOKIE)] is None,  # cleared by the callback
        "login state": after[("authenticate.test", AUTHN_LOGIN_COOKIE)] is None,
    }
    for name, refused in outcomes.items():
        assert hostile("session fixation: planted value survives login", refused), name


def test_login_csrf_with_the_attackers_hand_off(hostile_stack: HostileStack) -> None:
    """Eve's own hand-off URL, opened by a victim, signs the victim in as nobody."""
    stack = hostile_stack
    with stack.client() as attacker:
        stack.login(attacker, stack.url("any.test", "/"), "eve@evil.test")
        attacker.follow_redirects = False
        first = attacker.get(stack.url("app.test", "/"))
        handoff = attacker.get(first.headers["location"]).headers["location"]
    assert "/.pomerium/callback?handoff=" in handoff
    for victim_has_nonce in (False, True):
        with stack.client(follow=False) as victim:
            if victim_has_nonce:
                victim.get(stack.url("app.test", "/"))  # the victim's own login attempt
            answer = victim.get(handoff)
            later = victim.get(stack.url("app.test", "/"), headers={"accept": "application/json"})
        refused = answer.status_code == 400 and later.status_code == 401
        assert hostile("login CSRF: attacker's hand-off", refused), (
            answer.status_code,
            later.status_code,
        )


def test_login_csrf_with_the_attackers_oauth_callback(hostile_stack: HostileStack) -> None:
    """Eve's code and state from the IdP, opened by a victim mid-login or not, sign in nobody."""
    stack = hostile_stack
    codes: list[str] = []

    def stop_at_callback(request: httpx.Request) -> None:
        if request.url.path == "/oauth2/callback":
            codes.append(str(request.url))
            raise httpx.ConnectError("stopped", request=request)

    with stack.client() as attacker:
        page = attacker.get(stack.url("any.test", "/"))
        attacker.event_hooks["request"] = [stop_at_callback]
        with pytest.raises(httpx.ConnectError):
            submit_idp_login(attacker, page, "eve@evil.test", "pw")
    (callback,) = codes
    for victim_mid_login in (False, True):
        with stack.client(follow=False) as victim:
            if victim_mid_login:
                victim.follow_redirects = True
                victim.get(stack.url("any.test", "/"))  # stops at the IdP's login page
                victim.follow_redirects = False
            answer = victim.get(callback)
            later = victim.get(stack.url("any.test", "/"), headers={"accept": "application/json"})
        refused = (
            answer.status_code == 400
            and later.status_code == 401
            and not _cookie(victim, "authenticate.test")
        )
        assert hostile("login CSRF: attacker's OAuth callback", refused), (answer.status_code,)


# ---------------------------------------------------------------------------- sign-out CSRF


@contextmanager
def _signed_in(stack: HostileStack) -> Iterator[httpx.Client]:
    with stack.client() as browser:
        stack.login(browser, stack.url("any.test", "/"), "kim@kestrel.example")
        yield browser


def _form_action(browser: httpx.Client, stack: HostileStack) -> str:
    page = browser.get(stack.url("any.test", "/.pomerium/sign_out"))
    assert page.status_code == 200
    match = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert match
    return html.unescape(match.group(1))


def _still_signed_in(browser: httpx.Client, stack: HostileStack) -> bool:
    answer = browser.get(stack.url("any.test", "/still"), headers={"accept": "application/json"})
    return answer.status_code == 200


def test_sign_out_cannot_be_forged_on_a_route_host(hostile_stack: HostileStack) -> None:
    stack = hostile_stack
    origin = stack.origin("any.test")
    mint, netloc = stack.mint, stack.netloc("any.test")
    with stack.client() as other:
        stack.login(other, stack.url("any.test", "/"), "eve@evil.test")
        eves_action = _form_action(other, stack)
    with _signed_in(stack) as victim:
        victim.follow_redirects = False
        action = _form_action(victim, stack)
        csrf = query_param(action, "csrf") or ""
        sid = _sid(mint, _cookie(victim, "any.test"), netloc)
        same_origin = {"origin": origin, "sec-fetch-site": "same-origin"}

        def with_csrf(token: str) -> str:
            return "/.pomerium/sign_out?" + urlencode({"csrf": token, "pomerium_redirect_uri": "/"})

        forgeries: dict[str, tuple[str, str, dict[str, str]]] = {
            "cross-site POST": (
                "POST",
                action,
                {"origin": "https://evil.test", "sec-fetch-site": "cross-site"},
            ),
            "same-site POST (sibling host)": (
                "POST",
                action,
                {"origin": stack.origin("app.test"), "sec-fetch-site": "same-site"},
            ),
            "Origin: null": ("POST", action, {"origin": "null"}),
            "foreign Origin only": ("POST", action, {"origin": "https://evil.test"}),
            "Origin with another port": ("POST", action, {"origin": "https://any.test:1"}),
            "Origin over http": ("POST", action, {"origin": origin.replace("https:", "http:")}),
            "no csrf token": ("POST", "/.pomerium/sign_out?pomerium_redirect_uri=/", same_origin),
            "empty csrf token": ("POST", with_csrf(""), same_origin),
            "another user's csrf token": ("POST", eves_action, same_origin),
            "csrf token for another host": (
                "POST",
                with_csrf(
                    mint.box(CSRF).seal(
                        {"sid": sid, "exp": int(time.time()) + 600}, stack.netloc("app.test")
                    )
                ),
                same_origin,
            ),
            "expired csrf token": (
                "POST",
                with_csrf(mint.box(CSRF).seal({"sid": sid, "exp": int(time.time()) - 1}, netloc)),
                same_origin,
            ),
            "csrf token sealed for sign-out": (
                "POST",
                with_csrf(
                    mint.box(SIGN_OUT).seal({"sid": sid, "exp": int(time.time()) + 600}, netloc)
                ),
                same_origin,
            ),
            "tampered csrf token": (
                "POST",
                with_csrf(csrf[:-1] + ("A" if csrf[-1] != "A" else "B")),
                same_origin,
            ),
            "csrf token twice": ("POST", action + "&" + urlencode({"csrf": csrf}), same_origin),
            "GET with the token": ("GET", action, {"sec-fetch-site": "cross-site"}),
            "PUT with the token": ("PUT", action, same_origin),
        }
        for name, (method, path, headers) in forgeries.items():
            answer = victim.request(method, stack.url("any.test", path), headers=headers)
            refused = (
                answer.status_code in (200, 403)
                and not _clears_session(answer)
                and _still_signed_in(victim, stack)
            )
            assert hostile("sign-out CSRF: route host", refused), (name, answer.status_code)
        # control: the genuine form post does sign out
        done = victim.post(stack.url("any.test", action), headers=same_origin)
        assert done.status_code == 302 and _clears_session(done)
        assert not _still_signed_in(victim, stack)


def _sign_out_request_minted_by_the_attacker(stack: HostileStack) -> str:
    """What anyone can get: a sign-out request from their own browser's sign-out form."""
    with stack.client(follow=False) as attacker:
        page = attacker.get(stack.url("any.test", "/.pomerium/sign_out"))
        action = html.unescape(re.search(r'action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
        posted = attacker.post(
            stack.url("any.test", action), headers={"origin": stack.origin("any.test")}
        )
    assert posted.status_code == 302
    url = posted.headers["location"]
    assert url.startswith(stack.url("authenticate.test", "/.pomerium/sign_out?req="))
    return url


def test_sign_out_cannot_be_forged_on_the_authenticate_host(hostile_stack: HostileStack) -> None:
    """The authenticate host's sign-out link of another browser, opened cross-site by a victim
    (a link, an auto-submitted form), does not end the victim's sign-in there."""
    stack = hostile_stack
    forged = _sign_out_request_minted_by_the_attacker(stack)
    with _signed_in(stack) as victim:
        authn_before = _cookie(victim, "authenticate.test")
        victim.follow_redirects = False
        attempts = {
            "top-level link": (
                "GET",
                {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"},
            ),
            "link without fetch metadata": ("GET", {}),
            "cross-site form POST": (
                "POST",
                {"origin": "https://evil.test", "sec-fetch-site": "cross-site"},
            ),
        }
        for name, (method, headers) in attempts.items():
            answer = victim.request(method, forged, headers=headers)
            location = answer.headers.get("location", "")
            refused = (
                answer.status_code < 500
                and not _clears_session(answer)
                and not location.startswith(stack.idp.issuer)
                and _cookie(victim, "authenticate.test") == authn_before
            )
            assert hostile("sign-out CSRF: authenticate host", refused), (
                name,
                answer.status_code,
                location,
            )
        # The victim's sign-in at the authenticate host still works: a new route host is handed
        # the session without the IdP.
        victim.follow_redirects = True
        reached = victim.get(stack.url("app.test", "/"))
        assert reached.status_code == 200 and str(reached.url) == stack.url("app.test", "/")


def test_genuine_sign_out_still_ends_the_authenticate_session(hostile_stack: HostileStack) -> None:
    """Control for the test above: the victim's own sign-out goes through everywhere."""
    stack = hostile_stack
    with _signed_in(stack) as browser:
        action = _form_action(browser, stack)
        done = browser.post(
            stack.url("any.test", action), headers={"origin": stack.origin("any.test")}
        )
        assert done.status_code < 500
        assert _cookie(browser, "authenticate.test") is None
        assert _cookie(browser, "any.test") is None


def test_foreign_sign_out_link_asks_first_and_the_answer_works(hostile_stack: HostileStack) -> None:
    """The victim who opened someone else's link sees a question; answering it on the page
    (a same-origin POST) does sign out, a cross-site POST of the same form does not."""
    stack = hostile_stack
    forged = _sign_out_request_minted_by_the_attacker(stack)
    authn_origin = stack.origin("authenticate.test")
    with _signed_in(stack) as victim:
        victim.follow_redirects = False
        page = victim.get(forged)
        assert page.status_code == 200 and "<form" in page.text
        action = html.unescape(re.search(r'action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
        assert action == forged.removeprefix(authn_origin)
        cross = victim.post(f"{authn_origin}{action}", headers={"sec-fetch-site": "cross-site"})
        assert cross.status_code == 403 and not _clears_session(cross)
        bare = victim.post(f"{authn_origin}{action}")  # neither Origin nor Fetch metadata
        assert bare.status_code == 403 and not _clears_session(bare)
        done = victim.post(
            f"{authn_origin}{action}",
            headers={"origin": authn_origin, "sec-fetch-site": "same-origin"},
        )
        assert done.status_code == 302 and _clears_session(done)
        assert done.headers["location"].startswith(stack.idp.issuer)
