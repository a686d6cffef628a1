"""Start the test OpenID Provider (``tests/idp/server.js``, oidc-provider) from Python.

Usage::

    with TestIdP(clients=[{...}]) as idp:
        idp.issuer  # "http://127.0.0.1:<port>"

    with TestIdP(test_control=True) as idp:  # IDP_TEST_CONTROL=1
        idp.set_user("alice@example.com", groups=["ops"])  # later tokens/userinfo/refresh
        idp.delete_user("bob@evil.org")  # refresh -> invalid_grant, userinfo -> 401
        idp.add_user({"email": "dan@example.com", "password": "pw", "groups": [...]})
        idp.get_user("alice@example.com")  # the current record

Requires Node.js and ``npm ci --prefix tests/idp``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote, urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
IDP_DIR = REPO_ROOT / "tests" / "idp"
SERVER_JS = IDP_DIR / "server.js"

DEFAULT_CLIENT_ID = "authgate"
DEFAULT_CLIENT_SECRET = "secret"

# Mirrors the defaults in server.js (used when ``users`` is not given).
DEFAULT_USERS: tuple[dict[str, Any], ...] = (
    {
        "email": "alice@example.com",
        "password": "alice-password",
        "name": "Alice Example",
        "groups": ["admins", "devs"],
    },
    {
        "email": "bob@evil.org",
        "password": "bob-password",
        "name": "Bob Evil",
        "groups": ["devs"],
    },
    {"email": "carol@example.com", "password": "carol-password", "name": "Carol Example"},
)


def authgate_client(port: int, secret: str = "secret") -> dict[str, object]:
    """authgate's client registration for a stack whose authenticate host is on `port`."""
    return {
        "client_id": "authgate",
        "client_secret": secret,
        "redirect_uris": [f"https://authenticate.test:{port}/oauth2/callback"],
        "post_logout_redirect_uris": [f"https://authenticate.test:{port}/.pomerium/signed_out"],
    }


class IdPStartError(RuntimeError):
    """The test IdP could not be started."""


class IdPControlError(RuntimeError):
    """A test-control request (``/__test__/...``) was refused by the test IdP."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class TestIdP:
    """Context manager running ``node tests/idp/server.js`` on 127.0.0.1.

    ``clients`` / ``users`` are passed as ``IDP_CLIENTS`` / ``IDP_USERS`` (JSON);
    ``None`` keeps the server's defaults. ``test_control=True`` sets ``IDP_TEST_CONTROL=1``
    (as does ``extra_env={"IDP_TEST_CONTROL": "1"}``), which enables the ``/__test__/``
    endpoints behind :meth:`set_user`, :meth:`delete_user`, :meth:`add_user`,
    :meth:`get_user` (and the id_token tampering of the attack tests).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        *,
        port: int = 0,
        clients: Sequence[Mapping[str, Any]] | None = None,
        users: Sequence[Mapping[str, Any]] | None = None,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        node: str | None = None,
        test_control: bool = False,
    ) -> None:
        self._port_request = port
        self._clients = clients
        self._users = users
        self._extra_env = dict(extra_env or {})
        if test_control:
            self._extra_env.setdefault("IDP_TEST_CONTROL", "1")
        self._startup_timeout = startup_timeout
        self._node = node
        self._proc: subprocess.Popen[str] | None = None
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_chunks: list[str] = []
        self._threads: list[threading.Thread] = []
        self._issuer: str | None = None
        self._port: int | None = None

    # -- public API ---------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise RuntimeError("TestIdP is not running")
        return self._issuer

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("TestIdP is not running")
        return self._port

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def stderr(self) -> str:
        """Everything the IdP wrote to stderr so far (useful when a test fails)."""
        return "".join(self._stderr_chunks)

    # -- test control (IDP_TEST_CONTROL=1) -----------------------------------

    def get_user(self, email: str) -> dict[str, Any]:
        """The user's current directory record (``sub``, ``email``, ``groups``, ...)."""
        return self._control("GET", f"/__test__/users/{quote(email, safe='')}")

    def set_user(self, email: str, **changes: Any) -> dict[str, Any]:
        """Change a user's claims for every later ID token, userinfo answer and refresh.

        ``changes`` may set ``groups`` (list of str), ``name``, ``email_verified`` (bool),
        ``preferred_username`` and ``password``; ``None`` removes the claim (``groups=None``:
        no groups claim at all). Returns the updated record.
        """
        return self._control("POST", f"/__test__/users/{quote(email, safe='')}", changes)

    def delete_user(self, email: str) -> None:
        """Delete the account: it can no longer log in, refresh-token grants for it answer
        ``invalid_grant`` and userinfo with its access tokens 401 ``invalid_token``."""
        self._control("DELETE", f"/__test__/users/{quote(email, safe='')}")

    def add_user(self, user: Mapping[str, Any]) -> dict[str, Any]:
        """Add a user at run time (same fields as ``users``: at least ``email`` and
        ``password``); returns the stored record (``sub`` defaults to the email)."""
        return self._control("POST", "/__test__/users", dict(user))

    def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        resp = httpx.request(
            method,
            f"{self.issuer}{path}",
            json=body if method == "POST" else None,
            timeout=10.0,
        )
        if resp.status_code == 404 and self._extra_env.get("IDP_TEST_CONTROL") != "1":
            raise IdPControlError(
                f"{method} {path}: 404; the test-control endpoints need TestIdP(test_control=True)",
                resp.status_code,
            )
        if not resp.is_success:
            raise IdPControlError(
                f"{method} {path}: {resp.status_code} {resp.text}", resp.status_code
            )
        result: dict[str, Any] = resp.json()
        return result

    def start(self) -> Self:
        """Start the IdP; once in a while (a loaded machine) node prints nothing before the
        timeout: one more try then, with the first try's stderr kept for the report."""
        try:
            return self._start_once()
        except IdPStartError as first:
            if "did not print READY" not in str(first):
                raise
            self._proc = None
            self._stdout_lines = queue.Queue()
            self._stderr_chunks = []
            self._threads = []
            try:
                return self._start_once()
            except IdPStartError as second:
                raise IdPStartError(f"{second}\n(first try: {first})") from None

    def _start_once(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("TestIdP already started")
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise IdPStartError(
                f"{IDP_DIR / 'node_modules'} is missing: run `npm ci --prefix tests/idp` "
                "(from the repository root) to install the test IdP's dependencies"
            )
        node = self._node or shutil.which("node")
        if node is None:
            raise IdPStartError(
                "`node` not found on PATH: Node.js (>= 20) is needed for the test IdP"
            )

        env = dict(os.environ)
        env["IDP_PORT"] = str(self._port_request)
        if self._clients is not None:
            env["IDP_CLIENTS"] = json.dumps(list(self._clients))
        if self._users is not None:
            env["IDP_USERS"] = json.dumps(list(self._users))
        env.update(self._extra_env)

        self._proc = subprocess.Popen(
            [node, str(SERVER_JS)],
            cwd=IDP_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._spawn_reader(self._proc.stdout, self._stdout_lines.put, self._stdout_lines.put)
        self._spawn_reader(self._proc.stderr, self._stderr_chunks.append, lambda _eof: None)
        try:
            self._issuer = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        port = urlsplit(self._issuer).port
        if port is None:
            self.stop()
            raise IdPStartError(f"test IdP printed an issuer without a port: {self._issuer!r}")
        self._port = port
        return self

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=2)
        self._proc = None
        self._issuer = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------

    def _spawn_reader(
        self,
        stream: IO[str],
        sink: Callable[[str], None],
        on_eof: Callable[[None], None],
    ) -> None:
        def pump() -> None:
            try:
                for line in stream:
                    sink(line)
            finally:
                on_eof(None)

        thread = threading.Thread(target=pump, name="test-idp-reader", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _wait_ready(self) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise IdPStartError(
                    f"test IdP did not print READY within {self._startup_timeout:.0f}s; "
                    f"stderr:\n{self._stderr_after_exit()}"
                )
            try:
                line = self._stdout_lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process died
                code = self._proc.wait(timeout=5)
                raise IdPStartError(
                    f"test IdP exited with code {code} before it was ready; "
                    f"stderr:\n{self._stderr_after_exit()}"
                )
            if line.startswith("READY "):
                return line.split(" ", 1)[1].strip()

    def _stderr_after_exit(self) -> str:
        # Give the stderr reader a moment to collect the last lines.
        for thread in self._threads:
            thread.join(timeout=0.5)
        return self.stderr or "(empty)"
