"""The floor for any Python ext_authz server: grpc.aio on uvloop answering OK without looking.

Same server options as authgate's worker (`grpc.so_reuseport` off, one process per socket), the
same generated upb stubs; the request is still deserialized by grpc (that is part of the floor).
`--raw`: grpc.aio's true minimum, a generic handler that takes the request as bytes and returns
serialized OK bytes (no protobuf parsing or building at all).

    python bench/noop_authz.py --listen unix:/tmp/x.sock --ready-file /tmp/x.ready [--raw]
"""

import argparse
import asyncio
import os
import signal
from pathlib import Path

import grpc
import uvloop
from google.rpc import code_pb2, status_pb2

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
OK_BYTES = OK.SerializeToString()
SERVICE = "envoy.service.auth.v3.Authorization"


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return OK


async def check_raw(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return OK_BYTES


def raw_handler() -> grpc.GenericRpcHandler:
    """No (de)serializers: grpc hands the handler bytes and sends the bytes it returns."""
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(check_raw)}
    )


async def serve(listen: str, ready_file: Path | None, raw: bool = False) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if raw:
        server.add_generic_rpc_handlers((raw_handler(),))
    else:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    if listen.startswith("unix:"):
        Path(listen.removeprefix("unix:")).unlink(missing_ok=True)
    server.add_insecure_port(listen)
    await server.start()
    if ready_file is not None:
        ready_file.write_text(str(os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="unix:/path.sock or host:port")
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--raw", action="store_true", help="bytes in, bytes out: no protobuf")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, Path(args.ready_file) if args.ready_file else None, args.raw))


if __name__ == "__main__":
    main()
