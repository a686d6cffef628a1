"""Prometheus metrics. Workers of one `authgate run` write them to files in
PROMETHEUS_MULTIPROC_DIR (set by the supervisor, emptied per run); whoever serves /metrics adds
the files up. Label sets are bounded: routes come from the config, the rest are fixed words.

Hot path: children are bound once per label set and kept (`labels()` takes a lock and builds a
tuple on every call)."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Check outcomes; `endpoint`: authgate's own pages, JSON and the OAuth callback.
ALLOW = "allow"
DENY = "deny"
SIGN_IN_REDIRECT = "sign_in_redirect"
ERROR = "error"
ENDPOINT = "endpoint"

CHECKS = Counter(
    "authgate_checks", "Check requests answered, by route and outcome", ["route", "outcome"]
)
CHECK_SECONDS = Histogram(
    "authgate_check_duration_seconds",
    "Time from a Check's arrival to its answer, in the authz worker",
    ["outcome"],
    buckets=(
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ),
)
LOGINS = Counter("authgate_logins", "Completed OAuth callbacks", ["outcome"])
IDP_REQUESTS = Counter(
    "authgate_idp_requests", "HTTP requests to the identity provider", ["endpoint", "outcome"]
)
IDP_SECONDS = Histogram(
    "authgate_idp_request_duration_seconds",
    "Identity provider request latency",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SESSION_REFRESHES = Counter(
    "authgate_session_refreshes", "Session claim refreshes from the IdP", ["outcome"]
)
CACHE_LOOKUPS = Counter(
    "authgate_cache_lookups", "Lookups in authgate's caches", ["cache", "result"]
)

_check_children: dict[tuple[str, str], tuple[Callable[[], None], Callable[[float], None]]] = {}


def check_observer(route: str, outcome: str) -> tuple[Callable[[], None], Callable[[float], None]]:
    """The bound `inc` and `observe` for one route and outcome (made once, then reused)."""
    found = _check_children.get((route, outcome))
    if found is None:
        found = (CHECKS.labels(route, outcome).inc, CHECK_SECONDS.labels(outcome).observe)
        _check_children[(route, outcome)] = found
    return found


class CacheCounter:
    """Hits and misses of one cache, bound once."""

    __slots__ = ("hit", "miss")

    def __init__(self, cache: str) -> None:
        self.hit = CACHE_LOOKUPS.labels(cache, "hit").inc
        self.miss = CACHE_LOOKUPS.labels(cache, "miss").inc


class SupervisorStats(Collector):
    """What only the supervisor of `authgate run` knows; plain numbers, collected at scrape
    time (not files: the supervisor is one process)."""

    def __init__(self, workers_ready: Callable[[], int] | None = None) -> None:
        self.worker_restarts = 0
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.workers_ready = workers_ready

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "authgate_worker_restarts",
            "authz workers started again after they exited",
            value=self.worker_restarts,
        )
        reloads = CounterMetricFamily(
            "authgate_reloads", "Config reloads (SIGHUP)", labels=["outcome"]
        )
        for outcome, count in self.reloads.items():
            reloads.add_metric([outcome], count)
        yield reloads
        if self.workers_ready is not None:
            yield GaugeMetricFamily(
                "authgate_workers_ready",
                "authz workers accepting Checks",
                value=self.workers_ready(),
            )


def multiproc_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def registry_for(files: Path | None, extra: Collector | None = None) -> CollectorRegistry:
    """What /metrics shows: the workers' files added up (plus `extra`), or, in a process that
    keeps its metrics in memory (`authgate authz` alone), that process's registry."""
    if files is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(files))  # type: ignore[no-untyped-call]
    if extra is not None:
        registry.register(extra)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def worker_exited(files: Path, pid: int) -> None:
    """The supervisor's call when a worker process ends: its live gauges go, its counters stay
    (a restarted worker's counts are not lost)."""
    multiprocess.mark_process_dead(pid, str(files))  # type: ignore[no-untyped-call]
