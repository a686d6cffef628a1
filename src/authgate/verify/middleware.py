"""ASGI and WSGI middleware: no valid assertion, no call to the app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from authgate.verify.verifier import AssertionVerifier, Identity, InvalidAssertion, KeysUnavailable

IDENTITY_KEY = "authgate.identity"
DEFAULT_HEADER = "x-pomerium-jwt-assertion"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

__all__ = ["IDENTITY_KEY", "AssertionMiddleware", "WSGIAssertionMiddleware"]


def _exempt(path: str, exempt_paths: tuple[str, ...]) -> bool:
    """An exact match, or a prefix when the entry ends with `/`; never a path with dot segments
    (`/static/../admin` is not under `/static/`)."""
    if not exempt_paths:
        return False
    segments = path.split("/")
    if "." in segments or ".." in segments:
        return False
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in exempt_paths)


def _refusal(exc: InvalidAssertion) -> tuple[int, bytes]:
    status = 503 if isinstance(exc, KeysUnavailable) else 401
    error = "unavailable" if status == 503 else "unauthorized"
    return status, json.dumps({"error": error, "reason": exc.reason}).encode()


_REFUSAL_HEADERS = (("content-type", "application/json"), ("cache-control", "no-store"))


class AssertionMiddleware:
    """ASGI: requests (and websockets) need a valid assertion in `header`.

    The app gets `scope["authgate.identity"]` (an Identity). Without a valid one the answer is
    401 JSON (503 if the keys cannot be fetched); a websocket is closed with 1008 (1013).
    Key fetches run in a worker thread, never on the event loop.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: AssertionVerifier,
        header: str = DEFAULT_HEADER,
        exempt_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.header = header.lower().encode("latin-1")
        self.exempt_paths = tuple(exempt_paths)

    async def _identity(self, scope: Scope) -> Identity:
        values = [v for k, v in scope.get("headers", ()) if k.lower() == self.header]
        if not values:
            raise InvalidAssertion("no assertion")
        if len(values) > 1:
            raise InvalidAssertion("more than one assertion")
        token = bytes(values[0])
        ident = self.verifier.verify_cached(token)
        if ident is not None:
            return ident
        import anyio.to_thread  # httpx's own dependency

        return await anyio.to_thread.run_sync(self.verifier.verify, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _exempt(
            scope.get("path", ""), self.exempt_paths
        ):
            await self.app(scope, receive, send)
            return
        try:
            ident = await self._identity(scope)
        except InvalidAssertion as exc:
            if scope["type"] == "websocket":
                code = 1013 if isinstance(exc, KeysUnavailable) else 1008
                await send({"type": "websocket.close", "code": code, "reason": exc.reason})
                return
            status, body = _refusal(exc)
            headers = [(k.encode(), v.encode()) for k, v in _REFUSAL_HEADERS]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope = dict(scope)
        scope[IDENTITY_KEY] = ident
        await self.app(scope, receive, send)


class WSGIAssertionMiddleware:
    """WSGI: the same checks; the app gets `environ["authgate.identity"]`."""

    def __init__(
        self,
        app: WSGIApp,
        verifier: AssertionVerifier,
        header: str = DEFAULT_HEADER,
        exempt_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")
        self.exempt_paths = tuple(exempt_paths)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if _exempt(environ.get("PATH_INFO", ""), self.exempt_paths):
            return self.app(environ, start_response)
        try:
            token = environ.get(self.environ_key)
            if not token:
                raise InvalidAssertion("no assertion")
            # several headers arrive joined with commas, which no JWT contains: malformed
            ident = self.verifier.verify(token)
        except InvalidAssertion as exc:
            status, body = _refusal(exc)
            phrase = "Service Unavailable" if status == 503 else "Unauthorized"
            start_response(
                f"{status} {phrase}",
                [*_REFUSAL_HEADERS, ("content-length", str(len(body)))],
            )
            return [body]
        environ[IDENTITY_KEY] = ident
        return self.app(environ, start_response)
