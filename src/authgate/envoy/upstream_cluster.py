"""A route's upstream cluster options: verified TLS (CA, server name, client certificate for
upstream mTLS), the load-balancing policy, active health checks and outlier detection."""

import ipaddress
import re
from pathlib import Path
from typing import Any, TypeVar

import betterproto2
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterLbPolicy, OutlierDetection
from envoy_data_plane.envoy.config.core.v3 import DataSource, HealthCheck, TransportSocket
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    TlsCertificate,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any as AnyProto

from authgate.config.schema import Route, Settings
from authgate.config.tls_schema import PEM_KEY, envoy_message, inline_pem
from authgate.envoy.downstream_tls import TLS_SOCKET, file_source

_M = TypeVar("_M", bound=betterproto2.Message)
_LB_POLICIES = {
    "ROUND_ROBIN": ClusterLbPolicy.ROUND_ROBIN,
    "LEAST_REQUEST": ClusterLbPolicy.LEAST_REQUEST,
    "RING_HASH": ClusterLbPolicy.RING_HASH,
    "RANDOM": ClusterLbPolicy.RANDOM,
    "MAGLEV": ClusterLbPolicy.MAGLEV,
}


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def server_name(route: Route) -> str | None:
    return route.tls_upstream_server_name or route.tls_server_name


def trusted_ca(route: Route, settings: Settings | None, default_ca_file: str) -> DataSource:
    """The route's own CA (replaces the system bundle), else the system bundle plus the global
    certificate_authority (which, as in Pomerium, adds to the system's trust)."""
    if route.tls_custom_ca:
        return DataSource(inline_bytes=inline_pem(route.tls_custom_ca, "tls_custom_ca"))
    if route.tls_custom_ca_file:
        return file_source(route.tls_custom_ca_file)
    extra = b""
    if settings is not None and settings.certificate_authority:
        extra = inline_pem(settings.certificate_authority, "certificate_authority")
    elif settings is not None and settings.certificate_authority_file:
        extra = Path(settings.certificate_authority_file).read_bytes()
    if not extra:
        return DataSource(filename=default_ca_file)
    try:
        system = Path(default_ca_file).read_bytes()
    except OSError:  # no system bundle (a slim container): the configured CA alone
        system = b""
    return DataSource(inline_bytes=system.rstrip(b"\n") + b"\n" + extra if system else extra)


def client_certificate(route: Route) -> TlsCertificate | None:
    """The certificate authgate presents to an upstream that asks for one (upstream mTLS)."""
    if route.tls_client_cert and route.tls_client_key:
        return TlsCertificate(
            certificate_chain=DataSource(inline_bytes=inline_pem(route.tls_client_cert, "")),
            private_key=DataSource(inline_bytes=inline_pem(route.tls_client_key, "", PEM_KEY)),
        )
    if route.tls_client_cert_file and route.tls_client_key_file:
        return TlsCertificate(
            certificate_chain=file_source(route.tls_client_cert_file),
            private_key=file_source(route.tls_client_key_file),
        )
    return None


def _san_matcher(host: str) -> SubjectAltNameMatcher:
    san_type = (
        SubjectAltNameMatcherSanType.IP_ADDRESS if is_ip_literal(host)
        else SubjectAltNameMatcherSanType.DNS
    )
    return SubjectAltNameMatcher(san_type=san_type, matcher=StringMatcher(exact=host))


def upstream_tls(route: Route, settings: Settings | None, default_ca_file: str) -> TransportSocket:
    """Verified TLS by default: the CA (see trusted_ca) plus a SAN match on the upstream
    host(s), or on the configured server name, which is also the SNI. Only `tls_skip_verify`
    drops the validation context."""
    name = server_name(route)
    hosts = [name] if name else [u.host for u in route.upstreams]
    distinct = list(dict.fromkeys(hosts))
    common = CommonTlsContext()
    if not route.tls_skip_verify:
        common.validation_context = CertificateValidationContext(
            trusted_ca=trusted_ca(route, settings, default_ca_file),
            match_typed_subject_alt_names=[_san_matcher(h) for h in distinct],
        )
    cert = client_certificate(route)
    if cert is not None:
        common.tls_certificates = [cert]
    context = UpstreamTlsContext(
        common_tls_context=common, allow_renegotiation=route.tls_upstream_allow_renegotiation
    )
    if not is_ip_literal(distinct[0]):
        context.sni = distinct[0]
    return TransportSocket(name=TLS_SOCKET, typed_config=AnyProto.pack(context))


def apply_balancing(cluster: Cluster, route: Route) -> None:
    """load_balancing_policy, health_checks and outlier_detection, as Envoy's own fields."""
    if route.load_balancing_policy is not None:
        cluster.lb_policy = _LB_POLICIES[route.load_balancing_policy]
    if route.health_checks:
        cluster.health_checks = [
            _message(HealthCheck, envoy_message("health_check", c)) for c in route.health_checks
        ]
    if route.outlier_detection is not None:
        cluster.outlier_detection = _message(
            OutlierDetection, envoy_message("outlier_detection", route.outlier_detection)
        )


def _message(kind: type[_M], value: object) -> _M:
    assert isinstance(value, kind)
    return value


_DIGIT_SPLIT = re.compile(r"(\d)_([a-z])")


def respell_digit_fields(doc: dict[str, Any]) -> None:
    """betterproto2 writes `consecutive_5xx` as `consecutive_5_xx`; Envoy wants the proto name.
    Fixes the keys of every cluster's outlier_detection and health_checks in the bootstrap."""
    for cluster in doc.get("static_resources", {}).get("clusters", []):
        if "outlier_detection" in cluster:
            cluster["outlier_detection"] = _respell(cluster["outlier_detection"])
        if "health_checks" in cluster:
            cluster["health_checks"] = _respell(cluster["health_checks"])


def _respell(node: Any) -> Any:
    if isinstance(node, dict):
        return {_DIGIT_SPLIT.sub(r"\1\2", k): _respell(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_respell(item) for item in node]
    return node
