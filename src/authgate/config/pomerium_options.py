"""Value types of the Pomerium keys added for issue #13 (claim headers, response headers,
`${pomerium.*}` substitutions), kept out of schema.py so that file only names the fields."""

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from authgate.contract import ASSERTION_HEADER, IDENTITY_PREFIX

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CLAIM = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")

# `${pomerium.<name>}` in set_request_headers values (Pomerium's token substitution).
SUBSTITUTION = re.compile(r"\$\{\s*pomerium\.([A-Za-z_]+)\s*\}")
SUBSTITUTIONS = ("id_token", "access_token", "jwt")


def claim_header_name(claim: str) -> str:
    """Pomerium's header for a listed claim: `given_name` -> `X-Pomerium-Claim-Given-Name`."""
    return "X-Pomerium-Claim-" + "-".join(
        part[:1].upper() + part[1:] for part in claim.replace("_", "-").split("-")
    )


def _claim_headers(value: object) -> object:
    """List form (`[email, groups]` or "email,groups") or map form (`X-Email: email`), as
    Pomerium reads `jwt_claims_headers`; always a header -> claim map afterwards."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ValueError("list the claim names as text, e.g. [email, groups]")
        return {claim_header_name(claim): claim for claim in value}
    return value


def check_claim_headers(value: dict[str, str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for header, claim in value.items():
        if not _TOKEN.match(header):
            raise ValueError(f"{header!r} is not a valid header name; use letters, digits and -")
        key = header.lower().replace("_", "-")
        if key in (ASSERTION_HEADER, "host") or key.startswith(":"):
            raise ValueError(f"{header!r} cannot carry a claim; pick another header name")
        if key in seen:
            raise ValueError(f"{header}: named twice (also as {seen[key]!r}); keep one")
        seen[key] = header
        if not _CLAIM.match(claim):
            raise ValueError(f"{header}: {claim!r} is not a claim name (e.g. email, groups)")
    return value


ClaimHeaders = Annotated[dict[str, str], BeforeValidator(_claim_headers)]
# Pomerium reads `lax`, `LAX` and `Lax` alike.
SameSite = Annotated[
    Literal["Lax", "Strict", "None"],
    BeforeValidator(lambda v: v.capitalize() if isinstance(v, str) else v),
]


class RewriteResponseHeader(BaseModel):
    """Pomerium's `rewrite_response_headers` entry: in `header`, a value starting with
    `prefix` gets that prefix replaced by `value` (no prefix: the whole value is replaced)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str
    prefix: str = ""
    value: str


def check_response_header_name(name: str) -> None:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a valid header name; use letters, digits and -")
    key = name.lower()
    if key in ("content-length", "transfer-encoding", "connection", "set-cookie") or key.startswith(
        ":"
    ):
        raise ValueError(
            f"{name!r} is managed by Envoy or by authgate (sessions); it cannot be set here"
        )
    if key.startswith(IDENTITY_PREFIX):
        raise ValueError(f"{name!r}: the x-pomerium- namespace belongs to authgate")


def check_response_headers(value: dict[str, str]) -> dict[str, str]:
    for name, header_value in value.items():
        check_response_header_name(name)
        if any(c in header_value for c in "\r\n\0"):
            raise ValueError(f"{name}: the value contains a line break or NUL; remove it")
    return value


def substitutions_in(value: str) -> list[str]:
    """The `${pomerium.*}` names a header value uses; ValueError for one that does not exist."""
    names = SUBSTITUTION.findall(value)
    for name in names:
        if name not in SUBSTITUTIONS:
            raise ValueError(
                f"${{pomerium.{name}}} does not exist; use one of "
                + ", ".join(f"${{pomerium.{n}}}" for n in SUBSTITUTIONS)
            )
    if "${" in SUBSTITUTION.sub("", value) and re.search(r"\$\{\s*pomerium", value):
        raise ValueError("a ${pomerium.*} token is not closed; write e.g. ${pomerium.jwt}")
    return names



_DOMAIN = re.compile(r"^\.?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def check_cookie_settings(tls: bool, same_site: str, domain: str | None) -> None:
    """Pomerium's cookie_* keys, checked together (ValueError names the key and the fix)."""
    if same_site == "None" and not tls:
        raise ValueError(
            "cookie_same_site: None needs Secure cookies, which need TLS; use Lax, or serve TLS"
        )
    if domain is not None and not _DOMAIN.match(domain.lower()):
        raise ValueError(
            f"cookie_domain: {domain!r} is not a domain name; write e.g. example.com"
        )


def with_route_defaults(data: object) -> object:
    """Pomerium's global `pass_identity_headers` is the default of every route that does not
    set its own (filled in before validation, so the routes keep a plain bool)."""
    if not isinstance(data, dict) or data.get("pass_identity_headers") is None:
        return data
    routes = data.get("routes")
    if not isinstance(routes, list):
        return data
    default = data["pass_identity_headers"]
    return {
        **data,
        "routes": [
            {"pass_identity_headers": default, **r} if isinstance(r, dict) else r for r in routes
        ],
    }
