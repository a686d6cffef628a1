"""Pomerium's TLS, load-balancer and route-action keys: their shapes and checks.

Kept apart from schema.py so the listener, upstream and route-action options read as one
group; schema.py only declares the fields with these types.
"""

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PEM_CERT = "-----BEGIN CERTIFICATE-----"
PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")

LoadBalancingPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "MAGLEV"]
CodecType = Literal["auto", "http1", "http2"]
MtlsEnforcement = Literal["policy_with_default_deny", "policy", "reject_connection"]


def inline_pem(value: str, what: str, marker: str | re.Pattern[str] = PEM_CERT) -> bytes:
    """Base64 of a PEM document (as Pomerium writes inline certificates and keys)."""
    text = "".join(value.split())
    try:
        pem = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64; write `base64 -w0 file.pem`") from None
    found = (
        marker in pem.decode("latin-1")
        if isinstance(marker, str)
        else marker.search(pem.decode("latin-1"))
    )
    if not found:
        raise ValueError(f"{what} does not decode to a PEM {_kind(marker)}; base64 the PEM file")
    return pem


def _kind(marker: str | re.Pattern[str]) -> str:
    return "certificate" if marker == PEM_CERT else "private key"


def readable_pem(path: str, what: str, marker: str | re.Pattern[str] = PEM_CERT) -> str:
    """A file that exists and holds the PEM block `marker` names; returns the path."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ValueError(
            f"{what}: cannot read {path}: {exc.strerror or exc}; give the path of a PEM file "
            "(relative paths start from the working directory)"
        ) from None
    found = marker in text if isinstance(marker, str) else marker.search(text)
    if not found:
        raise ValueError(f"{what}: {path} holds no PEM {_kind(marker)}")
    return path


def pem_or_file(value: str, what: str, marker: str | re.Pattern[str] = PEM_CERT) -> str:
    """Pomerium's `certificates[].cert/key` take base64 PEM or a file path (its examples write
    `$HOME/...`, so variables and `~` are expanded): the value itself, or the expanded path."""
    try:
        inline_pem(value, what, marker)
        return value
    except ValueError:
        path = os.path.expanduser(os.path.expandvars(value))
        if "/" not in path and not Path(path).exists():
            raise
    return readable_pem(path, what, marker)


class CertificatePair(BaseModel):
    """One entry of `certificates`: `cert` and `key`, each base64 PEM or a file path."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cert: str
    key: str = Field(repr=False)

    @field_validator("cert")
    @classmethod
    def _cert(cls, value: str) -> str:
        return pem_or_file(value, "cert")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return pem_or_file(value, "key", PEM_KEY)


class SanMatchers(BaseModel):
    """`downstream_mtls.match_subject_alt_names`: RE2 patterns per SAN type."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dns: str | None = None
    email: str | None = None
    ip_address: str | None = None
    uri: str | None = None
    user_principal_name: str | None = None

    @model_validator(mode="after")
    def _re2(self) -> "SanMatchers":
        from authgate.config.schema import compile_re2ish

        for name, pattern in self.items():
            try:
                compile_re2ish(pattern)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class DownstreamMtls(BaseModel):
    """Pomerium's `downstream_mtls`: client certificates checked against `ca`/`ca_file`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ca: str | None = None
    ca_file: str | None = None
    enforcement: MtlsEnforcement = "policy_with_default_deny"
    # Pomerium writes a list of one-key mappings (any one may match); its Kubernetes form is one
    # mapping. Both are read as a list.
    match_subject_alt_names: list[SanMatchers] = Field(default_factory=list)
    max_verify_depth: int = Field(default=1, ge=0, le=100)  # 0: no limit

    @field_validator("match_subject_alt_names", mode="before")
    @classmethod
    def _san_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [{k: v} for k, v in value.items()]
        return value

    @field_validator("ca")
    @classmethod
    def _ca(cls, value: str | None) -> str | None:
        if value is not None:
            inline_pem(value, "ca")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        return None if value is None else readable_pem(value, "ca_file")

    @model_validator(mode="after")
    def _one_ca(self) -> "DownstreamMtls":
        if (self.ca is None) == (self.ca_file is None):
            raise ValueError(
                "give exactly one of `ca` (base64 PEM) or `ca_file`: the CA that issues your "
                "client certificates"
            )
        return self


class RedirectOption(BaseModel):
    """A route's `redirect` (Envoy's RedirectAction, as Pomerium documents it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    https_redirect: bool | None = None
    scheme_redirect: str | None = None
    host_redirect: str | None = None
    port_redirect: int | None = Field(default=None, ge=1, le=65535)
    path_redirect: str | None = None
    prefix_rewrite: str | None = None
    response_code: int | None = None
    strip_query: bool | None = None

    @field_validator("response_code")
    @classmethod
    def _code(cls, value: int | None) -> int | None:
        if value is not None and value not in REDIRECT_CODES:
            raise ValueError(f"{value} is not one of {', '.join(map(str, REDIRECT_CODES))}")
        return value

    @field_validator("path_redirect", "prefix_rewrite")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        return value

    @model_validator(mode="after")
    def _one_path(self) -> "RedirectOption":
        if self.path_redirect is not None and self.prefix_rewrite is not None:
            raise ValueError("set either path_redirect or prefix_rewrite, not both")
        if self.https_redirect and self.scheme_redirect:
            raise ValueError("set either https_redirect or scheme_redirect, not both")
        return self


REDIRECT_CODES = (301, 302, 303, 307, 308)


class ResponseOption(BaseModel):
    """A route's `response`: a fixed answer instead of an upstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: int = Field(default=200, ge=200, le=599)
    body: str = ""


def snake_to_camel(node: Any) -> Any:
    """Envoy's proto JSON, snake_case keys (as Pomerium writes them), in the camelCase the
    generated messages' from_dict expects (`consecutive_5xx` -> `consecutive5xx`)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            head, *rest = str(key).split("_")
            out[head + "".join(p[:1].upper() + p[1:] for p in rest)] = snake_to_camel(value)
        return out
    if isinstance(node, list):
        return [snake_to_camel(item) for item in node]
    return node


def envoy_message(kind: str, value: dict[str, Any]) -> Any:
    """`value` parsed as Envoy's HealthCheck or OutlierDetection; ValueError names the field."""
    from envoy_data_plane.envoy.config.cluster.v3 import OutlierDetection
    from envoy_data_plane.envoy.config.core.v3 import HealthCheck

    message: type[HealthCheck] | type[OutlierDetection] = (
        HealthCheck if kind == "health_check" else OutlierDetection
    )
    # from_dict cannot spell names with digits (`consecutive_5xx` comes out as
    # `consecutive_5_xx`): such scalar fields are set by name afterwards.
    fields = message.__dataclass_fields__
    late = {k: v for k, v in value.items() if "_" in k and any(c.isdigit() for c in k)}
    try:
        parsed = message.from_dict(snake_to_camel({k: v for k, v in value.items()
                                                   if k not in late}))
        for key, item in late.items():
            if key not in fields or not isinstance(item, int) or isinstance(item, bool):
                raise ValueError(f"unknown field or not a number: {key}")
            setattr(parsed, key, item)
        return parsed
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        detail = str(exc).strip("\"'").splitlines()[0]
        raise ValueError(
            f"is not an Envoy {message.__name__} ({detail}); see Envoy's {message.__name__} "
            "reference for the field names"
        ) from None


def check_route_options(route: Any) -> None:
    """Cross-field checks of a route's pom-tls keys (`route` is a schema.Route)."""
    actions = [k for k in ("redirect", "response") if getattr(route, k) is not None]
    if len(actions) > 1:
        raise ValueError("set either `redirect` or `response`, not both")
    if not actions and not route.to:
        raise ValueError("`to` needs at least one upstream URL (or use `redirect`/`response`)")
    if actions and route.to:
        raise ValueError(f"`{actions[0]}` answers without an upstream; remove `to`")
    if actions:
        upstream_keys = [
            k for k in ("load_balancing_policy", "outlier_detection", "health_checks")
            if getattr(route, k)
        ]
        if upstream_keys:
            raise ValueError(f"{upstream_keys[0]} needs an upstream (`to`); remove it")
    if route.tls_server_name and route.tls_upstream_server_name:
        raise ValueError("tls_server_name and tls_upstream_server_name are the same key; keep one")
    if route.tls_custom_ca and route.tls_custom_ca_file:
        raise ValueError("set either tls_custom_ca or tls_custom_ca_file, not both")
    if route.tls_custom_ca:
        inline_pem(route.tls_custom_ca, "tls_custom_ca")
    _check_client_cert(route)
    for index, check in enumerate(route.health_checks):
        kinds = [k for k in ("http_health_check", "tcp_health_check", "grpc_health_check")
                 if k in check]
        if len(kinds) != 1:
            raise ValueError(
                f"health_checks[{index}] needs exactly one of http_health_check, "
                "tcp_health_check or grpc_health_check"
            )
        for key in ("timeout", "interval"):
            if key not in check:
                raise ValueError(f"health_checks[{index}] needs `{key}` (e.g. 5s)")
        try:
            envoy_message("health_check", check)
        except ValueError as exc:
            raise ValueError(f"health_checks[{index}] {exc}") from None
    if route.outlier_detection is not None:
        try:
            envoy_message("outlier_detection", route.outlier_detection)
        except ValueError as exc:
            raise ValueError(f"outlier_detection {exc}") from None


def _check_client_cert(route: Any) -> None:
    inline = (route.tls_client_cert, route.tls_client_key)
    files = (route.tls_client_cert_file, route.tls_client_key_file)
    if any(inline) and any(files):
        raise ValueError("give the client certificate inline or as files, not both")
    for cert, key, how in ((*inline, ""), (*files, "_file")):
        if (cert is None) != (key is None):
            raise ValueError(f"tls_client_cert{how} and tls_client_key{how} go together")
    if route.tls_client_cert:
        inline_pem(route.tls_client_cert, "tls_client_cert")
        inline_pem(route.tls_client_key, "tls_client_key", PEM_KEY)
    if route.tls_client_cert_file:
        readable_pem(route.tls_client_cert_file, "tls_client_cert_file")
        readable_pem(route.tls_client_key_file, "tls_client_key_file", PEM_KEY)


def check_listener_options(settings: Any) -> None:
    """Cross-field checks of the listener keys (`settings` is a schema.Settings)."""
    has_file_pair = bool(settings.certificate_file and settings.certificate_key_file)
    for what, cert, key in (
        ("certificate_file", settings.certificate_file, settings.certificate_key_file),
        ("certificate", settings.certificate, settings.certificate_key),
    ):
        if (cert is None) != (key is None):
            raise ValueError(f"{what} and {what.replace('certificate', 'certificate_key')} go "
                             "together; set both")
    if settings.certificate is not None:
        inline_pem(settings.certificate, "certificate")
        inline_pem(settings.certificate_key, "certificate_key", PEM_KEY)
    if settings.certificate_authority is not None:
        if settings.certificate_authority_file is not None:
            raise ValueError("set either certificate_authority or certificate_authority_file")
        inline_pem(settings.certificate_authority, "certificate_authority")
    if settings.certificate_authority_file is not None:
        readable_pem(settings.certificate_authority_file, "certificate_authority_file")
    any_cert = has_file_pair or settings.certificate is not None or bool(settings.certificates)
    if settings.insecure_server:
        for key in ("downstream_mtls", "http_redirect_addr"):
            if getattr(settings, key) is not None:
                raise ValueError(
                    f"{key} needs authgate's own TLS listener; remove it or insecure_server"
                )
    elif not any_cert:
        raise ValueError(
            "certificate_file and certificate_key_file are required (or `certificate`/"
            "`certificate_key`, or `certificates`); set them, or set insecure_server: true for "
            "plain HTTP (behind a TLS-terminating balancer, keep the routes https://)"
        )
    if settings.http_redirect_addr is not None:
        _host, sep, port = settings.http_redirect_addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"http_redirect_addr {settings.http_redirect_addr!r} is not host:port; "
                "write e.g. :80"
            )
        if settings.http_redirect_addr.rpartition(":")[2] == settings.address.rpartition(":")[2]:
            raise ValueError("http_redirect_addr must use another port than `address`")


def fast_lane_possible(settings: Any, route: Any) -> bool:
    """Whether a fast-lane pass may stand in for this route's Check: not on a route without an
    upstream (`redirect`/`response`), and not with downstream_mtls `policy_with_default_deny`,
    whose certificate check runs in authz (a pass would skip it)."""
    mtls = settings.downstream_mtls
    if mtls is not None and mtls.enforcement == "policy_with_default_deny":
        return False
    return bool(route.to)
