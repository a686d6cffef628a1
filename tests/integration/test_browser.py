"""A real browser (Debian's Chromium via Playwright) logs in and comes back to the first URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Env
from tests.support.browser import chromium_page

pytestmark = pytest.mark.browser


@pytest.fixture
def page(env: Env, tmp_path: Path) -> Iterator[object]:
    with chromium_page() as opened:
        yield opened


def _idp_login(env: Env, page, email: str, lands_on: str) -> None:  # type: ignore[no-untyped-def]
    """On the IdP's real login page: type the user's credentials, wait to land on `lands_on`."""
    page.wait_for_selector("input[name=email]", timeout=15_000)
    assert page.url.startswith(env.idp.issuer), page.url
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", email.split("@")[0] + "-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lands_on, timeout=15_000)


def _upstream_user(page) -> str:  # type: ignore[no-untyped-def]
    return str(json.loads(page.inner_text("body"))["user"]["username"])


def _csp_violations(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Collect what the browser's console says about blocked navigations from now on."""
    seen: list[str] = []
    page.on(
        "console",
        lambda msg: seen.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return seen


def test_browser_login_returns_to_first_url(env: Env, page) -> None:  # type: ignore[no-untyped-def]
    first = env.url("jenkins.test", "/job/demo/?tab=console")
    page.goto(first)
    # The IdP's real login page.
    _idp_login(env, page, "alice@example.com", first)
    seen = json.loads(page.inner_text("body"))
    assert seen["user"]["username"] == "alice@example.com", seen
    assert seen["path"] == "/job/demo/?tab=console"
    cookies = {c["name"]: c for c in page.context.cookies(env.url("jenkins.test"))}
    session = cookies["__Host-_pomerium"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    # The identity page shows who is signed in.
    page.goto(env.url("jenkins.test", "/.pomerium/"))
    assert "alice@example.com" in page.inner_text("body")


def test_sign_out_on_a_route_host_ends_the_session_and_switches_account(  # type: ignore[no-untyped-def]
    env: Env, page
) -> None:
    blocked = _csp_violations(page)
    app = env.url("jenkins.test", "/job/after/")
    page.goto(app)
    _idp_login(env, page, "alice@example.com", app)
    assert _upstream_user(page) == "alice@example.com"
    page.goto(env.url("jenkins.test", "/.pomerium/sign_out?pomerium_redirect_uri=/job/after/"))
    page.click("button[type=submit]")
    # Route host -> authenticate host -> the IdP's logout (its page submits itself) -> back to
    # the route, which now has no session: the IdP asks for a login again.
    page.wait_for_selector("input[name=email]", timeout=15_000)
    assert page.url.startswith(env.idp.issuer), page.url
    assert not blocked, blocked
    assert "__Host-_pomerium" not in {c["name"] for c in page.context.cookies(app)}
    # Another account signs in on the same browser.
    _idp_login(env, page, "carol@example.com", app)
    assert _upstream_user(page) == "carol@example.com"


def test_sign_out_on_the_authenticate_host(env: Env, page) -> None:  # type: ignore[no-untyped-def]
    blocked = _csp_violations(page)
    app = env.url("jenkins.test", "/")
    page.goto(app)
    _idp_login(env, page, "alice@example.com", app)
    page.goto(env.url("authenticate.test", "/.pomerium/sign_out"))
    page.click("button[type=submit]")
    page.wait_for_url(env.url("authenticate.test", "/.pomerium/signed_out*"), timeout=15_000)
    assert "You are signed out" in page.inner_text("body")
    assert not blocked, blocked
    authn = env.url("authenticate.test", "/")
    assert "__Host-_pomerium" not in {c["name"] for c in page.context.cookies(authn)}
    # A route host this browser has no cookie for needs a new IdP login now.
    other = env.url("other.test", "/")
    page.goto(other)
    _idp_login(env, page, "bob@evil.org", other)
    assert _upstream_user(page) == "bob@evil.org"


def test_a_second_route_host_signs_in_through_the_hand_off(env: Env, page) -> None:  # type: ignore[no-untyped-def]
    first = env.url("jenkins.test", "/")
    page.goto(first)
    _idp_login(env, page, "alice@example.com", first)
    # No IdP page this time: the authenticate host hands the session to the new host.
    other = env.url("other.test", "/x")
    page.goto(other)
    page.wait_for_url(other, timeout=15_000)
    assert _upstream_user(page) == "alice@example.com"


def test_access_denied_page_names_the_request_and_offers_another_account(  # type: ignore[no-untyped-def]
    env: Env, page
) -> None:
    blocked = _csp_violations(page)
    app = env.url("jenkins.test", "/job/secret/")
    page.goto(app)
    _idp_login(env, page, "bob@evil.org", app)
    assert "Access denied" in page.inner_text("h1")
    request_id = page.inner_text("code")
    assert len(request_id) >= 16, request_id
    # authgate's log line for this refusal carries the same id, the user and the rule.
    denied = [
        json.loads(line)
        for line in env.stack.log().splitlines()
        if line.startswith("{") and request_id in line
    ]
    assert [(d["event"], d["user"], d["outcome"]) for d in denied] == [
        ("decision", "bob@evil.org", "deny")
    ], denied
    assert denied[0]["rule"]
    # "Who am I signed in as?" shows the session, with its claims for `authgate explain`.
    page.click("text=Who am I signed in as?")
    page.wait_for_url(env.url("jenkins.test", "/.pomerium/"), timeout=15_000)
    assert "bob@evil.org" in page.inner_text("table")
    page.click("summary")  # "Claims as JSON" opens
    claims = json.loads(page.inner_text("pre"))
    assert claims["email"] == "bob@evil.org" and claims["groups"] == ["devs"]
    # "Use another account": sign out, through the IdP, back to the page that was refused.
    page.go_back()
    page.click("text=Use another account")
    page.click("button[type=submit]")
    _idp_login(env, page, "alice@example.com", app)
    assert _upstream_user(page) == "alice@example.com"
    assert not blocked, blocked
