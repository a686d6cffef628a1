"""A real `redis-server` (Debian's) on a free 127.0.0.1 port, for the Redis session store tests.

Usage::

    with RedisServer(password="pw", appendonly=True) as server:
        server.url          # "redis://:pw@127.0.0.1:<port>/0"
        server.kill()       # kill -9 (an outage); or stop() for a clean shutdown
        server.start()      # again, on the same port and data directory
        server.pause()      # SIGSTOP: accepts connections, never answers; resume() undoes it

    with RedisServer(tls=TlsFiles(cert, key, ca)) as server:
        server.url          # "rediss://127.0.0.1:<port>/0?ssl_ca_certs=<ca>" (TLS only)

With `appendonly=True` every write is fsynced to the AOF (`appendfsync always`), so even a
kill -9 loses nothing and a restart finds every record.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


class RedisServer:
    def __init__(
        self,
        *,
        password: str | None = None,
        appendonly: bool = False,
        port: int | None = None,
        tls: TlsFiles | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.password = password
        self.tls = tls
        self.appendonly = appendonly
        self.port = port or free_port()
        self.extra_args = extra_args
        self._tmp = tempfile.TemporaryDirectory(prefix="authgate-redis-")
        self.dir = Path(self._tmp.name)
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        ports = ["--port", str(self.port)]
        if self.tls is not None:  # TLS only: the plain port is off
            ports = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.cert),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "no",
            ]
        argv = [
            REDIS_SERVER,
            *ports,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir),
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.appendonly:
            argv += ["--appendfsync", "always"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + list(self.extra_args)

    def start(self, timeout_s: float = 10.0) -> None:
        if not redis_server_available():
            raise RuntimeError("redis-server is missing: run `make system-deps`")
        if self._proc is not None and self._proc.poll() is None:
            return
        # Its own process group, so Ctrl-C on the test run does not race our shutdown.
        self._proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING in {timeout_s}s: {self._log_tail()}")

    def _answers(self) -> bool:
        """PING answers +PONG (or -NOAUTH with a password); -LOADING means not yet."""
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            if self.tls is not None:
                ctx = ssl.create_default_context(cafile=str(self.tls.ca))
                sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")  # owns the fd now
            with sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """A clean shutdown (SIGTERM; with appendonly the AOF is complete)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a hung server)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """kill -9 and remove the data directory."""
        self.kill()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
