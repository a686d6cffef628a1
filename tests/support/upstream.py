"""A sample upstream application standing in for Jenkins behind the proxy.

It listens on a Unix socket and/or on TCP ``127.0.0.1:<port>``, runs an aiohttp
server on its own asyncio loop in a background thread, records every request,
and answers every path with JSON describing what it saw.  ``/ws`` is a
websocket echo endpoint; ``?sleep=S`` delays the answer S seconds (at most 10).

Identity is derived from the ``x-pomerium-jwt-assertion`` header the way the
Jenkins "JWT Auth" plugin (``JwtAuthSecurityRealm``, jose4j based) does when
configured per Pomerium's Jenkins guide:

* header ``x-pomerium-jwt-assertion``; the plugin removes every ``Bearer`` /
  ``bearer`` substring and trims (so a ``Bearer `` prefix is tolerated);
  header absent or empty -> anonymous;
* signature checked with a key picked from a JWKS fetched from ``jwks_url``
  (cached; fetched again once when the token's ``kid`` is unknown); only
  ES256 with an EC P-256 key is accepted here (``none``/HS256/... rejected);
* ``iss`` must be one of ``issuers`` and ``aud`` (a string or a list) must
  contain one of ``audiences``, exact string comparison; like the plugin an
  EMPTY list disables that check;
* ``exp`` and ``nbf`` are checked when present (jose4j's defaults: ``exp`` is
  not required; ``iat`` is not checked), with ``leeway`` seconds of skew;
* username = claim ``email``, groups = claim ``groups`` (a list of strings, or
  a string split on ``","`` dropping empty items), email = claim ``email``;
  a missing/null ``email`` or ``groups`` claim makes the plugin fail (a
  NullPointerException it catches), i.e. the request is anonymous.

Any failure gives ``user: null`` plus ``auth_error`` in the JSON answer.

Header values are recorded byte for byte: ``RecordedRequest.raw_headers`` holds the header
lines' bytes as received, and the JSON answer's ``raw_headers`` lists them as
``[name, base64(value)]`` (``headers`` there is for reading: values joined per name, bytes
as Latin-1 code points).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import httpx
import jwt
from aiohttp import WSMsgType, web

__all__ = [
    "ALLOWED_ALGORITHMS",
    "ASSERTION_HEADER",
    "AssertionRejected",
    "RecordedRequest",
    "RequestLog",
    "SampleUpstream",
    "UnknownKeyId",
    "extract_token",
    "groups_from_claim",
    "verify_assertion",
]

ASSERTION_HEADER = "x-pomerium-jwt-assertion"
ALLOWED_ALGORITHMS: tuple[str, ...] = ("ES256",)
USERNAME_CLAIM = "email"
GROUPS_CLAIM = "groups"
GROUPS_SEPARATOR = ","
EMAIL_CLAIM = "email"

JSONDict = dict[str, Any]


# --------------------------------------------------------------------------
# Verification (pure functions, usable directly from unit tests)
# --------------------------------------------------------------------------


class AssertionRejected(Exception):
    """The assertion does not yield an identity (the request is anonymous)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKeyId(AssertionRejected):
    """No suitable key for the token's ``kid`` in the JWKS (worth a refetch)."""


def extract_token(header_value: str | None) -> str | None:
    """Token from the assertion header value, as the plugin reads it.

    The plugin does ``value.replace("Bearer", "").replace("bearer", "").trim()``;
    None or an empty result means "no token" (anonymous).
    """
    if header_value is None:
        return None
    token = header_value.replace("Bearer", "").replace("bearer", "").strip()
    return token or None


def groups_from_claim(value: object) -> list[str]:
    """Groups from the ``groups`` claim value: a list of strings, or a string
    split on ``","`` (empty items dropped, like commons-lang ``StringUtils.split``).

    Raises AssertionRejected when the claim is missing/null (the plugin then
    hits a NullPointerException and falls back to anonymous) or of another type.
    """
    if value is None:
        raise AssertionRejected(f"claim {GROUPS_CLAIM!r} missing or null")
    if isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return [str(item) for item in value]
        raise AssertionRejected(f"claim {GROUPS_CLAIM!r} is a list of non-strings")
    if isinstance(value, str):
        return [item for item in value.split(GROUPS_SEPARATOR) if item]
    raise AssertionRejected(f"claim {GROUPS_CLAIM!r} has unsupported type {type(value).__name__}")


def _select_key(header: Mapping[str, Any], jwks: Mapping[str, Any]) -> jwt.PyJWK:
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise AssertionRejected("JWKS has no 'keys' list")
    kid = header.get("kid")
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        if kid is not None and jwk.get("kid") != kid:
            continue
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if jwk.get("use") not in (None, "sig") or jwk.get("alg") not in (None, "ES256"):
            continue
        try:
            return jwt.PyJWK(jwk, algorithm="ES256")
        except jwt.PyJWTError as exc:
            raise AssertionRejected(f"unusable JWK {kid!r}: {exc}") from exc
    raise UnknownKeyId(f"no ES256 key with kid {kid!r} in JWKS")


def verify_assertion(
    token: str,
    jwks: Mapping[str, Any],
    issuers: Sequence[str],
    audiences: Sequence[str],
    *,
    leeway: float = 0.0,
) -> JSONDict:
    """Verify a Pomerium-style assertion; return the identity it carries.

    Returns ``{"username", "groups", "email", "claims"}``.  Raises
    ``UnknownKeyId`` when no key matches the token's ``kid`` and
    ``AssertionRejected`` for any other reason the plugin would fall back to
    anonymous.  Empty ``issuers``/``audiences`` disable that check, as in the
    plugin.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AssertionRejected(f"malformed token: {exc}") from exc
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise AssertionRejected(f"algorithm {alg!r} not allowed (only ES256)")
    key = _select_key(header, jwks)
    try:
        claims: JSONDict = jwt.decode(
            token,
            key=key.key,
            algorithms=list(ALLOWED_ALGORITHMS),
            leeway=leeway,
            options={
                "verify_signature": True,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": False,
                "verify_aud": False,  # checked below, plugin semantics
                "verify_iss": False,  # checked below, plugin semantics
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise AssertionRejected(f"token expired: {exc}") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AssertionRejected(f"token not yet valid: {exc}") from exc
    except jwt.InvalidSignatureError as exc:
        raise AssertionRejected(f"bad signature: {exc}") from exc
    except jwt.PyJWTError as exc:
        raise AssertionRejected(f"invalid token: {exc}") from exc

    if issuers:
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss not in issuers:
            raise AssertionRejected(f"issuer {iss!r} not in acceptable issuers {list(issuers)!r}")
    if audiences:
        aud = claims.get("aud")
        if isinstance(aud, str):
            token_audiences = [aud]
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            token_audiences = list(aud)
        else:
            raise AssertionRejected(f"audience {aud!r} missing or malformed")
        if not any(a in audiences for a in token_audiences):
            raise AssertionRejected(
                f"audience {aud!r} not in acceptable audiences {list(audiences)!r}"
            )

    username = claims.get(USERNAME_CLAIM)
    if not isinstance(username, str):
        raise AssertionRejected(f"username claim {USERNAME_CLAIM!r} missing or not a string")
    groups = groups_from_claim(claims.get(GROUPS_CLAIM))
    email = claims.get(EMAIL_CLAIM)
    return {
        "username": username,
        "groups": groups,
        "email": email if isinstance(email, str) else None,
        "claims": claims,
    }


# --------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received by the upstream."""

    method: str
    path: str  # raw path including the query string, as sent on the wire
    headers: list[tuple[str, str]]  # in order, duplicates kept, names as received
    host: str | None  # the Host header
    body: bytes
    version: str  # e.g. "HTTP/1.1"
    listener: str  # "unix" or "tcp"
    user: JSONDict | None = None
    auth_error: str | None = None
    websocket: bool = False
    # the header lines' bytes as received (name, value), in order, duplicates kept
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def raw_header_values(self, name: str) -> list[bytes]:
        """All values of header ``name`` (case-insensitive) exactly as received, in order."""
        lname = name.lower().encode("latin-1")
        return [v for k, v in self.raw_headers if k.lower() == lname]


@dataclass
class RequestLog:
    """Thread-safe, append-only (until ``clear()``) list of RecordedRequest."""

    _items: list[RecordedRequest] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def append(self, item: RecordedRequest) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def snapshot(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._items)

    def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        timeout: float = 5.0,
    ) -> RecordedRequest:
        """Block until a request matching ``predicate`` was recorded; return the
        latest such request.  Raises TimeoutError."""

        def find() -> RecordedRequest | None:
            for item in reversed(self._items):
                if predicate is None or predicate(item):
                    return item
            return None

        with self._cond:
            found = self._cond.wait_for(find, timeout=timeout)
        if found is None:
            raise TimeoutError("no matching request recorded by the upstream")
        return found

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(self.snapshot())

    def __bool__(self) -> bool:
        return len(self) > 0

    @overload
    def __getitem__(self, index: int) -> RecordedRequest: ...
    @overload
    def __getitem__(self, index: slice) -> list[RecordedRequest]: ...
    def __getitem__(self, index: int | slice) -> RecordedRequest | list[RecordedRequest]:
        with self._cond:
            return self._items[index]


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class SampleUpstream:
    """Jenkins stand-in; see the module docstring.

    ``jwks_url``, ``ca_file``, ``issuers``, ``audiences`` and ``leeway`` may
    be changed after construction (even while running) with ``configure()``.
    ``jwks`` gives a static JWKS instead of fetching one (no refetch then).
    """

    def __init__(
        self,
        unix_path: Path | None = None,
        tcp_port: int | None = None,
        jwks_url: str | None = None,
        ca_file: Path | None = None,
        issuers: Sequence[str] = (),
        audiences: Sequence[str] = (),
        *,
        jwks: Mapping[str, Any] | None = None,
        leeway: float = 0.0,
        tcp_host: str = "127.0.0.1",
    ) -> None:
        if unix_path is None and tcp_port is None:
            raise ValueError("give unix_path and/or tcp_port (0 = any free port)")
        if unix_path is not None and len(str(unix_path).encode()) > 100:
            raise ValueError(f"unix socket path too long for AF_UNIX: {unix_path}")
        self.unix_path = Path(unix_path) if unix_path is not None else None
        self._tcp_port_requested = tcp_port
        self.tcp_host = tcp_host
        self.port: int | None = None
        self.jwks_url = jwks_url
        self.ca_file = Path(ca_file) if ca_file is not None else None
        self.issuers: list[str] = list(issuers)
        self.audiences: list[str] = list(audiences)
        self.leeway = leeway
        self.static_jwks: JSONDict | None = dict(jwks) if jwks is not None else None

        self.requests = RequestLog()
        self.jwks_fetch_count = 0

        self._jwks_cache: JSONDict | None = None
        self._jwks_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []
        self._websockets: set[web.WebSocketResponse] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ----------------------------------------------------------- properties

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the TCP listener (started, with tcp_port)."""
        if self.port is None:
            raise RuntimeError("no TCP listener (tcp_port not given or not started)")
        return f"http://{self.tcp_host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ control

    def configure(
        self,
        *,
        jwks_url: str | None = None,
        ca_file: Path | None = None,
        issuers: Sequence[str] | None = None,
        audiences: Sequence[str] | None = None,
        leeway: float | None = None,
    ) -> None:
        """Change verification settings; a new jwks_url/ca_file drops the JWKS cache."""
        if jwks_url is not None:
            self.jwks_url = jwks_url
            self._jwks_cache = None
        if ca_file is not None:
            self.ca_file = Path(ca_file)
            self._jwks_cache = None
        if issuers is not None:
            self.issuers = list(issuers)
        if audiences is not None:
            self.audiences = list(audiences)
        if leeway is not None:
            self.leeway = leeway

    def reset_jwks_cache(self) -> None:
        self._jwks_cache = None

    def clear(self) -> None:
        """Forget the recorded requests (same as ``self.requests.clear()``)."""
        self.requests.clear()

    def start(self, timeout: float = 10.0) -> SampleUpstream:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._bind_sockets()
        self._ready.clear()
        self._startup_error = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"SampleUpstream-{id(self):x}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError("SampleUpstream did not start in time")
        if self._startup_error is not None:
            error = self._startup_error
            self.stop()
            raise RuntimeError("SampleUpstream failed to start") from error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if thread is not None and loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None
        self._loop = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)

    def __enter__(self) -> SampleUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ internals

    def _bind_sockets(self) -> None:
        try:
            if self.unix_path is not None:
                self.unix_path.parent.mkdir(parents=True, exist_ok=True)
                self.unix_path.unlink(missing_ok=True)
                usock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sockets.append(usock)
                usock.bind(str(self.unix_path))
            if self._tcp_port_requested is not None:
                tsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._sockets.append(tsock)
                tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tsock.bind((self.tcp_host, self._tcp_port_requested))
                self.port = tsock.getsockname()[1]
        except BaseException:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
            raise

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # reported to start()
                self._startup_error = exc
                self._ready.set()
                loop.run_until_complete(self._shutdown())
                return
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        self._jwks_lock = asyncio.Lock()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_shutdown.append(self._close_websockets)
        # Jenkins (Jetty) is often run with a larger request header size for big assertions
        # (a user in hundreds of groups); the sample app accepts up to 64 KB a header line.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=2.0,
            max_line_size=65536,
            max_field_size=65536,
        )
        await self._runner.setup()
        for sock in self._sockets:
            await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _close_websockets(self, app: web.Application) -> None:
        for ws in list(self._websockets):
            await ws.close(code=1001, message=b"server shutdown")

    async def _fetch_jwks(self, stale: JSONDict | None) -> JSONDict:
        """Cached JWKS; fetched when nothing is cached or the cache is ``stale``."""
        assert self._jwks_lock is not None
        async with self._jwks_lock:
            cached = self._jwks_cache
            if cached is not None and cached is not stale:
                return cached
            url = self.jwks_url
            assert url is not None
            verify: ssl.SSLContext | bool = True
            if self.ca_file is not None:
                verify = ssl.create_default_context(cafile=str(self.ca_file))
            # Async client on this loop: the fetch may go through the proxy back
            # to this very server without blocking it.
            async with httpx.AsyncClient(verify=verify, trust_env=False, timeout=10.0) as client:
                response = await client.get(url)
            self.jwks_fetch_count += 1
            response.raise_for_status()
            data = response.json()
            if not isinstance(data, dict):
                raise ValueError("JWKS document is not a JSON object")
            self._jwks_cache = data
            return data

    async def _identify(self, request: web.Request) -> tuple[JSONDict | None, str | None]:
        token = extract_token(request.headers.get(ASSERTION_HEADER))
        if token is None:
            return None, f"no {ASSERTION_HEADER} header"
        issuers, audiences, leeway = list(self.issuers), list(self.audiences), self.leeway
        try:
            if self.static_jwks is not None:
                jwks = self.static_jwks
                return verify_assertion(token, jwks, issuers, audiences, leeway=leeway), None
            if self.jwks_url is None:
                return None, "no JWKS configured (jwks_url)"
            jwks = await self._fetch_jwks(stale=None)
            try:
                return verify_assertion(token, jwks, issuers, audiences, leeway=leeway), None
            except UnknownKeyId:
                jwks = await self._fetch_jwks(stale=jwks)  # refetch once
                return verify_assertion(token, jwks, issuers, audiences, leeway=leeway), None
        except AssertionRejected as exc:
            return None, exc.reason
        except (httpx.HTTPError, ValueError, ssl.SSLError, OSError) as exc:
            return None, f"JWKS fetch from {self.jwks_url} failed: {exc!r}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        user, auth_error = await self._identify(request)
        is_ws = False
        if request.path == "/ws":
            is_ws = web.WebSocketResponse().can_prepare(request).ok
        body = b"" if is_ws else await request.read()
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        record = RecordedRequest(
            method=request.method,
            path=request.raw_path,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            host=request.headers.get("Host"),
            body=body,
            version=f"HTTP/{request.version.major}.{request.version.minor}",
            listener="tcp" if isinstance(sockname, tuple) else "unix",
            user=user,
            auth_error=auth_error,
            websocket=is_ws,
            raw_headers=tuple((bytes(k), bytes(v)) for k, v in request.raw_headers),
        )
        self.requests.append(record)
        if "sleep" in request.query:  # ?sleep=S: a slow answer (requests in flight at a stop)
            await asyncio.sleep(min(float(request.query["sleep"]), 10.0))
        if is_ws:
            return await self._websocket(request, user)

        joined: dict[str, list[str]] = {}
        for name, value in record.headers:
            joined.setdefault(name.lower(), []).append(value)
        payload = {
            "method": record.method,
            "path": record.path,
            "host": record.host,
            "listener": record.listener,
            "headers": {name: ", ".join(values) for name, values in joined.items()},
            "raw_headers": [
                [k.decode("latin-1"), base64.b64encode(v).decode()] for k, v in record.raw_headers
            ],
            "user": user,
            "auth_error": auth_error,
        }
        return web.json_response(payload, dumps=lambda obj: json.dumps(obj, default=str))

    async def _websocket(
        self, request: web.Request, user: JSONDict | None
    ) -> web.WebSocketResponse:
        who = user["username"] if user is not None else "anonymous"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._websockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(f"{who}: {msg.data}")
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._websockets.discard(ws)
        return ws
