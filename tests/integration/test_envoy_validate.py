"""The real `envoy --mode validate` (a subprocess) accepts the bootstrap authgate generates.

Configs are built inline with tests/support/bootstrap_doc.py, as in
tests/unit/test_envoy_bootstrap.py (the bootstrap's structure, without Envoy); most tests here
check some structure as well. Also the compose stack's committed bootstrap, envoy/compose.yaml.
No stack is started here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from authgate.envoy import build_bootstrap, validate_config
from authgate.envoy.bootstrap import AUTHZ_CLUSTER
from tests.support.bootstrap_doc import (
    HOST_KEYS,
    bootstrap,
    clusters,
    context,
    https_cluster,
    kitchen_sink,
    listener,
    one_route_doc,
    only_route,
    proxy_route,
    route,
    runtime,
    write_test_certs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# tests/unit/test_compose_files.py checks this file's content.
COMPOSE_ENVOY_BOOTSTRAP = REPO_ROOT / "envoy" / "compose.yaml"
IN_CONTAINER_CERT = "/etc/envoy/tls/cert.pem"
IN_CONTAINER_KEY = "/etc/envoy/tls/key.pem"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A trustme CA + `*.test` leaf, written into tmp_path and named by *relative* paths."""
    names = write_test_certs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return names


@pytest.fixture
def private_ca(tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


# ---------------------------------------------------------------------------- Envoy accepts it


def test_kitchen_sink_tls_config_validates(certs: tuple[str, str], tmp_path: Path) -> None:
    doc = bootstrap(kitchen_sink(certs))
    validate_config(doc, tmp_path)


def test_insecure_config_validates(tmp_path: Path) -> None:
    cfg = runtime([route("http://jenkins.test:8080", "unix:///run/jenkins.sock")])
    doc = bootstrap(cfg, endpoints=["unix:/run/authz.sock"])
    validate_config(doc, tmp_path)
    assert "transport_socket" not in listener(doc)["filter_chains"][0]
    assert listener(doc)["name"] == "authgate_http"
    assert listener(doc)["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 8443}
    }


def test_validate_config_reports_envoys_message(tmp_path: Path) -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]))
    doc["static_resources"]["clusters"][0]["lb_policy"] = "NO_SUCH_POLICY"
    with pytest.raises(ValueError, match="NO_SUCH_POLICY"):
        validate_config(doc, tmp_path)


def test_validate_config_refuses_missing_certificate(certs: tuple[str, str],
                                                     tmp_path: Path) -> None:
    doc = bootstrap(kitchen_sink(certs))
    Path("cert.pem").unlink()
    with pytest.raises(ValueError, match=r"cert\.pem"):
        validate_config(doc, tmp_path)


# ---------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("to", "options", "expected"),
    [
        ("http://10.0.0.1:8080", {}, {"auto_host_rewrite": True}),
        ("http://app.internal", {}, {"auto_host_rewrite": True}),
        ("unix:///run/app.sock", {}, {}),
        ("http://10.0.0.1:8080", {"preserve_host_header": True}, {}),
        ("http://10.0.0.1:8080", {"host_rewrite_header": True}, {}),
        ("http://10.0.0.1:8080", {"host_rewrite": "app.example"},
         {"host_rewrite_literal": "app.example"}),
        ("http://10.0.0.1:8080", {"host_rewrite_header": "X-Target"},
         {"host_rewrite_header": "X-Target"}),
        ("unix:///run/app.sock", {"host_rewrite": "app.example"},
         {"host_rewrite_literal": "app.example"}),
    ],
)
def test_host_header_handling(to: str, options: dict[str, Any], expected: dict[str, Any],
                              tmp_path: Path) -> None:
    doc = bootstrap(runtime([route("http://a.test", to, id="r", **options)]))
    action = proxy_route(doc, "a.test", "r")["route"]
    assert {k: action[k] for k in HOST_KEYS if k in action} == expected
    validate_config(doc, tmp_path)


# ---------------------------------------------------------------------------- clusters


def test_authz_cluster_by_dns_name_uses_strict_dns(tmp_path: Path) -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]),
                    endpoints=["authz.authgate.svc:9000"])
    authz = clusters(doc)[AUTHZ_CLUSTER]
    assert authz["type"] == "STRICT_DNS"
    validate_config(doc, tmp_path)


def test_tcp_admin_address(tmp_path: Path) -> None:
    doc = build_bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]),
                          ["127.0.0.1:9901"], admin_address="127.0.0.1:9902")
    assert doc["admin"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 9902}
    }
    validate_config(doc, tmp_path)


def test_upstream_ca_file_can_be_replaced(certs: tuple[str, str], tmp_path: Path) -> None:
    doc = bootstrap(kitchen_sink(certs), upstream_ca_file=str(tmp_path / "ca.pem"))
    tls = clusters(doc)["upstream-secure"]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": str(tmp_path / "ca.pem")
    }
    validate_config(doc, tmp_path)


# ---------------------------------------------------------------------------- route options


def test_re2_program_size_limit_is_raised(tmp_path: Path) -> None:
    # Envoy's default limit (100) refuses this; a route regex is operator config, and RE2 is
    # linear-time.
    doc = one_route_doc(regex="^/(job|view|api|static|adjuncts|computer){1,4}/[a-z0-9-]{1,40}/.*$")
    (layer,) = doc["layered_runtime"]["layers"]
    assert layer["static_layer"] == {"re2.max_program_size.error_level": 32768}
    validate_config(doc, tmp_path)


def test_regex_route_is_a_safe_regex(tmp_path: Path) -> None:
    doc = one_route_doc(regex=r"^/(admin|superuser)/.*$")
    r = only_route(doc)
    assert r["match"] == {"safe_regex": {"regex": r"^/(admin|superuser)/.*$"}}
    assert context(r) == {"route_id": "r", "kind": "route"}
    validate_config(doc, tmp_path)


def test_regex_with_re2_only_syntax_validates(tmp_path: Path) -> None:
    doc = one_route_doc(regex=r"^/(?<section>\pL+)/\Q(x)\E\z")
    validate_config(doc, tmp_path)


def test_prefix_rewrite(tmp_path: Path) -> None:
    doc = one_route_doc(prefix="/admin/", prefix_rewrite="/")
    r = only_route(doc)
    assert r["match"] == {"prefix": "/admin/"}
    assert r["route"]["prefix_rewrite"] == "/"
    assert "regex_rewrite" not in r["route"]
    validate_config(doc, tmp_path)


def test_prefix_rewrite_on_an_exact_path(tmp_path: Path) -> None:
    doc = one_route_doc(path="/api/json", prefix_rewrite="/json")
    assert only_route(doc)["route"]["prefix_rewrite"] == "/json"
    validate_config(doc, tmp_path)


def test_regex_rewrite(tmp_path: Path) -> None:
    doc = one_route_doc(regex_rewrite_pattern="^/service/([^/]+)(/.*)$",
                        regex_rewrite_substitution="\\2/instance/\\1")
    action = only_route(doc)["route"]
    assert action["regex_rewrite"] == {
        "pattern": {"regex": "^/service/([^/]+)(/.*)$"},
        "substitution": "\\2/instance/\\1",
    }
    assert "prefix_rewrite" not in action
    validate_config(doc, tmp_path)


def test_host_path_regex_rewrite(tmp_path: Path) -> None:
    doc = one_route_doc(host_path_regex_rewrite_pattern="^/(.+)/.+$",
                        host_path_regex_rewrite_substitution="\\1")
    action = only_route(doc)["route"]
    assert action["host_rewrite_path_regex"] == {
        "pattern": {"regex": "^/(.+)/.+$"}, "substitution": "\\1"
    }
    assert not any(k in action for k in HOST_KEYS)  # instead of auto_host_rewrite
    validate_config(doc, tmp_path)


def test_set_request_headers_overwrite_literally(tmp_path: Path) -> None:
    doc = one_route_doc(set_request_headers={
        "X-Team": "blue", "Authorization": "Basic dXNlcjpwYXNz", "X-Pct": "100% %REQ(x-client)%",
        "X-Empty": "",
    })
    r = only_route(doc)
    assert r["request_headers_to_add"] == [
        {"header": {"key": "x-team", "value": "blue"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "authorization", "value": "Basic dXNlcjpwYXNz"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        # `%` doubled: Envoy must not expand %REQ(...)% from a client header (nor refuse `100%`).
        {"header": {"key": "x-pct", "value": "100%% %%REQ(x-client)%%"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-empty"},  # proto3 JSON leaves out the empty value
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "keep_empty_value": True},
    ]
    assert "request_headers_to_remove" not in r
    validate_config(doc, tmp_path)


def test_remove_request_headers(tmp_path: Path) -> None:
    doc = one_route_doc(remove_request_headers=["X-Debug", "x-pomerium-claim-email"])
    r = only_route(doc)
    assert r["request_headers_to_remove"] == ["x-debug", "x-pomerium-claim-email"]
    assert "request_headers_to_add" not in r
    validate_config(doc, tmp_path)


def test_tls_server_name_is_sni_and_the_verified_name(tmp_path: Path) -> None:
    doc = one_route_doc(to="https://10.0.0.5:8443", tls_server_name="backend.internal")
    tls = https_cluster(doc)
    assert tls["sni"] == "backend.internal"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "backend.internal"}}
    ]
    assert validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    validate_config(doc, tmp_path)


def test_tls_custom_ca_file_replaces_the_system_bundle(
    private_ca: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(private_ca.parent)
    doc = one_route_doc(to="https://backend.internal", tls_custom_ca_file=private_ca.name)
    validation = https_cluster(doc)["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(private_ca)}  # absolute for Envoy
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "backend.internal"}}
    ]
    assert "trust_chain_verification" not in validation
    validate_config(doc, tmp_path)


def test_tls_skip_verify_has_no_validation_context(tmp_path: Path) -> None:
    doc = one_route_doc(to="https://backend.internal:8443", tls_skip_verify=True)
    tls = https_cluster(doc)
    assert tls["common_tls_context"] == {}
    assert tls["sni"] == "backend.internal"  # still sent: the upstream may need it
    validate_config(doc, tmp_path)


def test_every_route_option_together_validates(
    certs: tuple[str, str], private_ca: Path, tmp_path: Path
) -> None:
    cfg = runtime(
        [
            route("https://app.test", "https://10.0.0.9:8443", id="all", regex="^/api/(.*)$",
                  regex_rewrite_pattern="^/api/(.*)$", regex_rewrite_substitution="/v2/\\1",
                  host_path_regex_rewrite_pattern="^/api/([a-z]+)/.*$",
                  host_path_regex_rewrite_substitution="\\1.internal",
                  set_request_headers={"X-From": "authgate"}, remove_request_headers=["X-Debug"],
                  tls_server_name="api.internal", tls_custom_ca_file=str(private_ca),
                  timeout="5s", idle_timeout="1m", pass_identity_headers=True,
                  show_error_details=True),
            route("https://app.test", "https://10.0.0.9:8443", id="rest", prefix="/old/",
                  prefix_rewrite="/new/", tls_skip_verify=True),
        ],
        tls=certs,
    )
    validate_config(bootstrap(cfg), tmp_path)


# ---------------------------------------------------------------------------- docker-compose


def test_envoy_accepts_the_compose_bootstrap_with_real_certificates(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("jenkins.localhost", "authenticate.localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    text = COMPOSE_ENVOY_BOOTSTRAP.read_text(encoding="utf-8")
    assert IN_CONTAINER_CERT in text and IN_CONTAINER_KEY in text
    text = text.replace(IN_CONTAINER_CERT, str(cert)).replace(IN_CONTAINER_KEY, str(key))
    doc = yaml.safe_load(text)
    validate_config(doc, tmp_path)
