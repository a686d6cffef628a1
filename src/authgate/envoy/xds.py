"""File-based xDS for `authgate run`: Envoy's listeners, routes, clusters and TLS certificates
live in files that Envoy watches, so a reload changes them in place (no second Envoy, no hot
restart, no dropped connection).

The static bootstrap from `build_bootstrap()` stays the single source of what Envoy runs:
`split()` turns it into a small bootstrap (node, admin, runtime, `dynamic_resources`) and four
resource sets:
- CDS: every cluster;
- EDS: the authz cluster's endpoints (the workers' sockets). A reload changes only these, in
  place: replacing the cluster would reset the Checks in flight on it (Envoy shuts down a
  replaced cluster's gRPC client), while endpoints removed by EDS drain;
- RDS: each HTTP connection manager's route table, so a route change reaches open connections
  without draining the listener;
- SDS: each listener's certificate and key, inlined, so a renewed certificate is served on the
  next TLS handshake without touching the listener;
- LDS: the listeners, pointing at the RDS and SDS resources by name.
Each file is a JSON DiscoveryResponse, replaced by rename (Envoy watches the directory for moves,
never reads a half-written file). LDS and CDS are one file each (all listeners, all clusters);
RDS, SDS and EDS subscribe to one resource by name, so each of those resources has its own file
(Envoy rejects a file holding more than the one it asked for).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TYPE = "type.googleapis.com/"
LISTENER_TYPE = _TYPE + "envoy.config.listener.v3.Listener"
CLUSTER_TYPE = _TYPE + "envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = _TYPE + "envoy.config.route.v3.RouteConfiguration"
SECRET_TYPE = _TYPE + "envoy.extensions.transport_sockets.tls.v3.Secret"
ENDPOINTS_TYPE = _TYPE + "envoy.config.endpoint.v3.ClusterLoadAssignment"
HCM_TYPE = (
    _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
DOWNSTREAM_TLS_TYPE = _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
KINDS = ("sds", "eds", "cds", "rds", "lds")  # the order a change is written in: referents first
ONE_FILE_KINDS = ("lds", "cds")  # the others: one file per resource


@dataclass(frozen=True)
class Resources:
    """Envoy's resources by kind (`KINDS`), each a list of proto-JSON dicts with `@type`;
    `certificate_files`: the listener certificate files inlined in SDS; `files`: every other
    file Envoy reads (CA bundles...)."""

    by_kind: dict[str, list[dict[str, Any]]]
    certificate_files: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def fingerprint(self, kind: str) -> str:
        text = json.dumps(self.by_kind[kind], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def endpoints_with(self, other: Resources) -> Resources:
        """These resources with `other`'s endpoints added (old and new workers, during a
        switch)."""
        merged = copy.deepcopy(self.by_kind)
        extra = {a["cluster_name"]: a for a in other.by_kind["eds"]}
        for assignment in merged["eds"]:
            theirs = extra.get(assignment["cluster_name"])
            if theirs is not None:
                assignment["endpoints"] = [*assignment["endpoints"], *theirs["endpoints"]]
        return Resources(merged, self.certificate_files, self.files)


def _file_name(kind: str, resource_name: str | None) -> str:
    if resource_name is None:
        return f"{kind}.json"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", resource_name) + ".json"


def _source(directory: Path, kind: str, resource_name: str | None = None) -> dict[str, Any]:
    folder = directory / kind
    return {
        "path_config_source": {
            "path": str(folder / _file_name(kind, resource_name)),
            "watched_directory": {"path": str(folder)},
        },
        "resource_api_version": "V3",
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from None


def _certificates_to_sds(
    tls: dict[str, Any], name: str, directory: Path, secrets: list[dict[str, Any]],
    read: list[str],
) -> None:
    common = tls.setdefault("common_tls_context", {})
    refs = []
    for index, cert in enumerate(common.pop("tls_certificates", [])):
        secret_name = f"{name}-cert-{index}"
        inlined = {}
        for field in ("certificate_chain", "private_key"):
            source = cert[field]
            if "filename" in source:
                read.append(source["filename"])
                inlined[field] = {"inline_string": _read(source["filename"])}
            else:
                inlined[field] = source
        secrets.append({"@type": SECRET_TYPE, "name": secret_name, "tls_certificate": inlined})
        refs.append({"name": secret_name, "sds_config": _source(directory, "sds", secret_name)})
    if refs:
        common["tls_certificate_sds_secret_configs"] = refs


def _dynamic_listener(
    listener: dict[str, Any], directory: Path, routes: list[dict[str, Any]],
    secrets: list[dict[str, Any]], read: list[str],
) -> dict[str, Any]:
    listener = copy.deepcopy(listener)
    name = listener["name"]
    chains = listener.get("filter_chains", [])
    if "default_filter_chain" in listener:
        chains = [*chains, listener["default_filter_chain"]]
    for chain_index, chain in enumerate(chains):
        for net_filter in chain.get("filters", []):
            hcm = net_filter.get("typed_config", {})
            if hcm.get("@type") == HCM_TYPE and "route_config" in hcm:
                table = hcm.pop("route_config")
                table["name"] = f"{name}-{chain_index}-{table.get('name', 'routes')}"
                routes.append({"@type": ROUTE_TYPE, **table})
                hcm["rds"] = {
                    "config_source": _source(directory, "rds", table["name"]),
                    "route_config_name": table["name"],
                }
        socket = chain.get("transport_socket", {}).get("typed_config", {})
        if socket.get("@type") == DOWNSTREAM_TLS_TYPE:
            _certificates_to_sds(socket, f"{name}-{chain_index}", directory, secrets, read)
    return {"@type": LISTENER_TYPE, **listener}


def _endpoints_to_eds(
    cluster: dict[str, Any], directory: Path, assignments: list[dict[str, Any]]
) -> dict[str, Any]:
    cluster = copy.deepcopy(cluster)
    assignment = cluster.pop("load_assignment")
    cluster["type"] = "EDS"
    cluster["eds_cluster_config"] = {
        "eds_config": _source(directory, "eds", cluster["name"]),
        "service_name": cluster["name"],
    }
    # A worker left out of EDS gets no new Check even while it still answers health checks.
    cluster["ignore_health_on_host_removal"] = True
    assignments.append({"@type": ENDPOINTS_TYPE, **assignment, "cluster_name": cluster["name"]})
    return cluster


def split(
    static_bootstrap: dict[str, Any], directory: Path, eds_clusters: tuple[str, ...] = ()
) -> tuple[dict[str, Any], Resources]:
    """(the dynamic bootstrap, its resources); the endpoints of `eds_clusters` go to EDS.
    Reads the certificate files the listeners name: OSError if one cannot be read (a reload then
    keeps the old configuration)."""
    static = static_bootstrap.get("static_resources", {})
    routes: list[dict[str, Any]] = []
    secrets: list[dict[str, Any]] = []
    certificate_files: list[str] = []
    listeners = [
        _dynamic_listener(listener, directory, routes, secrets, certificate_files)
        for listener in static.get("listeners", [])
    ]
    assignments: list[dict[str, Any]] = []
    clusters = [
        {
            "@type": CLUSTER_TYPE,
            **(
                _endpoints_to_eds(cluster, directory, assignments)
                if cluster.get("name") in eds_clusters
                else cluster
            ),
        }
        for cluster in static.get("clusters", [])
    ]
    bootstrap = {k: v for k, v in static_bootstrap.items() if k != "static_resources"}
    bootstrap["dynamic_resources"] = {
        "lds_config": _source(directory, "lds"),
        "cds_config": _source(directory, "cds"),
    }
    resources = Resources(
        {"sds": secrets, "eds": assignments, "cds": clusters, "rds": routes, "lds": listeners},
        tuple(dict.fromkeys(certificate_files)),
        tuple(f for f in dict.fromkeys(_filenames(static)) if f not in certificate_files),
    )
    return bootstrap, resources


def _filenames(node: Any) -> list[str]:
    """Every `filename` of a DataSource in a proto-JSON document."""
    if isinstance(node, dict):
        found = [node["filename"]] if isinstance(node.get("filename"), str) else []
        return found + [f for value in node.values() for f in _filenames(value)]
    if isinstance(node, list):
        return [f for item in node for f in _filenames(item)]
    return []


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp: mode 0600 (SDS holds private keys)
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _resource_name(resource: dict[str, Any]) -> str:
    return str(resource.get("name") or resource["cluster_name"])  # EDS: cluster_name


def _response(resources: list[dict[str, Any]]) -> str:
    version = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]
    return json.dumps({"version_info": version, "resources": resources}, indent=1)


def write(resources: Resources, directory: Path, kinds: tuple[str, ...] = KINDS) -> None:
    """Write `kinds` (in that order); Envoy picks each file up as it is renamed into place.
    Once the listeners are written, route and secret files nothing names any more go."""
    for kind in kinds:
        items = resources.by_kind[kind]
        if kind in ONE_FILE_KINDS:
            _write_atomically(directory / kind / _file_name(kind, None), _response(items))
            continue
        for item in items:
            name = _file_name(kind, _resource_name(item))
            _write_atomically(directory / kind / name, _response([item]))
    if "lds" in kinds:
        for kind in ("rds", "sds"):
            wanted = {_file_name(kind, _resource_name(item)) for item in resources.by_kind[kind]}
            for stale in (directory / kind).glob("*.json"):
                if stale.name not in wanted:
                    stale.unlink(missing_ok=True)
