"""What the supervisor asks Envoy's admin endpoint (over its Unix socket)."""

from __future__ import annotations

import time

import httpx

from authgate.envoy.bootstrap import AUTHZ_CLUSTER
from authgate.envoy.process import EnvoyProcess


def authz_hosts(envoy: EnvoyProcess) -> dict[str, bool]:
    """The authz cluster's hosts Envoy uses now: socket path -> passed its health check."""
    status = envoy.admin_get("/clusters?format=json").json()
    for cluster in status.get("cluster_statuses", []):
        if cluster.get("name") != AUTHZ_CLUSTER:
            continue
        hosts = {}
        for host in cluster.get("host_statuses", []):
            path = host.get("address", {}).get("pipe", {}).get("path")
            health = host.get("health_status", {})
            if path:
                hosts[path] = health.get("eds_health_status", "HEALTHY") == "HEALTHY" and not (
                    health.get("failed_active_health_check") or health.get("pending_active_hc")
                )
        return hosts
    return {}


def wait_for_authz_hosts(
    envoy: EnvoyProcess, sockets: set[str], timeout: float, *, only: bool
) -> bool:
    """True once all of `sockets` are healthy authz hosts in Envoy (`only`: and no other)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            hosts = authz_hosts(envoy)
        except (httpx.HTTPError, ValueError):
            hosts = {}
        healthy = {path for path, ok in hosts.items() if ok}
        if sockets <= healthy and (not only or set(hosts) == sockets):
            return True
        time.sleep(0.05)
    return False


def active_requests(envoy: EnvoyProcess) -> int:
    """Downstream requests in flight on the listeners (the admin's own excluded)."""
    stats = envoy.admin_get("/stats?format=json&filter=downstream_rq_active$").json()
    return sum(
        int(stat.get("value", 0))
        for stat in stats.get("stats", [])
        if "name" in stat and not stat["name"].startswith("http.admin.")
    )


def drain(envoy: EnvoyProcess, budget_s: float) -> int:
    """Stop accepting connections and wait (up to `budget_s`) for the requests in flight.
    Returns how many were still running when the budget ran out."""
    deadline = time.monotonic() + budget_s
    try:
        envoy.admin_post("/drain_listeners?inboundonly")
        while True:
            left = active_requests(envoy)
            if left == 0 or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)
    except (httpx.HTTPError, ValueError):
        return 0  # Envoy is gone or not answering: nothing left to drain through it


def rejected_updates(envoy: EnvoyProcess) -> dict[str, int]:
    """xDS updates Envoy refused so far, by stat name (a refused file leaves the old resource,
    or none at start, in place: a listener without its routes answers 404 to everything)."""
    stats = envoy.admin_get("/stats?format=json&filter=update_rejected$").json()
    return {
        str(stat["name"]): int(stat.get("value", 0))
        for stat in stats.get("stats", [])
        if "name" in stat and int(stat.get("value", 0)) > 0
    }
