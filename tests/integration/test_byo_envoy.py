"""Bring your own Envoy: `authgate authz` behind an Envoy config a person wrote.

The shared stacks already run the whole vertical slice and the attack suites in this mode (the
`[byo]` ids: tests/integration/conftest.py, tests/support/byo_stack.py). This file adds what only
this mode has:

* the example files users start from (envoy/byo-envoy.yaml, envoy/istio-authgate.yaml) are
  valid and say what README "Bring your own Envoy / Istio" says they must;
* a visitor without a session is sent to sign in and the application receives nothing;
* behind a user's Envoy that does NOT normalise paths, authz itself refuses (400) every path
  that normalisation would have changed, and the application never receives one;
* behind a user's Envoy without `encode_raw_headers` (authz reads the `headers` map, as behind
  Istio) the session, the identity headers and the header hygiene work the same.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.attack_kit import SESSION_COOKIE, build_request, raw_request
from tests.integration.conftest import Env
from tests.support.byo_stack import (
    AUTHZ_CLUSTER,
    ByoStack,
    envoy_binary,
    hcm,
    render_envoy_config,
    unique_base_id,
)
from tests.support.certs import make_pki
from tests.support.resolve import map_hosts

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "envoy" / "byo-envoy.yaml"
ISTIO = REPO / "envoy" / "istio-authgate.yaml"
EXAMPLE_CERT, EXAMPLE_KEY = "/etc/envoy/tls/cert.pem", "/etc/envoy/tls/key.pem"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
ROUTER = "envoy.filters.http.router"
HTTP2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DENIED = "http.byo.ext_authz.denied"  # the template's stat_prefix is `byo`

BYO_ONLY = pytest.mark.byo_only("what a hand-written Envoy in front of `authgate authz` needs")


# ---------------------------------------------------------------------------- the contract


def _walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for item in node:
            found += _walk(item)
    return found


def assert_byo_contract(config: dict[str, Any]) -> None:
    """What README "Bring your own Envoy / Istio" says a user's Envoy must have."""
    manager = hcm(config)
    assert manager["normalize_path"] is True
    assert manager["merge_slashes"] is True
    assert manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert manager["use_remote_address"] is True
    underscores = manager["common_http_protocol_options"]["headers_with_underscores_action"]
    assert underscores in ("DROP_HEADER", "REJECT_REQUEST")
    names = [f["name"] for f in manager["http_filters"]]
    assert names.index(EXT_AUTHZ) < names.index(ROUTER) == len(names) - 1
    ext_authz = manager["http_filters"][names.index(EXT_AUTHZ)]["typed_config"]
    assert ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"] == AUTHZ_CLUSTER
    assert ext_authz["grpc_service"]["timeout"] == "3s"
    assert ext_authz["transport_api_version"] == "V3"
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"] == {"code": 503}
    assert ext_authz["encode_raw_headers"] is True
    assert "allowed_headers" not in ext_authz  # every header goes to authz
    # Nothing names a route to authz, and nothing switches the filter off anywhere.
    assert not [n for n in _walk(config) if isinstance(n, dict) and "context_extensions" in n]
    assert not [n for n in _walk(config) if isinstance(n, dict) and "typed_per_filter_config" in n]
    listener = config["static_resources"]["listeners"][0]
    assert listener["filter_chains"][0]["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    options = clusters[AUTHZ_CLUSTER]["typed_extension_protocol_options"][HTTP2_OPTIONS]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}


def _example_with(tmp_path: Path) -> Path:
    """envoy/byo-envoy.yaml with a real certificate and key (Envoy loads them to validate)."""
    pki = make_pki(tmp_path / "tls", ["app.example.test"])
    text = EXAMPLE.read_text()
    assert EXAMPLE_CERT in text and EXAMPLE_KEY in text
    text = text.replace(EXAMPLE_CERT, str(pki.cert_file)).replace(EXAMPLE_KEY, str(pki.key_file))
    path = tmp_path / "byo-envoy.yaml"
    path.write_text(text)
    return path


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "--base-id", str(unique_base_id()), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_example_envoy_config_is_valid_and_meets_the_contract(tmp_path: Path) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert_byo_contract(example)
    result = _validate(_example_with(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    # The authenticate host reaches the filter too: one catch-all virtual host.
    hosts = hcm(example)["route_config"]["virtual_hosts"]
    assert [h["domains"] for h in hosts] == [["*"]]


def test_the_test_stacks_envoy_meets_the_same_contract(tmp_path: Path) -> None:
    """The hand-written template ByoStack runs is held to the contract the example documents."""
    pki = make_pki(tmp_path / "tls", ["jenkins.test"])
    config = {
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "routes": [
            {
                "from": "https://jenkins.test:8443",
                "to": "unix:///tmp/j.sock",
                "allow_websockets": True,
            },
            {"from": "https://status.test:8443", "to": "http://127.0.0.1:9"},
        ],
    }
    sockets = [Path("/tmp/authz-0.sock"), Path("/tmp/authz-1.sock")]
    rendered = render_envoy_config(config, listen_port=8443, admin_port=9901, authz_sockets=sockets)
    assert_byo_contract(rendered)
    hosts = hcm(rendered)["route_config"]["virtual_hosts"]
    assert [h["domains"] for h in hosts] == [["jenkins.test:8443"], ["status.test:8443"], ["*"]]
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(rendered))
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_istio_snippet_names_one_fail_closed_grpc_provider() -> None:
    docs = [d for d in yaml.safe_load_all(ISTIO.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["AuthorizationPolicy", "EnvoyFilter", "IstioOperator", "Service"]
    mesh = by_kind["IstioOperator"]["spec"]["meshConfig"]
    assert mesh["pathNormalization"]["normalization"] in (
        "MERGE_SLASHES",
        "DECODE_AND_MERGE_SLASHES",
    )
    [provider] = mesh["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["failOpen"] is False and grpc["statusOnError"] == "503" and grpc["timeout"] == "3s"
    assert "includeRequestHeadersInCheck" not in grpc  # the gRPC provider sends every header
    service = by_kind["Service"]
    meta = service["metadata"]
    assert grpc["service"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert grpc["port"] in [p["port"] for p in service["spec"]["ports"]]
    policy = by_kind["AuthorizationPolicy"]
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == provider["name"]
    hosts = policy["spec"]["rules"][0]["to"][0]["operation"]["hosts"]
    assert any(h.startswith("authenticate.") for h in hosts) and len(hosts) >= 2
    patch = by_kind["EnvoyFilter"]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
    assert patch["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"


# ---------------------------------------------------------------------------- the running stack


@pytest.fixture(scope="module")
def alice_cookie(env: Env) -> str:
    with map_hosts({"*.test": "127.0.0.1"}), env.browser() as browser:
        env.login(browser, env.url("jenkins.test", "/"))
        for cookie in browser.cookies.jar:
            if cookie.name == SESSION_COOKIE and cookie.domain.lstrip(".") == "jenkins.test":
                return cookie.value
    raise AssertionError("no route session after login")


def _send(
    env: Env, port: int, host: str, target: bytes, headers: list[tuple[str, str]]
) -> tuple[int, bytes]:
    """One raw request to the Envoy on `port`, with the Host the stack's routes have."""
    request = build_request("GET", target, f"{host}:{env.port}", headers)
    answer = raw_request(port, env.pki.client_ssl_context(), host, request)
    return answer.status, answer.body


def _reached(env: Env, marker: str) -> list[str]:
    paths = [r.path for r in (*env.jenkins.requests.snapshot(), *env.status.requests.snapshot())]
    return [p for p in paths if marker in p]


@BYO_ONLY
def test_no_session_means_sign_in_and_nothing_reaches_the_app(env: Env) -> None:
    marker = f"anon{secrets.token_hex(4)}"
    with env.browser() as client:
        client.follow_redirects = False
        answer = client.get(env.url("jenkins.test", f"/job/{marker}/"))
        assert answer.status_code == 302
        sign_in = env.url("authenticate.test", "/.pomerium/sign_in?")
        assert answer.headers["location"].startswith(sign_in)
        api = client.get(env.url("jenkins.test", f"/api/{marker}"), headers={"accept": "*/*"})
        assert api.status_code == 401
        # the barrier: a later request that does reach an upstream has arrived
        assert client.get(env.url("status.test", f"/{marker}-barrier")).status_code == 200
    env.status.requests.wait_for(lambda r: r.path == f"/{marker}-barrier")
    assert _reached(env, marker) == [f"/{marker}-barrier"]


UNNORMALISED = [
    "/job/../admin/{m}",
    "/job/%2e%2e/admin/{m}",
    "/job/./{m}",
    "/a//b/{m}",
    "//{m}",
    "/{m}/.",
    "/a%2Fb/{m}",
    "/a%5cb/{m}",
    "/a\\b/{m}",
    "/%41dmin/{m}",  # Envoy decodes escaped unreserved characters
]


@BYO_ONLY
def test_lax_user_envoy_unnormalised_paths_get_400_from_authz(env: Env, alice_cookie: str) -> None:
    """An Envoy without normalize_path / merge_slashes / escaped-slash rejection forwards these
    paths as sent: authz refuses each one (its own 400, counted as a denial by Envoy's ext_authz
    filter), for a signed-in user on a protected route, a visitor there, and on a public route;
    the application never receives one. The same Envoy passes a normal path through."""
    assert isinstance(env.stack, ByoStack)
    alice = [("accept", "application/json"), ("cookie", f"{SESSION_COOKIE}={alice_cookie}")]
    anonymous = [("accept", "application/json")]
    with map_hosts({"*.test": "127.0.0.1"}), env.stack.second_envoy(lax_paths=True) as lax:
        marker = f"lax{secrets.token_hex(4)}"
        status, _ = _send(env, lax.port, "jenkins.test", f"/ok/{marker}".encode(), alice)
        assert status == 200  # control: this Envoy and authz work together
        denied_before = lax.counter(DENIED)
        sent = 0
        for host, headers in (
            ("jenkins.test", alice),
            ("jenkins.test", anonymous),
            ("status.test", anonymous),
        ):
            for template in UNNORMALISED:
                target = template.replace("{m}", marker).encode()
                status, body = _send(env, lax.port, host, target, headers)
                sent += 1
                assert status == 400, (host, target, status, body[:200])
        assert lax.counter(DENIED) - denied_before == sent
        barrier = f"/barrier/{marker}"
        assert _send(env, lax.port, "jenkins.test", barrier.encode(), alice)[0] == 200
        env.jenkins.requests.wait_for(lambda r: r.path == barrier)
    assert _reached(env, marker) == [f"/ok/{marker}", barrier]


@BYO_ONLY
def test_user_envoy_without_raw_headers_reads_the_headers_map(env: Env, alice_cookie: str) -> None:
    """Istio's filter (and Envoy's default) sends headers as a map, repeated ones joined with
    ",": the session is found, identity headers are authgate's alone, forwarding headers and
    authgate's cookie are removed, the app's cookies arrive."""
    marker = f"map{secrets.token_hex(4)}"
    headers = [
        ("accept", "application/json"),
        ("cookie", f"JSESSIONID=app-{marker}; {SESSION_COOKIE}={alice_cookie}; theme=dark"),
        ("x-pomerium-claim-email", "evil@evil.test"),
        ("X-Pomerium-Claim-Email", "second@evil.test"),
        ("x-pomerium-jwt-assertion", "forged"),
        ("x-forwarded-host", "evil.test"),
        ("forwarded", "host=evil.test"),
    ]
    assert isinstance(env.stack, ByoStack)
    with map_hosts({"*.test": "127.0.0.1"}), env.stack.second_envoy(raw_headers=False) as plain:
        assert plain.config_value("encode_raw_headers") is False
        status, body = _send(env, plain.port, "jenkins.test", f"/{marker}".encode(), headers)
    assert status == 200, body[:300]
    request = env.jenkins.requests.wait_for(lambda r: r.path == f"/{marker}")
    assert request.user is not None and request.user["username"] == "alice@example.com"
    assert request.header_values("x-pomerium-claim-email") == ["alice@example.com"]
    assert len(request.header_values("x-pomerium-jwt-assertion")) == 1
    assert request.header("x-pomerium-jwt-assertion") != "forged"
    assert not request.header_values("x-forwarded-host") and not request.header_values("forwarded")
    cookie = request.header("cookie") or ""
    assert f"JSESSIONID=app-{marker}" in cookie and "theme=dark" in cookie
    assert "_pomerium" not in cookie
