"""Build the Envoy bootstrap from a config written inline, and find things in it.

Shared by tests/unit/test_envoy_bootstrap.py (the bootstrap's structure) and
tests/integration/test_envoy_validate.py (the real `envoy --mode validate` accepts it).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import trustme

from authgate.config.load import settings_from_mapping
from authgate.config.runtime import RuntimeConfig, build_runtime
from authgate.envoy import build_bootstrap
from authgate.envoy.bootstrap import EXT_AUTHZ_FILTER

COOKIE_SECRET = base64.b64encode(os.urandom(32)).decode()
AUTHZ_ENDPOINTS = ["unix:/run/authgate/authz-0.sock", "unix:/run/authgate/authz-1.sock",
                   "127.0.0.1:9901"]
ADMIN = "unix:/run/authgate/envoy-admin.sock"
HOST_KEYS = ("auto_host_rewrite", "host_rewrite_literal", "host_rewrite_header")


def write_test_certs(directory: Path) -> tuple[str, str]:
    """A trustme CA (ca.pem) + `*.test` leaf (cert.pem, key.pem) in directory; the leaf's names
    relative to it."""
    ca = trustme.CA()
    leaf = ca.issue_cert("*.test", "authenticate.test")
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return "cert.pem", "key.pem"


def runtime(routes: list[dict[str, Any]], *, tls: tuple[str, str] | None = None,
            **extra: Any) -> RuntimeConfig:
    scheme = "https" if tls else "http"
    raw: dict[str, Any] = {
        "address": "127.0.0.1:8443",
        "authenticate_service_url": f"{scheme}://authenticate.test",
        "idp_provider_url": "https://idp.test/realms/x",
        "idp_client_id": "authgate",
        "idp_client_secret": "s3cret",
        "cookie_secret": COOKIE_SECRET,
        "routes": routes,
        **extra,
    }
    if tls:
        raw["certificate_file"], raw["certificate_key_file"] = tls
    else:
        raw["insecure_server"] = True
    return build_runtime(settings_from_mapping(raw, environ={}), warn=False)


def route(from_: str, to: str | list[str], **options: Any) -> dict[str, Any]:
    return {"from": from_, "to": to, "allow_any_authenticated_user": True, **options}


def bootstrap(cfg: RuntimeConfig, **kw: Any) -> dict[str, Any]:
    return build_bootstrap(cfg, kw.pop("endpoints", AUTHZ_ENDPOINTS), admin_address=ADMIN, **kw)


def listener(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = doc["static_resources"]["listeners"]
    return only  # type: ignore[no-any-return]


def hcm(doc: dict[str, Any]) -> dict[str, Any]:
    (chain,) = listener(doc)["filter_chains"]
    (flt,) = chain["filters"]
    assert flt["name"] == "envoy.filters.network.http_connection_manager"
    return flt["typed_config"]  # type: ignore[no-any-return]


def ext_authz(doc: dict[str, Any]) -> dict[str, Any]:
    return hcm(doc)["http_filters"][0]["typed_config"]  # type: ignore[no-any-return]


def vhosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {vh["name"]: vh for vh in hcm(doc)["route_config"]["virtual_hosts"]}


def clusters(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["static_resources"]["clusters"]}


def context(route_doc: dict[str, Any]) -> dict[str, str]:
    per_route = route_doc["typed_per_filter_config"][EXT_AUTHZ_FILTER]
    assert per_route["@type"].endswith("ext_authz.v3.ExtAuthzPerRoute")
    return per_route["check_settings"]["context_extensions"]  # type: ignore[no-any-return]


def endpoints(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    (locality,) = cluster["load_assignment"]["endpoints"]
    return [lb["endpoint"] for lb in locality["lb_endpoints"]]


def proxy_route(doc: dict[str, Any], vhost: str, route_id: str) -> dict[str, Any]:
    for r in vhosts(doc)[vhost]["routes"]:
        if r.get("name") == route_id:
            return r  # type: ignore[no-any-return]
    raise AssertionError(f"no route {route_id} in {vhost}")



def kitchen_sink(tls: tuple[str, str]) -> RuntimeConfig:
    """A config touching every feature, over TLS."""
    return runtime(
        [
            route("https://jenkins.test:8443", "unix:///run/jenkins/jenkins.sock",
                  id="jenkins", allow_websockets=True, host_rewrite_header=True),
            route("https://jenkins.test:8443", "http://10.1.2.3:8080", id="jenkins-api",
                  path="/api/json", preserve_host_header=True),
            route("https://app.test", ["http://app-a:8080", "http://app-b:8080"], id="app",
                  prefix="/app/", timeout="90s", idle_timeout="10m",
                  set_request_headers={"X-Team": "blue", "X-Forwarded-Prefix": "/app"},
                  remove_request_headers=["X-Debug", "X-Pomerium-Claim-Email"]),
            route("https://secure.test", "https://backend.internal:9443", id="secure",
                  host_rewrite="backend.internal"),
            route("https://hdr.test", "https://10.9.9.9", id="hdr",
                  host_rewrite_header="X-Upstream-Host"),
        ],
        tls=tls,
    )


# ---------------------------------------------------------------------------- one-route configs


def only_route(doc: dict[str, Any], vhost: str = "a.test") -> dict[str, Any]:
    """The single proxy route of a one-route config (after the four internal routes)."""
    routes = vhosts(doc)[vhost]["routes"]
    assert len(routes) == 5
    return routes[4]  # type: ignore[no-any-return]


def one_route_doc(to: str = "http://10.0.0.1:8080", **options: Any) -> dict[str, Any]:
    return bootstrap(runtime([route("http://a.test", to, id="r", **options)]))


def https_cluster(doc: dict[str, Any]) -> dict[str, Any]:
    tls = clusters(doc)["upstream-r"]["transport_socket"]
    assert tls["name"] == "envoy.transport_sockets.tls"
    return tls["typed_config"]  # type: ignore[no-any-return]
