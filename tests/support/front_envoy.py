"""A TLS-terminating load balancer in front of authgate, as a test writes it: a real Envoy that
ends TLS, appends the client's address to X-Forwarded-For and forwards plain HTTP (Host kept)
to one backend."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

import yaml

from tests.support.byo_stack import envoy_binary, unique_base_id
from tests.support.certs import TestPKI


def front_config(listen_port: int, backend_port: int, pki: TestPKI) -> dict[str, object]:
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": str(pki.cert_file)},
                "private_key": {"filename": str(pki.key_file)},
            }]},
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager",
        "stat_prefix": "front",
        "use_remote_address": True,  # append the TLS client's address to X-Forwarded-For
        "route_config": {"virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "authgate"}}],
        }]},
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        }],
    }
    return {
        "static_resources": {
            "listeners": [{
                "name": "front",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{
                    "transport_socket": tls,
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": hcm,
                    }],
                }],
            }],
            "clusters": [{
                "name": "authgate", "type": "STATIC", "connect_timeout": "5s",
                "load_assignment": {"cluster_name": "authgate", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": backend_port}}}}
                ]}]},
            }],
        },
    }


class FrontEnvoy:
    """The balancer as a subprocess."""

    __test__ = False

    def __init__(self, workdir: Path, listen_port: int, backend_port: int, pki: TestPKI) -> None:
        self.workdir = workdir
        self.config = front_config(listen_port, backend_port, pki)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FrontEnvoy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "front-envoy.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = (self.workdir / "front-envoy.log").open("wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path), "--base-id", str(unique_base_id()),
             "--log-level", "warn", "--concurrency", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise RuntimeError((self.workdir / "front-envoy.log").read_text())
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
