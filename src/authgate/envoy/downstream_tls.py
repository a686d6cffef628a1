"""The listener side of TLS: certificates, client certificates (downstream mTLS), the HTTP
connection manager's client-address and codec options, and the plain http -> https listener."""

from pathlib import Path

import betterproto2
from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HeaderValue,
    HeaderValueOption,
    TransportSocket,
)
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValueOptionHeaderAppendAction as AppendAction,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    RedirectAction,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    DownstreamTlsContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    TlsCertificate,
)
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any as AnyProto

from authgate.config.schema import Settings
from authgate.config.tls_schema import PEM_CERT, PEM_KEY, inline_pem, pem_or_file
from authgate.envoy.client_address import client_address_filter, uses_client_address_header

TLS_SOCKET = "envoy.transport_sockets.tls"
_CODECS = {
    "auto": HttpConnectionManagerCodecType.AUTO,
    "http1": HttpConnectionManagerCodecType.HTTP1,
    "http2": HttpConnectionManagerCodecType.HTTP2,
}
_ALPN = {"auto": ["h2", "http/1.1"], "http1": ["http/1.1"], "http2": ["h2"]}
_SAN_TYPES = {
    "dns": SubjectAltNameMatcherSanType.DNS,
    "email": SubjectAltNameMatcherSanType.EMAIL,
    "ip_address": SubjectAltNameMatcherSanType.IP_ADDRESS,
    "uri": SubjectAltNameMatcherSanType.URI,
    "user_principal_name": SubjectAltNameMatcherSanType.OTHER_NAME,
}
# The OID Envoy needs for an OTHER_NAME SAN that holds a Microsoft UPN.
_UPN_OID = "1.3.6.1.4.1.311.20.2.3"


def _pack(message: betterproto2.Message) -> AnyProto:
    return AnyProto.pack(message)


def data_source(value: str, marker: object = PEM_CERT) -> DataSource:
    """A config value that is base64 PEM (inline) or a file path."""
    try:
        return DataSource(inline_bytes=inline_pem(value, "", marker))  # type: ignore[arg-type]
    except ValueError:
        return DataSource(filename=str(Path(value).resolve()))


def file_source(path: str) -> DataSource:
    return DataSource(filename=str(Path(path).resolve()))


def listener_certificates(settings: Settings) -> list[TlsCertificate]:
    """Every certificate the listener serves (Envoy picks one by SNI): certificate_file,
    `certificate` (inline) and each of `certificates`, in that order."""
    found: list[TlsCertificate] = []
    if settings.certificate_file and settings.certificate_key_file:
        found.append(TlsCertificate(
            certificate_chain=file_source(settings.certificate_file),
            private_key=file_source(settings.certificate_key_file),
        ))
    if settings.certificate and settings.certificate_key:
        found.append(TlsCertificate(
            certificate_chain=DataSource(inline_bytes=inline_pem(settings.certificate, "")),
            private_key=DataSource(inline_bytes=inline_pem(settings.certificate_key, "", PEM_KEY)),
        ))
    for pair in settings.certificates:
        pem_or_file(pair.cert, "cert")  # checked by the schema; a file may have gone since
        found.append(TlsCertificate(
            certificate_chain=data_source(pair.cert),
            private_key=data_source(pair.key, PEM_KEY),
        ))
    return found


def _client_validation(settings: Settings) -> CertificateValidationContext | None:
    mtls = settings.downstream_mtls
    if mtls is None:
        return None
    trusted = (
        DataSource(inline_bytes=inline_pem(mtls.ca, "ca")) if mtls.ca is not None
        else file_source(mtls.ca_file or "")
    )
    context = CertificateValidationContext(trusted_ca=trusted)
    if mtls.max_verify_depth:  # Pomerium's 0 is "no limit": Envoy's default then
        context.max_verify_depth = mtls.max_verify_depth
    if mtls.match_subject_alt_names:
        matchers = []
        for kind, pattern in (pair for sans in mtls.match_subject_alt_names
                              for pair in sans.items()):
            regex = StringMatcher(safe_regex=RegexMatcher(regex=pattern))
            matcher = SubjectAltNameMatcher(san_type=_SAN_TYPES[kind], matcher=regex)
            if kind == "user_principal_name":
                matcher.oid = _UPN_OID
            matchers.append(matcher)
        context.match_typed_subject_alt_names = matchers
    return context


def downstream_tls(settings: Settings) -> TransportSocket:
    """The listener's TLS. With downstream_mtls, Envoy asks every client for a certificate and
    refuses one that does not verify; whether a missing one is refused at the handshake
    (`reject_connection`) or by policy is the enforcement mode."""
    common = CommonTlsContext(
        tls_certificates=listener_certificates(settings),
        alpn_protocols=_ALPN[settings.codec_type],
    )
    context = DownstreamTlsContext(common_tls_context=common)
    validation = _client_validation(settings)
    if validation is not None:
        common.validation_context = validation
        mtls = settings.downstream_mtls
        context.require_client_certificate = (
            mtls is not None and mtls.enforcement == "reject_connection"
        )
    return TransportSocket(name=TLS_SOCKET, typed_config=_pack(context))


def apply_listener_options(hcm: HttpConnectionManager, settings: Settings) -> None:
    """The HTTP connection manager's codec and, behind balancers, client-address options: trust
    the last `xff_num_trusted_hops` X-Forwarded-For entries, so the client address Envoy
    computes (and passes to authz for `source_ip`) is the real client's."""
    hcm.xff_num_trusted_hops = settings.xff_num_trusted_hops
    if uses_client_address_header(settings):
        hcm.http_filters.insert(0, client_address_filter())
    hcm.skip_xff_append = settings.skip_xff_append
    hcm.codec_type = _CODECS[settings.codec_type]


def forwarded_proto_header(settings: Settings) -> list[HeaderValueOption]:
    """Behind a TLS-terminating balancer (insecure_server with https routes) the app must still
    read https in X-Forwarded-Proto: the routes' scheme decides, never a client's header."""
    if settings.terminates_tls or not settings.tls:
        return []
    return [HeaderValueOption(
        header=HeaderValue(key="x-forwarded-proto", value="https"),
        append_action=AppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )]


def http_redirect_listener(settings: Settings) -> Listener | None:
    """`http_redirect_addr`: a plain HTTP listener answering every request with a 301 to the
    same URL over https (no authz: it serves nothing)."""
    if settings.http_redirect_addr is None:
        return None
    from authgate.envoy.bootstrap import parse_address  # the one address parser

    host, _sep, port = settings.http_redirect_addr.rpartition(":")
    redirect = RedirectAction(https_redirect=True)
    if settings.listen_port != 443:
        redirect.port_redirect = settings.listen_port
    routes = RouteConfiguration(
        name="authgate_http_redirect",
        virtual_hosts=[VirtualHost(
            name="http_redirect", domains=["*"],
            routes=[Route(match=RouteMatch(prefix="/"), redirect=redirect)],
        )],
    )
    hcm = HttpConnectionManager(
        stat_prefix="authgate_http_redirect",
        route_config=routes,
        http_filters=[HttpFilter(name="envoy.filters.http.router", typed_config=_pack(Router()))],
    )
    return Listener(
        name="authgate_http_redirect",
        address=parse_address(f"{host.strip('[]') or '0.0.0.0'}:{port}"),
        filter_chains=[FilterChain(filters=[
            Filter(name="envoy.filters.network.http_connection_manager", typed_config=_pack(hcm))
        ])],
    )
