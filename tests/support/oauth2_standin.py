"""A STAND-IN for GitHub (github.com + api.github.com), NOT GitHub: the few endpoints authgate's
`idp_provider: github` calls, since the real service cannot be reached from the tests.

Served on 127.0.0.1 by http.server in a background thread; give its `url` as
`idp_provider_url` (as for GitHub Enterprise, whose API is under the same URL):

- `GET /login/oauth/authorize`: checks client_id and redirect_uri, then, as GitHub does for a
  user who already authorized the app, 302s straight back with `code` and `state` for the user
  set by `sign_in_as` (no login page). An unknown client or redirect_uri gets a 400.
- `POST /login/oauth/access_token`: client_id + client_secret (form or Basic), the code once,
  the same redirect_uri, and the PKCE verifier when the authorize request had a challenge;
  answers JSON `{access_token, token_type, scope}` (GitHub's shape with Accept: JSON), or GitHub's
  `{"error": "bad_verification_code"}` with status 200 when refused.
- `GET /user`, `/user/emails`, `/user/teams`: with `Authorization: token <t>` (or Bearer), the
  user's record in GitHub's shapes; 401 `Bad credentials` for an unknown or revoked token.

Every request is recorded (`requests`) so tests can check what authgate asked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class GitHubUser:
    login: str
    name: str
    emails: list[dict[str, Any]]  # GitHub's {email, primary, verified, visibility}
    teams: list[tuple[str, str]] = field(default_factory=list)  # (org login, team slug)


@dataclass
class _Grant:
    login: str
    redirect_uri: str
    challenge: str | None


class GitHubStandIn:
    def __init__(self, *, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.users: dict[str, GitHubUser] = {}
        self.current: str | None = None
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = _TcpServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_user(self, user: GitHubUser) -> None:
        self.users[user.login] = user

    def sign_in_as(self, login: str) -> None:
        self.current = login

    def revoke(self, login: str) -> None:
        with self._lock:
            for token in [t for t, who in self._tokens.items() if who == login]:
                del self._tokens[token]

    def paths(self, method: str = "GET") -> list[str]:
        return [path for m, path, _ in self.requests if m == method]

    # ---- HTTP ----------------------------------------------------------------------------

    def _authorize(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        one = {k: v[0] for k, v in query.items() if len(v) == 1}
        if one.get("client_id") != self.client_id or one.get("redirect_uri") != self.redirect_uri:
            return 400, {}, b"unknown client_id or redirect_uri"
        if self.current is None:
            return 400, {}, b"no user signed in at the stand-in"
        code = secrets.token_hex(10)
        challenge = one.get("code_challenge")
        if challenge is not None and one.get("code_challenge_method") != "S256":
            return 400, {}, b"only S256"
        with self._lock:
            self._codes[code] = _Grant(self.current, one["redirect_uri"], challenge)
        back = {"code": code, **({"state": one["state"]} if "state" in one else {})}
        return 302, {"Location": f"{self.redirect_uri}?{urlencode(back)}"}, b""

    def _token(self, form: dict[str, str], auth: str | None) -> dict[str, Any]:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if auth and auth.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            return {"error": "incorrect_client_credentials"}
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or form.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
            return {"error": "bad_verification_code"}
        if grant.challenge is not None:
            verifier = form.get("code_verifier", "").encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
            if digest.decode() != grant.challenge:
                return {"error": "bad_verification_code"}
        token = "gho_" + secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = grant.login
        return {"access_token": token, "token_type": "bearer", "scope": "read:org,user:email"}

    def _api(self, path: str, auth: str | None) -> tuple[int, Any]:
        token = (auth or "").partition(" ")[2]
        with self._lock:
            login = self._tokens.get(token)
        user = self.users.get(login or "")
        if user is None:
            return 401, {"message": "Bad credentials"}
        if path == "/user":
            return 200, {"login": user.login, "id": abs(hash(user.login)) % 10**8,
                         "name": user.name, "avatar_url": ""}
        if path == "/user/emails":
            return 200, user.emails
        if path == "/user/teams":
            return 200, [
                {"slug": slug, "name": slug.title(), "organization": {"login": org}}
                for org, slug in user.teams
            ]
        return 404, {"message": "Not Found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, data: Any) -> None:
                self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                standin.requests.append(("GET", parts.path, query))
                if parts.path == "/login/oauth/authorize":
                    status, headers, body = standin._authorize(query)
                    self._send(status, body, headers)
                    return
                self._json(*standin._api(parts.path, self.headers.get("Authorization")))

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                standin.requests.append(("POST", parts.path, form))
                if parts.path != "/login/oauth/access_token":
                    self._json(404, {"message": "Not Found"})
                    return
                one = {k: v[0] for k, v in form.items() if len(v) == 1}
                self._json(200, standin._token(one, self.headers.get("Authorization")))

        return Handler

    def start(self) -> GitHubStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> GitHubStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
