"""The configuration schema: Pomerium's key names and meanings, validated by pydantic.

Every field error message ends with the fix, so `load_config` can print one line naming the key.
"""

import base64
import binascii
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from authgate.assertion.keys import split_pem_blocks
from authgate.assertion.signer import jwk_thumbprint, public_jwk
from authgate.config.durations import parse_duration
from authgate.config.pomerium_options import (
    ClaimHeaders,
    RewriteResponseHeader,
    SameSite,
    check_claim_headers,
    check_cookie_settings,
    check_response_header_name,
    check_response_headers,
    substitutions_in,
    with_route_defaults,
)
from authgate.config.tls_schema import (
    CertificatePair,
    CodecType,
    DownstreamMtls,
    LoadBalancingPolicy,
    RedirectOption,
    ResponseOption,
    check_listener_options,
    check_route_options,
)
from authgate.contract import ASSERTION_CLAIMS, ASSERTION_HEADER
from authgate.oidc.providers import OIDC_DEFAULT_SCOPES, PROVIDER_NAMES, PROVIDERS, RESERVED_PARAMS

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

DEFAULT_SCOPES = OIDC_DEFAULT_SCOPES
BearerTokenFormat = Literal["default", "idp_access_token", "idp_identity_token"]
# Pomerium's level words (authgate.logs maps them for structlog and Envoy).
LogLevel = Annotated[
    Literal[
        "trace", "debug", "info", "warn", "warning", "error", "critical", "fatal", "panic",
        "off", "none", "disabled",
    ],
    BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v),
]


def _split_list(value: object) -> object:
    """Pomerium accepts lists either as YAML lists or as comma-separated strings."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(_split_list)]


def _split_scopes(value: Any) -> Any:
    """A list, or one string with the scopes separated by commas or spaces (as OAuth writes
    them: `openid profile email groups`)."""
    if isinstance(value, str):
        return [scope for scope in value.replace(",", " ").split() if scope]
    return value


ScopeList = Annotated[list[str], BeforeValidator(_split_scopes)]


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


def _parse_one_signing_key(pem: bytes, which: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            f"{which}is not a PEM private key; generate one with `authgate keygen`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(
            f"{which}must be an EC P-256 (ES256) private key; generate one with `authgate keygen`"
        )
    return key


def parse_signing_keys(pem: bytes) -> list[ec.EllipticCurvePrivateKey]:
    """Load one or more concatenated EC P-256 private keys from PEM (key rotation, as in
    Pomerium: the first signs, all are published), or raise ValueError naming the bad one."""
    blocks = split_pem_blocks(pem)
    keys: list[ec.EllipticCurvePrivateKey] = []
    seen: dict[str, int] = {}
    for index, block in enumerate(blocks, start=1):
        which = f"key {index} of {len(blocks)} " if len(blocks) > 1 else ""
        key = _parse_one_signing_key(block, which)
        kid = jwk_thumbprint(public_jwk(key))
        if kid in seen:
            raise ValueError(f"{which}repeats key {seen[kid]}; remove one of them")
        seen[kid] = index
        keys.append(key)
    return keys


def parse_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """The signing (first) key of `pem`, every key checked; ValueError says how to fix it."""
    return parse_signing_keys(pem)[0]


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
                    "write scheme://host:port only and use `prefix_rewrite` to change the "
                    "path the upstream sees"
                )
            return cls(scheme=parts.scheme, host=parts.hostname, port=port)
        raise ValueError(
            f"{value!r} is not a valid upstream; use http://host:port, https://host:port "
            "or unix:///path.sock"
        )


# ---------------------------------------------------------------------------- regular expressions
# Envoy evaluates route regexes with Google RE2 (as Pomerium documents: Go's regexp syntax). We
# have no RE2 here, so: refuse what RE2 lacks (it never backtracks), translate the few RE2-only
# escapes, and let Python's `re` judge the rest. `envoy --mode validate` remains the final word.

_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]"), "lookahead/lookbehind `(?=`, `(?!`, `(?<=`, `(?<!`"),
    (re.compile(r"\(\?>"), "atomic groups `(?>...)`"),
    (re.compile(r"\(\?\("), "conditionals `(?(...)`"),
    (re.compile(r"\(\?P="), "named back-references `(?P=name)`"),
    (re.compile(r"\(\?#"), "comments `(?#...)`"),
    (re.compile(r"\\[1-9]|\\g<"), "back-references `\\1`"),
    (re.compile(r"(?:[*+?}])\+"), "possessive quantifiers `*+`, `++`, `?+`"),
)
_RE2_ONLY_ESCAPES = re.compile(
    r"\\\\|\\[pP](?:\{\w+\}|\w)|\\Q.*?(?:\\E|$)|\\[zC]|\(\?<(?=[A-Za-z_])"
)


def _strip_escaped_and_classes(pattern: str) -> str:
    """The pattern with `\\x` escapes and `[...]` classes blanked, for the syntax checks above
    (a `(?=` inside `[...]` or after a backslash is just characters)."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            keep = not in_class and (nxt.isdigit() or nxt == "g")
            out.append(pattern[i : i + 2] if keep else "__")
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
            out.append("_")
        elif char == "[":
            in_class = True
            out.append("_")
            if pattern[i + 1 : i + 2] == "^":
                out.append("_")
                i += 1
            if pattern[i + 1 : i + 2] == "]":  # `[]...]` and `[^]...]`: a literal `]`
                out.append("_")
                i += 1
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _python_equivalent(match: re.Match[str]) -> str:
    text = match.group(0)
    if text == "\\\\":
        return text
    if text.startswith(("\\p", "\\P")):
        return r"\w"
    if text.startswith("\\Q"):
        return re.escape(text[2:].removesuffix("\\E"))
    if text == "(?<":
        return "(?P<"
    return {"\\z": r"\Z", "\\C": "."}[text]


def compile_re2ish(pattern: str) -> re.Pattern[str]:
    """Check `pattern` is RE2 syntax; return a Python equivalent (for counting groups)."""
    if not pattern:
        raise ValueError("is empty; write a regular expression (RE2 syntax)")
    bare = _strip_escaped_and_classes(pattern)
    for construct, what in _RE2_UNSUPPORTED:
        if construct.search(bare):
            raise ValueError(
                f"`{pattern}` uses {what}, which Envoy's RE2 engine does not support; "
                "rewrite the expression without it"
            )
    try:
        return re.compile(_RE2_ONLY_ESCAPES.sub(_python_equivalent, pattern))
    except re.error as exc:
        raise ValueError(
            f"`{pattern}` is not a valid regular expression ({exc}); fix it (RE2 syntax)"
        ) from None


def check_substitution(substitution: str, groups: int, key: str) -> None:
    """RE2 rewrite strings know `\\0`..`\\9` (groups) and `\\\\` (a backslash), nothing else."""
    for match in re.finditer(r"\\(.?)", substitution):
        ref = match.group(1)
        if ref == "\\":
            continue
        if not ref.isdigit():
            raise ValueError(
                f"{key} `{substitution}`: `\\{ref}` is not a group reference; use \\1..\\9 for "
                "groups and \\\\ for a backslash"
            )
        if int(ref) > groups:
            raise ValueError(
                f"{key} `{substitution}` refers to group \\{ref} but the pattern has only "
                f"{groups}; add a (group) to the pattern or fix the reference"
            )


# ---------------------------------------------------------------------------- request headers

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
IDENTITY_HEADER_PREFIX = "x-pomerium"  # authgate's namespace, as authz strips it
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
     "upgrade", "content-length"}
)


def _header_key(name: str) -> str:
    """How Envoy and authz compare names: case-insensitive, `_` as good as `-`."""
    return name.lower().replace("_", "-")


def _check_header_name(name: str, key: str) -> None:
    if name.startswith(":"):
        raise ValueError(
            f"{key}: {name!r} is a pseudo-header; use host_rewrite for the host and "
            "prefix_rewrite/regex_rewrite_* for the path"
        )
    if not _TOKEN.match(name):
        raise ValueError(f"{key}: {name!r} is not a valid header name; use letters, digits and -")
    lowered = _header_key(name)
    if lowered == "host":
        raise ValueError(
            f"{key}: Host cannot be set or removed here; use host_rewrite, host_rewrite_header "
            "or preserve_host_header"
        )
    if lowered in _HOP_BY_HOP:
        raise ValueError(
            f"{key}: {name!r} is a hop-by-hop or framing header Envoy manages; remove it "
            "(websockets: allow_websockets)"
        )


def _scalar_to_str(value: object) -> object:
    """YAML turns `X-Flag: true` or `X-Count: 3` into non-strings; Pomerium reads them as text."""
    if isinstance(value, dict):
        return {
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            if isinstance(v, (bool, int, float))
            else v
            for k, v in value.items()
        }
    return value


HeaderMap = Annotated[dict[str, str], BeforeValidator(_scalar_to_str)]


class AddedClaim(BaseModel):
    """A claim a route adds to its assertion, from the session's claims (authgate's key).

    `from` names the session claim (`groups`, `email`, or any ID-token claim); with `map`,
    each value found there becomes the listed values (values not in the map are dropped), so
    IdP groups become app roles; without `map` the claim is copied as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", min_length=1)
    map: dict[str, list[str]] | None = None

    @field_validator("map", mode="before")
    @classmethod
    def _map(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class Route(BaseModel):
    """A Pomerium route: `from` a public URL, `to` an upstream, guarded by `policy`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("assertion_claims")
    @classmethod
    def _assertion_claims(cls, value: dict[str, AddedClaim]) -> dict[str, AddedClaim]:
        for name in value:
            if name in ASSERTION_CLAIMS or not name:
                raise ValueError(
                    f"{name!r} is a claim every assertion has; pick another name for it"
                )
        return value

    id: str | None = None
    name: str | None = None
    from_: str = Field(alias="from")
    # Optional with `redirect` or `response` (no upstream then).
    to: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(
        default_factory=list
    )
    # Matching (at most one; none = prefix `/`). Envoy matches, on the normalised path.
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None  # RE2, must match the whole path (query excluded)
    # Path rewriting for the upstream (at most one kind).
    prefix_rewrite: str | None = None
    regex_rewrite_pattern: str | None = None
    regex_rewrite_substitution: str | None = None
    pass_identity_headers: bool = False
    # authgate's key, for apps written to Pomerium's older convention: the assertion goes in
    # `x-pomerium-iap-jwt-assertion` with `iss: pomerium-proxy` (README, "legacy assertion").
    legacy_assertion: bool = False
    # authgate's key: claims added to this route's assertion (e.g. IdP groups as app roles).
    assertion_claims: dict[str, AddedClaim] = Field(default_factory=dict)
    # Host header, in Pomerium's precedence order: preserve > host_rewrite > host_rewrite_header
    # > host_path_regex_rewrite_* > the `to` host.
    preserve_host_header: bool = False
    host_rewrite: str | None = None
    # Pomerium: the name of a header whose value becomes Host. `true` (as some guides write it)
    # keeps the Host the browser sent, which is what Jenkins needs to build its links.
    host_rewrite_header: str | bool | None = None
    host_path_regex_rewrite_pattern: str | None = None
    host_path_regex_rewrite_substitution: str | None = None
    # Request headers for the upstream, applied by Envoy after ext_authz.
    set_request_headers: HeaderMap = Field(default_factory=dict)
    remove_request_headers: StrList = Field(default_factory=list)
    allow_websockets: bool = False
    timeout: Duration | None = None  # None: the global default_upstream_timeout
    idle_timeout: Duration = timedelta(minutes=5)
    # Pomerium keys (issue #13); None: the global setting.
    jwt_claims_headers: ClaimHeaders | None = None
    jwt_groups_filter: StrList | None = None
    jwt_issuer_format: Literal["host", "hostOnly", "uri"] | None = None
    cors_allow_preflight: bool = False
    set_response_headers: HeaderMap = Field(default_factory=dict)
    rewrite_response_headers: list[RewriteResponseHeader] = Field(default_factory=list)
    # Upstream TLS (https:// upstreams only).
    tls_skip_verify: bool = False
    tls_server_name: str | None = None
    tls_custom_ca_file: str | None = None
    # pom-tls: upstream mTLS and inline CA, route actions and the upstream cluster's balancing.
    tls_custom_ca: str | None = None  # base64 PEM
    tls_upstream_server_name: str | None = None  # Pomerium's newer name for tls_server_name
    tls_client_cert: str | None = None  # base64 PEM
    tls_client_key: str | None = Field(default=None, repr=False)
    tls_client_cert_file: str | None = None
    tls_client_key_file: str | None = None
    tls_upstream_allow_renegotiation: bool = False
    redirect: RedirectOption | None = None
    response: ResponseOption | None = None
    load_balancing_policy: LoadBalancingPolicy | None = None
    health_checks: list[dict[str, Any]] = Field(default_factory=list)
    outlier_detection: dict[str, Any] | None = None
    show_error_details: bool = False
    # Pomerium's key: how `Authorization: Bearer` is read on this route (None: the global one).
    bearer_token_format: BearerTokenFormat | None = None
    allow_public_unauthenticated_access: bool = False
    allow_any_authenticated_user: bool = False
    allowed_users: StrList = Field(default_factory=list)
    allowed_domains: StrList = Field(default_factory=list)
    allowed_groups: StrList = Field(default_factory=list)
    policy: list[dict[str, Any]] | dict[str, Any] | None = None
    # authgate's key: Envoy lets a signed-in user's repeat requests through on a short-lived
    # pass (README, "The fast lane"); None: the global `fast_lane`.
    fast_lane: bool | None = None

    @field_validator("from_")
    @classmethod
    def _from_url(cls, value: str) -> str:
        return _check_http_url(value, "route `from` URL")

    @field_validator("to")
    @classmethod
    def _to_urls(cls, value: list[str]) -> list[str]:
        for item in value:
            Upstream.parse(item)
        return value

    @field_validator("prefix", "path")
    @classmethod
    def _matchable_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        if "?" in value or "#" in value:
            raise ValueError(f"{value!r}: a query or fragment is never matched; remove it")
        # Envoy normalises request paths before matching (dot segments resolved, `//` merged,
        # escaped slashes refused), so such a route could never match anything.
        segments = value.split("/")[1:]
        lowered = value.lower()
        if (
            "//" in value
            or "\\" in value
            or "%2f" in lowered
            or "%5c" in lowered
            or any(seg in (".", "..") for seg in segments)
        ):
            raise ValueError(
                f"{value!r} is not a normalised path (no `//`, `.`/`..` segments, backslashes or "
                "escaped slashes); Envoy matches normalised paths only, so write it normalised"
            )
        return value

    @field_validator("prefix_rewrite")
    @classmethod
    def _rewrite_starts_with_slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/' (e.g. `/` to strip the prefix)")
        return value

    @field_validator("regex", "regex_rewrite_pattern", "host_path_regex_rewrite_pattern")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        if value is not None:
            compile_re2ish(value)
        return value

    @field_validator("set_request_headers")
    @classmethod
    def _set_headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, header_value in value.items():
            _check_header_name(name, name)
            key = _header_key(name)
            if key.startswith(IDENTITY_HEADER_PREFIX):
                raise ValueError(
                    f"{name}: the x-pomerium- header namespace belongs to authgate (it carries "
                    "the signed identity); pick another name, or use pass_identity_headers"
                )
            if key in seen:
                raise ValueError(f"{name}: set twice (also as {seen[key]!r}); keep one")
            seen[key] = name
            if any(c in header_value for c in "\r\n\0"):
                raise ValueError(f"{name}: the value contains a line break or NUL; remove it")
            try:
                substitutions_in(header_value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    # Pomerium keys (issue #13): claim headers, groups filter, issuer, CORS, response headers.
    @field_validator("jwt_claims_headers")
    @classmethod
    def _claim_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_claim_headers(value)

    @field_validator("set_response_headers")
    @classmethod
    def _response_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_response_headers(value)

    @field_validator("rewrite_response_headers")
    @classmethod
    def _rewrites(cls, value: list[RewriteResponseHeader]) -> list[RewriteResponseHeader]:
        for rewrite in value:
            check_response_header_name(rewrite.header)
            if any(c in rewrite.prefix + rewrite.value for c in "\r\n\0"):
                raise ValueError(f"{rewrite.header}: a line break or NUL; remove it")
        return value

    @field_validator("remove_request_headers")
    @classmethod
    def _remove_headers(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_header_name(name, name)
            if _header_key(name) == ASSERTION_HEADER:
                raise ValueError(
                    f"{name}: authgate sets this header; to send no assertion, turn "
                    "pass_identity_headers off"
                )
        return value

    @field_validator("tls_server_name", "tls_upstream_server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?",
                                                  value):
            raise ValueError(
                f"{value!r} is not a host name; write just the name the upstream certificate "
                "is issued to, e.g. backend.internal (no scheme or port)"
            )
        return value

    @field_validator("tls_custom_ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = Path(value)
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise ValueError(
                f"cannot read {value}: {exc.strerror or exc}; give the path of a PEM CA bundle "
                "(relative paths start from the working directory)"
            ) from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(f"{value} holds no PEM certificate; give a PEM CA bundle")
        return value

    @model_validator(mode="after")
    def _one_kind_of_access(self) -> "Route":
        matchers = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(matchers) > 1:
            raise ValueError(
                f"set only one of `prefix`, `path` or `regex` (found {', '.join(matchers)})"
            )
        self._check_rewrites()
        self._check_headers_and_tls()
        check_route_options(self)
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

    def _check_rewrites(self) -> None:
        for prefix in ("regex_rewrite", "host_path_regex_rewrite"):
            pattern = getattr(self, f"{prefix}_pattern")
            substitution = getattr(self, f"{prefix}_substitution")
            if (pattern is None) != (substitution is None):
                missing = f"{prefix}_substitution" if substitution is None else f"{prefix}_pattern"
                raise ValueError(f"{prefix}_pattern and {prefix}_substitution go together; "
                                 f"add {missing}")
            if pattern is not None:
                groups = compile_re2ish(pattern).groups
                check_substitution(substitution, groups, f"{prefix}_substitution")
        if self.prefix_rewrite is not None and self.regex_rewrite_pattern is not None:
            raise ValueError("set either `prefix_rewrite` or `regex_rewrite_pattern`, not both")

    def _check_headers_and_tls(self) -> None:
        both = {_header_key(n) for n in self.set_request_headers} & {
            _header_key(n) for n in self.remove_request_headers
        }
        if both:
            raise ValueError(
                f"{sorted(both)[0]} is in both set_request_headers and remove_request_headers; "
                "keep one"
            )
        tls_options = [
            k for k in ("tls_skip_verify", "tls_server_name", "tls_custom_ca_file",
                        "tls_custom_ca", "tls_upstream_server_name", "tls_client_cert",
                        "tls_client_cert_file", "tls_upstream_allow_renegotiation")
            if getattr(self, k)
        ]
        if tls_options and (not self.to or any(u.scheme != "https" for u in self.upstreams)):
            raise ValueError(
                f"{tls_options[0]} applies to https:// upstreams only; use https:// in `to` "
                "or remove it"
            )
        if self.tls_skip_verify and (self.tls_custom_ca_file or self.tls_custom_ca):
            raise ValueError(
                "tls_skip_verify turns off the verification tls_custom_ca_file configures; "
                "keep only one of them"
            )

    @property
    def match_key(self) -> tuple[str, str]:
        """What Envoy matches on: ("prefix"|"path"|"regex", value)."""
        if self.path is not None:
            return ("path", self.path)
        if self.regex is not None:
            return ("regex", self.regex)
        return ("prefix", self.prefix or "/")

    @property
    def destination(self) -> str:
        """Where an allowed request goes, for people: the upstreams, or the route's answer."""
        if self.redirect is not None:
            return "a redirect"
        if self.response is not None:
            return f"a {self.response.status} response"
        return ", ".join(self.to)

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


def _json_object(value: Any) -> Any:
    """A mapping, or (from the environment) its JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError('is not a mapping; write e.g. {"hd": "example.com"}') from None
    return value


def _with_idp_defaults(data: Any) -> Any:
    """The named provider's default URL and scopes where the config gives none (as Pomerium)."""
    if not isinstance(data, dict):
        return data
    name = data.get("idp_provider", "oidc")
    if not isinstance(name, str) or name not in PROVIDERS:
        raise ValueError(
            f"idp_provider: {name!r} is not a provider authgate knows; use one of "
            + ", ".join(PROVIDER_NAMES)
        )
    chosen = PROVIDERS[name]
    data = dict(data)
    if not data.get("idp_provider_url"):
        if chosen.default_url is None:
            raise ValueError(
                f"idp_provider_url: idp_provider {name} needs it; write your IdP's URL, "
                f"e.g. {chosen.url_example}"
            )
        data["idp_provider_url"] = chosen.default_url
    scopes = data.get("idp_scopes")
    if scopes is None or scopes == "" or scopes == []:
        data["idp_scopes"] = list(chosen.scopes_for(str(data["idp_provider_url"])))
    return data


class Settings(BaseModel):
    """Top-level settings, named as in Pomerium."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = ":443"
    insecure_server: bool = False
    certificate_file: str | None = None
    certificate_key_file: str | None = None
    # pom-tls: more ways to give the listener's certificates, client certificates (mTLS),
    # the CA trusted for https upstreams, running behind a TLS-terminating balancer.
    certificate: str | None = Field(default=None, repr=False)  # base64 PEM
    certificate_key: str | None = Field(default=None, repr=False)
    certificates: list[CertificatePair] = Field(default_factory=list)
    certificate_authority: str | None = None  # base64 PEM
    certificate_authority_file: str | None = None
    downstream_mtls: DownstreamMtls | None = None
    xff_num_trusted_hops: int = Field(default=0, ge=0, le=16)
    skip_xff_append: bool = False
    codec_type: CodecType = "auto"
    http_redirect_addr: str | None = None
    authenticate_service_url: str
    # Identity provider (Pomerium's keys); providers.py holds each name's defaults.
    idp_provider: str = "oidc"
    idp_provider_url: str
    idp_request_params: Annotated[dict[str, str], BeforeValidator(_json_object)] = Field(
        default_factory=dict
    )
    idp_client_id: str = Field(min_length=1)
    # Secrets never appear in a repr (logs, tracebacks, `authgate check`).
    idp_client_secret: str | None = Field(default=None, repr=False)
    idp_client_secret_file: str | None = None
    idp_scopes: ScopeList = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    signing_key: str | None = Field(default=None, repr=False)
    signing_key_file: str | None = None
    cookie_secret: str | None = Field(default=None, repr=False)
    cookie_secret_file: str | None = None
    cookie_name: str = Field(default="_pomerium", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    cookie_expire: Duration = timedelta(hours=14)  # a session's absolute lifetime
    # Where sessions live (Pomerium's keys): "memory"/"file" = the embedded store (SQLite,
    # shared by the workers of one `authgate run`), "redis" for replicas.
    databroker_storage_type: Literal["memory", "file", "redis"] = "file"
    databroker_storage_connection_string: str | None = Field(default=None, repr=False)
    databroker_storage_connection_string_file: str | None = None
    # authgate's keys: claims are refreshed from the IdP this often; a session unused this
    # long ends (0: never).
    session_refresh_interval: Duration = timedelta(minutes=5)
    session_idle_timeout: Duration = timedelta(0)
    jwt_issuer_format: Literal["host", "hostOnly", "uri"] = "host"
    # Pomerium keys (issue #13): claim headers (none unless listed), the groups the assertion
    # may carry (empty: all), cookies, where sign-out lands, timeouts.
    jwt_claims_headers: ClaimHeaders = Field(default_factory=dict)
    jwt_groups_filter: StrList = Field(default_factory=list)
    cookie_domain: str | None = None
    cookie_same_site: SameSite = "Lax"
    cookie_http_only: bool = True
    signout_redirect_url: str | None = None
    default_upstream_timeout: Duration = timedelta(seconds=30)
    timeout_read: Duration = timedelta(seconds=30)
    timeout_write: Duration = timedelta(0)
    timeout_idle: Duration = timedelta(minutes=5)
    set_response_headers: HeaderMap = Field(default_factory=dict)  # a route's own win
    pass_identity_headers: bool | None = None  # the default of routes that set none
    # Scripts (Pomerium's keys): `default` passes `Authorization: Bearer` to the app untouched;
    # `idp_access_token` / `idp_identity_token` read it as a token from the IdP.
    bearer_token_format: BearerTokenFormat = "default"
    idp_access_token_allowed_audiences: StrList = Field(default_factory=list)
    # Where the programmatic login may send its token besides loopback addresses.
    programmatic_redirect_domain_whitelist: StrList = Field(default_factory=lambda: ["localhost"])
    # Operating it (Pomerium's keys): /metrics, /healthz, /readyz here; log levels.
    metrics_address: str | None = None
    log_level: LogLevel = "info"
    proxy_log_level: LogLevel | None = None  # Envoy's; unset: log_level's, else "warning"
    # authgate's keys: the fast lane (README, "The fast lane"), off unless turned on.
    fast_lane: bool = False
    fast_lane_ttl: Duration = timedelta(seconds=60)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port; write e.g. 127.0.0.1:8443 or :443")
        return value

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else cls._address(value)

    @field_validator("authenticate_service_url")
    @classmethod
    def _authn_url(cls, value: str) -> str:
        return _check_http_url(value, "authenticate_service_url")

    @field_validator("jwt_claims_headers")
    @classmethod
    def _claim_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_claim_headers(value)

    @field_validator("signout_redirect_url")
    @classmethod
    def _signout_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, "signout_redirect_url", True)

    @field_validator("set_response_headers")
    @classmethod
    def _response_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_response_headers(value)

    @model_validator(mode="before")
    @classmethod
    def _idp_defaults(cls, data: Any) -> Any:
        return with_route_defaults(_with_idp_defaults(data))

    @field_validator("idp_provider_url")
    @classmethod
    def _idp_url(cls, value: str) -> str:
        return _check_http_url(value, "idp_provider_url", allow_path=True)

    @field_validator("idp_request_params")
    @classmethod
    def _idp_params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(RESERVED_PARAMS & set(value))
        if reserved:
            raise ValueError(
                f"sets {', '.join(reserved)}, which authgate sets itself; remove "
                + ("it" if len(reserved) == 1 else "them")
                + " (scopes go in idp_scopes)"
            )
        return value

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
            parse_signing_keys(pem)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        check_listener_options(self)
        check_cookie_settings(self.tls, self.cookie_same_site, self.cookie_domain)
        if PROVIDERS[self.idp_provider].protocol == "oidc" and "openid" not in self.idp_scopes:
            raise ValueError("idp_scopes must include `openid`")
        if self.databroker_storage_type == "redis":
            url = self.databroker_storage_connection_string or ""
            if urlsplit(url).scheme not in ("redis", "rediss"):
                raise ValueError(
                    "databroker_storage_connection_string: with databroker_storage_type redis, "
                    "give redis://[:password@]host:port[/db] (or rediss:// for TLS)"
                )
        if not 1 <= self.fast_lane_ttl.total_seconds() <= 600:
            raise ValueError("fast_lane_ttl must be between 1s and 10m (a pass outlives sign-out "
                             "elsewhere by at most this long); the default is 60s")
        if self.session_refresh_interval.total_seconds() < 1:
            raise ValueError("session_refresh_interval must be at least 1s")
        seen: dict[tuple[str, str, str], int] = {}
        for index, route in enumerate(self.routes):
            key = (route.from_netloc, *route.match_key)
            if key in seen:
                raise ValueError(
                    f"routes[{index}] repeats routes[{seen[key]}] (same from/prefix/path/regex); "
                    "merge them or give one a prefix"
                )
            seen[key] = index
            if route.from_netloc == netloc_of(self.authenticate_service_url):
                raise ValueError(
                    f"routes[{index}].from uses the authenticate_service_url host; "
                    "give the route its own hostname"
                )
        return self

    def config_warnings(self) -> list[str]:
        """Valid but risky settings, one line each, for `check` and the generator to print."""
        notes: list[str] = []
        for index, route in enumerate(self.routes):
            if route.tls_skip_verify:
                notes.append(
                    f"routes[{index}].tls_skip_verify: the certificate of {', '.join(route.to)} "
                    "is NOT verified; anyone on the network path can impersonate the upstream "
                    "(use tls_custom_ca_file for a private CA instead)"
                )
        if not self.cookie_http_only:
            notes.append(
                "cookie_http_only: false lets any script on a route host read the session "
                "cookie (one XSS steals the sign-in); keep it true unless an app needs it"
            )
        return notes

    @property
    def tls(self) -> bool:
        """Browsers reach authgate over https (secure cookies, https URLs): always with a TLS
        listener, and with insecure_server behind a TLS-terminating balancer when the
        authenticate_service_url (and so every route) is https."""
        return not self.insecure_server or urlsplit(self.authenticate_service_url).scheme == "https"

    @property
    def terminates_tls(self) -> bool:
        """Envoy's listener speaks TLS itself (insecure_server: plain HTTP)."""
        return not self.insecure_server

    @property
    def listen_host(self) -> str:
        host = self.address.rpartition(":")[0].strip("[]")
        return host or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.address.rpartition(":")[2])
