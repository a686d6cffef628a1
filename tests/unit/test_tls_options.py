"""Listener, balancer and TLS keys: what the schema accepts and refuses, what the generated
Envoy config holds, and (once, for a config using all of them) that the real
`envoy --mode validate` accepts it. Behaviour through real Envoy: tests/integration/
test_behind_balancer.py and test_mtls.py."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authgate.authz.client_address import with_client_address
from authgate.authz.client_cert_gate import client_certificate_required
from authgate.authz.context import RequestContext
from authgate.config.load import settings_from_mapping
from authgate.config.runtime import build_runtime
from authgate.envoy import validate_config
from authgate.errors import ConfigError
from authgate.policy import compile_policy
from authgate.policy.model import PolicyInput
from tests.support.bootstrap_doc import (
    COOKIE_SECRET,
    bootstrap,
    clusters,
    ext_authz,
    hcm,
    route,
    runtime,
    write_test_certs,
)


@pytest.fixture
def certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    names = write_test_certs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return names


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def settings(**extra: Any) -> Any:
    raw: dict[str, Any] = {
        "address": "127.0.0.1:8443",
        "authenticate_service_url": "https://authenticate.test",
        "idp_provider_url": "https://idp.test",
        "idp_client_id": "authgate",
        "idp_client_secret": "s",
        "cookie_secret": COOKIE_SECRET,
        "routes": [route("https://a.test", "http://10.0.0.1")],
        **extra,
    }
    return settings_from_mapping(raw, environ={})


def refused(match: str, **extra: Any) -> None:
    with pytest.raises(ConfigError, match=match):
        settings(**extra)


def the_listener(doc: dict[str, Any]) -> dict[str, Any]:
    return next(li for li in doc["static_resources"]["listeners"] if li["name"] != (
        "authgate_http_redirect"))


def tls_context(doc: dict[str, Any]) -> dict[str, Any]:
    (chain,) = the_listener(doc)["filter_chains"]
    return chain["transport_socket"]["typed_config"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- behind a TLS balancer


def test_insecure_server_with_https_routes_keeps_https_for_browsers() -> None:
    s = settings(insecure_server=True)
    assert s.tls and not s.terminates_tls
    cfg = build_runtime(s, warn=False)
    assert cfg.cookie_name == "__Host-_pomerium"
    assert cfg.routes[0].origin == "https://a.test"
    assert cfg.authenticate_origin == "https://authenticate.test"
    doc = bootstrap(cfg)
    assert "filter_chains" in the_listener(doc)
    assert "transport_socket" not in the_listener(doc)["filter_chains"][0]
    # The app reads https whatever a client sends.
    added = hcm(doc)["route_config"]["request_headers_to_add"]
    assert added == [{"header": {"key": "x-forwarded-proto", "value": "https"},
                      "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


def test_plain_http_routes_stay_plain() -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")]))
    assert "request_headers_to_add" not in hcm(doc)["route_config"]
    assert not build_runtime(
        settings(insecure_server=True, authenticate_service_url="http://authenticate.test",
                 routes=[route("http://a.test", "http://10.0.0.1")]), warn=False
    ).settings.tls


def test_mixed_schemes_are_refused_with_the_fix() -> None:
    s = settings(insecure_server=True, routes=[route("http://a.test", "http://10.0.0.1")])
    with pytest.raises(ConfigError, match="use https:// routes"):
        build_runtime(s, warn=False)


def test_xff_hops_reach_envoy_and_put_the_client_address_filter_first() -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1")],
                            xff_num_trusted_hops=2, skip_xff_append=True))
    manager = hcm(doc)
    assert manager["xff_num_trusted_hops"] == 2
    assert manager["skip_xff_append"] is True
    assert manager["use_remote_address"] is True
    first = manager["http_filters"][0]
    assert first["name"] == "authgate.client_address"
    (mutation,) = first["typed_config"]["mutations"]["request_mutations"]
    assert mutation["append"]["header"] == {
        "key": "x-authgate-client-address", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}
    assert mutation["append"]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    # ...and the app never sees it.
    assert "x-authgate-client-address" in manager["route_config"]["request_headers_to_remove"]


def test_without_hops_there_is_no_client_address_filter() -> None:
    manager = hcm(bootstrap(runtime([route("http://a.test", "http://10.0.0.1")])))
    assert "xff_num_trusted_hops" not in manager
    assert manager["http_filters"][0]["name"] == "envoy.filters.http.ext_authz"


def ctx(**kw: Any) -> RequestContext:
    base: dict[str, Any] = dict(route_id="r", kind="route", method="GET", scheme="http",
                                host="a.test", path="/", headers={}, source_ip="10.0.0.9")
    return RequestContext(**{**base, **kw})


def test_authz_reads_the_computed_address_only_when_envoy_wrote_it() -> None:
    header = {"x-authgate-client-address": "203.0.113.7"}
    with_hops = settings(xff_num_trusted_hops=1, insecure_server=True)
    assert with_client_address(with_hops, ctx(headers=header)).source_ip == "203.0.113.7"
    # Behind an Envoy the user wrote, a client could have sent it: the peer stands.
    byo = ctx(headers=header, generated_envoy=False)
    assert with_client_address(with_hops, byo).source_ip == "10.0.0.9"
    # Without hops no filter writes it, so a client's copy means nothing.
    assert with_client_address(settings(insecure_server=True),
                               ctx(headers=header)).source_ip == "10.0.0.9"


@pytest.mark.parametrize("bad", [-1, 17, "two"])
def test_xff_hops_must_be_a_small_count(bad: object) -> None:
    refused("xff_num_trusted_hops", insecure_server=True, xff_num_trusted_hops=bad)


# ---------------------------------------------------------------- listener certificates


@pytest.fixture
def pem_pair() -> tuple[bytes, bytes]:
    leaf = trustme.CA().issue_cert("a.test", "authenticate.test")
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()


def test_inline_certificate_and_certificates_list(
    certs: tuple[str, str], pem_pair: tuple[bytes, bytes]
) -> None:
    cert, key = pem_pair
    cfg = runtime([route("https://a.test", "http://10.0.0.1")], tls=certs,
                  certificate=b64(cert), certificate_key=b64(key),
                  certificates=[{"cert": b64(cert), "key": b64(key)},
                                {"cert": certs[0], "key": certs[1]}])
    common = tls_context(bootstrap(cfg))["common_tls_context"]
    chains = [c["certificate_chain"] for c in common["tls_certificates"]]
    assert chains[0] == {"filename": str(Path(certs[0]).resolve())}
    assert chains[1] == {"inline_bytes": b64(cert)}
    assert chains[2] == {"inline_bytes": b64(cert)}
    assert chains[3] == {"filename": str(Path(certs[0]).resolve())}


def test_certificates_alone_are_enough(pem_pair: tuple[bytes, bytes]) -> None:
    cert, key = pem_pair
    assert settings(certificates=[{"cert": b64(cert), "key": b64(key)}]).terminates_tls


def test_certificate_paths_expand_variables(
    certs: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_DIR", str(tmp_path))
    loaded = settings(certificates=[{"cert": "$ACME_DIR/cert.pem", "key": "${ACME_DIR}/key.pem"}])
    assert loaded.certificates[0].cert == f"{tmp_path}/cert.pem"


def test_certificate_problems_name_the_key(pem_pair: tuple[bytes, bytes]) -> None:
    cert, key = pem_pair
    refused("certificate_file and certificate_key_file are required")
    refused("certificate and certificate_key go together", certificate=b64(cert))
    refused("certificate_key does not decode to a PEM private key",
            certificate=b64(cert), certificate_key=b64(cert))
    refused("cert is not base64", certificates=[{"cert": "not base64!", "key": b64(key)}])
    refused("cannot read /nope/cert.pem", certificates=[{"cert": "/nope/cert.pem",
                                                         "key": b64(key)}])


def test_codec_type_sets_the_codec_and_alpn(certs: tuple[str, str]) -> None:
    doc = bootstrap(runtime([route("https://a.test", "http://10.0.0.1")], tls=certs,
                            codec_type="http1"))
    assert hcm(doc)["codec_type"] == "HTTP1"
    assert tls_context(doc)["common_tls_context"]["alpn_protocols"] == ["http/1.1"]
    refused("codec_type", codec_type="http3")


def test_http_redirect_addr_adds_a_listener_that_only_redirects(certs: tuple[str, str]) -> None:
    doc = bootstrap(runtime([route("https://a.test", "http://10.0.0.1")], tls=certs,
                            http_redirect_addr="127.0.0.1:8080"))
    (extra,) = [li for li in doc["static_resources"]["listeners"]
                if li["name"] == "authgate_http_redirect"]
    assert extra["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    (chain,) = extra["filter_chains"]
    manager = chain["filters"][0]["typed_config"]
    (vhost,) = manager["route_config"]["virtual_hosts"]
    assert vhost["routes"][0]["redirect"] == {"https_redirect": True, "port_redirect": 8443}
    refused("http_redirect_addr needs authgate's own TLS", insecure_server=True,
            http_redirect_addr=":80")
    refused("another port", certificates=[], certificate_file="x", certificate_key_file="y",
            http_redirect_addr=":8443")


# ---------------------------------------------------------------- downstream mTLS


def test_downstream_mtls_asks_for_certificates_and_sends_them_to_authz(
    certs: tuple[str, str]
) -> None:
    ca = trustme.CA().cert_pem.bytes()
    doc = bootstrap(runtime([route("https://a.test", "http://10.0.0.1")], tls=certs,
                            downstream_mtls={"ca": b64(ca),
                                             "match_subject_alt_names": {"email": ".*@corp$"}}))
    context = tls_context(doc)
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"inline_bytes": b64(ca)}
    assert validation["max_verify_depth"] == 1  # Pomerium's default
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "EMAIL", "matcher": {"safe_regex": {"regex": ".*@corp$"}}}]
    # Pomerium's list form; max_verify_depth 0 is "no limit" (Envoy's default).
    listed = tls_context(bootstrap(runtime(
        [route("https://a.test", "http://10.0.0.1")], tls=certs,
        downstream_mtls={"ca": b64(ca), "max_verify_depth": 0,
                         "match_subject_alt_names": [{"dns": "a"}, {"uri": "b"}]})))
    listed_validation = listed["common_tls_context"]["validation_context"]
    assert "max_verify_depth" not in listed_validation
    assert [m["san_type"] for m in listed_validation["match_typed_subject_alt_names"]] == [
        "DNS", "URI"]
    assert not context.get("require_client_certificate")  # policy answers a missing one
    assert ext_authz(doc)["include_peer_certificate"] is True


def test_reject_connection_requires_the_certificate_at_the_handshake(
    certs: tuple[str, str], tmp_path: Path
) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    doc = bootstrap(runtime([route("https://a.test", "http://10.0.0.1")], tls=certs,
                            downstream_mtls={"ca_file": "clients.pem", "max_verify_depth": 3,
                                             "enforcement": "reject_connection"}))
    context = tls_context(doc)
    assert context["require_client_certificate"] is True
    assert context["common_tls_context"]["validation_context"]["max_verify_depth"] == 3


def test_downstream_mtls_problems() -> None:
    refused("exactly one of `ca`", downstream_mtls={})
    refused("enforcement", downstream_mtls={"ca": b64(trustme.CA().cert_pem.bytes()),
                                            "enforcement": "always"})
    refused("needs authgate's own TLS", insecure_server=True,
            downstream_mtls={"ca": b64(trustme.CA().cert_pem.bytes())})
    refused("lookahead", downstream_mtls={"ca": b64(trustme.CA().cert_pem.bytes()),
                                          "match_subject_alt_names": {"dns": "(?=a)"}})


def test_default_deny_refuses_route_requests_without_a_certificate(
    pem_pair: tuple[bytes, bytes]
) -> None:
    cert, key = pem_pair
    base = {"certificates": [{"cert": b64(cert), "key": b64(key)}]}
    mtls = {"ca": b64(trustme.CA().cert_pem.bytes())}
    deny = settings(**base, downstream_mtls=mtls)
    answer = client_certificate_required(deny, ctx())
    assert answer is not None and answer.status == 495
    assert client_certificate_required(deny, ctx(client_certificate="PEM")) is None
    policy_only = settings(**base, downstream_mtls={**mtls, "enforcement": "policy"})
    assert client_certificate_required(policy_only, ctx()) is None
    assert client_certificate_required(settings(**base), ctx()) is None


# ---------------------------------------------------------------- client_certificate criterion


@pytest.fixture
def client_pem() -> str:
    leaf = trustme.CA().issue_cert("alice@example.com", "alice.devices.test")
    return leaf.cert_chain_pems[0].bytes().decode()


def facts(pem: str) -> tuple[str, str, str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    long_form = ":".join(digest[i:i + 2] for i in range(0, 64, 2)).upper()
    return digest, long_form, b64(hashlib.sha256(spki).digest())


def allows(criterion: dict[str, Any], pem: str) -> bool:
    policy = compile_policy({"allow": {"and": [{"client_certificate": criterion}]}})
    return policy.allowed(PolicyInput(identity=None, client_certificate=pem))


def test_invalid_client_certificate_means_none_was_presented(client_pem: str) -> None:
    policy = compile_policy([{"allow": {"and": [{"accept": True}]}},
                             {"deny": {"and": [{"invalid_client_certificate": True}]}}])
    assert policy.allowed(PolicyInput(identity=None, client_certificate=client_pem))
    assert not policy.allowed(PolicyInput(identity=None))


def test_client_certificate_by_fingerprint_spki_and_san(client_pem: str) -> None:
    short, long_form, spki = facts(client_pem)
    other = trustme.CA().issue_cert("x.test").cert_chain_pems[0].bytes().decode()
    assert allows({"fingerprint": short}, client_pem)
    assert allows({"fingerprint": [long_form, "0" * 64]}, client_pem)
    assert not allows({"fingerprint": short}, other)
    assert allows({"spki_hash": spki}, client_pem)
    assert not allows({"spki_hash": spki}, other)
    assert allows({"san_email": {"ends_with": "@example.com"}}, client_pem)
    assert allows({"san_dns": "alice.devices.test"}, client_pem)
    assert not allows({"san_uri": {"starts_with": "spiffe://"}}, client_pem)
    # Every condition must hold.
    assert not allows({"spki_hash": spki, "san_dns": "bob.devices.test"}, client_pem)
    # No certificate, or garbage, matches nothing.
    assert not allows({"fingerprint": short}, "")
    assert not allows({"fingerprint": short}, "-----BEGIN CERTIFICATE-----\nAAAA\n")


@pytest.mark.parametrize("spec, message", [
    ({"fingerprint": "abc"}, "unsupported certificate fingerprint format"),
    ({"spki_hash": "c2hvcnQ="}, "must be a base64-encoded SHA-256"),
    ({"serial": "1"}, "unsupported certificate matcher condition: serial"),
    ({}, "expects a certificate matcher object"),
    ("abc", "expects a certificate matcher object"),
    ({"fingerprint": []}, "expects a string or a list"),
])
def test_client_certificate_config_errors(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_policy({"allow": {"and": [{"client_certificate": spec}]}})


# ---------------------------------------------------------------- everything, through Envoy


def test_envoy_accepts_every_listener_and_tls_option(
    certs: tuple[str, str], tmp_path: Path, pem_pair: tuple[bytes, bytes]
) -> None:
    cert, key = pem_pair
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    client = ca.issue_cert("authgate-proxy")
    cfg = runtime(
        [route("https://a.test", "https://backend.internal:9443", id="up",
               tls_custom_ca=b64(ca.cert_pem.bytes()), tls_upstream_server_name="svc.internal",
               tls_client_cert=b64(client.cert_chain_pems[0].bytes()),
               tls_client_key=b64(client.private_key_pem.bytes()),
               load_balancing_policy="LEAST_REQUEST", tls_upstream_allow_renegotiation=True,
               health_checks=[{"timeout": "1s", "interval": "5s", "unhealthy_threshold": 2,
                               "healthy_threshold": 1,
                               "http_health_check": {"path": "/healthz"}}],
               outlier_detection={"consecutive_5xx": 3, "base_ejection_time": "30s"}),
         route("https://b.test", [], id="moved",
               redirect={"host_redirect": "c.test", "response_code": 308}),
         route("https://b.test", [], id="gone", prefix="/old",
               response={"status": 410, "body": "gone"})],
        tls=certs,
        certificate=b64(cert), certificate_key=b64(key),
        downstream_mtls={"ca_file": "clients.pem",
                         "match_subject_alt_names": {"dns": r".*\.devices\.test",
                                                     "user_principal_name": ".*@corp"},
                         "enforcement": "policy"},
        xff_num_trusted_hops=1, codec_type="http2", http_redirect_addr="127.0.0.1:8080",
        certificate_authority=b64(ca.cert_pem.bytes()),
    )
    doc = bootstrap(cfg)
    validate_config(doc, tmp_path)
    upstream = clusters(doc)["upstream-up"]
    assert upstream["lb_policy"] == "LEAST_REQUEST"
    assert upstream["outlier_detection"]["consecutive_5xx"] == 3
    assert upstream["health_checks"][0]["http_health_check"]["path"] == "/healthz"
    tls = upstream["transport_socket"]["typed_config"]
    assert tls["sni"] == "svc.internal"
    assert tls["allow_renegotiation"] is True
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"] == {
        "inline_bytes": b64(client.cert_chain_pems[0].bytes())}
    assert "upstream-moved" not in clusters(doc)
    manager = the_listener(doc)["filter_chains"][0]["filters"][0]["typed_config"]
    (b_test,) = [vh for vh in manager["route_config"]["virtual_hosts"] if vh["name"] == "b.test"]
    assert {r.get("name") for r in b_test["routes"]} >= {"moved", "gone"}


def test_check_says_behind_a_balancer_is_plain_http_on_one_hop_only() -> None:
    from authgate.check import check_config

    raw = {
        "address": "0.0.0.0:8080", "insecure_server": True,
        "authenticate_service_url": "https://authenticate.test",
        "idp_provider_url": "https://idp.test", "idp_client_id": "authgate",
        "idp_client_secret": "s", "cookie_secret": COOKIE_SECRET,
        "routes": [route("https://a.test", "http://10.0.0.1")],
    }
    cfg = build_runtime(settings_from_mapping(raw, environ={}), warn=False)
    found = [f for f in check_config(cfg) if f.key == "insecure_server"]
    assert [(f.severity, "balancer-to-authgate hop" in f.message) for f in found] == [
        ("info", True)]


def test_certificate_authority_adds_to_the_system_bundle(
    certs: tuple[str, str], tmp_path: Path
) -> None:
    extra = trustme.CA().cert_pem.bytes()
    (tmp_path / "system.pem").write_bytes(trustme.CA().cert_pem.bytes())
    cfg = runtime([route("https://a.test", "https://backend.internal", id="r"),
                   route("https://b.test", "https://backend.internal", id="own",
                         tls_custom_ca=b64(extra))],
                  tls=certs, certificate_authority=b64(extra))
    doc = bootstrap(cfg, upstream_ca_file=str(tmp_path / "system.pem"))

    def trusted(name: str) -> dict[str, Any]:
        tls = clusters(doc)[name]["transport_socket"]["typed_config"]
        return tls["common_tls_context"]["validation_context"]["trusted_ca"]  # type: ignore[no-any-return]

    both = base64.b64decode(trusted("upstream-r")["inline_bytes"])
    assert both.startswith((tmp_path / "system.pem").read_bytes().rstrip()) and both.endswith(extra)
    # A route's own CA replaces both.
    assert base64.b64decode(trusted("upstream-own")["inline_bytes"]) == extra


def test_the_fast_lane_stays_off_where_a_pass_would_skip_a_check(
    certs: tuple[str, str], tmp_path: Path
) -> None:
    from authgate.fast_pass import eligible

    ca = b64(trustme.CA().cert_pem.bytes())
    routes_ = [route("https://a.test", "http://10.0.0.1", id="app"),
               route("https://b.test", [], id="answer", response={"body": "hi"})]

    def lanes(**extra: Any) -> dict[str, bool]:
        cfg = runtime(routes_, tls=certs, fast_lane=True, **extra)
        validate_config(bootstrap(cfg), tmp_path)  # no twin of a route without upstream
        return {rt.id: eligible(cfg, rt) for rt in cfg.routes}

    assert lanes() == {"app": True, "answer": False}
    # The default deny runs in authz: a pass would let a request without a certificate in.
    assert lanes(downstream_mtls={"ca": ca}) == {"app": False, "answer": False}
    assert lanes(downstream_mtls={"ca": ca, "enforcement": "reject_connection"}) == {
        "app": True, "answer": False}
