"""A STAND-IN for Jenkins, NOT Jenkins: only the two endpoints `authgate doctor` asks.

- `GET /`: 200 with `X-Jenkins: 2.479` (a real Jenkins sends X-Jenkins on every answer,
  403 pages included);
- `GET /whoAmI/api/json`: the JSON of Jenkins' hudson.security.WhoAmI (`_class`, `anonymous`,
  `authenticated`, `name`, `details`, `toString`, `authorities`); the anonymous user is
  `{"anonymous": true, "authenticated": true, "name": "anonymous", "authorities": ["anonymous"]}`
  as in Jenkins (an AnonymousAuthenticationToken says it is authenticated).

The identity comes from `X-Pomerium-Jwt-Assertion`, in one of two modes:

- `trusting`: the payload's `email` is the user, nothing verified (the classic
  misconfiguration: a JWT-reading realm with verification off, or "Allow verification
  failures" on);
- `verifying`: as the JWT Auth plugin with verification on (tests.support.upstream's
  verify_assertion: ES256 against the given JWKS, acceptable issuers and audiences, exp/nbf,
  username and groups from `email` and `groups`); any failure is anonymous.

Served over a Unix socket (or TCP for the "reachable around the gate" case) by http.server in
a background thread.
"""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tests.support.upstream import AssertionRejected, extract_token, verify_assertion

JENKINS_VERSION = "2.479"
HEADER = "x-pomerium-jwt-assertion"
Mode = Literal["trusting", "verifying"]


def whoami_json(user: str | None, groups: Sequence[str] = ()) -> dict[str, Any]:
    """What Jenkins' /whoAmI/api/json answers for `user` (None: anonymous)."""
    if user is None:
        return {
            "_class": "hudson.security.WhoAmI",
            "anonymous": True,
            "authenticated": True,
            "authorities": ["anonymous"],
            "details": None,
            "name": "anonymous",
            "toString": "AnonymousAuthenticationToken [Principal=anonymous, "
            "Granted Authorities=[anonymous]]",
        }
    return {
        "_class": "hudson.security.WhoAmI",
        "anonymous": False,
        "authenticated": True,
        "authorities": ["authenticated", *groups],
        "details": None,
        "name": user,
        "toString": f"JwtAuthenticationToken [Principal={user}]",
    }


def _unverified_payload(token: str) -> dict[str, Any]:
    try:
        part = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class JenkinsStandIn:
    """`with JenkinsStandIn("verifying", socket_path=..., jwks=..., issuers=[...],
    audiences=[...]) as jenkins:` ... `jenkins.requests` lists (path, assertion or None)."""

    def __init__(
        self,
        mode: Mode,
        *,
        socket_path: Path | None = None,
        tcp: tuple[str, int] | None = None,
        jwks: Mapping[str, Any] | None = None,
        issuers: Sequence[str] = (),
        audiences: Sequence[str] = (),
    ) -> None:
        if (socket_path is None) == (tcp is None):
            raise ValueError("give socket_path or tcp")
        if mode == "verifying" and jwks is None:
            raise ValueError("verifying needs a jwks")
        self.mode = mode
        self.socket_path = socket_path
        self.jwks = dict(jwks or {"keys": []})
        self.issuers = list(issuers)
        self.audiences = list(audiences)
        self.requests: list[tuple[str, str | None]] = []
        self._server: socketserver.BaseServer
        handler = self._handler_class()
        if socket_path is not None:
            self._server = _UnixServer(str(socket_path), handler)
        else:
            assert tcp is not None
            self._server = _TcpServer(tcp, handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        address = self._server.server_address
        if not isinstance(address, tuple):
            raise ValueError("a Unix socket has no TCP address")
        return str(address[0]), int(address[1])

    def identify(self, header: str | None) -> str | None:
        token = extract_token(header)
        if token is None:
            return None
        if self.mode == "trusting":
            email = _unverified_payload(token).get("email")
            return email if isinstance(email, str) else None
        try:
            identity = verify_assertion(token, self.jwks, self.issuers, self.audiences)
        except AssertionRejected:
            return None
        return str(identity["username"])

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                assertion = self.headers.get(HEADER)
                standin.requests.append((path, assertion))
                if path == "/":
                    self._send(200, b"<html><body>Jenkins stand-in</body></html>", "text/html")
                elif path == "/whoAmI/api/json":
                    user = standin.identify(assertion)
                    body = json.dumps(whoami_json(user)).encode()
                    self._send(200, body, "application/json;charset=utf-8")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("X-Jenkins", JENKINS_VERSION)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet; and a Unix socket has no client address to log

        return Handler

    def start(self) -> JenkinsStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> JenkinsStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET
