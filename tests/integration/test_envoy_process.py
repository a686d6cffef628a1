"""A real Envoy from a generated bootstrap, with a minimal grpc.aio ext_authz server and the
sample upstream, both on Unix sockets: OK reaches the upstream; authz down or slow => 503 and the
upstream sees nothing (fail closed)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import code_pb2, status_pb2

from authgate._pb.envoy.config.core.v3 import base_pb2
from authgate._pb.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authgate.authz.service import headers_of
from authgate.config.load import settings_from_mapping
from authgate.config.runtime import build_runtime
from authgate.envoy import EnvoyProcess, build_bootstrap
from tests.support.upstream import SampleUpstream

# ---------------------------------------------------------------------------- the fake authz


@dataclass
class SeenCheck:
    path: str
    host: str
    headers: dict[str, str]
    context: dict[str, str]


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):
    """Answers OK and adds `x-authz: ok`; sleeps first when the path starts with /slow."""

    def __init__(self, seen: list[SeenCheck]) -> None:
        self.seen = seen

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        http_req = request.attributes.request.http
        self.seen.append(SeenCheck(http_req.path, http_req.host, headers_of(http_req)[0],
                                   dict(request.attributes.context_extensions)))
        if http_req.path.startswith("/slow"):
            await asyncio.sleep(3)
        header = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-authz", value="ok"))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(headers=[header]),
        )


class FakeAuthz:
    """A grpc.aio server on a Unix socket, on its own event loop in a thread."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.seen: list[SeenCheck] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        servicer = AllowAll(self.seen)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, self._server
        )
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    def start(self) -> None:
        self._thread.start()
        self._run(self._start())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._run(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# ---------------------------------------------------------------------------- fixtures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    port: int
    envoy: EnvoyProcess
    authz: FakeAuthz
    upstream: SampleUpstream

    def get(self, path: str, host: str = "app.test", **headers: str) -> httpx.Response:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", trust_env=False,
                          timeout=10) as client:
            return client.get(path, headers={"host": f"{host}:{self.port}", **headers})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under ~100 bytes; pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="ag-envoy-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stack(short_dir: Path) -> Iterator[Stack]:
    port = free_port()
    upstream = SampleUpstream(unix_path=short_dir / "app.sock").start()
    authz = FakeAuthz(short_dir / "authz.sock")
    authz.start()
    settings = settings_from_mapping({
        "address": f"127.0.0.1:{port}",
        "insecure_server": True,
        "authenticate_service_url": f"http://authenticate.test:{port}",
        "idp_provider_url": "https://idp.test",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
        "routes": [{"from": f"http://app.test:{port}", "to": f"unix://{upstream.unix_path}",
                    "id": "app", "allow_any_authenticated_user": True}],
    }, environ={})
    doc = build_bootstrap(build_runtime(settings, warn=False), [f"unix:{authz.socket_path}"],
                          admin_address=f"unix:{short_dir / 'admin.sock'}",
                          authz_timeout_s=0.5)
    envoy = EnvoyProcess(doc, workdir=short_dir / "envoy", concurrency=2)
    try:
        with envoy:
            yield Stack(port, envoy, authz, upstream)
    finally:
        authz.close()
        upstream.stop()


# ---------------------------------------------------------------------------- tests


def test_allowed_request_reaches_upstream_with_authz_headers(stack: Stack) -> None:
    response = stack.get("/hello?x=1", X_Pomerium_Claim_Email="evil@example.com",
                         **{"x-pomerium-claim-groups": "admins"})
    assert response.status_code == 200, response.text
    (seen,) = stack.upstream.requests
    assert seen.path == "/hello?x=1"
    assert seen.header("x-authz") == "ok"
    assert seen.host == f"app.test:{stack.port}"  # unix upstream keeps Host
    # Underscore variants are dropped by Envoy before anyone sees them.
    assert not any("_" in name for name, _ in seen.headers)
    (check,) = stack.authz.seen
    assert check.context == {"route_id": "app", "kind": "route"}
    assert check.host == f"app.test:{stack.port}"
    assert check.headers["x-pomerium-claim-groups"] == "admins"  # authz sees them to strip them
    assert not any("_" in name for name in check.headers)


def test_internal_paths_go_to_authz_never_upstream(stack: Stack) -> None:
    response = stack.get("/.well-known/pomerium/jwks.json")
    assert response.status_code == 404  # our fake authz allows; the direct_response answers
    assert not stack.upstream.requests
    assert stack.authz.seen[0].context == {"route_id": "app", "kind": "internal"}
    assert stack.get("/", host="authenticate.test").status_code == 404
    assert stack.authz.seen[1].context == {"route_id": "__authenticate__", "kind": "authenticate"}


def test_unknown_host_is_envoys_404_without_authz(stack: Stack) -> None:
    assert stack.get("/", host="unknown.test").status_code == 404
    assert stack.authz.seen == [] and not stack.upstream.requests


def test_authz_down_fails_closed(stack: Stack) -> None:
    assert stack.get("/before").status_code == 200
    stack.authz.stop()
    for _ in range(3):
        response = stack.get("/after")
        assert response.status_code == 503
    assert [r.path for r in stack.upstream.requests] == ["/before"]


def test_authz_timeout_fails_closed(stack: Stack) -> None:
    started = time.monotonic()
    response = stack.get("/slow")
    assert response.status_code == 503
    assert time.monotonic() - started < 2.5  # the 0.5s authz timeout, not the 3s sleep
    assert not stack.upstream.requests


def test_admin_endpoint_answers_over_unix_socket(stack: Stack) -> None:
    assert stack.envoy.poll() is None
    assert stack.envoy.admin_get("/ready").text.strip() == "LIVE"


# ---------------------------------------------------------------------------- process control


def test_wait_ready_reports_envoys_error(short_dir: Path) -> None:
    settings = settings_from_mapping({
        "address": f"127.0.0.1:{free_port()}",
        "certificate_file": str(short_dir / "missing-cert.pem"),
        "certificate_key_file": str(short_dir / "missing-key.pem"),
        "authenticate_service_url": "https://authenticate.test",
        "idp_provider_url": "https://idp.test",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "routes": [{"from": "https://app.test", "to": "http://127.0.0.1:1"}],
    }, environ={})
    doc = build_bootstrap(build_runtime(settings, warn=False), ["unix:/tmp/nowhere.sock"],
                          admin_address=f"unix:{short_dir / 'admin.sock'}")
    envoy = EnvoyProcess(doc, workdir=short_dir / "bad")
    envoy.start()
    try:
        expected = r"(?s)exited with status 1.*missing-(cert|key)\.pem"
        with pytest.raises(RuntimeError, match=expected):
            envoy.wait_ready(timeout=20)
        assert envoy.poll() not in (None, 0)
    finally:
        envoy.stop()


def test_two_envoys_run_side_by_side_and_stop(short_dir: Path) -> None:
    def bootstrap(name: str) -> dict[str, Any]:
        port = free_port()
        settings = settings_from_mapping({
            "address": f"127.0.0.1:{port}",
            "insecure_server": True,
            "authenticate_service_url": f"http://authenticate.test:{port}",
            "idp_provider_url": "https://idp.test",
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "routes": [{"from": f"http://app.test:{port}", "to": "http://127.0.0.1:1"}],
        }, environ={})
        return build_bootstrap(build_runtime(settings, warn=False), ["127.0.0.1:1"],
                               admin_address=f"unix:{short_dir / name}.sock")

    first = EnvoyProcess(bootstrap("a"), workdir=short_dir / "a", concurrency=1)
    second = EnvoyProcess(bootstrap("b"), workdir=short_dir / "b", concurrency=1)
    with first, second:
        assert first.poll() is None and second.poll() is None
        assert (short_dir / "a" / "envoy.yaml").is_file()
    assert first.poll() is None  # stopped and forgotten
    assert first.pid is None


def test_envoy_dies_with_the_process_that_started_it(short_dir: Path) -> None:
    """Even a SIGKILLed parent takes its Envoy along (parent-death signal), so no Envoy keeps
    serving an old configuration on its own."""
    port = free_port()
    settings = {
        "address": f"127.0.0.1:{port}",
        "insecure_server": True,
        "authenticate_service_url": f"http://authenticate.test:{port}",
        "idp_provider_url": "https://idp.test",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "routes": [{"from": f"http://app.test:{port}", "to": "http://127.0.0.1:1"}],
    }
    parent_code = f"""
import sys, time
from pathlib import Path
from authgate.config.load import settings_from_mapping
from authgate.config.runtime import build_runtime
from authgate.envoy import EnvoyProcess, build_bootstrap
cfg = build_runtime(settings_from_mapping({settings!r}, environ={{}}), warn=False)
doc = build_bootstrap(cfg, ["127.0.0.1:1"], admin_address="unix:{short_dir}/admin.sock")
envoy = EnvoyProcess(doc, workdir=Path("{short_dir}"), concurrency=1)
envoy.start()
envoy.wait_ready()
print(envoy.pid, flush=True)
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        envoy_pid = int(parent.stdout.readline())
        os.kill(envoy_pid, 0)  # running
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{envoy_pid}").exists():
        assert time.monotonic() < deadline, "Envoy outlived its parent"
        time.sleep(0.05)


def test_restart_starts_again_with_the_same_config(stack: Stack) -> None:
    first = stack.envoy.pid
    stack.envoy.restart()
    stack.envoy.wait_ready()
    assert stack.envoy.pid != first
    assert stack.get("/again").status_code == 200
