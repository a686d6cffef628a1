"""deploy/kubernetes/ run for real, without a cluster: the Envoy ConfigMap's envoy.yaml in the
real Envoy, two `authgate authz` replicas on the authz ConfigMap's config.yaml sharing a real
Redis, the test IdP and a sample app.

Only what a cluster would provide is replaced: the certificate paths (the mounted Secret),
the ports (8443/9902/9901 -> free ones, the route and authenticate hosts carry the port), the
Service names (the headless `authgate-authz` -> the two replicas' addresses, `jenkins` -> the
sample app), the IdP's URL and the Redis URL. Every filter, health check, route and policy is
the file's own. The cross-checks of the manifests themselves:
tests/unit/test_kubernetes_manifests.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import pytest
import yaml

from authgate.config import Settings
from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64
from tests.support.byo_stack import envoy_binary, unique_base_id
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import TestIdP
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.redis_server import RedisServer, redis_server_available
from tests.support.resolve import map_hosts
from tests.support.stack import free_port
from tests.support.upstream import SampleUpstream

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
IN_POD_CERT, IN_POD_KEY = "/etc/envoy/tls/tls.crt", "/etc/envoy/tls/tls.key"
APP_HOST, AUTH_HOST = "jenkins.example.com", "authenticate.example.com"
ASSERTION = "x-pomerium-jwt-assertion"
REPLICAS = 2
STARTUP_S = 90.0  # a loaded 2-core machine starts node, Redis, two Pythons and Envoy


def configmap_file(file: str, name: str, key: str) -> str:
    for doc in yaml.safe_load_all((K8S_DIR / file).read_text(encoding="utf-8")):
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == name:
            return str(doc["data"][key])
    raise AssertionError(f"no ConfigMap {name} in {file}")


ENVOY_YAML = configmap_file("envoy-config.yaml", "authgate-envoy", "envoy.yaml")
CONFIG_YAML = configmap_file("authgate-config.yaml", "authgate-config", "config.yaml")


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def static_cluster(cluster: dict[str, Any], ports: list[int]) -> None:
    """A Service name -> the local processes behind it (what DNS would return in the pod)."""
    for key in ("dns_lookup_family", "dns_refresh_rate", "respect_dns_ttl"):
        cluster.pop(key, None)
    cluster["type"] = "STATIC"
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]}]


def write_envoy_config(path: Path, pki: TestPKI, *, https: int, ops: int, admin: int,
                       authz: list[int], app: int, health_checks: bool = True) -> dict[str, Any]:
    assert IN_POD_CERT in ENVOY_YAML and IN_POD_KEY in ENVOY_YAML
    doc: dict[str, Any] = yaml.safe_load(
        ENVOY_YAML.replace(IN_POD_CERT, str(pki.cert_file)).replace(IN_POD_KEY, str(pki.key_file))
    )
    doc["admin"]["address"]["socket_address"]["port_value"] = admin
    listeners = {x["name"]: x for x in doc["static_resources"]["listeners"]}
    listeners["https"]["address"]["socket_address"]["port_value"] = https
    listeners["ops"]["address"]["socket_address"]["port_value"] = ops
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    static_cluster(clusters["authgate_authz"], authz)
    if not health_checks:
        del clusters["authgate_authz"]["health_checks"]
    static_cluster(clusters["app"], [app])
    static_cluster(clusters["envoy_admin"], [admin])
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return doc


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "--base-id", str(unique_base_id()), "-c", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


# ---------------------------------------------------------------------------- no stack


def test_envoy_accepts_the_configmap_as_written(tmp_path: Path) -> None:
    """The file itself, only the certificate paths pointed at real files."""
    pki = make_pki(tmp_path / "tls", [APP_HOST, AUTH_HOST])
    path = tmp_path / "envoy.yaml"
    path.write_text(ENVOY_YAML.replace(IN_POD_CERT, str(pki.cert_file))
                    .replace(IN_POD_KEY, str(pki.key_file)), encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_envoy_validate_refuses_a_broken_configmap(tmp_path: Path) -> None:
    """The check above can fail: a route to a cluster the file does not define."""
    pki = make_pki(tmp_path / "tls", [APP_HOST])
    broken = ENVOY_YAML.replace("cluster: app\n", "cluster: jenkins\n")
    assert broken != ENVOY_YAML
    path = tmp_path / "envoy.yaml"
    path.write_text(broken.replace(IN_POD_CERT, str(pki.cert_file))
                    .replace(IN_POD_KEY, str(pki.key_file)), encoding="utf-8")
    result = validate(path)
    assert result.returncode != 0
    assert "unknown cluster 'jenkins'" in result.stdout + result.stderr


# ---------------------------------------------------------------------------- the stack


@dataclass
class K8sStack:
    work: Path
    pki: TestPKI
    https: int
    ops: int
    admin: int
    app: SampleUpstream
    grpc: list[int]
    metrics: list[int]
    replicas: list[subprocess.Popen[bytes]]
    log: Path

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.https}{path}"

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.pki.client_ssl_context(), timeout=15,
                            follow_redirects=True, headers={"accept": "text/html"})

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def _wait(what: str, ok: Any, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: a process exited {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')}")
        try:
            if ok():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready in {STARTUP_S} s:\n"
                               f"{log.read_text(errors='replace')}")
        time.sleep(0.2)


def start_envoy(config: Path, ops: int, log: Path,
                others: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Envoy on `config`, once the readiness probe of envoy.yaml (the ops listener's /ready)
    answers 200."""
    with open(log, "ab") as out:
        envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--base-id", str(unique_base_id()),
             "--disable-hot-restart", "-l", "warning"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        _wait("envoy /ready",
              lambda: httpx.get(f"http://127.0.0.1:{ops}/ready").status_code == 200,
              [*others, envoy], log)
    except BaseException:
        _stop([envoy])
        raise
    return envoy


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sStack]:
    if "metrics_address" not in Settings.model_fields:
        pytest.skip("authgate's loader does not know `metrics_address` yet (issue #12)")
    if not redis_server_available():
        pytest.skip("redis-server is not installed")
    work = tmp_path_factory.mktemp("k8s")
    pki = make_pki(work / "tls", [APP_HOST, AUTH_HOST])
    https, ops, admin = free_port(), free_port(), free_port()
    grpc = [free_port() for _ in range(REPLICAS)]
    metrics = [free_port() for _ in range(REPLICAS)]
    auth_origin = f"https://{AUTH_HOST}:{https}"
    client = {
        "client_id": "authgate", "client_secret": "k8s-client-secret",
        "redirect_uris": [f"{auth_origin}/oauth2/callback"],
        "post_logout_redirect_uris": [f"{auth_origin}/.pomerium/signed_out"],
    }
    log = work / "stack.log"
    procs: list[subprocess.Popen[bytes]] = []
    with (
        open(log, "ab") as out,
        TestIdP(clients=[client]) as idp,
        RedisServer(password="k8s-redis-pw", appendonly=True) as redis,
        map_hosts({APP_HOST: "127.0.0.1", AUTH_HOST: "127.0.0.1"}),
    ):
        app = SampleUpstream(tcp_port=0, jwks_url=f"https://{APP_HOST}:{https}"
                             "/.well-known/pomerium/jwks.json", ca_file=pki.ca_file,
                             issuers=[AUTH_HOST], audiences=[APP_HOST])
        app.start()
        assert app.port is not None
        try:
            # The Secret, as environment variables (authz.yaml's env).
            environ = {
                **os.environ,
                "COOKIE_SECRET": generate_cookie_secret(),
                "SIGNING_KEY": generate_signing_key_b64(),
                "IDP_CLIENT_SECRET": "k8s-client-secret",
                "DATABROKER_STORAGE_CONNECTION_STRING": redis.url,
            }
            for n in range(REPLICAS):
                config = yaml.safe_load(CONFIG_YAML)
                config["authenticate_service_url"] = auth_origin
                config["idp_provider_url"] = idp.issuer
                config["metrics_address"] = f"127.0.0.1:{metrics[n]}"
                (route,) = config["routes"]
                route["from"] = with_port(route["from"], https)
                route["to"] = f"http://127.0.0.1:{app.port}"
                path = work / f"config-{n}.yaml"
                path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "authgate", "authz", "-c", str(path),
                     "--listen", f"127.0.0.1:{grpc[n]}"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ,
                ))
            for port in metrics:  # the readiness probe of authz.yaml
                _wait("authz /readyz",
                      lambda p=port: httpx.get(f"http://127.0.0.1:{p}/readyz").status_code == 200,
                      procs, log)
            envoy_path = work / "envoy.yaml"
            write_envoy_config(envoy_path, pki, https=https, ops=ops, admin=admin, authz=grpc,
                               app=app.port)
            procs.append(start_envoy(envoy_path, ops, log, procs))
            yield K8sStack(work, pki, https, ops, admin, app, grpc, metrics, procs[:REPLICAS],
                           log)
        finally:
            _stop(procs)
            app.stop()


def test_authz_probes_answer_on_the_metrics_port(stack: K8sStack) -> None:
    for port in stack.metrics:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert scrape.status_code == 200 and "# TYPE" in scrape.text


def grpc_health(port: int) -> bytes:
    """grpc.health.v1.Health/Check for the whole server (service ""), as Envoy's health checks
    ask it: the raw answer (b"\\x08\\x01" is status SERVING)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        answer: bytes = check(b"", timeout=10)
        return answer


def test_envoy_health_checks_see_every_replica(stack: K8sStack) -> None:
    for port in stack.grpc:
        try:
            assert grpc_health(port) == b"\x08\x01"
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip("authz does not serve grpc.health.v1 yet (issue #12, ops-run)")
            raise
    wanted = [f"authgate_authz::127.0.0.1:{port}::health_flags::healthy" for port in stack.grpc]
    deadline = time.monotonic() + 30  # a few health check rounds (interval 2 s)
    while True:
        clusters = httpx.get(f"http://127.0.0.1:{stack.admin}/clusters", timeout=5).text
        if all(line in clusters.splitlines() for line in wanted):
            break
        assert time.monotonic() < deadline, [
            x for x in clusters.splitlines() if "authgate_authz" in x and "health_flags" in x
        ]
        time.sleep(0.5)


def test_ops_listener_serves_only_ready_and_stats(stack: K8sStack) -> None:
    ops = f"http://127.0.0.1:{stack.ops}"
    with httpx.Client(timeout=5) as client:
        assert client.get(f"{ops}/ready").status_code == 200
        stats = client.get(f"{ops}/stats/prometheus")
        assert stats.status_code == 200 and "envoy_server_live" in stats.text
        # The admin interface's other pages, above all those that change or stop Envoy.
        for method, path in [("POST", "/quitquitquit"), ("GET", "/quitquitquit"),
                             ("POST", "/healthcheck/fail"), ("GET", "/config_dump"),
                             ("POST", "/ready"), ("POST", "/stats/prometheus"),
                             ("GET", "/ready/../quitquitquit"), ("GET", "/clusters")]:
            answer = client.request(method, f"{ops}{path}")
            assert answer.status_code == 404, f"{method} {path}: {answer.status_code}"
        assert client.get(f"{ops}/ready").status_code == 200  # still alive


def test_sign_in_and_requests_across_both_replicas(stack: K8sStack) -> None:
    """The sign-in flow's Checks alternate between the replicas (round robin), and so do the
    signed-in requests: it works only because every replica reads the sessions in Redis."""
    with map_hosts({APP_HOST: "127.0.0.1", AUTH_HOST: "127.0.0.1"}), stack.client() as browser:
        page = browser.get(stack.url(APP_HOST, "/job/build"))
        assert is_idp_login_page(page), page.url
        landed = submit_idp_login(browser, page, "alice@example.com", "alice-password")
        assert landed.status_code == 200, landed.text
        assert landed.url == httpx.URL(stack.url(APP_HOST, "/job/build"))
        stack.app.clear()
        for n in range(2 * REPLICAS):
            answer = browser.get(stack.url(APP_HOST, f"/job/{n}"), follow_redirects=False)
            assert answer.status_code == 200, (n, answer.status_code, answer.headers)
        seen = stack.app.requests.snapshot()
        assert [r.path for r in seen] == [f"/job/{n}" for n in range(2 * REPLICAS)]
        for request in seen:
            assert request.user is not None, request.auth_error
            assert request.user["email"] == "alice@example.com"
        # bob signs in but the policy (domain example.com) refuses him.
    with map_hosts({APP_HOST: "127.0.0.1", AUTH_HOST: "127.0.0.1"}), stack.client() as browser:
        page = browser.get(stack.url(APP_HOST, "/"))
        refused = submit_idp_login(browser, page, "bob@evil.org", "bob-password")
        assert refused.status_code == 403


def test_forged_identity_headers_do_not_reach_the_app(stack: K8sStack) -> None:
    with map_hosts({APP_HOST: "127.0.0.1"}), stack.client() as client:
        stack.app.clear()
        answer = client.get(stack.url(APP_HOST, "/"), follow_redirects=False,
                            headers={ASSERTION: "forged", "x-pomerium-claim-email": "a@b.c"})
        assert answer.status_code == 302  # to sign in
        assert stack.app.requests.snapshot() == []


def test_a_vanished_replica_costs_no_request(stack: K8sStack) -> None:
    """A pod that went away (scale-down, rollout, a node lost) while Envoy still has its
    address: the Check is retried on another pod. A second Envoy on the same file, one authz
    address with nothing behind it, and its health checks off so that only the retry policy
    keeps that address's share of the requests from failing."""
    https, ops, admin, gone = free_port(), free_port(), free_port(), free_port()
    config = stack.work / "envoy-vanished.yaml"
    doc = write_envoy_config(config, stack.pki, https=https, ops=ops, admin=admin,
                             authz=[gone, stack.grpc[0]], app=stack.app.port or 0,
                             health_checks=False)
    assert "retry_policy" in yaml.safe_dump(doc)
    envoy = start_envoy(config, ops, stack.log, stack.replicas)
    try:
        # The JWKS: answered by authz itself on the app's host, no session needed. The Host
        # of the stack's port: the route's host.
        url = f"https://{APP_HOST}:{https}/.well-known/pomerium/jwks.json"
        host = {"host": f"{APP_HOST}:{stack.https}"}
        with map_hosts({APP_HOST: "127.0.0.1"}), stack.client() as client:
            statuses = [client.get(url, headers=host).status_code for _ in range(8)]
        assert statuses == [200] * 8, statuses
    finally:
        _stop([envoy])


def test_no_authz_replica_means_503_never_the_app(stack: K8sStack) -> None:
    """Last in this file: stops the replicas. Envoy fails closed (failure_mode_allow: false)."""
    _stop(stack.replicas)
    with map_hosts({APP_HOST: "127.0.0.1"}), stack.client() as client:
        stack.app.clear()
        for path in ("/", "/.well-known/pomerium/jwks.json", "/job/x"):
            answer = client.get(stack.url(APP_HOST, path), follow_redirects=False)
            assert answer.status_code == 503, (path, answer.status_code)
        assert stack.app.requests.snapshot() == []
        assert httpx.get(f"http://127.0.0.1:{stack.ops}/ready", timeout=5).status_code == 200
