"""`authgate login` / `logout` without a stack: origins, the token cache, the loopback listener
(real HTTP on 127.0.0.1), and the login flow against a mocked route host.

Against the real stack and a real browser: tests/integration/test_cli_login.py.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authgate import cli
from authgate.login_cli import (
    LoginError,
    TokenListener,
    UsageError,
    cache_dir,
    cache_path,
    forget_token,
    load_token,
    login,
    logout,
    normalise_origin,
    open_in_browser,
    save_token,
)

SIGN_IN = "https://authenticate.example.com/.pomerium/sign_in?req=sealed"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- origins --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://jenkins.example.com",
        "https://Jenkins.Example.com:443/",
        "HTTPS://JENKINS.EXAMPLE.COM/job/x?y=1#z",
        "https://jenkins.example.com./",
        "  https://jenkins.example.com  ",
    ],
)
def test_spellings_of_one_origin_are_one_entry(url: str, tmp_path: Path) -> None:
    assert normalise_origin(url) == "https://jenkins.example.com"
    assert cache_path(normalise_origin(url), tmp_path) == cache_path(
        "https://jenkins.example.com", tmp_path
    )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://jenkins.example.com:8443/", "https://jenkins.example.com:8443"),
        ("http://app.test:80", "http://app.test"),
        ("http://app.test:443", "http://app.test:443"),
        ("https://[::1]:8443/x", "https://[::1]:8443"),
        ("https://bücher.example/", "https://xn--bcher-kva.example"),
    ],
)
def test_origin_keeps_what_matters(url: str, origin: str) -> None:
    assert normalise_origin(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        "jenkins.example.com",
        "ftp://jenkins.example.com",
        "https://",
        "https://user:pw@jenkins.example.com",
        "https://jenkins.example.com:99999",
        "https://[::1",
        "file:///etc/passwd",
    ],
)
def test_bad_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        normalise_origin(url)


def test_different_hosts_and_ports_are_different_entries(tmp_path: Path) -> None:
    paths = {
        cache_path(normalise_origin(u), tmp_path)
        for u in ("https://a.test", "https://b.test", "https://a.test:8443", "http://a.test")
    }
    assert len(paths) == 4


# -- the cache ------------------------------------------------------------------------------------


def test_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "authgate" / "tokens"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = tmp_path / "home" / ".cache" / "authgate" / "tokens"
    assert cache_dir({}) == home_cache
    # XDG: a relative value is ignored.
    assert cache_dir({"XDG_CACHE_HOME": "relative/cache"}) == home_cache


def test_cache_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    old = os.umask(0)  # the modes must not depend on the user's umask
    try:
        path = save_token("https://jenkins.example.com", "tok-1", tmp_path / "authgate" / "tokens")
    finally:
        os.umask(old)
    assert path.parent == tmp_path / "authgate" / "tokens"
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
    assert path.name.endswith(".json") and "jenkins" not in path.name
    assert load_token("https://jenkins.example.com", path.parent) == "tok-1"


def test_a_loose_existing_directory_is_tightened(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o755)
    os.chmod(tokens, 0o755)
    save_token("https://a.test", "tok", tokens)
    assert _mode(tokens) == 0o700


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = "https://jenkins.example.com"
    path = save_token(origin, "old-token", tmp_path)
    before = path.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_token(origin, "new-token", tmp_path)
    # The old entry is untouched and no temporary file is left behind.
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    monkeypatch.undo()
    # A replace over an existing entry: the new file (a new inode), never a rewrite in place.
    inode = path.stat().st_ino
    save_token(origin, "new-token", tmp_path)
    assert path.stat().st_ino != inode
    assert load_token(origin, tmp_path) == "new-token"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_load_ignores_junk_and_other_origins(tmp_path: Path) -> None:
    origin = "https://a.test"
    assert load_token(origin, tmp_path) is None
    path = cache_path(origin, tmp_path)
    path.write_text("{not json")
    assert load_token(origin, tmp_path) is None
    path.write_text(json.dumps({"origin": "https://b.test", "token": "tok"}))
    assert load_token(origin, tmp_path) is None
    path.write_text(json.dumps({"origin": origin, "token": "two words"}))
    assert load_token(origin, tmp_path) is None


def test_forget(tmp_path: Path) -> None:
    save_token("https://a.test", "tok", tmp_path)
    assert forget_token("https://a.test", tmp_path)
    assert not forget_token("https://a.test", tmp_path)
    assert load_token("https://a.test", tmp_path) is None


# -- the listener ---------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[TokenListener]:
    with TokenListener() as one:
        yield one


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=5) as client:
        return client.get(url)


def test_listener_is_on_loopback_with_a_random_path(listener: TokenListener) -> None:
    assert listener.redirect_uri.startswith(f"http://127.0.0.1:{listener.port}/authgate-login/")
    with TokenListener() as other:
        assert other.path != listener.path


def test_listener_takes_one_token_and_ignores_junk(listener: TokenListener) -> None:
    base = f"http://127.0.0.1:{listener.port}"
    assert _get(f"{base}/favicon.ico").status_code == 404
    assert _get(f"{base}/?pomerium_jwt=wrong-path").status_code == 404
    assert _get(f"{base}{listener.path}x?pomerium_jwt=wrong-path").status_code == 404
    assert _get(base + listener.path).status_code == 400
    assert _get(f"{base}{listener.path}?pomerium_jwt=").status_code == 400
    assert _get(f"{base}{listener.path}?pomerium_jwt=a&pomerium_jwt=b").status_code == 400
    assert _get(f"{base}{listener.path}?pomerium_jwt=has%20space").status_code == 400
    assert listener.wait(0.05) is None
    good = _get(f"{listener.redirect_uri}?pomerium_jwt=the-token.1")
    assert good.status_code == 200
    assert "Signed in, you can close this tab" in good.text
    assert "the-token" not in good.text
    assert good.headers["cache-control"] == "no-store"
    assert good.headers["referrer-policy"] == "no-referrer"
    # One shot: a second token is refused and the first stays.
    assert _get(f"{listener.redirect_uri}?pomerium_jwt=another").status_code == 409
    assert listener.wait(1) == "the-token.1"


def test_listener_logs_nothing(listener: TokenListener, capsys: pytest.CaptureFixture[str]) -> None:
    _get(f"{listener.redirect_uri}?pomerium_jwt=secret-token")
    _get(f"http://127.0.0.1:{listener.port}/junk")
    assert listener.wait(1) == "secret-token"
    out, err = capsys.readouterr()
    assert "secret-token" not in out + err and "junk" not in err


def test_an_idle_connection_does_not_block_the_token(listener: TokenListener) -> None:
    # Browsers open connections speculatively and may send nothing on them.
    with socket.create_connection(("127.0.0.1", listener.port)):
        assert _get(f"{listener.redirect_uri}?pomerium_jwt=tok").status_code == 200
    assert listener.wait(1) == "tok"


def test_listener_on_a_given_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with TokenListener(port) as one:
        assert one.port == port


# -- the flow, against a mocked route host --------------------------------------------------------


class FakeRouteHost:
    """The route host's two endpoints; the "browser" goes straight to the listener."""

    def __init__(self, good_tokens: set[str], login_status: int = 200) -> None:
        self.good = good_tokens
        self.login_status = login_status
        self.redirect_uris: list[str] = []
        self.probes: list[httpx.Request] = []
        self.opened: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == "jenkins.example.com"
        if request.url.path == "/.pomerium/api/v1/login":
            self.redirect_uris.append(request.url.params["pomerium_redirect_uri"])
            if self.login_status != 200:
                return httpx.Response(
                    self.login_status, json={"error": "bad_request", "message": "no such route"}
                )
            return httpx.Response(200, text=SIGN_IN + "\n")
        if request.url.path == "/.pomerium/":
            self.probes.append(request)
            value = request.headers.get("x-pomerium-authorization", "")
            ok = value.removeprefix("Pomerium ") in self.good
            return httpx.Response(200 if ok else 401, json={})
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def browser(self, token: str | None) -> object:
        def open_browser(url: str) -> bool:
            self.opened.append(url)
            if token is not None:
                _get(f"{self.redirect_uris[-1]}?pomerium_jwt={token}")
            return True

        return open_browser


def test_login_signs_in_then_reuses_the_saved_token(tmp_path: Path) -> None:
    host = FakeRouteHost({"tok-A"})
    err = io.StringIO()
    with host.client() as client:
        token = login(
            "https://Jenkins.Example.com:443/job/x",
            open_browser=host.browser("tok-A"),  # type: ignore[arg-type]
            cache=tmp_path,
            client=client,
            stderr=err,
        )
        assert token == "tok-A"
        assert host.opened == [SIGN_IN]
        assert f"Open this URL to sign in: {SIGN_IN}" in err.getvalue()
        assert host.redirect_uris[0].startswith("http://127.0.0.1:")
        assert load_token("https://jenkins.example.com", tmp_path) == "tok-A"
        # Again: the probe says the saved token works, no browser.
        again = login(
            "https://jenkins.example.com",
            open_browser=host.browser(None),  # type: ignore[arg-type]
            cache=tmp_path,
            client=client,
            stderr=io.StringIO(),
        )
    assert again == "tok-A"
    assert host.opened == [SIGN_IN]
    probe = host.probes[-1]
    assert probe.headers["x-pomerium-authorization"] == "Pomerium tok-A"
    assert probe.headers["accept"] == "application/json"


def test_a_dead_saved_token_means_a_new_login(tmp_path: Path) -> None:
    save_token("https://jenkins.example.com", "revoked", tmp_path)
    host = FakeRouteHost({"fresh"})
    err = io.StringIO()
    with host.client() as client:
        token = login(
            "https://jenkins.example.com",
            open_browser=host.browser("fresh"),  # type: ignore[arg-type]
            cache=tmp_path,
            client=client,
            stderr=err,
        )
    assert token == "fresh" and len(host.opened) == 1
    assert "no longer works" in err.getvalue()
    assert load_token("https://jenkins.example.com", tmp_path) == "fresh"


def test_no_browser_still_prints_the_url_and_times_out(tmp_path: Path) -> None:
    host = FakeRouteHost(set())
    err = io.StringIO()
    with host.client() as client, pytest.raises(LoginError, match=r"within 0\.2 s"):
        login(
            "https://jenkins.example.com",
            open_browser=None,
            timeout=0.2,
            cache=tmp_path,
            client=client,
            stderr=err,
        )
    assert f"Open this URL to sign in: {SIGN_IN}" in err.getvalue()
    assert not list(tmp_path.iterdir())


def test_the_route_hosts_refusal_is_the_message(tmp_path: Path) -> None:
    host = FakeRouteHost(set(), login_status=400)
    with host.client() as client, pytest.raises(LoginError, match="400: no such route"):
        login(
            "https://jenkins.example.com",
            open_browser=host.browser("x"),  # type: ignore[arg-type]
            cache=tmp_path,
            client=client,
            stderr=io.StringIO(),
        )
    assert host.opened == []


def test_a_broken_browser_is_not_fatal(tmp_path: Path) -> None:
    host = FakeRouteHost(set())

    def opener(url: str) -> None:
        _get(f"{host.redirect_uris[-1]}?pomerium_jwt=tok")
        raise RuntimeError("no display")

    err = io.StringIO()
    with host.client() as client:
        token = login(
            "https://jenkins.example.com",
            open_browser=opener,
            cache=tmp_path,
            client=client,
            stderr=err,
        )
    assert token == "tok" and "could not open a browser" in err.getvalue()


def test_logout_forgets(tmp_path: Path) -> None:
    save_token("https://jenkins.example.com", "tok", tmp_path)
    err = io.StringIO()
    assert logout("https://JENKINS.example.com:443", cache=tmp_path, stderr=err)
    assert "forgot the saved token for https://jenkins.example.com" in err.getvalue()
    assert not logout("https://jenkins.example.com", cache=tmp_path, stderr=err)
    assert "no saved token" in err.getvalue()


# -- the command line -----------------------------------------------------------------------------


def test_cli_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.main(["login", "not-a-url"]) == 2
    assert cli.main(["login", "https://a.test", "--timeout", "0"]) == 2
    assert cli.main(["login", "https://a.test", "--ca-file", str(tmp_path / "nope.pem")]) == 2
    assert cli.main(["logout", "https://a.test"]) == 0
    save_token("https://a.test", "tok", tmp_path / "authgate" / "tokens")
    assert cli.main(["logout", "https://A.test/"]) == 0
    assert load_token("https://a.test", tmp_path / "authgate" / "tokens") is None
    # A host that does not answer: exit 1, stdout stays empty.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert cli.main(["login", f"https://127.0.0.1:{port}", "--no-browser"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "cannot reach https://127.0.0.1:" in err


def test_no_browser_found_is_said(tmp_path: Path) -> None:
    host = FakeRouteHost(set())

    def none_found(url: str) -> bool:
        _get(f"{host.redirect_uris[-1]}?pomerium_jwt=tok")
        return False

    err = io.StringIO()
    with host.client() as client:
        assert (
            login(
                "https://jenkins.example.com",
                open_browser=none_found,
                cache=tmp_path,
                client=client,
                stderr=err,
            )
            == "tok"
        )
    assert "no browser found; open the URL yourself" in err.getvalue()


def test_the_browser_process_writes_to_stderr_not_stdout(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Whatever the browser prints must not end up in $(authgate login ...).
    def chatty_browser(url: str) -> bool:
        subprocess.run(["echo", f"opening {url}"], check=True)
        return True

    monkeypatch.setattr(webbrowser, "open", chatty_browser)
    assert open_in_browser("https://authenticate.example.com/x")
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n"
    assert "opening https://authenticate.example.com/x" in err
