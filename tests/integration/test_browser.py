"""A real browser (Debian's Chromium via Playwright) logs in and comes back to the first URL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.browser


@pytest.fixture
def page(env: Env, tmp_path: Path) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make system-deps`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                # Map the test hostnames inside the browser, not in /etc/hosts.
                "--host-resolver-rules=MAP *.test 127.0.0.1",
            ],
        )
        context = browser.new_context(ignore_https_errors=True)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_browser_login_returns_to_first_url(env: Env, page) -> None:  # type: ignore[no-untyped-def]
    first = env.url("jenkins.test", "/job/demo/?tab=console")
    page.goto(first)
    # The IdP's real login page.
    page.wait_for_selector("input[name=email]", timeout=15_000)
    assert page.url.startswith(env.idp.issuer)
    page.fill("input[name=email]", "alice@example.com")
    page.fill("input[name=password]", "alice-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(first, timeout=15_000)
    seen = json.loads(page.inner_text("body"))
    assert seen["user"]["username"] == "alice@example.com", seen
    assert seen["path"] == "/job/demo/?tab=console"
    cookies = {c["name"]: c for c in page.context.cookies(env.url("jenkins.test"))}
    session = cookies["__Host-_pomerium"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    # The identity page shows who is signed in.
    page.goto(env.url("jenkins.test", "/.pomerium/"))
    assert "alice@example.com" in page.inner_text("body")
