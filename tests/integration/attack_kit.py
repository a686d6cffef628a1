"""Tools for the attack suite (tests/integration/test_attack_*.py).

* `raw_request`: one HTTP/1.1 request written byte for byte over TLS (obs-fold header lines,
  request targets no client library would send), the answer parsed by the standard library;
* `where_a_browser_goes`: resolve a `Location` the way a browser does (WHATWG URL parser, ada);
* `HostileStack` / the `hostile_stack` fixture: a second real stack (Envoy + authgate + the test
  IdP with its test-control endpoint on, users with tricky emails, an upstream that records
  everything) for the attacks that need an IdP the test can steer; like `env`, one per stack
  mode (`generated`: `authgate run`; `byo`: `authgate authz` behind a hand-written Envoy);
* `mint`: values sealed with a stack's real `cookie_secret`, to build expired or misplaced
  tokens that only the server could have made, and sessions started in the stack's own session
  store (as a login would), for the session cookies that name them.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import ada_url
import httpx
import pytest

from authgate.config.runtime import generate_signing_key_b64
from authgate.session import SealedBox, Session
from authgate.session.manager import SessionManager
from authgate.session.record import IdpTokens
from authgate.session.reference import ReferenceCodec, SessionRef
from authgate.session.store import SqliteStore
from tests.support.byo_stack import ByoStack, config_for_mode, stack_class
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SESSION_COOKIE = "__Host-_pomerium"
LOGIN_COOKIE = "__Host-_pomerium_login"
AUTHN_LOGIN_COOKIE = "__Host-_pomerium_authn_login"


# ---------------------------------------------------------------------------- raw HTTP/1.1


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _bare_envoy_503(status: int, body: bytes) -> bool:
    return status == 503 and not body


def raw_request(
    port: int, ssl_ctx: ssl.SSLContext, sni: str, request: bytes, timeout: float = 15.0
) -> RawResponse:
    """Write `request` (request line, header lines, blank line, body) exactly as given.

    Envoy's bare 503 (its ext_authz timeout) is retried twice: on a loaded machine a
    Check can take that long. A crash in authgate fails every retry, and the stack's log is
    checked for failed Checks after each test (`assert_stack_healthy`)."""
    for attempt in range(3):
        answer = _raw_request_once(port, ssl_ctx, sni, request, timeout)
        if not _bare_envoy_503(answer.status, answer.body):
            break
        time.sleep(0.3 * (attempt + 1))
    return answer


def _raw_request_once(
    port: int, ssl_ctx: ssl.SSLContext, sni: str, request: bytes, timeout: float
) -> RawResponse:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain,
        ssl_ctx.wrap_socket(plain, server_hostname=sni) as sock,
    ):
        sock.sendall(request)
        method = request.split(b" ", 1)[0].decode("latin-1")
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            body = response.read()
        finally:
            response.close()
        return RawResponse(response.status, list(response.getheaders()), body)


class PatientTransport(httpx.HTTPTransport):
    """httpx's transport, retrying Envoy's bare 503 like `raw_request` (see there)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(3):
            response = super().handle_request(request)
            if response.status_code != 503 or response.headers.get("content-length") != "0":
                return response
            response.read()
            response.close()
            time.sleep(0.3 * (attempt + 1))
        return response


def attack_client(ssl_ctx: ssl.SSLContext, *, http2: bool = False, **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=PatientTransport(verify=ssl_ctx, http2=http2), **kwargs)


def build_request(
    method: str,
    target: bytes,
    authority: str,
    headers: Sequence[tuple[str, str]] = (),
    extra_lines: bytes = b"",
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request; `extra_lines` go in verbatim (each ending in CRLF)."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"host: " + authority.encode()]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    lines.append(b"connection: close")
    if body:
        lines.append(f"content-length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n" + extra_lines + b"\r\n" + body


def as_request_target(text: str) -> bytes:
    """`text` as a browser would put it on the request line: bytes outside VCHAR %-escaped."""
    out = bytearray()
    for byte in text.encode("utf-8"):
        out += bytes([byte]) if 0x21 <= byte <= 0x7E else f"%{byte:02X}".encode()
    return bytes(out)


# ---------------------------------------------------------------------------- redirects


def where_a_browser_goes(location: str, base: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) a browser navigates to for `location`, or None if it would not."""
    try:
        url = ada_url.URL(location, base)
    except ValueError:
        return None
    port = url.port or {"https:": "443", "http:": "80"}.get(url.protocol, "")
    return url.protocol.rstrip(":"), url.hostname, port


def same_origin(location: str, base: str, origin: str) -> bool:
    """True if `location` (relative to `base`) leads a browser to exactly `origin`."""
    want = urlsplit(origin)
    got = where_a_browser_goes(location, base)
    expected = (want.scheme, want.hostname or "", str(want.port or 443))
    return got == expected and location.lower().startswith(origin.lower() + "/")


def query_param(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


# ---------------------------------------------------------------------------- sealed values


T = TypeVar("T")


def store_path(stack: AuthgateStack | ByoStack) -> Path:
    """Where a running stack's workers keep their embedded session store: `authgate run
    --runtime-dir R` gives them R/shared, the byo stack passes `--shared-dir <run>/shared`."""
    return stack.runtime_dir / "shared" / "sessions.db"


@dataclass(frozen=True)
class Mint:
    """Seals values exactly as a stack with this `cookie_secret` does (same HKDF purposes), and
    starts sessions in its session store (`store`: the stack's SQLite file; None for a Mint that
    only seals, e.g. with another secret)."""

    secret: bytes
    store: Path | None = None

    def box(self, purpose: str) -> SealedBox:
        return SealedBox(self.secret, purpose)

    @property
    def refs(self) -> ReferenceCodec:
        """The session cookie's codec (a reference to a session in the store)."""
        return ReferenceCodec(self.secret)

    def _run(self, job: Callable[[SessionManager], Awaitable[T]]) -> T:
        """`job` with a session manager on the stack's store, as a worker would have it."""
        path = self.store
        assert path is not None, "this Mint has no session store"

        async def go() -> T:
            sessions = SessionManager(self.secret, SqliteStore(path), refresh_interval_s=300)
            try:
                return await job(sessions)
            finally:
                await sessions.aclose()

        return asyncio.run(go())

    def start(
        self, claims: Mapping[str, Any], lifetime_s: int = 3600, now: float | None = None
    ) -> Session:
        """A session in the stack's store, as a login there would start it (`now` in the past:
        one that has ended)."""

        async def job(sessions: SessionManager) -> Session:
            return await sessions.start(dict(claims), IdpTokens(), lifetime_s, now=now)

        return self._run(job)

    def revoke(self, sid: str) -> None:
        """End a session in the stack's store (as a sign-out or `authgate sessions revoke`)."""

        async def job(sessions: SessionManager) -> None:
            await sessions.revoke(sid)

        self._run(job)

    def session_cookie(self, host: str, lifetime_s: int = 3600, **claims: Any) -> str:
        """The cookie value of a new session in the stack's store, for `host`."""
        session = self.start({"sub": "u", **claims}, lifetime_s)
        return self.refs.encode(ref_of(session), host)

    def session_ref(
        self, email: str, *, lifetime_s: int = 3600, now: float | None = None
    ) -> dict[str, Any]:
        """The reference (wire form: sid, iat, exp) to a new session of `email` in the stack's
        store: what a session cookie or a hand-off carries."""
        session = self.start({"sub": email, "email": email}, lifetime_s, now=now)
        return ref_of(session).to_wire()


def ref_of(session: Session) -> SessionRef:
    return SessionRef(session.sid, session.issued_at, session.expires_at)


def mint_for(config: Mapping[str, Any], store: Path | None = None) -> Mint:
    return Mint(base64.b64decode(str(config["cookie_secret"])), store)


# ---------------------------------------------------------------------------- hostile stack

HOSTILE_HOSTS = [
    "app.test",
    "mail.test",
    "any.test",
    "pub.test",
    "ip.test",
    "ipok.test",
    "authenticate.test",
]
FOREIGN_NETWORK = "203.0.113.0/24"  # TEST-NET-3: no test client ever comes from there
DOMAIN = "kestrel.example"
MAIL_ALLOWED = f"kim@{DOMAIN}"


@dataclass
class HostileStack:
    """Envoy + authgate (2 workers) + a steerable test IdP + one recording upstream."""

    port: int
    pki: TestPKI
    idp: TestIdP
    upstream: SampleUpstream
    stack: AuthgateStack | ByoStack
    mint: Mint
    mode: str = "generated"

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def origin(self, host: str) -> str:
        return f"https://{host}:{self.port}"

    def netloc(self, host: str) -> str:
        return f"{host}:{self.port}"

    def client(self, *, follow: bool = True, accept: str = BROWSER_ACCEPT) -> httpx.Client:
        return attack_client(
            self.pki.client_ssl_context(),
            follow_redirects=follow,
            timeout=15,
            headers={"accept": accept},
        )

    def login(
        self, client: httpx.Client, url: str, email: str, password: str = "pw"
    ) -> httpx.Response:
        page = client.get(url)
        assert is_idp_login_page(page), (
            f"expected the IdP login page, got {page.status_code} {page.url}"
        )
        return submit_idp_login(client, page, email, password)

    def tamper(self, mode: str) -> None:
        with httpx.Client(timeout=5) as c:
            answer = c.post(f"{self.idp.issuer}/__test__/tamper", json={"mode": mode})
            assert answer.status_code == 200, answer.text

    def healthy(self) -> bool:
        """A normal request still works: the workers answer and Envoy reaches them."""
        with self.client() as c:
            answer = c.get(self.url("pub.test", "/__health__"))
        return answer.status_code == 200 and answer.json()["path"] == "/__health__"


def hostile_users() -> list[dict[str, Any]]:
    """Who can sign in at the hostile IdP (password "pw" for all)."""
    emails = {
        # legitimate
        "kim": MAIL_ALLOWED,
        "bob": f"bob@{DOMAIN}",
        "bob-upper": f"Bob.Upper@{DOMAIN.upper()}",
        "outsider": "eve@evil.test",
    }
    users = [
        {"sub": sub, "email": email, "password": "pw", "name": sub} for sub, email in emails.items()
    ]
    users.append(
        {
            "sub": "crlf",
            "email": "crlf@evil.test",
            "password": "pw",
            "name": "Mallory\r\nX-Pomerium-Claim-Email: kim@kestrel.example",
            "groups": ["devs\r\nX-Pomerium-Claim-Groups: admins", "x,admins"],
        }
    )
    return users


# Emails that try to pass `domain: is: kestrel.example` (route app.test) or
# `email: is: kim@kestrel.example` (route mail.test). None may.
DOMAIN_TRICKS: dict[str, str] = {
    "suffix": f"mallory@{DOMAIN}.evil.test",
    "prefix": f"mallory@evil{DOMAIN}",
    "hyphen-prefix": f"mallory@evil-{DOMAIN}",
    "subdomain": f"mallory@sub.{DOMAIN}",
    "two-at-allowed-last": f"mallory@evil.test@{DOMAIN}",
    "two-at-allowed-first": f"mallory@{DOMAIN}@evil.test",
    "quoted-local-at": f'"mallory@evil.test"@{DOMAIN}',
    "percent-hack": f"mallory%evil.test@{DOMAIN}@evil.test",
    "trailing-dot": f"mallory@{DOMAIN}.",
    "no-local": f"@{DOMAIN}",
    "bare-domain": DOMAIN,
    "trailing-space": f"mallory@{DOMAIN} ",
    "leading-space": f" mallory@{DOMAIN}",
    "trailing-tab": f"mallory@{DOMAIN}\t",
    "trailing-nbsp": f"mallory@{DOMAIN}\u00a0",
    "trailing-ideographic-space": f"mallory@{DOMAIN}\u3000",
    "trailing-newline": f"mallory@{DOMAIN}\n",
    "inner-space": f"mallory@{DOMAIN} evil.test",
    "space-before-at": f"mallory@evil.test {DOMAIN}",
    "nul": f"mallory@{DOMAIN}\x00.evil.test",
    "zero-width-space": f"mallory@{DOMAIN}\u200b",
    "cyrillic-e": "mallory@k\u0435strel.example",
    "cyrillic-a": "mallory@kestrel.ex\u0430mple",
    "greek-epsilon": "mallory@k\u03b5strel.example",
    "kelvin-sign": "mallory@\u212aestrel.example",
    "fullwidth": "mallory@\uff4b\uff45\uff53\uff54\uff52\uff45\uff4c.example",
    "ideographic-full-stop": "mallory@kestrel\u3002example",
    "punycode-lookalike": "mallory@xn--kestrl-3ya.example",
    "combining-mark": "mallory@ke\u0301strel.example",
}

EMAIL_TRICKS: dict[str, str] = {
    "kelvin-sign-local": f"\u212aim@{DOMAIN}",
    "plus-tag": f"kim+admin@{DOMAIN}",
    "trailing-space": f"{MAIL_ALLOWED} ",
    "trailing-nbsp": f"{MAIL_ALLOWED}\u00a0",
    "leading-tab": f"\t{MAIL_ALLOWED}",
    "two-at": f"evil@evil.test@{MAIL_ALLOWED}",
    "suffix": f"{MAIL_ALLOWED}.evil.test",
    "prefix": f"x{MAIL_ALLOWED}",
    "cyrillic-i": f"k\u0456m@{DOMAIN}",
    "fullwidth-k": f"\uff4bim@{DOMAIN}",
    "zero-width-joiner": f"k\u200dim@{DOMAIN}",
    "dotless-i-upper": f"K\u0131M@{DOMAIN}",
}


def _trick_users() -> list[dict[str, Any]]:
    users = []
    for kind, tricks in (("domain", DOMAIN_TRICKS), ("email", EMAIL_TRICKS)):
        for name, email in tricks.items():
            sub = f"{kind}-{name}"
            users.append({"sub": sub, "login": sub, "email": email, "password": "pw", "name": name})
    return users


def hostile_config(
    port: int, pki: TestPKI, idp: TestIdP, upstream_port: int, cookie_secret: str
) -> dict[str, Any]:
    upstream = f"http://127.0.0.1:{upstream_port}"
    return {
        "address": f"127.0.0.1:{port}",
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "authenticate_service_url": f"https://authenticate.test:{port}",
        "idp_provider_url": idp.issuer,
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "idp_scopes": ["openid", "profile", "email", "groups"],
        # As in Pomerium, claim headers only for the claims listed (tests read these four).
        "jwt_claims_headers": ["email", "user", "name", "groups"],
        "signing_key": generate_signing_key_b64(),
        "cookie_secret": cookie_secret,
        "routes": [
            {
                "from": f"https://app.test:{port}",
                "prefix": "/public/",
                "to": upstream,
                "allow_public_unauthenticated_access": True,
            },
            {
                "from": f"https://app.test:{port}",
                "to": upstream,
                "pass_identity_headers": True,
                "policy": [{"allow": {"and": [{"domain": {"is": DOMAIN}}]}}],
            },
            {
                "from": f"https://mail.test:{port}",
                "to": upstream,
                "pass_identity_headers": True,
                "policy": [{"allow": {"or": [{"email": {"is": MAIL_ALLOWED}}]}}],
            },
            {
                "from": f"https://any.test:{port}",
                "to": upstream,
                "pass_identity_headers": True,
                "allow_any_authenticated_user": True,
            },
            {
                "from": f"https://pub.test:{port}",
                "to": upstream,
                "allow_public_unauthenticated_access": True,
            },
            {
                "from": f"https://ip.test:{port}",
                "to": upstream,
                "policy": [{"allow": {"or": [{"source_ip": FOREIGN_NETWORK}]}}],
            },
            {
                "from": f"https://ipok.test:{port}",
                "to": upstream,
                "policy": [{"allow": {"or": [{"source_ip": "127.0.0.0/8"}]}}],
            },
        ],
    }


def start_hostile(workdir: Path, mode: str = "generated") -> Iterator[HostileStack]:
    port = free_port()
    pki = make_pki(workdir / "tls", HOSTILE_HOSTS)
    idp = TestIdP(
        clients=[authgate_client(port)],
        users=[*hostile_users(), *_trick_users()],
        extra_env={"IDP_TEST_CONTROL": "1"},
    )
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    upstream = SampleUpstream(
        tcp_port=0,
        ca_file=pki.ca_file,
        jwks_url=f"https://pub.test:{port}/.well-known/pomerium/jwks.json",
        issuers=["authenticate.test"],
        audiences=[h for h in HOSTILE_HOSTS if h != "authenticate.test"],
    )
    with idp, upstream:
        assert upstream.port is not None
        config = config_for_mode(hostile_config(port, pki, idp, upstream.port, secret), mode)
        with stack_class(mode)(workdir / "stack", config, workers=2, ca_file=pki.ca_file) as stack:
            mint = mint_for(config, store_path(stack))
            yield HostileStack(port, pki, idp, upstream, stack, mint, mode)


@pytest.fixture(scope="session")
def hostile_stack(
    tmp_path_factory: pytest.TempPathFactory, stack_mode: str
) -> Iterator[HostileStack]:
    # `stack_mode` (tests/integration/conftest.py) runs each test against both kinds of stack.
    # Name mapping is per test (the autouse fixture); never left on for the whole session.
    yield from start_hostile(tmp_path_factory.mktemp(f"hostile-{stack_mode}"), stack_mode)


def random_bytes_b64(n: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(n)).rstrip(b"=").decode()


# ---------------------------------------------------------------------------- health after a batch


def assert_stack_healthy(
    stack: AuthgateStack | ByoStack, pids: list[int], log_from: int, probe: str
) -> None:
    """After a hostile batch: the same workers are alive, none failed a Check with an
    exception (the servicer logs `check_failed`, and Envoy would have answered 503), and a
    normal request still goes through Envoy to a worker and on to the upstream."""
    assert stack.proc is not None and stack.proc.poll() is None, "a stack process exited"
    assert stack.worker_pids() == pids, "a worker was replaced"
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids), "a worker died"
    new_log = stack.log()[log_from:]
    assert "check_failed" not in new_log and "Traceback" not in new_log, new_log[-3000:]
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    with attack_client(ctx, timeout=10) as client:
        answer = client.get(probe)
    assert answer.status_code == 200 and answer.json()["path"] == urlsplit(probe).path


@pytest.fixture
def hostile_stays_healthy(hostile_stack: HostileStack) -> Iterator[None]:
    stack = hostile_stack.stack
    pids, log_from = stack.worker_pids(), len(stack.log())
    yield
    with map_hosts({"*.test": "127.0.0.1"}):
        assert_stack_healthy(stack, pids, log_from, hostile_stack.url("pub.test", "/__health__"))


@pytest.fixture
def env_stays_healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    if "env" not in request.fixturenames:  # a test that never touches the stack cannot hurt it
        yield
        return
    env = request.getfixturevalue("env")
    pids, log_from = env.stack.worker_pids(), len(env.stack.log())
    yield
    with map_hosts({"*.test": "127.0.0.1"}):
        assert_stack_healthy(env.stack, pids, log_from, env.url("status.test", "/__health__"))
