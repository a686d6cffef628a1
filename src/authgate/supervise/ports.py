"""Refuse to start on a port something already serves.

Envoy's listeners set SO_REUSEPORT, so a second `authgate run` on the same port would bind
silently and the kernel would split connections between the old and the new config."""

import errno
import socket


class PortInUse(RuntimeError):
    pass


def refuse_if_served(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR (as Envoy binds) ignores sockets in TIME_WAIT but not a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"{host}:{port} is already in use (another `authgate run`?): stop it first, "
                    "or change `address`"
                ) from None
            raise
