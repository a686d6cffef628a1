"""`metrics_address` (issue 12): /metrics moves with traffic across two workers, /metrics/envoy,
/healthz, and /readyz following Envoy and the workers — real `authgate run`, Envoy and IdP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from authgate.config import build_runtime, load_settings
from authgate.envoy.bootstrap import build_bootstrap
from authgate.envoy.process import EnvoyProcess
from authgate.ops.service import SupervisorOps
from tests.support.gate import Gate, cookie_of, eventually, gates
from tests.support.ops import route_ids, scrape, value
from tests.support.stack import free_port

ALICE = "alice@example.com"
BOB = "bob@evil.org"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gate, str]]:
    port = free_port()
    tmp = tmp_path_factory.mktemp("ops")
    with gates(tmp, workers=2, extra={"metrics_address": f"127.0.0.1:{port}"}) as (gate,):
        yield gate, f"http://127.0.0.1:{port}"


def get(base: str, path: str) -> httpx.Response:
    return httpx.get(f"{base}{path}", timeout=15)


def test_health_and_readiness_of_a_running_gate(served: tuple[Gate, str]) -> None:
    _gate, base = served
    assert get(base, "/healthz").status_code == 200
    ready = get(base, "/readyz")
    assert ready.status_code == 200, ready.text
    assert "2 authz worker(s)" in ready.text
    assert value(scrape(base), "authgate_workers_ready") == 2
    assert get(base, "/nope").status_code == 404


def test_envoy_stats_are_proxied(served: tuple[Gate, str]) -> None:
    _gate, base = served
    answer = get(base, "/metrics/envoy")
    assert answer.status_code == 200
    assert "envoy_http_downstream_rq_total" in answer.text


def test_counters_move_with_traffic(served: tuple[Gate, str]) -> None:
    gate, base = served
    ids = route_ids(gate.stack.config_path)
    jenkins, other = ids["jenkins.test"], ids["other.test"]
    before = scrape(base)
    with gate.client() as alice:
        gate.login(alice, "other.test", ALICE)  # a sign-in redirect, then the login
        cookie = cookie_of(alice, "other.test")
    for _ in range(6):  # the same request again: kept answers (allow_memo hits)
        assert gate.get("other.test", "/", cookie).status_code == 200
    with gate.client() as bob:
        gate.login(bob, "jenkins.test", BOB)  # bob is not in `admins`: 403
    assert gate.get("jenkins.test", "/", "").status_code == 401  # no session, JSON client

    def moved(after: dict, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def all_counted() -> bool:
        after = scrape(base)
        return (
            moved(after, "authgate_checks_total", route=other, outcome="allow") >= 7
            and moved(after, "authgate_checks_total", route=jenkins, outcome="deny") >= 2
        )

    eventually(all_counted, within=10.0, step=0.2)
    after = scrape(base)
    assert moved(after, "authgate_checks_total", route=other, outcome="sign_in_redirect") >= 1
    assert moved(after, "authgate_checks_total", route=jenkins, outcome="sign_in_redirect") >= 1
    assert moved(after, "authgate_checks_total", route="__authenticate__", outcome="endpoint") >= 2
    assert moved(after, "authgate_check_duration_seconds_count", outcome="allow") >= 7
    assert moved(after, "authgate_logins_total", outcome="success") == 2
    assert moved(after, "authgate_idp_requests_total", endpoint="token", outcome="success") == 2
    assert moved(after, "authgate_idp_request_duration_seconds_count", endpoint="token") == 2
    assert moved(after, "authgate_cache_lookups_total", cache="allow_memo", result="hit") >= 5
    assert moved(after, "authgate_cache_lookups_total", cache="assertion", result="miss") >= 1
    # Two workers wrote these; every Check counted is also timed, none twice.
    def total(samples: dict, name: str) -> float:
        return sum(v for (n, _labels), v in samples.items() if n == name)

    checks = total(after, "authgate_checks_total") - total(before, "authgate_checks_total")
    timed = total(after, "authgate_check_duration_seconds_count") - total(
        before, "authgate_check_duration_seconds_count"
    )
    assert checks == timed >= 12


def _config_on_free_port(gate: Gate, tmp: Path) -> Path:
    """The gate's config on a port of its own (never the running gate's: Envoy listeners use
    SO_REUSEPORT and would share it silently)."""
    raw = yaml.safe_load(gate.stack.config_path.read_text())
    raw["address"] = f"127.0.0.1:{free_port()}"
    raw.pop("metrics_address")  # the worker is not the one serving it here
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_readyz_follows_envoy_and_workers(served: tuple[Gate, str], tmp_path: Path) -> None:
    gate, _base = served
    config = _config_on_free_port(gate, tmp_path)
    rdir = Path(f"/tmp/ag-ops-{time.monotonic_ns() % 10**9}")  # short: Unix socket paths
    rdir.mkdir()
    port = free_port()
    ops = SupervisorOps(f"127.0.0.1:{port}", rdir)
    ops.worker_env({})
    ops.start()
    base = f"http://127.0.0.1:{port}"
    sock = rdir / "authz-0.sock"
    envoy = EnvoyProcess(
        build_bootstrap(
            build_runtime(load_settings(config), warn=False),
            [f"unix:{sock}"],
            admin_address=f"unix:{rdir / 'admin.sock'}",
        ),
        workdir=rdir,
    )
    worker: subprocess.Popen[bytes] | None = None
    try:
        answer = get(base, "/readyz")
        assert answer.status_code == 503 and "envoy" in answer.text
        envoy.start()
        envoy.wait_ready()
        answer = get(base, "/readyz")
        assert answer.status_code == 503 and "no authz worker" in answer.text
        worker = subprocess.Popen(
            [sys.executable, "-m", "authgate", "authz", "-c", str(config),
             "--listen", f"unix:{sock}", "--no-upstream-check"],
        )
        eventually(lambda: get(base, "/readyz").status_code == 200, within=30.0, step=0.2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)
        answer = get(base, "/readyz")
        assert answer.status_code == 503 and "no authz worker" in answer.text
        envoy.stop()
        answer = get(base, "/readyz")
        assert answer.status_code == 503 and "envoy" in answer.text
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        envoy.stop()
        ops.close()
        subprocess.run(["rm", "-rf", str(rdir)], check=False)


def test_authz_alone_serves_its_own_ops_endpoint(served: tuple[Gate, str], tmp_path: Path) -> None:
    """Kubernetes, your own Envoy: `authgate authz --metrics-address`; ready while its gRPC
    server accepts."""
    gate, _base = served
    grpc_port, ops_port = free_port(), free_port()
    base = f"http://127.0.0.1:{ops_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "authgate", "authz", "-c", str(gate.stack.config_path),
         "--listen", f"127.0.0.1:{grpc_port}", "--metrics-address", f"127.0.0.1:{ops_port}",
         "--no-upstream-check"],
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            try:
                return get(base, "/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, within=30.0, step=0.2)
        assert f"127.0.0.1:{grpc_port}" in get(base, "/readyz").text
        page = get(base, "/metrics").text
        assert "# TYPE authgate_checks_total counter" in page
        assert "process_cpu_seconds_total" in page  # this process's own, in memory
        assert get(base, "/metrics/envoy").status_code == 404  # no Envoy of its own
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
