"""ops/: metrics added up across processes, the ops HTTP endpoint, outcomes, IdP endpoint
names, log levels and the decision line (in subprocesses: structlog and prometheus-client
keep process-wide state)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from authgate.authz.decision import Allow, Respond
from authgate.config.load import settings_from_mapping
from authgate.errors import ConfigError
from authgate.logs import envoy_level, proxy_log_level
from authgate.ops.decision_log import outcome_of
from authgate.ops.http_server import OpsServer
from authgate.ops.idp_calls import endpoint_name, measured
from authgate.ops.metrics import SupervisorStats, exposition, registry_for, worker_exited
from authgate.ops.probes import accepts

BASE = {
    "authenticate_service_url": "https://auth.example.com",
    "idp_provider_url": "https://idp.example.com",
    "idp_client_id": "x",
    "insecure_server": True,
}


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page.decode())
        for s in family.samples
    }


WORKER = """
    import os
    from authgate.ops.metrics import check_observer, LOGINS
    inc, observe = check_observer("r1", "allow")
    for _ in range({n}):
        inc(); observe(0.0002)
    LOGINS.labels("success").inc()
    print(os.getpid())
"""


def test_counts_of_several_worker_processes_add_up_and_survive_their_exit(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = [int(_run(WORKER.format(n=n), env).stdout) for n in (3, 4)]
    stats = SupervisorStats(workers_ready=lambda: 1)
    registry = registry_for(tmp_path, stats)
    for pid in pids:
        worker_exited(tmp_path, pid)  # a worker that ended: its counts stay
    samples = _samples(exposition(registry))
    route = (("outcome", "allow"), ("route", "r1"))
    assert samples[("authgate_checks_total", route)] == 7
    assert samples[("authgate_logins_total", (("outcome", "success"),))] == 2
    assert samples[("authgate_check_duration_seconds_count", (("outcome", "allow"),))] == 7
    bucket = (("le", "0.00025"), ("outcome", "allow"))
    assert samples[("authgate_check_duration_seconds_bucket", bucket)] == 7
    assert samples[("authgate_workers_ready", ())] == 1
    assert samples[("authgate_worker_restarts_total", ())] == 0


@pytest.mark.parametrize(
    ("kind", "decision", "outcome"),
    [
        ("route", Allow(), "allow"),
        ("route", Respond(302, outcome="sign_in_redirect"), "sign_in_redirect"),
        ("route", Respond(403), "deny"),
        ("route", Respond(401), "deny"),
        ("route", Respond(503), "error"),
        ("", Respond(404), "deny"),  # behind your own Envoy: no route serves it
        ("internal", Respond(200), "endpoint"),
        ("internal", Respond(401), "endpoint"),
        ("authenticate", Respond(302), "endpoint"),
        ("authenticate", Respond(502), "error"),
    ],
)
def test_outcomes(kind: str, decision: Allow | Respond, outcome: str) -> None:
    assert outcome_of(kind, decision) == outcome


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://idp/.well-known/openid-configuration", "discovery"),
        ("https://idp/realms/x/protocol/openid-connect/token", "token"),
        ("https://idp/oauth/token/", "token"),
        ("https://idp/jwks", "jwks"),
        ("https://www.googleapis.com/oauth2/v3/certs", "jwks"),
        ("https://idp/me", "userinfo"),
        ("https://idp/userinfo?x=1", "userinfo"),
        ("https://idp/login/oauth/access_token", "token"),
        ("https://idp/session/end?id_token_hint=abc", "other"),
    ],
)
def test_idp_endpoint_names_are_a_fixed_set(url: str, name: str) -> None:
    assert endpoint_name(httpx.URL(url)) == name


def test_the_ops_endpoint_answers_health_readiness_and_metrics() -> None:
    state = {"ready": False}

    def readiness() -> tuple[bool, str]:
        return state["ready"], "ready" if state["ready"] else "envoy not live (PRE_INITIALIZING)"

    server = OpsServer("127.0.0.1:0", lambda: b"authgate_x 1\n", readiness).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200
        answer = httpx.get(f"{base}/readyz")
        assert (answer.status_code, answer.text) == (503, "envoy not live (PRE_INITIALIZING)\n")
        state["ready"] = True
        assert httpx.get(f"{base}/readyz").status_code == 200
        page = httpx.get(f"{base}/metrics")
        assert page.text == "authgate_x 1\n"
        assert page.headers["content-type"].startswith("text/plain; version=")
        assert httpx.get(f"{base}/metrics/envoy").status_code == 404  # not managed here
        assert httpx.get(f"{base}/anything").status_code == 404
        with pytest.raises(OSError, match=r"metrics_address 127\.0\.0\.1:\d+: cannot listen"):
            OpsServer(f"127.0.0.1:{server.port}", lambda: b"", readiness)
    finally:
        server.close()
    assert not accepts(f"127.0.0.1:{server.port}")
    for bad in ("nine", "127.0.0.1", ":99999", "host:port"):
        with pytest.raises(ValueError, match="is not host:port"):
            OpsServer(bad, lambda: b"", readiness)


def test_config_keys() -> None:
    s = settings_from_mapping({**BASE, "metrics_address": ":9090", "log_level": "WARN"}, environ={})
    assert (s.metrics_address, s.log_level, proxy_log_level(s)) == (":9090", "warn", "warning")
    s = settings_from_mapping(BASE, environ={"METRICS_ADDRESS": "0.0.0.0:9090"})
    assert s.metrics_address == "0.0.0.0:9090"
    assert proxy_log_level(s) == "warning"  # neither key set: Envoy stays quiet
    s = settings_from_mapping({**BASE, "log_level": "debug"}, environ={})
    assert proxy_log_level(s) == "debug"  # Pomerium: proxy_log_level defaults to log_level
    s = settings_from_mapping({**BASE, "proxy_log_level": "fatal"}, environ={})
    assert proxy_log_level(s) == "critical"
    assert [envoy_level(x) for x in ("warn", "off", "none", "trace")] == [
        "warning", "off", "off", "trace",
    ]
    with pytest.raises(ConfigError, match="metrics_address: 'nine' is not host:port"):
        settings_from_mapping({**BASE, "metrics_address": "nine"}, environ={})
    with pytest.raises(ConfigError, match="log_level"):
        settings_from_mapping({**BASE, "log_level": "loud"}, environ={})


DECISION = """
    from time import perf_counter
    from authgate.authz.context import RequestContext
    from authgate.authz.decision import Allow
    from authgate.logs import configure_logging
    from authgate.ops.decision_log import record
    import structlog
    configure_logging("{level}")
    ctx = RequestContext(
        route_id="r1", kind="route", method="GET", scheme="https", host="app.test",
        path="/a/b?code=SECRET-CODE",
        headers={{"cookie": "_pomerium=SECRET-COOKIE", "x-request-id": "rid-1",
                  "authorization": "Bearer SECRET-TOKEN"}},
    )
    record(ctx, Allow(rule="allow[0]", user="alice@example.com"), perf_counter())
    structlog.get_logger("x").warning("still_here")
"""


def test_the_decision_line_and_log_level() -> None:
    err = _run(DECISION.format(level="info")).stderr
    lines = [json.loads(line) for line in err.splitlines()]
    decision = next(line for line in lines if line["event"] == "decision")
    assert {k: decision[k] for k in ("request_id", "route", "host", "path", "user")} == {
        "request_id": "rid-1", "route": "r1", "host": "app.test", "path": "/a/b",
        "user": "alice@example.com",
    }
    assert (decision["outcome"], decision["rule"]) == ("allow", "allow[0]")
    assert decision["level"] == "info"
    assert decision["time"].endswith("Z") or "+00:00" in decision["time"]
    assert "SECRET" not in err
    quiet = _run(DECISION.format(level="warn")).stderr
    assert [json.loads(line)["event"] for line in quiet.splitlines()] == ["still_here"]
    assert _run(DECISION.format(level="off")).stderr == ""


class _Answers(BaseHTTPRequestHandler):
    """Answers every request, also as a forward proxy (`GET http://host/path`)."""

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200 if "missing" not in self.path else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_idp_calls_are_counted_and_the_proxy_environment_still_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    closed = f"http://127.0.0.1:{server.server_address[1]}"

    def count(endpoint: str, outcome: str) -> float:
        labels = {"endpoint": endpoint, "outcome": outcome}
        return REGISTRY.get_sample_value("authgate_idp_requests_total", labels) or 0.0

    before = {k: count(*k) for k in [("token", "success"), ("userinfo", "http_4xx"),
                                     ("jwks", "error")]}

    async def calls() -> None:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        async with measured(httpx.AsyncClient()) as client:
            # idp.invalid never resolves: only the proxy can answer this.
            assert (await client.get("http://idp.invalid/oauth2/token")).status_code == 200
            assert (await client.get("http://idp.invalid/userinfo/missing")).status_code == 404
        monkeypatch.delenv("HTTP_PROXY")
        server.shutdown()
        server.server_close()
        async with measured(httpx.AsyncClient()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{closed}/jwks")

    asyncio.run(calls())
    assert count("token", "success") == before[("token", "success")] + 1
    assert count("userinfo", "http_4xx") == before[("userinfo", "http_4xx")] + 1
    assert count("jwks", "error") == before[("jwks", "error")] + 1
