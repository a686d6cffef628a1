"""The ops endpoint on `metrics_address`: GET /metrics, /metrics/envoy, /healthz, /readyz.

A small threaded HTTP server beside the real work (the supervisor of `authgate run`, or the
`authgate authz` process): a scrape never waits on a Check, and a stuck Check loop still lets
/healthz answer."""

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

# (ready, reason): the reason is a few plain words for a human or a probe's log.
Readiness = Callable[[], tuple[bool, str]]


def split_address(address: str) -> tuple[str, int]:
    """`host:port`, `:port` (every interface, as in Pomerium) or `[v6]:port`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"metrics address {address!r} is not host:port; write e.g. :9090")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class OpsServer:
    def __init__(
        self,
        address: str,
        metrics: Callable[[], bytes],
        readiness: Readiness,
        envoy_metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self.address = address
        host, port = split_address(address)
        handler = _handler(metrics, readiness, envoy_metrics)
        server_class = type(
            "_OpsServer",
            (_Server,),
            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
        )
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise OSError(f"metrics_address {address}: cannot listen ({exc.strerror})") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="authgate-ops", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "OpsServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    metrics: Callable[[], bytes],
    readiness: Readiness,
    envoy_metrics: Callable[[], bytes] | None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "authgate-ops"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ready, reason = readiness()
                self._send(200 if ready else 503, f"{reason}\n".encode())
            elif path == "/metrics":
                self._send(200, metrics(), CONTENT_TYPE_LATEST)
            elif path == "/metrics/envoy" and envoy_metrics is not None:
                try:
                    body = envoy_metrics()
                except OSError as exc:
                    self._send(503, f"envoy admin unreachable: {exc}\n".encode())
                    return
                self._send(200, body, CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: /metrics, /healthz, /readyz\n")

        def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the decision log

    return Handler
