"""The ext_authz gRPC server: one grpc.aio server per worker process, on uvloop."""

import asyncio
import os
import signal
import sys
from pathlib import Path
from time import perf_counter

import grpc
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
from authgate.authz.decision import Allow
from authgate.authz.response import to_check_response
from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState
from authgate.config import RuntimeConfig
from authgate.logs import configure_logging
from authgate.ops.decision_log import note_of, record_error, record_kept
from authgate.session.store import StoreUnavailable

log = structlog.get_logger("authgate.authz")


SERVICE = "envoy.service.auth.v3.Authorization"
# In-flight Checks get this long to finish after SIGTERM (a reload drains old workers this way).
STOP_GRACE_S = 2.0


class AuthorizationServicer:
    """Check answers with serialized CheckResponse bytes (the memo keeps them serialized)."""

    def __init__(self, state: AuthzState) -> None:
        self.state = state
        self.memo = state.allow_memo
        self.sessions = state.sessions

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        started = perf_counter()  # ops: decision log and metrics
        try:
            # Kept answers only while this worker hears of every session change in time.
            probe = self.memo.probe(request.attributes) if self.sessions.fresh() else None
            key = None
            if probe is not None:
                key, request_id = probe
                kept = self.memo.lookup(key)
                if kept is not None:
                    record_kept(request.attributes.request.http, request_id, kept[1], started)
                    return kept[0]
            ctx = request_context(request)
            decision = await decide(self.state, ctx, started)
            serialized: bytes = to_check_response(decision).SerializeToString()
            if key is not None and isinstance(decision, Allow):
                note = note_of(ctx.route_id, decision)
                self.memo.put(key, serialized, decision.until, decision.session_id, note)
            return serialized
        except Exception:
            # Fail closed: Envoy turns a gRPC error into 503 (status_on_error), never an allow.
            http = request.attributes.request.http
            log.exception("check_failed", path=http.path.partition("?")[0])  # no query: codes
            record_error(request.attributes, started)
            await context.abort(grpc.StatusCode.INTERNAL, "authorization error")
            raise


def add_servicer(server: grpc.aio.Server, servicer: AuthorizationServicer) -> None:
    """Like the generated add_AuthorizationServicer_to_server, minus the response serializer:
    Check returns bytes already."""
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check, request_deserializer=external_auth_pb2.CheckRequest.FromString
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _grpc_address(listen: str) -> str:
    return listen if not listen.startswith("/") else f"unix:{listen}"


async def serve(
    cfg: RuntimeConfig,
    listen: str,
    ready_file: Path | None = None,
    state: AuthzState | None = None,
    shared_dir: Path | None = None,
) -> None:
    """Serve Check on `listen` (unix:/path.sock or host:port) until SIGTERM/SIGINT."""
    state = state or AuthzState.build(cfg, shared_dir=shared_dir)
    try:
        await state.sessions.poll()  # fresh from the first Check
    except StoreUnavailable as exc:
        log.error("session_store_unavailable", error=str(exc))
    feed = asyncio.create_task(state.sessions.run_feed())
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_servicer(server, AuthorizationServicer(state))
    # grpc.health.v1 for Envoy's active health checks: `authgate run` restarts a dead worker
    # and Envoy only sends Checks to the ones that answer SERVING.
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = _grpc_address(listen)
    if address.startswith("unix:"):
        Path(address.removeprefix("unix:")).unlink(missing_ok=True)
    if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if ready_file is not None:
        partial = ready_file.with_name(ready_file.name + ".tmp")
        partial.write_text(str(os.getpid()))
        partial.replace(ready_file)  # readers never see an empty pid
    print(f"authgate authz: serving ext_authz on {address}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()  # NOT_SERVING: Envoy stops sending Checks
    await server.stop(grace=STOP_GRACE_S)
    feed.cancel()
    await state.sessions.aclose()
    await state.oidc.aclose()


def run_server(
    cfg: RuntimeConfig,
    listen: str,
    ready_file: Path | None = None,
    shared_dir: Path | None = None,
) -> None:
    configure_logging(cfg.settings.log_level)
    uvloop.run(serve(cfg, listen, ready_file, shared_dir=shared_dir))
