"""The generated Envoy bootstrap: structure that matters for security.

That the real `envoy --mode validate` accepts it: tests/integration/test_envoy_validate.py.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.config.runtime import AUTHENTICATE_ROUTE_ID
from authgate.contract import STRIP_COOKIES_HEADER
from authgate.envoy import render_yaml
from authgate.envoy.bootstrap import AUTHZ_CLUSTER, build_authz_cluster
from tests.support.bootstrap_doc import (
    HOST_KEYS,
    bootstrap,
    clusters,
    context,
    endpoints,
    ext_authz,
    hcm,
    https_cluster,
    kitchen_sink,
    listener,
    one_route_doc,
    only_route,
    proxy_route,
    route,
    runtime,
    vhosts,
    write_test_certs,
)

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A trustme CA + `*.test` leaf, written into tmp_path and named by *relative* paths."""
    names = write_test_certs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return names


# ---------------------------------------------------------------------------- rendering


def test_render_yaml_round_trips() -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]))
    text = render_yaml(doc)
    assert yaml.safe_load(text) == doc
    assert text.startswith("node:")  # sort_keys=False keeps proto field order


# ---------------------------------------------------------------------------- listener & HCM


def test_tls_listener_uses_absolute_cert_paths_and_alpn(certs: tuple[str, str],
                                                        tmp_path: Path) -> None:
    doc = bootstrap(kitchen_sink(certs))
    socket = listener(doc)["filter_chains"][0]["transport_socket"]
    tls = socket["typed_config"]
    assert tls["@type"].endswith("tls.v3.DownstreamTlsContext")
    (pair,) = tls["common_tls_context"]["tls_certificates"]
    assert pair["certificate_chain"]["filename"] == str(tmp_path / "cert.pem")
    assert pair["private_key"]["filename"] == str(tmp_path / "key.pem")
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert listener(doc)["name"] == "authgate_https"


def test_hcm_hardening() -> None:
    h = hcm(bootstrap(runtime([route("http://a.test", "http://10.0.0.1")])))
    assert h.get("codec_type", "AUTO") == "AUTO"
    assert h["normalize_path"] is True
    assert h["merge_slashes"] is True
    # %2F/%5C in a path: 400 (as Pomerium >= 0.33), never forwarded for an upstream to decode
    # past a prefix route, and no redirect answered before ext_authz.
    assert h["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert h["use_remote_address"] is True
    # X_Pomerium_Claim_Email and friends never reach authz or the upstream.
    assert h["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
    assert h["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": False}]
    assert [f["name"] for f in h["http_filters"]] == [
        "envoy.filters.http.ext_authz", "authgate.cookie_filter", "envoy.filters.http.router"
    ]


def test_cookie_filter_runs_only_when_authz_asks() -> None:
    h = hcm(bootstrap(runtime([route("http://a.test", "http://10.0.0.1")])))
    wrapped = h["http_filters"][1]["typed_config"]
    assert wrapped["@type"].endswith("ExtensionWithMatcher")
    (matcher,) = wrapped["xds_matcher"]["matcher_list"]["matchers"]
    single = matcher["predicate"]["not_matcher"]["single_predicate"]
    assert single["input"]["typed_config"]["header_name"] == STRIP_COOKIES_HEADER
    assert matcher["on_match"]["action"]["typed_config"]["@type"].endswith("SkipFilter")
    lua = wrapped["extension_config"]["typed_config"]["default_source_code"]["inline_string"]
    for name in ("_pomerium", "_pomerium_login", "_pomerium_authn_login"):
        assert f'["{name}"] = true' in lua


def test_ext_authz_fails_closed() -> None:
    authz = ext_authz(bootstrap(runtime([route("http://a.test", "http://10.0.0.1")])))
    assert authz["@type"].endswith("ext_authz.v3.ExtAuthz")
    assert authz["failure_mode_allow"] is False  # spelled out, not just the proto default
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["transport_api_version"] == "V3"
    service = authz["grpc_service"]
    retry = service.pop("retry_policy")
    assert service == {"envoy_grpc": {"cluster_name": AUTHZ_CLUSTER}, "timeout": "3s"}
    # Only a Check that never reached a live worker is retried, on another worker; the per-try
    # timeout (Envoy derives it from max_interval) is the whole timeout.
    assert retry["retry_on"] == "connect-failure,refused-stream,reset,unavailable"
    assert retry["retry_back_off"]["max_interval"] == "3s"
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert "with_request_body" not in authz
    assert "http_service" not in authz
    assert authz["encode_raw_headers"] is True  # cookie bytes as sent, repeated headers apart


def test_ext_authz_timeout_is_configurable() -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]), authz_timeout_s=0.25)
    assert ext_authz(doc)["grpc_service"]["timeout"] == "0.250s"


def test_ext_authz_sees_only_the_headers_it_needs() -> None:
    patterns = ext_authz(bootstrap(runtime([route("http://a.test", "http://10.0.0.1")])))[
        "allowed_headers"]["patterns"]
    exact = {p["exact"] for p in patterns if "exact" in p}
    assert exact == {"cookie", "accept", "authorization", "origin", "referer",
                     "sec-fetch-site", "sec-fetch-mode", "user-agent",
                     "access-control-request-method", "x-request-id",
                     "x-authgate-client-address"}
    assert {"prefix": "x-pomerium", "ignore_case": True} in patterns
    assert len(patterns) == 12


# ---------------------------------------------------------------------------- routes


def test_every_route_names_its_route_id(certs: tuple[str, str]) -> None:
    cfg = kitchen_sink(certs)
    doc = bootstrap(cfg)
    seen: set[str] = set()
    for vh in vhosts(doc).values():
        for r in vh["routes"]:
            ctx = context(r)
            assert set(ctx) == {"route_id", "kind"}
            seen.add(ctx["route_id"])
            if ctx["kind"] == "route":
                assert r["route"]["cluster"] == f"upstream-{ctx['route_id']}"
                assert r["name"] == ctx["route_id"]
    assert seen == {*cfg.routes_by_id, AUTHENTICATE_ROUTE_ID}


def test_internal_routes_come_first_on_every_route_host(certs: tuple[str, str]) -> None:
    cfg = kitchen_sink(certs)
    doc = bootstrap(cfg)
    for netloc, first in cfg.hosts.items():
        internal = vhosts(doc)[netloc]["routes"][:4]
        assert [r["match"] for r in internal] == [
            {"prefix": "/.pomerium/"}, {"prefix": "/.well-known/pomerium/"},
            {"path": "/.pomerium"}, {"path": "/.well-known/pomerium"},
        ]
        for r in internal:
            assert r["direct_response"] == {"status": 404}
            assert context(r) == {"route_id": first.id, "kind": "internal"}
            assert "route" not in r


def test_two_routes_on_one_host_keep_config_order(certs: tuple[str, str]) -> None:
    vh = vhosts(bootstrap(kitchen_sink(certs)))["jenkins.test:8443"]
    assert [r.get("name") for r in vh["routes"]] == [None] * 4 + ["jenkins", "jenkins-api"]
    assert vh["routes"][4]["match"] == {"prefix": "/"}
    assert vh["routes"][5]["match"] == {"path": "/api/json"}


def test_prefix_and_path_matching(certs: tuple[str, str]) -> None:
    doc = bootstrap(kitchen_sink(certs))
    assert proxy_route(doc, "app.test", "app")["match"] == {"prefix": "/app/"}
    assert proxy_route(doc, "jenkins.test:8443", "jenkins-api")["match"] == {"path": "/api/json"}
    assert proxy_route(doc, "secure.test", "secure")["match"] == {"prefix": "/"}


def test_domains_cover_host_with_and_without_default_port(certs: tuple[str, str]) -> None:
    domains = {name: vh["domains"] for name, vh in vhosts(bootstrap(kitchen_sink(certs))).items()}
    assert domains["jenkins.test:8443"] == ["jenkins.test:8443"]
    assert domains["app.test"] == ["app.test", "app.test:443"]
    assert domains["authenticate:authenticate.test"] == ["authenticate.test",
                                                         "authenticate.test:443"]
    all_domains = [d for ds in domains.values() for d in ds]
    assert "*" not in all_domains  # unknown Host => Envoy's own 404
    assert len(all_domains) == len(set(all_domains))


def test_insecure_domains_use_port_80() -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]))
    assert vhosts(doc)["a.test"]["domains"] == ["a.test", "a.test:80"]


def test_authenticate_virtual_host(certs: tuple[str, str]) -> None:
    vh = vhosts(bootstrap(kitchen_sink(certs)))["authenticate:authenticate.test"]
    (only,) = vh["routes"]
    assert only["match"] == {"prefix": "/"}
    assert only["direct_response"] == {"status": 404}
    assert context(only) == {"route_id": AUTHENTICATE_ROUTE_ID, "kind": "authenticate"}


def test_websockets_enabled_per_route_without_timeout(certs: tuple[str, str]) -> None:
    doc = bootstrap(kitchen_sink(certs))
    ws = proxy_route(doc, "jenkins.test:8443", "jenkins")["route"]
    assert ws["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": True}]
    assert ws["timeout"] == "0s"
    plain = proxy_route(doc, "jenkins.test:8443", "jenkins-api")["route"]
    assert "upgrade_configs" not in plain
    assert plain["timeout"] == "30s"
    assert plain["idle_timeout"] == "300s"


def test_route_timeouts_come_from_the_config(certs: tuple[str, str]) -> None:
    action = proxy_route(bootstrap(kitchen_sink(certs)), "app.test", "app")["route"]
    assert action["timeout"] == "90s"
    assert action["idle_timeout"] == "600s"


# ---------------------------------------------------------------------------- clusters


def test_authz_cluster(tmp_path: Path) -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]))
    authz = clusters(doc)[AUTHZ_CLUSTER]
    assert authz["type"] == "STATIC"
    assert authz["lb_policy"] == "LEAST_REQUEST"
    assert authz["connect_timeout"] == "1s"
    assert [e["address"] for e in endpoints(authz)] == [
        {"pipe": {"path": "/run/authgate/authz-0.sock"}},
        {"pipe": {"path": "/run/authgate/authz-1.sock"}},
        {"socket_address": {"address": "127.0.0.1", "port_value": 9901}},
    ]
    options = authz["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["@type"] == (
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    )
    assert "http2_protocol_options" in options["explicit_http_config"]
    (limits,) = authz["circuit_breakers"]["thresholds"]
    assert limits == {"max_connections": 100000, "max_pending_requests": 100000,
                      "max_requests": 100000, "max_retries": 100000}
    assert doc["admin"]["address"] == {"pipe": {"path": "/run/authgate/envoy-admin.sock"}}


def test_authz_cluster_refuses_bad_endpoints() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_authz_cluster([])
    with pytest.raises(ValueError, match="cannot mix"):
        build_authz_cluster(["unix:/run/a.sock", "authz:9000"])
    with pytest.raises(ValueError, match="host:port"):
        build_authz_cluster(["authz"])


def test_unix_upstream_cluster(certs: tuple[str, str]) -> None:
    cluster = clusters(bootstrap(kitchen_sink(certs)))["upstream-jenkins"]
    assert cluster["type"] == "STATIC"
    assert cluster["connect_timeout"] == "10s"
    assert endpoints(cluster) == [{"address": {"pipe": {"path": "/run/jenkins/jenkins.sock"}}}]
    assert "transport_socket" not in cluster


def test_http_upstream_by_ip_is_static(certs: tuple[str, str]) -> None:
    cluster = clusters(bootstrap(kitchen_sink(certs)))["upstream-jenkins-api"]
    assert cluster["type"] == "STATIC"
    (endpoint,) = endpoints(cluster)
    assert endpoint["address"] == {"socket_address": {"address": "10.1.2.3", "port_value": 8080}}
    assert endpoint["hostname"] == "10.1.2.3:8080"  # what auto_host_rewrite would send
    assert "transport_socket" not in cluster


def test_http_upstream_by_name_is_strict_dns_round_robin(certs: tuple[str, str]) -> None:
    cluster = clusters(bootstrap(kitchen_sink(certs)))["upstream-app"]
    assert cluster["type"] == "STRICT_DNS"
    assert cluster.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert [e["address"]["socket_address"] for e in endpoints(cluster)] == [
        {"address": "app-a", "port_value": 8080}, {"address": "app-b", "port_value": 8080}
    ]


def test_https_upstream_is_verified(certs: tuple[str, str]) -> None:
    cluster = clusters(bootstrap(kitchen_sink(certs)))["upstream-secure"]
    assert cluster["type"] == "STRICT_DNS"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("tls.v3.UpstreamTlsContext")
    assert tls["sni"] == "backend.internal"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "backend.internal"}}
    ]
    assert "trust_chain_verification" not in validation  # never ACCEPT_UNTRUSTED


def test_https_upstream_by_ip_matches_ip_san_without_sni(certs: tuple[str, str]) -> None:
    cluster = clusters(bootstrap(kitchen_sink(certs)))["upstream-hdr"]
    assert cluster["type"] == "STATIC"
    assert endpoints(cluster)[0]["hostname"] == "10.9.9.9"
    tls = cluster["transport_socket"]["typed_config"]
    assert "sni" not in tls
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.9.9.9"}}
    ]


def test_one_cluster_per_route(certs: tuple[str, str]) -> None:
    cfg = kitchen_sink(certs)
    names = list(clusters(bootstrap(cfg)))
    assert names == [AUTHZ_CLUSTER, *(f"upstream-{rt.id}" for rt in cfg.routes)]


# ---------------------------------------------------------------------------- route options


def test_internal_routes_stay_first_before_regex_and_rewrites() -> None:
    cfg = runtime([
        route("http://a.test", "http://10.0.0.1", id="rx", regex="^/.*$",
              set_request_headers={"X-A": "1"}),
        route("http://a.test", "http://10.0.0.1", id="rw", prefix="/app/", prefix_rewrite="/"),
    ])
    routes = vhosts(bootstrap(cfg))["a.test"]["routes"]
    assert [r["match"] for r in routes[:4]] == [
        {"prefix": "/.pomerium/"}, {"prefix": "/.well-known/pomerium/"},
        {"path": "/.pomerium"}, {"path": "/.well-known/pomerium"},
    ]
    assert [r.get("name") for r in routes] == [None] * 4 + ["rx", "rw"]
    for internal in routes[:4]:  # authz answers these; no route option touches them
        assert "request_headers_to_add" not in internal
        assert "route" not in internal


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"preserve_host_header": True}, {}),
        ({"host_rewrite": "fixed.example"}, {"host_rewrite_literal": "fixed.example"}),
        ({"host_rewrite_header": "X-Host"}, {"host_rewrite_header": "X-Host"}),
        ({"host_rewrite_header": True}, {}),
    ],
)
def test_host_path_regex_rewrite_comes_after_the_other_host_options(
    options: dict[str, Any], expected: dict[str, Any]
) -> None:
    action = only_route(one_route_doc(host_path_regex_rewrite_pattern="^/(.+)$",
                                      host_path_regex_rewrite_substitution="\\1",
                                      **options))["route"]
    assert "host_rewrite_path_regex" not in action
    assert {k: action[k] for k in HOST_KEYS if k in action} == expected


def test_no_header_mutations_touch_the_identity_namespace_or_the_assertion(
    certs: tuple[str, str],
) -> None:
    doc = bootstrap(kitchen_sink(certs))
    added_keys: list[str] = []
    removed: list[str] = []
    for vh in vhosts(doc).values():
        for r in vh["routes"]:
            for added in r.get("request_headers_to_add", []):
                assert not added["header"]["key"].replace("_", "-").startswith("x-pomerium")
                added_keys.append(added["header"]["key"])
            assert "x-pomerium-jwt-assertion" not in r.get("request_headers_to_remove", [])
            removed.extend(r.get("request_headers_to_remove", []))
    # kitchen_sink's `app` route sets and removes headers: the loops above checked something.
    assert added_keys == ["x-team", "x-forwarded-prefix"]
    assert removed == ["x-debug", "x-pomerium-claim-email"]


def test_tls_server_name_covers_every_upstream() -> None:
    doc = one_route_doc(to=["https://a.internal", "https://b.internal"],
                        tls_server_name="backend.internal")
    validation = https_cluster(doc)["common_tls_context"]["validation_context"]
    assert [m["matcher"]["exact"] for m in validation["match_typed_subject_alt_names"]] == [
        "backend.internal"
    ]


def test_tls_options_stay_per_route(certs: tuple[str, str]) -> None:
    cfg = runtime([
        route("https://a.test", "https://one.internal", id="skip", tls_skip_verify=True),
        route("https://b.test", "https://two.internal", id="checked"),
    ], tls=certs)
    doc = bootstrap(cfg)
    checked = clusters(doc)["upstream-checked"]["transport_socket"]["typed_config"]
    assert "validation_context" in checked["common_tls_context"]
    skipped = clusters(doc)["upstream-skip"]["transport_socket"]["typed_config"]
    assert "validation_context" not in skipped["common_tls_context"]


