"""Readiness probes: does a socket accept connections, is Envoy's admin answering LIVE."""

import http.client
import socket
from pathlib import Path

PROBE_TIMEOUT_S = 1.0


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (Envoy's admin in `authgate run`)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_get(admin_socket: Path, path: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, bytes]:
    """GET `path` from Envoy's admin on its Unix socket."""
    conn = _UnixHTTPConnection(admin_socket, timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def envoy_live(admin_socket: Path) -> str | None:
    """None when Envoy says LIVE; else why not, in a few words."""
    try:
        status, body = admin_get(admin_socket, "/ready")
    except OSError as exc:
        return f"envoy admin unreachable ({exc.strerror or exc.__class__.__name__})"
    state = body.decode("ascii", "replace").strip()
    return None if status == 200 and state == "LIVE" else f"envoy not live ({state or status})"


def accepts(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a server listens at `endpoint` (unix:/path, /path or host:port)."""
    if endpoint.startswith(("unix:", "/")):
        family, address = socket.AF_UNIX, endpoint.removeprefix("unix:")
        target: str | tuple[str, int] = address
    else:
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        target = (host, int(port))
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            return False
    return True
