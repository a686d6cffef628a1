"""`authgate login` against the real stack, Chromium doing the browser's part.

The login runs in-process with an injected "open browser" step that drives Chromium (the CLI
subprocess could not resolve *.test); the cache reuse also runs as a real `authgate login`
process, with the test names mapped inside it. Without a stack: tests/unit/test_login_cli.py.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authgate.login_cli import LoginError, load_token, login
from tests.integration.conftest import Env
from tests.support.browser import chromium_page

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.browser


@pytest.fixture
def chromium() -> Iterator[object]:
    with chromium_page() as opened:
        yield opened


def _cli_in_a_process(env: Env, cache_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`authgate login|logout` as its own process, *.test mapped there as in this one."""
    code = (
        "import sys\n"
        "from tests.support.resolve import map_hosts\n"
        "from authgate.cli import main\n"
        "with map_hosts({'*.test': '127.0.0.1'}):\n"
        "    sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "XDG_CACHE_HOME": str(cache_home)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _login_with_chromium(env: Env, page, cache: Path) -> tuple[str, list[str], str]:  # type: ignore[no-untyped-def]
    """`login()` with Chromium as the browser: alice signs in at the IdP. Returns the token, the
    URLs the "browser" was given, and what the CLI said on stderr."""
    opened: list[str] = []

    def sign_in_with_chromium(url: str) -> None:
        opened.append(url)
        page.goto(url)
        page.wait_for_selector("input[name=email]", timeout=15_000)
        assert page.url.startswith(env.idp.issuer), page.url
        page.fill("input[name=email]", "alice@example.com")
        page.fill("input[name=password]", "alice-password")
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(lambda u: u.startswith("http://127.0.0.1:"), timeout=15_000)

    err = io.StringIO()
    token = login(
        env.url("jenkins.test", "/job/x"), open_browser=sign_in_with_chromium,
        ca_file=str(env.pki.ca_file), cache=cache, timeout=30, stderr=err,
    )  # fmt: skip
    return token, opened, err.getvalue()


def _reuse(env: Env, cache: Path) -> tuple[str | None, list[str]]:
    """Another `login()`: the token it gives (None: it waited for a browser) and what it opened."""
    opened: list[str] = []
    try:
        token: str | None = login(
            env.url("jenkins.test", "/"), open_browser=opened.append,
            ca_file=str(env.pki.ca_file), cache=cache, timeout=0.3, stderr=io.StringIO(),
        )  # fmt: skip
    except LoginError:
        token = None
    return token, opened


def test_cli_login_gives_a_token_for_scripts(env: Env, chromium, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = chromium
    origin = env.url("jenkins.test", "").rstrip("/")
    cache_home = tmp_path / "cache"
    cache = cache_home / "authgate" / "tokens"
    token, opened, err = _login_with_chromium(env, page, cache)
    sign_in = env.url("authenticate.test", "/.pomerium/sign_in?req=")
    assert opened and opened[0].startswith(sign_in), opened
    assert f"Open this URL to sign in: {opened[0]}" in err
    # The browser's last page: the listener's, without the token in it.
    assert "Signed in, you can close this tab" in page.inner_text("body")
    assert token not in page.content()
    assert load_token(origin, cache) == token

    with httpx.Client(verify=env.pki.client_ssl_context(), timeout=10) as client:
        # X-Pomerium-Authorization: the app gets alice's assertion, not the token.
        env.jenkins.clear()
        ok = client.get(
            env.url("jenkins.test", "/job/x"),
            headers={"X-Pomerium-Authorization": f"Pomerium {token}"},
        )
        assert ok.status_code == 200, ok.text
        seen = env.jenkins.requests.wait_for(lambda r: r.path == "/job/x")
        assert seen.user is not None and seen.user["email"] == "alice@example.com", seen
        assert seen.header("x-pomerium-authorization") is None
        assert token not in str(seen.headers)

        # Authorization: Pomerium works too, and is not passed on either.
        env.jenkins.clear()
        ok = client.get(
            env.url("jenkins.test", "/job/y"), headers={"Authorization": f"Pomerium {token}"}
        )
        assert ok.status_code == 200, ok.text
        seen = env.jenkins.requests.wait_for(lambda r: r.path == "/job/y")
        assert seen.user is not None and seen.user["email"] == "alice@example.com"
        assert seen.header("authorization") is None

        # The app's own Basic credentials reach it byte for byte next to the token.
        basic = "Basic " + base64.b64encode(b"alice:jenkins-api-token-\xc3\xa9").decode()
        env.jenkins.clear()
        ok = client.get(
            env.url("jenkins.test", "/api/json"),
            headers={"X-Pomerium-Authorization": f"Pomerium {token}", "Authorization": basic},
        )
        assert ok.status_code == 200, ok.text
        seen = env.jenkins.requests.wait_for(lambda r: r.path == "/api/json")
        assert seen.raw_header_values("authorization") == [basic.encode()]
        assert seen.user is not None and seen.user["email"] == "alice@example.com"

        # Bound to its host: another route refuses it, as JSON for a script.
        env.other.clear()
        elsewhere = client.get(
            env.url("other.test", "/"), headers={"X-Pomerium-Authorization": f"Pomerium {token}"}
        )
        assert elsewhere.status_code == 401
        assert 'error="invalid_token"' in elsewhere.headers["www-authenticate"]
        assert elsewhere.json()["error"] == "invalid_token"
        assert not env.other.requests

        # The login endpoint sends tokens to loopback addresses only.
        refused = client.get(
            env.url("jenkins.test", "/.pomerium/api/v1/login"),
            params={"pomerium_redirect_uri": "https://evil.example/cb"},
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == "bad_request"

        # Sign out in the browser session the token came from: the token dies within a second.
        page.goto(env.url("authenticate.test", "/.pomerium/sign_out"))
        with page.expect_response(lambda r: r.request.method == "POST"):
            page.click("button[type=submit]")
        signed_out = time.monotonic()
        while True:
            dead = client.get(
                env.url("jenkins.test", "/job/z"),
                headers={"X-Pomerium-Authorization": f"Pomerium {token}"},
            )
            if dead.status_code == 401 or time.monotonic() - signed_out > 1.0:
                break
            time.sleep(0.05)
        assert dead.status_code == 401, dead.text
        assert 'error="invalid_token"' in dead.headers["www-authenticate"]
        page.wait_for_url(env.url("authenticate.test", "/.pomerium/signed_out*"), timeout=15_000)

    # The saved token is dead now, on every worker once the bound (1 s) has passed: login goes
    # to the browser again.
    time.sleep(1.0)
    again, reopened = _reuse(env, cache)
    assert again is None and len(reopened) == 1 and reopened[0].startswith(sign_in)

    # logout forgets it (a real process, exit 0 either way).
    out = _cli_in_a_process(env, cache_home, "logout", origin)
    assert out.returncode == 0 and "forgot the saved token" in out.stderr
    assert load_token(origin, cache) is None
    out = _cli_in_a_process(env, cache_home, "logout", origin)
    assert out.returncode == 0 and "no saved token" in out.stderr


def test_a_second_login_reuses_the_saved_token(env: Env, chromium, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache_home = tmp_path / "cache"
    cache = cache_home / "authgate" / "tokens"
    token, _, _ = _login_with_chromium(env, chromium, cache)
    # In-process: the probe confirms the saved token, no browser.
    again, opened = _reuse(env, cache)
    assert not opened, "the browser was opened: the probe did not accept the saved token"
    assert again == token
    # As a process: only the token on stdout.
    proc = _cli_in_a_process(
        env, cache_home, "login", f"https://JENKINS.test:{env.port}/", "--ca-file",
        str(env.pki.ca_file), "--no-browser", "--timeout", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == token + "\n"
    assert "Open this URL" not in proc.stderr
