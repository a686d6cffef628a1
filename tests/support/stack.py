"""Start the real stack for integration tests: `authgate run` (Envoy + authz workers)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from tests.support.resolve import map_hosts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AuthgateStack:
    """`authgate run -c config.yaml` as a user runs it, in a subprocess."""

    __test__ = False

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        *,
        workers: int = 1,
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        """`client_cert`: (cert, key) the readiness check presents (downstream mTLS)."""
        self.workdir = workdir
        self.client_cert = client_cert
        self.config = config
        self.workers = workers
        self.ca_file = ca_file
        self.config_path = workdir / "config.yaml"
        self.runtime_dir = workdir / "run"
        self.log_path = workdir / "authgate.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def authenticate_url(self) -> str:
        return str(self.config["authenticate_service_url"])

    def start(self, timeout: float = 60.0) -> AuthgateStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authgate",
                "run",
                "-c",
                str(self.config_path),
                "--workers",
                str(self.workers),
                "--runtime-dir",
                str(self.runtime_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        url = f"{self.authenticate_url}/.well-known/pomerium/jwks.json"
        deadline = time.monotonic() + timeout
        verify: ssl.SSLContext | bool = True
        if self.ca_file:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
            if self.client_cert:
                verify.load_cert_chain(str(self.client_cert[0]), str(self.client_cert[1]))
        with (
            map_hosts({"*.test": "127.0.0.1"}),
            httpx.Client(verify=verify, timeout=2) as client,
        ):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"authgate run exited {self.proc.returncode}:\n{self.log()}")
                try:
                    if client.get(url).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"authgate did not become ready:\n{self.log()}")
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        return [int(p.read_text()) for p in sorted(self.runtime_dir.glob("authz-*.ready"))]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> AuthgateStack:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
