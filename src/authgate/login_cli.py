"""`authgate login <url>` / `authgate logout <url>`: Pomerium's programmatic login from a terminal.

1. A one-shot HTTP listener on 127.0.0.1 waits for the token.
2. The route host's `/.pomerium/api/v1/login?pomerium_redirect_uri=<listener>` gives the sign-in
   URL; the user opens it in a browser (it is always printed, and opened unless told not to).
3. After the sign-in, the authenticate host sends the browser to the listener with
   `pomerium_jwt=<token>`; the token is saved per origin and printed alone on stdout, for
   `curl -H "X-Pomerium-Authorization: Pomerium $(authgate login https://app.example.com)"`.

A saved token that still works (the route's `/.pomerium/` answers 200 to it) is printed without a
browser. `logout` only forgets the saved token: ending the session itself is the browser's
sign-out (`<origin>/.pomerium/sign_out`).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import secrets
import ssl
import sys
import tempfile
import threading
import webbrowser
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import httpx

LOGIN_API_PATH = "/.pomerium/api/v1/login"
PROBE_PATH = "/.pomerium/"
TOKEN_PARAM = "pomerium_jwt"
DEFAULT_TIMEOUT_S = 300.0
HTTP_TIMEOUT_S = 15.0
MAX_TOKEN_CHARS = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}
SIGNED_IN_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Signed in</title></head>"
    "<body><h1>Signed in</h1><p>Signed in, you can close this tab.</p></body></html>"
)


class UsageError(ValueError):
    """A bad command line (exit 2)."""


class LoginError(Exception):
    """The login did not complete (exit 1); the message is for the user."""


# -- origins and the token cache ------------------------------------------------------------------


def normalise_origin(url: str) -> str:
    """`scheme://host[:port]` of a URL on the route, in one spelling per origin: lower case, IDNA,
    default port dropped. Only the origin counts (the token is bound to the host)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname or ""
    except ValueError as exc:
        raise UsageError(f"not a URL: {url!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not host:
        raise UsageError(f"not an http(s) URL: {url!r} (give one like https://app.example.com)")
    if parts.username is not None or parts.password is not None:
        raise UsageError("the URL must not carry a user name or password")
    host = host.rstrip(".")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UsageError(f"not a valid host name: {host!r}") from None
    if not host or any(c in host for c in "/\\@ ") or not host.isprintable():
        raise UsageError(f"not a valid host name: {host!r}")
    if ":" in host:  # IPv6: urlsplit dropped the brackets
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/authgate/tokens` (absolute values only, as XDG says), else
    `~/.cache/authgate/tokens`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "authgate" / "tokens"


def cache_path(origin: str, directory: Path | None = None) -> Path:
    """A hash names the file: no origin spelling can escape the directory or collide."""
    digest = hashlib.sha256(origin.encode()).hexdigest()[:32]
    return (directory or cache_dir()) / f"{digest}.json"


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask and ignored for an existing directory.
    os.chmod(directory, 0o700)


def save_token(origin: str, token: str, directory: Path | None = None) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a token; 0600 in 0700."""
    path = cache_path(origin, directory)
    _private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            json.dump({"origin": origin, "token": token}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_token(origin: str, directory: Path | None = None) -> str | None:
    try:
        data = json.loads(cache_path(origin, directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("origin") != origin:
        return None
    token = data.get("token")
    return token if isinstance(token, str) and plausible_token(token) else None


def forget_token(origin: str, directory: Path | None = None) -> bool:
    try:
        cache_path(origin, directory).unlink()
    except FileNotFoundError:
        return False
    return True


def plausible_token(token: str) -> bool:
    """Something that can go into a header: one word of printable ASCII."""
    return (
        0 < len(token) <= MAX_TOKEN_CHARS
        and token.isascii()
        and token.isprintable()
        and not any(c.isspace() for c in token)
    )


# -- the loopback listener ------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a browser dropping a connection is not the user's concern (default: a traceback)


class TokenListener:
    """A one-shot HTTP server on 127.0.0.1 that takes the first `GET <path>?pomerium_jwt=...`.

    The path is random so that a web page the user visits meanwhile cannot guess it and slip
    its own token in. Other paths and the favicon get 404; the listener logs nothing (the URL
    holds the token)."""

    def __init__(self, port: int = 0) -> None:
        self.path = f"/authgate-login/{secrets.token_urlsafe(16)}"
        self._token: str | None = None
        self._got = threading.Event()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long close() waits
            name="authgate-login-listener",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> TokenListener:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TokenListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout: float) -> str | None:
        return self._token if self._got.wait(timeout) else None

    def _claim(self, token: str) -> bool:
        with self._lock:
            if self._token is not None:
                return False
            self._token = token
            return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "authgate-login"
            sys_version = ""
            timeout = 10  # an idle preconnect from the browser must not hold a thread forever

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != listener.path:
                    self._answer(404, "Not found", "Nothing here.")
                    return
                values = parse_qs(parts.query).get(TOKEN_PARAM, [])
                if len(values) != 1 or not plausible_token(values[0]):
                    self._answer(400, "Bad request", "This is not a sign-in result.")
                    return
                if not listener._claim(values[0]):
                    self._answer(409, "Already signed in", "This sign-in is already complete.")
                    return
                try:
                    self._send(200, SIGNED_IN_PAGE)
                finally:  # only now: the CLI may exit as soon as it has the token
                    listener._got.set()

            def _answer(self, status: int, title: str, text: str) -> None:
                self._send(
                    status,
                    f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
                    f"</title></head><body><p>{html.escape(text)}</p></body></html>",
                )

            def _send(self, status: int, page: str) -> None:
                body = page.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                # The address bar holds the token: the page loads nothing and sends no referrer.
                self.send_header("Content-Security-Policy", "default-src 'none'")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the default logs the request line, token included, to stderr

        return Handler


# -- talking to the route host --------------------------------------------------------------------


def http_client(ca_file: str | None = None) -> httpx.Client:
    """TLS verified always; a private CA replaces the system ones, like curl's --cacert."""
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    return httpx.Client(verify=verify, timeout=HTTP_TIMEOUT_S, follow_redirects=False)


def token_works(client: httpx.Client, origin: str, token: str) -> bool:
    """The cheap probe: the route's identity page answers 200 to a good token (401 when it is
    expired or signed out; anything else is not a confirmation either)."""
    try:
        answer = client.get(
            origin + PROBE_PATH,
            headers={
                "X-Pomerium-Authorization": f"Pomerium {token}",
                "Accept": "application/json",
            },
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def sign_in_url(client: httpx.Client, origin: str, redirect_uri: str) -> str:
    try:
        answer = client.get(origin + LOGIN_API_PATH, params={"pomerium_redirect_uri": redirect_uri})
    except httpx.HTTPError as exc:
        raise LoginError(f"cannot reach {origin}: {exc}") from None
    if answer.status_code != 200:
        raise LoginError(
            f"{origin}{LOGIN_API_PATH} answered {answer.status_code}: {_message(answer)}"
        )
    url = answer.text.strip()
    # Only a web address goes to the browser (never file: or a program's scheme).
    if urlsplit(url).scheme not in ("https", "http") or not url.isprintable():
        raise LoginError(f"{origin}{LOGIN_API_PATH} did not answer with a sign-in URL")
    return url


def _message(answer: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        data = answer.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
    return answer.text.strip()[:200] or answer.reason_phrase


# -- the browser ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The browser (or xdg-open) inherits our stdout: point it at stderr meanwhile, or its
    chatter lands in `$(authgate login ...)` and the shell waits for the browser to exit."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def open_in_browser(url: str) -> bool:
    with _stdout_to_stderr():
        return webbrowser.open(url)


# -- the commands ---------------------------------------------------------------------------------


def login(
    url: str,
    *,
    open_browser: Callable[[str], object] | None = open_in_browser,
    port: int = 0,
    ca_file: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    cache: Path | None = None,
    client: httpx.Client | None = None,
    stderr: TextIO | None = None,
) -> str:
    """A token for the origin of `url`: the saved one if it still works, else a new one from a
    browser sign-in (saved). Raises UsageError for a bad URL, LoginError when it fails."""
    err = stderr or sys.stderr
    origin = normalise_origin(url)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535, not {port}")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    if ca_file is not None and not Path(ca_file).is_file():
        raise UsageError(f"--ca-file {ca_file}: no such file")
    own_client = client is None
    http = client or http_client(ca_file)
    try:
        saved = load_token(origin, cache)
        if saved is not None:
            if token_works(http, origin, saved):
                print(f"authgate: using the saved token for {origin}", file=err)
                return saved
            print(f"authgate: the saved token for {origin} no longer works; signing in", file=err)
        token = _browser_login(http, origin, open_browser, port, timeout, err)
    finally:
        if own_client:
            http.close()
    try:
        save_token(origin, token, cache)
    except OSError as exc:  # the token is still good for this run
        print(f"authgate: could not save the token: {exc}", file=err)
    return token


def _browser_login(
    http: httpx.Client,
    origin: str,
    open_browser: Callable[[str], object] | None,
    port: int,
    timeout: float,
    err: TextIO,
) -> str:
    try:
        listener = TokenListener(port)
    except OSError as exc:
        raise LoginError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    with listener:
        url = sign_in_url(http, origin, listener.redirect_uri)
        print(f"Open this URL to sign in: {url}", file=err, flush=True)
        if open_browser is not None:
            try:
                opened = open_browser(url)
            except Exception as exc:  # the printed URL still works
                print(
                    f"authgate: could not open a browser ({exc}); open the URL yourself", file=err
                )
            else:
                if opened is False:  # webbrowser found none (a server over ssh, say)
                    print("authgate: no browser found; open the URL yourself", file=err)
        token = listener.wait(timeout)
    if token is None:
        raise LoginError(f"no sign-in completed within {timeout:g} s")
    return token


def logout(url: str, *, cache: Path | None = None, stderr: TextIO | None = None) -> bool:
    """Forget the saved token of the origin of `url`; True if there was one."""
    err = stderr or sys.stderr
    origin = normalise_origin(url)
    if forget_token(origin, cache):
        print(f"authgate: forgot the saved token for {origin}", file=err)
        return True
    print(f"authgate: no saved token for {origin}", file=err)
    return False
