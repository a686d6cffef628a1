"""The supervisor's pure parts: restart backoff and crash loops, the file watch, the split of a
bootstrap into xDS files, the port check."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from authgate.envoy.xds import split, write
from authgate.supervise.dirlock import DirectoryInUse, DirectoryLock
from authgate.supervise.ports import PortInUse, refuse_if_served
from authgate.supervise.restarts import CRASH_LOOP_EXITS, CrashLoop, Restarts
from authgate.supervise.watch import FileWatch

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def test_backoff_grows_and_a_crash_loop_names_the_child() -> None:
    restarts = Restarts("authz worker 1")
    delays = [restarts.record_exit(float(i)) for i in range(CRASH_LOOP_EXITS - 1)]
    assert delays[0] == 0.05 and delays == sorted(delays) and max(delays) == 1.0
    with pytest.raises(CrashLoop, match=r"authz worker 1 exited 20 times within 60 s"):
        restarts.record_exit(float(CRASH_LOOP_EXITS))


def test_exits_spread_over_more_than_a_minute_are_no_loop() -> None:
    restarts = Restarts("envoy")
    for i in range(3 * CRASH_LOOP_EXITS):
        restarts.record_exit(i * 4.0)  # one exit every 4 s: at most 16 within any minute
    assert restarts.total == 3 * CRASH_LOOP_EXITS


def test_watch_sees_a_same_size_rewrite_and_a_removal(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("AAAA")
    watch = FileWatch([cert, cert])
    assert watch.changed() == []
    cert.write_text("BBBB")  # same size, possibly the same mtime
    assert watch.changed() == [cert]
    assert watch.changed() == []
    cert.write_text("BBBB")  # the same bytes again: nothing to reload
    assert watch.changed() == []
    cert.unlink()
    assert watch.changed() == [cert]


def _static(cert: Path, key: Path) -> dict[str, Any]:
    tls = {"@type": TLS, "common_tls_context": {"tls_certificates": [{
        "certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}]}}
    hcm = {"@type": HCM, "stat_prefix": "x", "route_config": {"name": "authgate",
                                                              "virtual_hosts": []}}
    return {
        "node": {"id": "authgate"},
        "admin": {"address": {"pipe": {"path": "/tmp/a.sock"}}},
        "static_resources": {
            "listeners": [{"name": "authgate_https", "filter_chains": [{
                "filters": [{"name": "hcm", "typed_config": hcm}],
                "transport_socket": {"name": "tls", "typed_config": tls}}]}],
            "clusters": [{"name": "authgate_authz"}],
        },
    }


def test_split_moves_routes_and_certificates_out_of_the_listener(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("CERT")
    key.write_text("KEY")
    bootstrap, resources = split(_static(cert, key), tmp_path / "xds")
    assert "static_resources" not in bootstrap
    assert set(bootstrap["dynamic_resources"]) == {"lds_config", "cds_config"}
    (listener,) = resources.by_kind["lds"]
    chain = listener["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    assert "route_config" not in hcm
    assert hcm["rds"]["route_config_name"] == "authgate_https-0-authgate"
    assert resources.by_kind["rds"][0]["name"] == "authgate_https-0-authgate"
    common = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert "tls_certificates" not in common
    (secret,) = resources.by_kind["sds"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == secret["name"]
    # Inlined: a renewed certificate changes the secret, so Envoy takes it.
    assert secret["tls_certificate"]["certificate_chain"] == {"inline_string": "CERT"}
    assert resources.by_kind["cds"][0]["name"] == "authgate_authz"
    write(resources, tmp_path / "xds")
    sds = tmp_path / "xds" / "sds" / f"{secret['name']}.json"  # one file per named resource
    assert json.loads(sds.read_text())["resources"] == [secret]
    assert sds.stat().st_mode & 0o077 == 0  # holds a private key
    cert.write_text("RENEWED")
    _, renewed = split(_static(cert, key), tmp_path / "xds")
    assert renewed.fingerprint("sds") != resources.fingerprint("sds")
    assert renewed.fingerprint("lds") == resources.fingerprint("lds")


def test_split_refuses_an_unreadable_certificate(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        split(_static(tmp_path / "gone.pem", tmp_path / "key.pem"), tmp_path / "xds")


def test_a_served_port_is_refused() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as Envoy binds
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            refuse_if_served("127.0.0.1", port)
    refuse_if_served("127.0.0.1", port)  # free again


def test_one_run_per_runtime_directory(tmp_path: Path) -> None:
    first, second = DirectoryLock(tmp_path), DirectoryLock(tmp_path)
    first.acquire()
    with pytest.raises(DirectoryInUse, match=rf"pid {os.getpid()}\): give this one its own"):
        second.acquire()
    assert not second.held
    first.release()
    second.acquire()  # free again (a killed run's lock goes with its process)
    assert second.held
    second.release()
