"""The configuration schema: Pomerium's key names and meanings, validated by pydantic.

Every field error message ends with the fix, so `load_config` can print one line naming the key.
"""

import base64
import binascii
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from authgate.config.durations import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access")


def _split_list(value: object) -> object:
    """Pomerium accepts lists either as YAML lists or as comma-separated strings."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(_split_list)]


def _check_http_url(value: str, what: str, allow_path: bool = False) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not a valid {what}; write it as https://host[:port]")
    if parts.query or parts.fragment or (not allow_path and parts.path not in ("", "/")):
        raise ValueError(f"{value!r} must be scheme://host[:port] only; remove the path or query")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port; use a number from 1 to 65535") from None
    return value.rstrip("/")


def decode_base64(value: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding."""
    text = "".join(value.split())
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def parse_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an EC P-256 private key from PEM, or raise ValueError saying how to make one."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("is not a PEM private key; generate one with `authgate keygen`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(
            "must be an EC P-256 (ES256) private key; generate one with `authgate keygen`"
        )
    return key


class Upstream(BaseModel):
    """One `to` target: http(s)://host[:port] or unix:///path.sock."""

    model_config = ConfigDict(frozen=True)
    scheme: Literal["http", "https", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, value: str) -> "Upstream":
        parts = urlsplit(value)
        if parts.scheme == "unix":
            path = parts.path
            if parts.netloc or not path.startswith("/"):
                raise ValueError(
                    f"{value!r} is not a valid Unix socket upstream; write unix:///absolute/path.sock"
                )
            return cls(scheme="unix", path=path)
        if parts.scheme in ("http", "https") and parts.hostname:
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise ValueError(f"{value!r} has an invalid port") from None
            if parts.path not in ("", "/") or parts.query:
                raise ValueError(
                    f"{value!r}: a path or query in `to` is not supported; "
                    "write scheme://host:port only"
                )
            return cls(scheme=parts.scheme, host=parts.hostname, port=port)
        raise ValueError(
            f"{value!r} is not a valid upstream; use http://host:port, https://host:port "
            "or unix:///path.sock"
        )


class Route(BaseModel):
    """A Pomerium route: `from` a public URL, `to` an upstream, guarded by `policy`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str | None = None
    name: str | None = None
    from_: str = Field(alias="from")
    to: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]
    prefix: str | None = None
    path: str | None = None
    pass_identity_headers: bool = False
    preserve_host_header: bool = False
    host_rewrite: str | None = None
    # Pomerium: the name of a header whose value becomes Host. `true` (as some guides write it)
    # keeps the Host the browser sent, which is what Jenkins needs to build its links.
    host_rewrite_header: str | bool | None = None
    allow_websockets: bool = False
    timeout: Duration = timedelta(seconds=30)
    idle_timeout: Duration = timedelta(minutes=5)
    allow_public_unauthenticated_access: bool = False
    allow_any_authenticated_user: bool = False
    allowed_users: StrList = Field(default_factory=list)
    allowed_domains: StrList = Field(default_factory=list)
    allowed_groups: StrList = Field(default_factory=list)
    policy: list[dict[str, Any]] | dict[str, Any] | None = None

    @field_validator("from_")
    @classmethod
    def _from_url(cls, value: str) -> str:
        return _check_http_url(value, "route `from` URL")

    @field_validator("to")
    @classmethod
    def _to_urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one upstream URL")
        for item in value:
            Upstream.parse(item)
        return value

    @field_validator("prefix", "path")
    @classmethod
    def _starts_with_slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        return value

    @model_validator(mode="after")
    def _one_kind_of_access(self) -> "Route":
        if self.prefix is not None and self.path is not None:
            raise ValueError("set either `prefix` or `path`, not both")
        if self.allow_public_unauthenticated_access and (
            self.policy
            or self.allow_any_authenticated_user
            or self.allowed_users
            or self.allowed_domains
            or self.allowed_groups
        ):
            raise ValueError(
                "allow_public_unauthenticated_access cannot be combined with a policy; "
                "remove one of them"
            )
        if len({Upstream.parse(t).scheme == "unix" for t in self.to}) > 1:
            raise ValueError("`to` cannot mix Unix sockets and network upstreams")
        return self

    @property
    def upstreams(self) -> list[Upstream]:
        return [Upstream.parse(t) for t in self.to]

    @property
    def from_host(self) -> str:
        """The `from` hostname, lower-case, without port."""
        return (urlsplit(self.from_).hostname or "").lower()

    @property
    def from_netloc(self) -> str:
        """host[:port] as browsers send it in `Host` (default ports omitted)."""
        return netloc_of(self.from_)


def netloc_of(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = 443 if parts.scheme == "https" else 80
    port = parts.port
    return host if port in (None, default) else f"{host}:{port}"


class Settings(BaseModel):
    """Top-level settings, named as in Pomerium."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = ":443"
    insecure_server: bool = False
    certificate_file: str | None = None
    certificate_key_file: str | None = None
    authenticate_service_url: str
    idp_provider: Literal["oidc"] = "oidc"
    idp_provider_url: str
    idp_client_id: str = Field(min_length=1)
    idp_client_secret: str | None = None
    idp_client_secret_file: str | None = None
    idp_scopes: StrList = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    signing_key: str | None = None
    signing_key_file: str | None = None
    cookie_secret: str | None = None
    cookie_secret_file: str | None = None
    cookie_name: str = Field(default="_pomerium", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    cookie_expire: Duration = timedelta(hours=14)
    jwt_issuer_format: Literal["host", "hostOnly", "uri"] = "host"
    routes: list[Route] = Field(default_factory=list)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port; write e.g. 127.0.0.1:8443 or :443")
        return value

    @field_validator("authenticate_service_url")
    @classmethod
    def _authn_url(cls, value: str) -> str:
        return _check_http_url(value, "authenticate_service_url")

    @field_validator("idp_provider_url")
    @classmethod
    def _idp_url(cls, value: str) -> str:
        return _check_http_url(value, "idp_provider_url", allow_path=True)

    @field_validator("cookie_secret")
    @classmethod
    def _cookie_secret(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                raw = decode_base64(value)
            except ValueError:
                raise ValueError(
                    "is not base64; generate one with `head -c32 /dev/urandom | base64`"
                ) from None
            if len(raw) != 32:
                raise ValueError(
                    f"decodes to {len(raw)} bytes, must be 32; generate one with "
                    "`head -c32 /dev/urandom | base64`"
                )
        return value

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pem = decode_base64(value)
            except ValueError:
                raise ValueError(
                    "is not base64 of a PEM key; generate one with `authgate keygen`"
                ) from None
            parse_signing_key(pem)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        if not self.insecure_server and not (self.certificate_file and self.certificate_key_file):
            raise ValueError(
                "certificate_file and certificate_key_file are required; "
                "set them, or set insecure_server: true for plain HTTP"
            )
        if "openid" not in self.idp_scopes:
            raise ValueError("idp_scopes must include `openid`")
        seen: dict[tuple[str, str, str], int] = {}
        for index, route in enumerate(self.routes):
            key = (route.from_netloc, route.prefix or "/", route.path or "")
            if key in seen:
                raise ValueError(
                    f"routes[{index}] repeats routes[{seen[key]}] (same from/prefix/path); "
                    "merge them or give one a prefix"
                )
            seen[key] = index
            if route.from_netloc == netloc_of(self.authenticate_service_url):
                raise ValueError(
                    f"routes[{index}].from uses the authenticate_service_url host; "
                    "give the route its own hostname"
                )
        return self

    @property
    def tls(self) -> bool:
        return not self.insecure_server

    @property
    def listen_host(self) -> str:
        host = self.address.rpartition(":")[0].strip("[]")
        return host or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.address.rpartition(":")[2])
