"""A time-of-day policy through the real Envoy and the real authz servicer, with the authz
clock injected (never slept): inside the window the upstream sees the request, outside it does
not and the client gets 401 (signed out) or 403 (signed in)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from authgate.authz.server import AuthorizationServicer, add_servicer
from authgate.authz.state import AuthzState
from authgate.config.load import settings_from_mapping
from authgate.config.runtime import build_runtime
from authgate.envoy import EnvoyProcess, build_bootstrap
from authgate.session.store import SqliteStore
from tests.support.sessions import mint
from tests.support.upstream import SampleUpstream

WINDOW = {"timezone": "Europe/Berlin", "after": "09:00", "before": "17:00"}
INSIDE = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)  # 10:30 in Berlin
OUTSIDE = datetime(2026, 11, 18, 16, 30, tzinfo=UTC)  # 17:30 in Berlin
EDGE = datetime(2026, 11, 18, 16, 0, tzinfo=UTC)  # 17:00 in Berlin: `before` is exclusive


class Clock:
    """The authz worker's clock, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Authz:
    """authgate's real servicer on a grpc.aio server, on its own event loop in a thread."""

    def __init__(self, state: AuthzState, socket_path: Path) -> None:
        self.state = state
        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None

    def run(self, coro: Any) -> Any:
        """Run `coro` on the servicer's loop (the state's session store is used there)."""
        return self._run(coro)

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        add_servicer(self._server, AuthorizationServicer(self.state))
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
        await self.state.sessions.aclose()
        await self.state.oidc.aclose()

    def __enter__(self) -> Authz:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    port: int
    clock: Clock
    upstream: SampleUpstream
    state: AuthzState
    authz: Authz

    def get(self, host: str, path: str = "/", **headers: str) -> httpx.Response:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=10
        ) as client:
            return client.get(path, headers={"host": f"{host}:{self.port}", **headers})

    def seen(self) -> list[str]:
        """The paths the upstream received."""
        return [r.path for r in self.upstream.requests]

    def cookie_for(self, host: str, email: str) -> str:
        """A session in the worker's store (as a login would start it) and its cookie."""
        claims = {"sub": email, "email": email}
        _, value = self.authz.run(mint(self.state, f"{host}:{self.port}", claims))
        return f"{self.state.session_cookie}={value}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="ag-tod-", dir="/tmp"))  # short Unix socket paths
    port = free_port()
    upstream = SampleUpstream(unix_path=work / "app.sock").start()
    settings = settings_from_mapping(
        {
            "address": f"127.0.0.1:{port}",
            "insecure_server": True,
            "authenticate_service_url": f"http://authenticate.test:{port}",
            "idp_provider_url": "https://idp.test",
            "idp_client_id": "authgate",
            "idp_client_secret": "client-secret",
            "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
            "routes": [
                {
                    "from": f"http://office.test:{port}",
                    "to": f"unix://{upstream.unix_path}",
                    "policy": {"allow": {"and": [{"time_of_day": WINDOW}]}},
                },
                {
                    "from": f"http://staff.test:{port}",
                    "to": f"unix://{upstream.unix_path}",
                    "policy": {
                        "allow": {
                            "and": [{"domain": {"is": "example.com"}}, {"time_of_day": WINDOW}]
                        }
                    },
                },
            ],
        },
        environ={},
    )
    cfg = build_runtime(settings, warn=False)
    clock = Clock(INSIDE)
    state = AuthzState.build(cfg, clock=clock, store=SqliteStore(work / "sessions.db"))
    doc = build_bootstrap(
        cfg, [f"unix:{work / 'authz.sock'}"], admin_address=f"unix:{work / 'admin.sock'}"
    )
    try:
        with (
            Authz(state, work / "authz.sock") as authz,
            EnvoyProcess(doc, workdir=work / "envoy"),
        ):
            yield Stack(port, clock, upstream, state, authz)
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_anonymous_inside_and_outside_the_window(stack: Stack) -> None:
    stack.clock.now = INSIDE
    assert stack.get("office.test", "/in").status_code == 200
    assert stack.upstream.requests[-1].path == "/in"

    stack.clock.now = OUTSIDE
    answer = stack.get("office.test", "/out", accept="application/json")
    assert answer.status_code == 401
    assert "/out" not in stack.seen()
    browser = stack.get("office.test", "/out-browser", accept="text/html")
    assert browser.status_code == 302
    assert "/.pomerium/sign_in" in browser.headers["location"]
    assert "/out-browser" not in stack.seen()

    stack.clock.now = EDGE
    assert stack.get("office.test", "/edge", accept="application/json").status_code == 401
    assert "/edge" not in stack.seen()

    stack.clock.now = INSIDE  # the same worker lets requests in again: nothing was cached
    assert stack.get("office.test", "/again").status_code == 200
    assert stack.upstream.requests[-1].path == "/again"


def test_signed_in_user_outside_the_window_gets_403(stack: Stack) -> None:
    cookie = stack.cookie_for("staff.test", "alice@example.com")
    stack.clock.now = INSIDE
    assert stack.get("staff.test", "/staff-in", cookie=cookie).status_code == 200
    assert stack.upstream.requests[-1].path == "/staff-in"

    stack.clock.now = OUTSIDE
    answer = stack.get("staff.test", "/staff-out", cookie=cookie, accept="application/json")
    assert answer.status_code == 403
    assert "/staff-out" not in stack.seen()

    other = stack.cookie_for("staff.test", "eve@evil.org")
    stack.clock.now = INSIDE
    answer = stack.get("staff.test", "/eve", cookie=other, accept="application/json")
    assert answer.status_code == 403
    assert "/eve" not in stack.seen()
